package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of the Node runtime: whole clusters over the in-memory network.

func TestCluster_ElectsLeaderWithinFewTimeouts(t *testing.T) {
	c := newTestCluster(t, 3)
	start := time.Now()
	leader := c.waitLeader()
	assert.NotZero(t, leader)
	// ElectionTimeout is 100ms: allow a few rounds of split votes.
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestCluster_ProposeReplicatesAndApplies(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	var last uint64
	for i := 0; i < 100; i++ {
		res, err := c.nodes[leader].Propose(context.Background(), []byte(fmt.Sprint("cmd", i)))
		require.NoError(t, err)
		idx := res.(uint64)
		require.Greater(t, idx, last, "Propose returns the Apply result of its own entry")
		last = idx
	}
	c.waitAllApplied(last)
	c.checkSameHistory()
	for _, id := range c.ids {
		ents := c.sms[id].entries()
		require.Len(t, ents, 100, "node %d applies each command once", id)
		assert.Equal(t, []byte("cmd0"), ents[0].Data)
		assert.Equal(t, []byte("cmd99"), ents[99].Data)
	}
}

func TestCluster_ConcurrentProposals(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	const workers, each = 16, 50
	var wg sync.WaitGroup
	results := make(chan uint64, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := c.nodes[leader].Propose(context.Background(), []byte(fmt.Sprint(w, "/", i)))
				if !assert.NoError(t, err) {
					return
				}
				results <- res.(uint64)
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := map[uint64]bool{}
	for idx := range results {
		assert.False(t, seen[idx], "two proposals got the result of entry %d", idx)
		seen[idx] = true
	}
	assert.Len(t, seen, workers*each)
}

func TestCluster_ProposeOnFollowerFailsFastWithHint(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	follower := c.follower(leader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.nodes[follower].Propose(ctx, []byte("x"))
	var nle *NotLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Equal(t, leader, nle.Leader)
	assert.ErrorIs(t, err, ErrNotLeader)
	assert.Less(t, time.Since(start), time.Second, "never waits for the context")
}

func TestCluster_ProposeWithoutLeaderFailsFast(t *testing.T) {
	c := newTestCluster(t, 3)
	c.waitLeader()
	c.stop(1)
	c.stop(2)
	// Node 3 alone loses its leader (CheckQuorum) or never had it.
	require.Eventually(t, func() bool { return c.nodes[3].Status().Role != Leader && c.nodes[3].Status().Leader == 0 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.nodes[3].Propose(ctx, []byte("x"))
	var nle *NotLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Less(t, time.Since(start), time.Second)
}

func TestCluster_ReelectionAfterLeaderIsolated(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.waitLeader()
	idx := c.propose("before")
	c.net.Isolate(old)
	newLeader := c.waitLeader(c.others(old)...)
	require.NotEqual(t, old, newLeader)
	// The isolated old leader steps down on its own (CheckQuorum).
	require.Eventually(t, func() bool { return c.nodes[old].Status().Role != Leader }, 5*time.Second, time.Millisecond)
	res, err := c.nodes[newLeader].Propose(context.Background(), []byte("after"))
	require.NoError(t, err)
	idx2 := res.(uint64)
	c.net.Heal()
	leader := c.waitLeader()
	assert.Equal(t, newLeader, leader, "the rejoining node does not disrupt the new leader")
	c.waitApplied(old, idx2)
	assert.Greater(t, idx2, idx)
	c.checkSameHistory()
}

func TestCluster_OldLeaderStepsDownWhenItRejoins(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		cfg.DisableCheckQuorum = true // so that only the higher term can depose it
	}))
	old := c.waitLeader()
	c.net.Isolate(old)
	others := c.others(old)
	c.waitLeader(others...)
	assert.Equal(t, Leader, c.nodes[old].Status().Role, "without CheckQuorum the isolated leader still thinks it leads")
	c.net.Heal()
	require.Eventually(t, func() bool { return c.nodes[old].Status().Role == Follower }, 5*time.Second, time.Millisecond)
	c.waitLeader()
}

func TestCluster_MinorityCannotCommitMajorityCan(t *testing.T) {
	c := newTestCluster(t, 5)
	leader := c.waitLeader()
	rest := c.others(leader)
	minority, majority := []uint64{leader, rest[0]}, rest[1:]
	c.net.Partition(minority, majority)
	p, err := c.nodes[leader].ProposeAsync([]byte("lost"))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err = p.Wait(ctx)
		cancel()
		assert.Error(t, err, "a minority must not commit")
	}
	newLeader := c.waitLeader(majority...)
	res, err := c.nodes[newLeader].Propose(context.Background(), []byte("won"))
	require.NoError(t, err)
	c.net.Heal()
	for _, id := range c.ids {
		c.waitApplied(id, res.(uint64))
	}
	c.checkSameHistory()
	for _, e := range c.sms[leader].entries() {
		assert.NotEqual(t, "lost", string(e.Data), "the minority's entry was never applied")
	}
}

func TestCluster_FollowerCatchesUpAfterMissingManyEntries(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	lagging := c.follower(leader)
	c.stop(lagging)
	var last uint64
	for i := 0; i < 2000; i++ {
		p, err := c.nodes[leader].ProposeAsync([]byte(fmt.Sprint(i)))
		require.NoError(t, err)
		last = p.Index
		if i%200 == 199 {
			_, err := p.Wait(context.Background())
			require.NoError(t, err)
		}
	}
	c.start(lagging)
	c.waitApplied(lagging, last)
	c.checkSameHistory()
	assert.Len(t, c.sms[lagging].entries(), 2000)
}

func TestCluster_DivergentLogsRepaired(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.waitLeader()
	c.propose("base")
	c.net.Isolate(old)
	// The isolated leader appends entries no one else will ever have.
	var orphans []*Proposal
	for i := 0; i < 10; i++ {
		p, err := c.nodes[old].ProposeAsync([]byte("orphan"))
		if err != nil {
			break
		}
		orphans = append(orphans, p)
	}
	require.NotEmpty(t, orphans)
	newLeader := c.waitLeader(c.others(old)...)
	var last uint64
	for i := 0; i < 20; i++ {
		res, err := c.nodes[newLeader].Propose(context.Background(), []byte("kept"))
		require.NoError(t, err)
		last = res.(uint64)
	}
	c.net.Heal()
	c.waitApplied(old, last)
	for _, p := range orphans {
		_, err := p.Wait(context.Background())
		assert.ErrorIs(t, err, ErrLeadershipLost)
	}
	c.checkSameHistory()
	for _, e := range c.sms[old].entries() {
		assert.NotEqual(t, "orphan", string(e.Data))
	}
	// The old leader's log now matches the new leader's.
	newLog := allEntries(t, c.storages[newLeader])
	assert.Equal(t, newLog, allEntries(t, c.storages[old])[:len(newLog)])
}

func TestCluster_RestartRecoversFromMemoryStorage(t *testing.T) {
	c := newTestCluster(t, 3)
	var last uint64
	for i := 0; i < 50; i++ {
		last = c.propose(fmt.Sprint(i))
	}
	c.waitAllApplied(last)
	before := c.nodes[1].Status()
	c.stop(1)
	hs, err := c.storages[1].InitialState()
	require.NoError(t, err)
	assert.Equal(t, before.Term, hs.Term, "the term is durable")
	c.start(1)
	s := c.nodes[1].Status()
	assert.Equal(t, before.Term, s.Term)
	assert.GreaterOrEqual(t, s.LastIndex, last, "the log is recovered")
	c.waitApplied(1, last)
	assert.Len(t, c.sms[1].entries(), 50, "a restarted node re-applies its committed log")
	last = c.propose("after restart")
	c.waitApplied(1, last)
	c.checkSameHistory()
}

func TestCluster_WipedVoterWithholdsVoteUntilCaughtUp(t *testing.T) {
	// A follower's disk is wiped while the leader is down: restarted from
	// InitialMembers, it must not help the remaining voter, whose log has
	// history, to a leader (it may have voted in that voter's term before);
	// once the old leader is back, a leader is elected and replicates the
	// whole log to the wiped node again.
	c := newTestCluster(t, 3)
	var last uint64
	for i := 0; i < 20; i++ {
		last = c.propose(fmt.Sprint(i))
	}
	c.waitAllApplied(last)
	leader := c.waitLeader()
	wiped := c.follower(leader)
	other := c.others(leader)[0]
	if other == wiped {
		other = c.others(leader)[1]
	}
	c.stop(leader)
	c.stop(wiped)
	c.storages[wiped] = NewMemoryStorage()
	c.start(wiped)
	// Never's condition may still run after Never returns: it must not read
	// c.nodes, which c.start writes below.
	otherNode, wipedNode := c.nodes[other], c.nodes[wiped]
	require.Never(t, func() bool {
		return otherNode.Status().Role == Leader || wipedNode.Status().Role == Leader
	}, 10*c.cfg(other).ElectionTimeout, 5*time.Millisecond, "a leader elected with the vote of a wiped node: %s", lazyStatuses{c})

	c.start(leader)
	c.waitLeader()
	c.waitApplied(wiped, last)
	last = c.propose("after the wipe")
	c.waitApplied(wiped, last)
	c.checkSameHistory()
}

func TestCluster_RestartWholeCluster(t *testing.T) {
	c := newTestCluster(t, 3)
	var last uint64
	for i := 0; i < 20; i++ {
		last = c.propose(fmt.Sprint(i))
	}
	for _, id := range c.ids {
		c.stop(id)
	}
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitLeader()
	c.waitAllApplied(last)
	c.checkSameHistory()
}

func TestCluster_LinearizableReadOnLeaderAndFollowers(t *testing.T) {
	c := newTestCluster(t, 3)
	c.waitLeader()
	for i := 0; i < 10; i++ {
		last := c.propose(fmt.Sprint(i))
		for _, id := range c.ids {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			require.NoError(t, c.nodes[id].LinearizableRead(ctx))
			cancel()
			assert.GreaterOrEqual(t, c.nodes[id].Status().AppliedIndex, last, "node %d: a read after a write sees it", id)
		}
	}
}

func TestCluster_LinearizableReadFailsInMinority(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	c.net.Isolate(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.nodes[leader].LinearizableRead(ctx)
	assert.Error(t, err, "an isolated leader cannot confirm its leadership")
}

func TestCluster_CloseIsIdempotentAndFailsCalls(t *testing.T) {
	c := newTestCluster(t, 1)
	leader := c.waitLeader()
	n := c.nodes[leader]
	require.NoError(t, n.Close())
	require.NoError(t, n.Close())
	delete(c.nodes, leader)
	_, err := n.Propose(context.Background(), []byte("x"))
	assert.ErrorIs(t, err, ErrClosed)
	_, err = n.ProposeAsync([]byte("x"))
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, n.LinearizableRead(context.Background()), ErrClosed)
}

func TestCluster_ProposeHonoursContext(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	for _, id := range c.others(leader) {
		c.net.Isolate(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.nodes[leader].Propose(ctx, []byte("x"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrLeadershipLost), "got %v", err)
}

func TestCluster_BackPressure(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		cfg.MaxUncommittedEntries = 10
		cfg.DisableCheckQuorum = true
	}))
	leader := c.waitLeader()
	for _, id := range c.others(leader) {
		c.net.Isolate(id)
	}
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.nodes[leader].ProposeAsync([]byte("x"))
	}
	assert.ErrorIs(t, err, ErrBusy)
}

func TestCluster_StorageFailureStopsNode(t *testing.T) {
	c := newTestCluster(t, 1)
	leader := c.waitLeader()
	diskErr := errors.New("disk on fire")
	c.storages[leader].FailSaves(diskErr)
	_, err := c.nodes[leader].Propose(context.Background(), []byte("x"))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrStopped)
	assert.ErrorIs(t, err, diskErr)
	assert.ErrorIs(t, c.nodes[leader].Status().Err, diskErr)
	_, err = c.nodes[leader].Propose(context.Background(), []byte("y"))
	assert.ErrorIs(t, err, ErrStopped)
}

func TestCluster_NoTwoLeadersPerTermUnderFaults(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d (replay: RAFT_SEED=%d)", seed, seed)
	if s := envSeed(); s != 0 {
		seed = s
	}
	rng := rand.New(rand.NewSource(seed))
	for run := 0; run < 3; run++ {
		c := newTestCluster(t, 5, withNetwork(WithSeed(rng.Int63())))
		c.net.SetFaults(Faults{Drop: 0.1, Duplicate: 0.05, MaxDelay: 5 * time.Millisecond})
		leaders := map[uint64]uint64{} // term -> leader
		deadline := time.Now().Add(1 * time.Second)
		for time.Now().Before(deadline) {
			if rng.Intn(20) == 0 {
				c.net.Heal()
				c.net.Isolate(c.ids[rng.Intn(len(c.ids))])
			}
			for _, id := range c.ids {
				s := c.nodes[id].Status()
				if s.Role == Leader {
					if prev, ok := leaders[s.Term]; ok {
						require.Equal(t, prev, id, "seed %d: two leaders in term %d", seed, s.Term)
					}
					leaders[s.Term] = id
				}
			}
			time.Sleep(time.Millisecond) // sampling interval, not a wait for a condition
		}
		c.net.Heal()
		c.net.SetFaults(Faults{})
		c.waitLeader()
		c.propose("healed")
		c.checkSameHistory()
		c.close()
	}
}

func TestRuntime_PersistsBeforeResponding(t *testing.T) {
	// A follower must make a vote durable before the vote leaves (Raft
	// Figure 2). gomock checks the order of Save and Send.
	ctrl := gomock.NewController(t)
	storage := NewMockStorage(ctrl)
	transport := NewMockTransport(ctrl)
	founding := configEntry(1, 1, 1, 2, 3)
	expectRecovery(storage, founding)
	var deliver func(Message)
	transport.EXPECT().Attach(uint64(1), gomock.Any()).DoAndReturn(func(_ uint64, d func(Message)) error { deliver = d; return nil })
	transport.EXPECT().SetPeers(gomock.Any()).AnyTimes()
	transport.EXPECT().Detach()

	sent := make(chan Message, 10)
	save := storage.EXPECT().Save(HardState{Term: 2, Vote: 2, Commit: 1}, gomock.Len(0)).Return(nil)
	transport.EXPECT().Send(gomock.Any()).After(save).Do(func(msgs []Message) {
		for _, m := range msgs {
			sent <- m
		}
	})

	cfg := Config{ID: 1, ElectionTimeout: time.Hour, Seed: 1}
	n, err := NewNode(cfg, &recordingSM{}, storage, transport)
	require.NoError(t, err)
	defer n.Close()
	deliver(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Context: uint64(campaignElection)})
	select {
	case m := <-sent:
		assert.Equal(t, MsgVoteResp, m.Type)
		assert.False(t, m.Reject)
	case <-time.After(5 * time.Second):
		t.Fatal("no vote response")
	}
}

func TestRuntime_LeaderSendsBeforeItsOwnWrite(t *testing.T) {
	// The leader's appends leave before its own Save (dissertation §10.2.1),
	// so followers write in parallel with it.
	ctrl := gomock.NewController(t)
	storage := NewMockStorage(ctrl)
	transport := NewMockTransport(ctrl)
	founding := configEntry(1, 1, 1, 2)
	expectRecovery(storage, founding)
	var deliver func(Message)
	transport.EXPECT().Attach(uint64(1), gomock.Any()).DoAndReturn(func(_ uint64, d func(Message)) error { deliver = d; return nil })
	transport.EXPECT().SetPeers(gomock.Any()).AnyTimes()
	transport.EXPECT().Detach()

	var mu sync.Mutex
	var events []string
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	storage.EXPECT().Save(gomock.Any(), gomock.Any()).AnyTimes().DoAndReturn(func(hs HardState, ents []Entry) error {
		if len(ents) > 0 && ents[0].Type == EntryNoop {
			record("save-noop")
		}
		return nil
	})
	transport.EXPECT().Send(gomock.Any()).AnyTimes().Do(func(msgs []Message) {
		for _, m := range msgs {
			if m.Type == MsgAppend && len(m.Entries) > 0 && m.Entries[0].Type == EntryNoop {
				record("send-noop")
			}
			if m.Type == MsgVote {
				// Grant it at once.
				go deliver(Message{Type: MsgVoteResp, From: 2, To: 1, Term: m.Term})
			}
		}
	})
	cfg := Config{ID: 1, ElectionTimeout: 20 * time.Millisecond, Seed: 1, DisablePreVote: true}
	n, err := NewNode(cfg, &recordingSM{}, storage, transport)
	require.NoError(t, err)
	defer n.Close()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= 2
	}, 5*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"send-noop", "save-noop"}, events[:2])
}

func TestCluster_FileStorageRestartAllAtOnce(t *testing.T) {
	// Each node (re)opens the FileStorage in its directory as it starts.
	dirs := map[uint64]string{1: t.TempDir(), 2: t.TempDir(), 3: t.TempDir()}
	fileStores := map[uint64]*FileStorage{}
	c := newTestCluster(t, 3, withStorages(func(id uint64) Storage {
		s, err := OpenFileStorage(dirs[id])
		require.NoError(t, err)
		fileStores[id] = s
		return s
	}))
	defer func() {
		for _, id := range c.ids {
			if n := c.nodes[id]; n != nil {
				c.stop(id)
			}
			fileStores[id].Close()
		}
	}()
	var last uint64
	for i := 0; i < 100; i++ {
		last = c.propose(fmt.Sprint("durable ", i))
	}
	// Stop every node and close every store: only the disk remains.
	for _, id := range c.ids {
		c.stop(id)
		require.NoError(t, fileStores[id].Close())
	}
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitLeader()
	for _, id := range c.ids {
		c.waitApplied(id, last)
		ents := c.sms[id].entries()
		require.Len(t, ents, 100, "node %d re-applied every committed command", id)
		assert.Equal(t, "durable 99", string(ents[99].Data))
	}
	c.checkSameHistory()
}

// expectRecovery sets up a mock Storage holding one entry and no snapshot.
func expectRecovery(storage *MockStorage, founding Entry) {
	storage.EXPECT().InitialState().Return(HardState{Term: 1, Commit: 1}, nil)
	storage.EXPECT().Snapshot().Return(SnapshotMeta{}, nil, ErrNoSnapshot)
	storage.EXPECT().FirstIndex().Return(uint64(1), nil)
	storage.EXPECT().LastIndex().Return(uint64(1), nil)
	storage.EXPECT().Term(uint64(0)).Return(uint64(0), nil)
	storage.EXPECT().Entries(uint64(1), uint64(2)).Return([]Entry{founding}, nil)
}

// blockingSM blocks every Apply until release is closed.
type blockingSM struct {
	recordingSM
	release chan struct{}
}

func (s *blockingSM) Apply(e Entry) any {
	<-s.release
	return s.recordingSM.Apply(e)
}

func (s *blockingSM) Snapshot() (Snapshot, error) { return nil, errors.New("no") }
func (s *blockingSM) Restore(io.Reader) error     { return errors.New("no") }

// A leader whose state machine is stuck in Apply keeps running: proposals
// meet back-pressure, a Propose honours its context, and leadership holds,
// since the event loop still sends heartbeats.
func TestCluster_SlowApplyDoesNotStallTheNode(t *testing.T) {
	// Node 1's Apply blocks until the test ends.
	sm := &blockingSM{release: make(chan struct{})}
	defer close(sm.release)
	c := newTestCluster(t, 3,
		withConfig(func(cfg *Config) { cfg.MaxUncommittedEntries = 50 }),
		withStateMachines(func(id uint64) StateMachine {
			if id == 1 {
				return sm
			}
			return &recordingSM{}
		}))
	n := c.nodes[1]
	// Make node 1 the leader.
	if leader := c.waitLeader(); leader != 1 {
		require.NoError(t, c.nodes[leader].TransferLeadership(context.Background(), 1))
	}
	require.Equal(t, uint64(1), c.waitLeader())
	term := n.Status().Term

	// Apply is stuck: proposals pile up until back-pressure, and a Propose
	// honours its context.
	var busy error
	for i := 0; i < 200 && busy == nil; i++ {
		_, busy = n.ProposeAsync([]byte(fmt.Sprint(i)))
	}
	assert.ErrorIs(t, busy, ErrBusy)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err := n.Propose(ctx, []byte("late"))
	cancel()
	assert.Error(t, err)
	assert.Less(t, time.Since(start), time.Second)
	// The event loop still runs: leadership holds over several election
	// timeouts, since heartbeats keep flowing.
	deadline := time.Now().Add(5 * c.cfg(1).ElectionTimeout)
	for time.Now().Before(deadline) {
		s := n.Status()
		require.Equal(t, Leader, s.Role)
		require.Equal(t, term, s.Term)
		time.Sleep(10 * time.Millisecond) // sampling interval, not a wait for a condition
	}
}

// gateSM is a state machine whose Apply waits until gate is closed.
type gateSM struct{ gate chan struct{} }

func (s gateSM) Apply(Entry) any           { <-s.gate; return nil }
func (gateSM) Snapshot() (Snapshot, error) { return emptySnapshot{}, nil }
func (gateSM) Restore(io.Reader) error     { return nil }

// A leader whose state machine falls behind refuses proposals with ErrBusy
// once the commands waiting to be applied hold MaxUncommittedBytes, even
// though every one of them committed at once: without that bound, large
// commands would pile up in memory up to MaxUncommittedEntries of them
// (4 GiB of 64 KiB commands with the defaults).
func TestNode_SlowStateMachineBoundsUnappliedBytes(t *testing.T) {
	const (
		cmdSize = 64 << 10
		limit   = 1 << 20
	)
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	c := newTestCluster(t, 3,
		withStateMachines(func(uint64) StateMachine { return gateSM{gate} }),
		withConfig(func(cfg *Config) { cfg.MaxUncommittedBytes = limit }))
	t.Cleanup(release) // before the cluster closes: Close waits for Apply
	leader := c.nodes[c.waitLeader()]
	cmd := make([]byte, cmdSize)
	accepted := 0
	var busy error
	for range 4 * limit / cmdSize {
		p, err := leader.ProposeAsync(cmd)
		if err != nil {
			busy = err
			break
		}
		accepted++
		// Committed before the next: only the unapplied bound can refuse.
		require.Eventually(t, func() bool { return leader.Status().CommitIndex >= p.Index }, 10*time.Second, time.Millisecond)
	}
	require.ErrorIs(t, busy, ErrBusy, "accepted %d commands of %d bytes with none applied", accepted, cmdSize)
	assert.ErrorContains(t, busy, "wait to be applied")
	assert.Equal(t, limit/cmdSize, accepted, "what the bound lets through")

	release()
	require.Eventually(t, func() bool {
		_, err := leader.ProposeAsync(cmd)
		return err == nil
	}, 10*time.Second, time.Millisecond, "proposals are taken again once the state machine catches up")
}
