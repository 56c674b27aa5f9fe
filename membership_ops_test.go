package raft

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// What an operator meets when running a cluster: restarts with one Config
// per node, membership calls on existing members, and removed nodes.

// observedLogger returns a logger that records Info and above.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(core), logs
}

// addNode4 starts node 4 on empty storage, with cfg4 adjusting its Config,
// and makes it a voter.
func addNode4(t *testing.T, c *testCluster, cfg4 func(Config) Config) {
	t.Helper()
	c.ids = append(c.ids, 4)
	c.storages[4] = NewMemoryStorage()
	base := c.cfg
	c.cfg = func(id uint64) Config {
		cfg := base(id)
		if id == 4 {
			cfg = cfg4(cfg)
		}
		return cfg
	}
	c.start(4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[c.waitLeader(1, 2, 3)].AddVoter(ctx, 4, ""))
}

func TestNewNode_JoinedNodeRestartsWithTheFoundingMembers(t *testing.T) {
	c := newTestCluster(t, 3)
	founding := c.cfg(1).InitialMembers
	addNode4(t, c, func(cfg Config) Config { cfg.InitialMembers = nil; return cfg })
	last := c.propose("x")
	c.waitApplied(4, last)

	// Restarted with the flags every node gets: the founding members.
	c.stop(4)
	logger, logs := observedLogger()
	cfg := c.cfg(4)
	cfg.InitialMembers, cfg.Logger = founding, logger
	n, err := NewNode(cfg, &recordingSM{}, c.storages[4], c.net.Transport(4))
	require.NoError(t, err, "InitialMembers is ignored when storage holds state")
	c.nodes[4], c.sms[4] = n, &recordingSM{}
	assert.Len(t, n.Status().Members, 4, "the stored configuration is used")
	assert.Equal(t, 1, logs.FilterMessageSnippet("InitialMembers ignored").Len(), "the difference is logged")

	// With InitialMembers the same as the stored configuration, in another
	// order, nothing is logged.
	c.stop(4)
	logger, logs = observedLogger()
	same := n.Status().Members
	slices.Reverse(same)
	cfg.InitialMembers, cfg.Logger = same, logger
	n, err = NewNode(cfg, c.sms[4], c.storages[4], c.net.Transport(4))
	require.NoError(t, err)
	c.nodes[4] = n
	assert.Zero(t, logs.FilterMessageSnippet("InitialMembers ignored").Len(), "nothing differs")
}

func TestNewNode_EmptyStorageNeedsThisNodeInInitialMembers(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	cfg := fastConfig(t, 4, []Member{{ID: 1}, {ID: 2}, {ID: 3}})
	require.NoError(t, cfg.Validate())
	storage := NewMemoryStorage()
	_, err := NewNode(cfg, &recordingSM{}, storage, nw.Transport(4))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "does not include this node's ID 4")
	last, _ := storage.LastIndex()
	assert.Zero(t, last, "nothing was written")
}

func TestMembership_AddOnExistingMembers(t *testing.T) {
	withAddrs := []Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:1"}, {ID: 3, Addr: "h3:1", Learner: true}}
	noAddrs := []Member{{ID: 1}, {ID: 2}}
	cases := []struct {
		name    string
		members []Member
		edit    func([]Member) ([]Member, bool, error)
		want    []Member // nil: no change
		wantErr error
	}{
		{"same role and address: nothing to do", withAddrs, addMember(2, "h2:1", false), nil, nil},
		{"empty address keeps the address", withAddrs, addMember(2, "", false), nil, nil},
		{"another address is an address change", withAddrs, addMember(2, "h2:2", false),
			[]Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:2"}, {ID: 3, Addr: "h3:1", Learner: true}}, nil},
		{"a learner made a voter is promoted, keeping its address", withAddrs, addMember(3, "", false),
			[]Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:1"}, {ID: 3, Addr: "h3:1"}}, nil},
		{"a voter made a learner is demoted", withAddrs, addMember(2, "", true),
			[]Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:1", Learner: true}, {ID: 3, Addr: "h3:1", Learner: true}}, nil},
		{"a new member needs an address when the others have one", withAddrs, addMember(4, "", false), nil, ErrInvalidConfig},
		{"a new member with an address", withAddrs, addMember(4, "h4:1", true),
			append(append([]Member(nil), withAddrs...), Member{ID: 4, Addr: "h4:1", Learner: true}), nil},
		{"no addresses anywhere (in-memory network)", noAddrs, addMember(4, "", false), []Member{{ID: 1}, {ID: 2}, {ID: 4}}, nil},
		{"ID 0", noAddrs, addMember(0, "", false), nil, ErrInvalidConfig},
		{"setMember adds with metadata", withAddrs, setMember(Member{ID: 4, Addr: "h4:1", Meta: map[string]string{"http": ":80"}}),
			append(append([]Member(nil), withAddrs...), Member{ID: 4, Addr: "h4:1", Meta: map[string]string{"http": ":80"}}), nil},
		{"setMember changes metadata, keeping the address", withAddrs, setMember(Member{ID: 2, Meta: map[string]string{"http": ":80"}}),
			[]Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:1", Meta: map[string]string{"http": ":80"}}, {ID: 3, Addr: "h3:1", Learner: true}}, nil},
		{"setMember with the same metadata: nothing to do", []Member{{ID: 1, Meta: map[string]string{"a": "b"}}},
			setMember(Member{ID: 1, Meta: map[string]string{"a": "b"}}), nil, nil},
		{"addMember keeps the metadata", []Member{{ID: 1, Meta: map[string]string{"a": "b"}}, {ID: 2, Learner: true}},
			addMember(2, "", false), []Member{{ID: 1, Meta: map[string]string{"a": "b"}}, {ID: 2}}, nil},
		{"addMember on a member with metadata: nothing to do", []Member{{ID: 1, Meta: map[string]string{"a": "b"}}},
			addMember(1, "", false), nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, err := tc.edit(append([]Member(nil), tc.members...))
			if tc.wantErr != nil {
				assert.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want != nil, changed)
			if tc.want != nil {
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

func TestMembership_4_2_2_LeaderDemotedToLearnerStepsDown(t *testing.T) {
	c1, c2, c3, n := threeCores(t)
	n.elect(1)
	_, _, changed, err := c1.changeMembers(addMember(1, "", true))
	require.NoError(t, err)
	require.True(t, changed)
	n.stabilize()
	assert.Equal(t, Follower, c1.role, "it stepped down once the change committed")
	assert.GreaterOrEqual(t, c2.log.committed, c1.configIndex)
	m, ok := c1.member(1)
	assert.True(t, ok && m.Learner, "it stays a member, as a learner")
	assert.False(t, c1.isVoter())
	// A voter takes over, and the learner receives its log.
	for i := 0; len(n.leaders()) == 0; i++ {
		require.Less(t, i, 1000, "no new leader")
		for _, c := range []*core{c1, c2, c3} {
			c.tick()
		}
		n.stabilize()
	}
	leader := n.cores[n.leaders()[0]]
	assert.NotEqual(t, c1, leader, "a learner does not campaign")
	_, _, err = leader.propose(cmd("x"))
	require.NoError(t, err)
	n.stabilize()
	assert.Equal(t, leader.log.lastIndex(), c1.log.lastIndex())
	leader.tick() // the new commit index reaches a follower by the next tick
	n.stabilize()
	assert.Equal(t, leader.log.committed, c1.log.committed)
}

func TestCluster_AddVoterWithoutAddressIsRefusedWhenMembersHaveAddresses(t *testing.T) {
	c := newTestCluster(t, 3)
	// The in-memory network ignores addresses; give the members some, as a
	// TCP cluster would have.
	leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range c.ids {
		require.NoError(t, c.nodes[leader].AddVoter(ctx, id, "host:1"), "an address change on %d", id)
	}
	for _, m := range c.nodes[leader].Status().Members {
		assert.Equal(t, "host:1", m.Addr)
	}
	err := c.nodes[leader].AddLearner(ctx, 4, "")
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "no address")
	assert.Len(t, c.nodes[leader].Status().Members, 3)
}

func TestCluster_RemovedNodeSaysSoAndFailsAtOnce(t *testing.T) {
	// Every node also logs to an observer the test reads.
	logs := map[uint64]*observer.ObservedLogs{}
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		core, observed := observer.New(zapcore.InfoLevel)
		logs[cfg.ID] = observed
		cfg.Logger = zap.New(zapcore.NewTee(cfg.Logger.Core(), core))
	}))
	leader := c.waitLeader()
	removed := leader%3 + 1
	last := c.propose("before")
	c.waitApplied(removed, last)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader = c.waitLeader()
	require.NoError(t, c.nodes[leader].RemoveMember(ctx, removed))
	n := c.nodes[removed]
	require.Eventually(t, func() bool { return n.Status().Removed }, 10*time.Second, time.Millisecond, "Status shows the removal")
	assert.False(t, c.nodes[leader].Status().Removed)

	calls := map[string]func() error{
		"Propose": func() error { _, err := n.Propose(ctx, []byte("x")); return err },
		"ProposeAsync": func() error {
			_, err := n.ProposeAsync([]byte("x"))
			return err
		},
		"LinearizableRead":   func() error { return n.LinearizableRead(ctx) },
		"AddVoter":           func() error { return n.AddVoter(ctx, 5, "") },
		"AddLearner":         func() error { return n.AddLearner(ctx, 5, "") },
		"RemoveMember":       func() error { return n.RemoveMember(ctx, 1) },
		"TransferLeadership": func() error { return n.TransferLeadership(ctx, 0) },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		assert.ErrorIs(t, err, ErrRemoved, name)
		assert.Less(t, time.Since(start), time.Second, "%s fails at once", name)
	}
	// The apply goroutine logs the removal just after it publishes it.
	require.Eventually(t, func() bool { return logs[removed].FilterMessageSnippet("removed from the cluster").Len() > 0 },
		10*time.Second, time.Millisecond)
	assert.Equal(t, 1, logs[removed].FilterMessageSnippet("removed from the cluster").Len(), "logged once")

	// Added back, it takes part again.
	require.NoError(t, c.nodes[leader].AddVoter(ctx, removed, ""))
	require.Eventually(t, func() bool { return !n.Status().Removed }, 10*time.Second, time.Millisecond)
	require.NoError(t, n.LinearizableRead(ctx))
}

func TestCluster_LeaderThatRemovesItselfSaysSo(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].RemoveMember(ctx, leader))
	n := c.nodes[leader]
	require.Eventually(t, func() bool { return n.Status().Removed }, 10*time.Second, time.Millisecond)
	_, err := n.Propose(ctx, []byte("x"))
	assert.ErrorIs(t, err, ErrRemoved)
	assert.ErrorIs(t, n.LinearizableRead(ctx), ErrRemoved)
	assert.NotEqual(t, leader, c.waitLeader(c.others(leader)...))
}

func TestCluster_AddLearnerOnAVoterDemotesIt(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	demoted := leader%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].AddLearner(ctx, demoted, ""))
	isLearner := func(id uint64) bool {
		for _, m := range c.nodes[id].Status().Members {
			if m.ID == demoted {
				return m.Learner
			}
		}
		return false
	}
	assert.True(t, isLearner(leader))
	last := c.propose("after demotion")
	c.waitApplied(demoted, last)
	assert.True(t, isLearner(demoted), "the demoted node knows it")
	assert.False(t, c.nodes[demoted].Status().Removed, "it is still a member")
	require.NoError(t, c.nodes[demoted].LinearizableRead(ctx), "and serves reads as a learner")

	require.NoError(t, c.nodes[leader].AddVoter(ctx, demoted, ""))
	assert.False(t, isLearner(leader), "promoted again")
}

// TestCluster_LeaderMetadataRedirectsClients: members carry metadata (here
// the address their clients use), replicated with the configuration; a
// follower's *NotLeaderError names the leader's Member with it, and a
// snapshot keeps it for a node that restarts from one.
func TestCluster_LeaderMetadataRedirectsClients(t *testing.T) {
	c := newSnapCluster(t, 3, nil) // its state machines take snapshots
	leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range c.ids {
		require.NoError(t, c.nodes[leader].AddMember(ctx, Member{ID: id, Meta: map[string]string{"http": fmt.Sprintf("10.0.0.%d:8080", id)}}))
	}
	follower := c.follower(leader)
	require.Eventually(t, func() bool {
		for _, m := range c.nodes[follower].Status().Members {
			if m.Meta["http"] == "" {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "the metadata reaches the followers")

	_, err := c.nodes[follower].Propose(ctx, []byte("x"))
	var nle *NotLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Equal(t, leader, nle.Member.ID)
	assert.Equal(t, fmt.Sprintf("10.0.0.%d:8080", leader), nle.Member.Meta["http"], "a client can be redirected to the leader")

	// Changing a member's address keeps its metadata; AddMember with nil
	// metadata clears it.
	require.NoError(t, c.nodes[leader].AddVoter(ctx, follower, ""))
	require.NoError(t, c.nodes[leader].AddMember(ctx, Member{ID: follower}))
	for _, m := range c.nodes[leader].Status().Members {
		if m.ID == follower {
			assert.Empty(t, m.Meta)
		} else {
			assert.NotEmpty(t, m.Meta["http"])
		}
	}

	// A node restarted from a snapshot taken after the change has it too.
	for i := 0; i < 10; i++ {
		c.propose(fmt.Sprint("after ", i))
	}
	require.NoError(t, c.nodes[follower].Snapshot(ctx))
	c.stop(follower)
	c.start(follower)
	st := c.nodes[follower].Status()
	require.NotZero(t, st.SnapshotIndex)
	for _, m := range st.Members {
		if m.ID != follower {
			assert.NotEmpty(t, m.Meta["http"], "member %d", m.ID)
		}
	}
}

// A membership change asked of a leader elected a moment ago, before it has
// committed an entry of its term (which Raft requires first, dissertation
// §4.1), waits for that entry instead of failing with ErrMembershipChange:
// the caller has just seen the leader elected and no other change is under
// way. Here the new leader's first entry cannot commit until the test lets
// the answers to its appends through.
func TestCluster_ChangeOnANewLeaderWaitsForItsFirstCommit(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.waitLeader()
	next := old%3 + 1
	var hold atomic.Bool
	hold.Store(true)
	c.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if hold.Load() && m.Type == MsgAppendResp && m.To == next {
			return inmemDropSilently
		}
		return inmemPass
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[old].TransferLeadership(ctx, next))
	require.Eventually(t, func() bool { return c.nodes[next].Status().Role == Leader }, 10*time.Second, time.Millisecond)
	require.Less(t, c.nodes[next].Status().CommitIndex, c.nodes[next].Status().LastIndex, "the new leader's first entry is not committed")

	done := make(chan error, 1)
	go func() { done <- c.nodes[next].AddLearner(ctx, 4, "") }()
	select {
	case err := <-done:
		t.Fatalf("the change returned before the leader's first commit: %v", err)
	case <-time.After(200 * time.Millisecond): // it must still be waiting
	}
	hold.Store(false)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("the change did not complete once the leader could commit")
	}
	assert.Len(t, c.nodes[next].Status().Members, 4)
}
