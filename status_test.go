package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Status as operators see it (JSON, the leader's per-member progress), and
// change notifications (Changed, WaitLeader).

func TestStatus_JSON(t *testing.T) {
	st := Status{ID: 1, Term: 7, Leader: 1, Role: Leader, CommitIndex: 9, AppliedIndex: 8, LastIndex: 10,
		Members:  []Member{{ID: 1, Addr: "a"}, {ID: 4, Addr: "d", Learner: true, Meta: map[string]string{"http": "x"}}},
		Progress: []MemberProgress{{ID: 4, Match: 6, Next: 7, State: ReplicationReplicate, Learner: true, SinceContact: 300 * time.Millisecond}},
		Err:      errors.New("disk on fire")}
	b, err := json.Marshal(st)
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	assert.Equal(t, "Leader", raw["role"])
	assert.Equal(t, "disk on fire", raw["err"])
	assert.Equal(t, true, raw["members"].([]any)[1].(map[string]any)["learner"])
	p := raw["progress"].([]any)[0].(map[string]any)
	assert.Equal(t, "Replicate", p["state"])
	assert.Equal(t, "300ms", p["sinceContact"])
	assert.NotContains(t, raw, "outgoing", "omitted when not joint")

	var back Status
	require.NoError(t, json.Unmarshal(b, &back))
	assert.EqualError(t, back.Err, "disk on fire")
	back.Err, st.Err = nil, nil
	assert.Equal(t, st, back)

	b, err = json.Marshal(Status{Role: Follower})
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"err"`, "no error, no field")
	for _, bad := range []string{`{"role":"King"}`, `{"progress":[{"state":"Flying"}]}`, `{"progress":[{"sinceContact":"soon"}]}`} {
		assert.Error(t, json.Unmarshal([]byte(bad), &back), bad)
	}
	_, err = json.Marshal(Status{Role: Role(9)})
	assert.Error(t, err, "an unknown role does not encode")
}

// TestStatus_LeaderShowsEachMembersProgress: the leader's Status lists every
// other member's progress; a new learner's catch-up is visible before it is
// promoted; followers show none.
func TestStatus_LeaderShowsEachMembersProgress(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		if cfg.ID == 4 {
			cfg.InitialMembers = nil
		}
	}))
	var last uint64
	for i := range 30 {
		last = c.propose(fmt.Sprint(i))
	}
	c.waitAllApplied(last)
	leader := c.waitLeader()
	require.Eventually(t, func() bool {
		st := c.nodes[leader].Status()
		if len(st.Progress) != 2 {
			return false
		}
		for _, p := range st.Progress {
			if p.Match != st.LastIndex || p.State != ReplicationReplicate || p.Learner || p.SinceContact > time.Second {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "the leader's progress: %+v", c.nodes[leader].Status().Progress)
	assert.Nil(t, c.nodes[c.follower(leader)].Status().Progress)

	c.ids = append(c.ids, 4)
	c.storages[4] = NewMemoryStorage()
	c.start(4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].AddLearner(ctx, 4, ""))
	require.Eventually(t, func() bool {
		st := c.nodes[leader].Status()
		for _, p := range st.Progress {
			if p.ID == 4 {
				return p.Learner && p.Match == st.LastIndex
			}
		}
		return false
	}, 10*time.Second, time.Millisecond, "the learner's catch-up shows: %+v", c.nodes[leader].Status().Progress)
}

// TestNode_ChangedUnderChurn: many subscribers follow a node through
// repeated leadership changes. None blocks the node, none misses the last
// state, and the terms each one sees never go back.
func TestNode_ChangedUnderChurn(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	watched := c.nodes[c.follower(leader)]

	const subscribers = 50
	stop := make(chan struct{})
	var wg sync.WaitGroup
	type seen struct {
		mu       sync.Mutex
		term     uint64
		leader   uint64
		wentBack bool
		wakeups  int
	}
	views := make([]*seen, subscribers)
	for i := range views {
		v := &seen{}
		views[i] = v
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ch := watched.Changed()
				st := watched.Status()
				v.mu.Lock()
				v.wentBack = v.wentBack || st.Term < v.term
				v.term, v.leader = st.Term, st.Leader
				v.wakeups++
				v.mu.Unlock()
				select {
				case <-ch:
				case <-stop:
					return
				}
			}
		}()
	}

	// Every subscriber is watching before the churn starts, so each must be
	// woken by it.
	require.Eventually(t, func() bool {
		for _, v := range views {
			v.mu.Lock()
			w := v.wakeups
			v.mu.Unlock()
			if w == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 8 {
		l := c.waitLeader()
		// Alternate targets so that the leadership moves every time.
		require.NoError(t, c.nodes[l].TransferLeadership(ctx, c.follower(l)), "transfer %d", i)
	}
	final := c.waitLeader()
	want := c.nodes[final].Status().Term
	require.Eventually(t, func() bool { st := watched.Status(); return st.Term == want && st.Leader == final }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		for _, v := range views {
			v.mu.Lock()
			ok := v.term == want && v.leader == final
			v.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "a subscriber missed the latest state")
	close(stop)
	wg.Wait()
	for i, v := range views {
		assert.False(t, v.wentBack, "subscriber %d saw the term go back", i)
		assert.Greater(t, v.wakeups, 1, "subscriber %d was woken", i)
	}
	_, err := c.nodes[final].Propose(ctx, []byte("still serving"))
	require.NoError(t, err)
}

// TestNode_ChangedCostsNothingWhenNobodyListens: without a subscriber no
// channel is made; a subscriber's channel is closed when the node stops,
// and Changed then returns a closed channel.
func TestNode_ChangedCostsNothingWhenNobodyListens(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].TransferLeadership(ctx, c.follower(leader)))
	n := c.nodes[c.waitLeader()]
	n.statusMu.Lock()
	made := n.changed != nil
	n.statusMu.Unlock()
	assert.False(t, made, "a channel was made with nobody listening")

	ch := n.Changed()
	require.NoError(t, n.Close())
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not signal a change")
	}
	select {
	case <-n.Changed():
	default:
		t.Fatal("Changed after Close is not closed")
	}
	// A loop over Changed that reads Status must see that the node
	// stopped, or it would spin on the closed channel.
	assert.ErrorIs(t, n.Status().Err, ErrClosed)
}

func TestNode_WaitLeader(t *testing.T) {
	c := newTestCluster(t, 3, withoutStarting())
	c.start(1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.nodes[1].WaitLeader(ctx)
	cancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded, "alone, node 1 cannot know a leader")

	got := make(chan Member, 1)
	n1 := c.nodes[1] // the goroutine must not read c.nodes, which c.start writes
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := n1.WaitLeader(ctx)
		assert.NoError(t, err)
		got <- m
	}()
	c.start(2)
	c.start(3)
	m := <-got
	assert.NotZero(t, m.ID)
	assert.Equal(t, c.waitLeader(), m.ID)

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m2, err := c.nodes[2].WaitLeader(ctx)
	require.NoError(t, err)
	assert.Equal(t, m.ID, m2.ID, "known: at once")

	require.NoError(t, c.nodes[m.ID].RemoveMember(ctx, 3))
	require.Eventually(t, func() bool { return c.nodes[3].Status().Removed }, 10*time.Second, time.Millisecond)
	_, err = c.nodes[3].WaitLeader(ctx)
	assert.ErrorIs(t, err, ErrRemoved)
	require.NoError(t, c.nodes[1].Close())
	_, err = c.nodes[1].WaitLeader(ctx)
	assert.ErrorIs(t, err, ErrClosed)
}

// TestNode_FollowersLogLeaderChangesOnce: each follower logs the leader it
// follows once per change, not on every message.
func TestNode_FollowersLogLeaderChangesOnce(t *testing.T) {
	logger, logs := observedLogger()
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		if cfg.ID == 2 {
			cfg.Logger = logger
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader := c.waitLeader()
	for range 20 {
		c.propose("x")
	}
	if leader == 2 {
		require.NoError(t, c.nodes[2].TransferLeadership(ctx, 1))
	}
	other := uint64(1)
	if c.waitLeader() == 1 {
		other = 3
	}
	require.NoError(t, c.nodes[c.waitLeader()].TransferLeadership(ctx, other))
	require.Eventually(t, func() bool { return c.nodes[2].Status().Leader == other }, 10*time.Second, time.Millisecond)
	var followed []uint64
	for _, e := range logs.FilterMessage("following a new leader").All() {
		followed = append(followed, uint64(e.ContextMap()["leader"].(uint64)))
	}
	require.NotEmpty(t, followed)
	assert.Equal(t, other, followed[len(followed)-1])
	for i := 1; i < len(followed); i++ {
		assert.NotEqual(t, followed[i-1], followed[i], "logged the same leader twice in a row: %v", followed)
	}
}
