package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Tests of Node.Shutdown, the planned stop: a leader hands leadership over
// before it closes (dissertation §3.10), a follower just closes, a hand-off
// that cannot happen is bounded by an election timeout, Close still stops
// at once; and a rolling restart of a TCP cluster on FileStorage while a
// writer proposes, with the longest gap between writes measured
// (RAFT_ROLLING_BENCH=1, figures in docs/benchmarks.md).

// slowElection gives the in-memory tests an election timeout long enough
// that a leader found right after a stop cannot have been elected by a
// timeout: only a hand-off explains it.
func slowElection(cfg *Config) {
	cfg.ElectionTimeout = time.Second
	cfg.HeartbeatInterval = 20 * time.Millisecond
}

// otherLeader returns a running node other than old that leads, or 0.
func (c *testCluster) otherLeader(old uint64) uint64 {
	for _, id := range c.running() {
		if id != old && c.nodes[id].Status().Role == Leader {
			return id
		}
	}
	return 0
}

// handOffBound is how soon after Shutdown returns the new leader must show
// in its Status: the old leader returns once it hears from the new one,
// which may not have published its Status yet. It is far below the
// election timeout, so no election can explain a leader found in time.
const handOffBound = 100 * time.Millisecond

func TestShutdown_LeaderHandsOverBeforeClosing(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(slowElection))
	leader := c.waitLeader()
	c.propose("before")
	oldTerm := c.nodes[leader].Status().Term

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, c.nodes[leader].Shutdown(ctx))
	elapsed := time.Since(start)
	stopped := c.nodes[leader]
	c.stop(leader)

	var next uint64
	require.Eventually(t, func() bool { next = c.otherLeader(leader); return next != 0 }, handOffBound, time.Millisecond,
		"no new leader %v after Shutdown returned (it took %v): %s", handOffBound, elapsed, lazyStatuses{c})
	assert.Less(t, elapsed, time.Second, "the hand-off took less than an election timeout")
	assert.Greater(t, c.nodes[next].Status().Term, oldTerm)
	_, err := stopped.Propose(ctx, []byte("late"))
	assert.ErrorIs(t, err, ErrClosed, "the node is closed once Shutdown returns")

	// Writes go on with the two remaining voters.
	last := c.propose("after")
	for _, id := range c.running() {
		c.waitApplied(id, last)
	}
	c.checkSameHistory()
}

func TestShutdown_FollowerJustCloses(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(slowElection))
	leader := c.waitLeader()
	term := c.nodes[leader].Status().Term
	follower := c.follower(leader)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := c.nodes[follower]
	require.NoError(t, stopped.Shutdown(ctx))
	c.stop(follower)
	_, err := stopped.Propose(ctx, []byte("late"))
	assert.ErrorIs(t, err, ErrClosed)

	c.propose("after")
	s := c.nodes[leader].Status()
	assert.Equal(t, Leader, s.Role, "the leader is untouched")
	assert.Equal(t, term, s.Term)
}

func TestShutdown_UnreachableVotersBoundTheHandOff(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.HeartbeatInterval = 20 * time.Millisecond
		cfg.DisableCheckQuorum = true // the leader keeps leading while cut off
	}))
	leader := c.waitLeader()
	c.propose("before")
	c.net.Isolate(leader)

	t.Run("election timeout", func(t *testing.T) {
		start := time.Now()
		err := c.nodes[leader].Shutdown(context.Background())
		elapsed := time.Since(start)
		require.ErrorIs(t, err, ErrTransferFailed, "the hand-off cannot happen")
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not end")
		assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond, "the hand-off was given an election timeout")
		assert.Less(t, elapsed, time.Second, "Shutdown returned about an election timeout after it began")
		_, err = c.nodes[leader].Propose(context.Background(), []byte("late"))
		assert.ErrorIs(t, err, ErrClosed)
		require.NoError(t, c.nodes[leader].Shutdown(context.Background()), "Shutdown is idempotent")
		c.stop(leader)
	})

	c.net.Heal()
	c.start(leader)
	leader = c.waitLeader()
	c.propose("again")
	c.net.Isolate(leader)

	t.Run("caller's context", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.nodes[leader].Shutdown(ctx)
		elapsed := time.Since(start)
		require.ErrorIs(t, err, ErrTransferFailed)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the caller's context ended the hand-off")
		assert.Less(t, elapsed, 250*time.Millisecond, "the caller's context bounds the hand-off")
		_, err = c.nodes[leader].Propose(context.Background(), []byte("late"))
		assert.ErrorIs(t, err, ErrClosed)
		c.stop(leader)
	})
}

func TestShutdown_SingleVoterClosesWithoutError(t *testing.T) {
	c := newTestCluster(t, 1)
	leader := c.waitLeader()
	require.NoError(t, c.nodes[leader].Shutdown(context.Background()), "no other voter: nothing to hand over")
	_, err := c.nodes[leader].Propose(context.Background(), []byte("late"))
	assert.ErrorIs(t, err, ErrClosed)
	c.stop(leader)
}

func TestShutdown_CloseStopsAtOnceWithoutHandOff(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(slowElection))
	leader := c.waitLeader()
	c.propose("before")
	oldTerm := c.nodes[leader].Status().Term
	c.stop(leader)

	// The followers notice only when their election timeout (at least a
	// second) runs out: for that long, no node leads.
	// Never's condition may still run after Never returns: it must not read
	// c.nodes, which the cleanup writes.
	var followers []*Node
	for _, id := range c.running() {
		followers = append(followers, c.nodes[id])
	}
	assert.Never(t, func() bool {
		for _, n := range followers {
			if n.Status().Role == Leader {
				return true
			}
		}
		return false
	}, handOffBound, time.Millisecond, "a leader right after Close")
	for _, id := range c.running() {
		assert.Equal(t, oldTerm, c.nodes[id].Status().Term, "node %d", id)
	}
	c.propose("after")
}

// TestShutdown_RacingCallsFailCleanly: proposals, reads and stops racing
// with Shutdown get an answer a client can act on, never hang, and get
// ErrClosed once the node is closed.
func TestShutdown_RacingCallsFailCleanly(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(slowElection))
	leader := c.waitLeader()
	n := c.nodes[leader]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 1024)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	started := make(chan struct{}, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				var err error
				if i%2 == 0 {
					_, err = n.Propose(ctx, []byte(fmt.Sprint(i, "-", j)))
				} else {
					err = n.LinearizableRead(ctx)
				}
				if j == 0 {
					started <- struct{}{}
				}
				switch {
				case err == nil, errors.Is(err, ErrTransferInProgress), errors.Is(err, ErrNotLeader), errors.Is(err, ErrLeadershipLost):
				case errors.Is(err, ErrClosed):
					return
				default:
					report(fmt.Errorf("call %d-%d: %w", i, j, err))
					return
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	wg.Add(2)
	go func() { defer wg.Done(); report(n.Shutdown(ctx)) }()
	go func() { defer wg.Done(); report(n.Shutdown(ctx)) }()
	require.NoError(t, n.Shutdown(ctx))
	require.NoError(t, n.Close())
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	for _, call := range []func() error{
		func() error { _, err := n.Propose(ctx, []byte("late")); return err },
		func() error { return n.LinearizableRead(ctx) },
		func() error { return n.TransferLeadership(ctx, 0) },
		func() error { return n.AddVoter(ctx, 9, "") },
	} {
		assert.ErrorIs(t, call(), ErrClosed)
	}
	c.stop(leader)
	c.propose("after")
}

// ---- Over TCP on FileStorage: a rolling restart ----

// rollingCluster runs three Nodes over TCPTransports on loopback, each on
// a FileStorage with fsync, for restarts as a process would do them:
// stop node, transport and storage; open them again on the same directory
// and address.
type rollingCluster struct {
	t       *testing.T
	dir     string
	ids     []uint64
	members []Member
	cfg     func(id uint64) Config

	mu         sync.Mutex // guards nodes: the writer reads it
	nodes      map[uint64]*Node
	transports map[uint64]*TCPTransport
	storages   map[uint64]*FileStorage
}

func newRollingCluster(t *testing.T, tune func(*Config)) *rollingCluster {
	t.Helper()
	c := &rollingCluster{t: t, dir: t.TempDir(), nodes: map[uint64]*Node{}, transports: map[uint64]*TCPTransport{}, storages: map[uint64]*FileStorage{}}
	t.Cleanup(c.closeAll)
	addrs := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		c.ids = append(c.ids, id)
		addrs[id] = c.listen(id, "127.0.0.1:0")
		c.members = append(c.members, Member{ID: id, Addr: addrs[id]})
	}
	c.cfg = func(id uint64) Config {
		cfg := Config{ID: id, InitialMembers: c.members, Seed: int64(id),
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(fmt.Sprint(id))}
		tune(&cfg)
		return cfg
	}
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

// listen starts node id's transport on addr, retrying while a restarted
// node's port is still held.
func (c *rollingCluster) listen(id uint64, addr string) string {
	c.t.Helper()
	var tr *TCPTransport
	require.Eventually(c.t, func() bool {
		var err error
		tr, err = NewTCPTransport(TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 100 * time.Millisecond})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	c.transports[id] = tr
	return tr.Addr()
}

// start opens node id's storage and starts it (its transport listens).
func (c *rollingCluster) start(id uint64) {
	c.t.Helper()
	st, err := OpenFileStorage(filepath.Join(c.dir, fmt.Sprint(id)))
	require.NoError(c.t, err)
	c.storages[id] = st
	n, err := NewNode(c.cfg(id), discardSM{}, st, c.transports[id])
	require.NoError(c.t, err)
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
}

// node returns node id, or nil while it is down.
func (c *rollingCluster) node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// restart stops node id with stop (Shutdown or Close), with its transport
// and storage, and starts it again on the same directory and address.
func (c *rollingCluster) restart(id uint64, stop func(*Node) error) error {
	c.t.Helper()
	n := c.node(id)
	err := stop(n)
	c.mu.Lock()
	delete(c.nodes, id)
	c.mu.Unlock()
	addr := c.transports[id].Addr()
	require.NoError(c.t, c.transports[id].Close())
	require.NoError(c.t, c.storages[id].Close())
	c.listen(id, addr)
	c.start(id)
	return err
}

// leader returns the node that leads, or 0.
func (c *rollingCluster) leader() uint64 {
	for _, id := range c.ids {
		if n := c.node(id); n != nil && n.Status().Role == Leader {
			return id
		}
	}
	return 0
}

// waitCaughtUp waits until every node has applied what the leader has
// committed, so that the next restart leaves a majority that has every
// entry.
func (c *rollingCluster) waitCaughtUp() {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		leader := c.leader()
		if leader == 0 {
			return false
		}
		commit := c.node(leader).Status().CommitIndex
		for _, id := range c.ids {
			if c.node(id).Status().AppliedIndex < commit {
				return false
			}
		}
		return true
	}, 20*time.Second, time.Millisecond)
}

func (c *rollingCluster) closeAll() {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[uint64]*Node{}
	c.mu.Unlock()
	for _, n := range nodes {
		assert.NoError(c.t, n.Close())
	}
	for _, tr := range c.transports {
		assert.NoError(c.t, tr.Close())
	}
	for _, st := range c.storages {
		st.Close() // may be closed already by a restart that failed midway
	}
}

// rollingWriter proposes one command at a time, on whichever node leads,
// until stopped, and records the longest time between two successful
// writes.
type rollingWriter struct {
	c      *rollingCluster
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	writes int
	last   time.Time
	maxGap time.Duration
}

func (c *rollingCluster) startWriter() *rollingWriter {
	w := &rollingWriter{c: c, stop: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	go w.run()
	return w
}

func (w *rollingWriter) run() {
	defer close(w.done)
	var target uint64 = 1
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		n := w.c.node(target)
		var err error
		if n == nil {
			err = ErrClosed
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = n.Propose(ctx, []byte(fmt.Sprint("w", i)))
			cancel()
		}
		if err == nil {
			now := time.Now()
			w.mu.Lock()
			w.maxGap = max(w.maxGap, now.Sub(w.last))
			w.last = now
			w.writes++
			w.mu.Unlock()
			continue
		}
		// Follow the redirect if there is one, else try the next node;
		// as a client would, wait a little before retrying so as not to
		// spin while there is no leader.
		var nle *NotLeaderError
		if errors.As(err, &nle) && nle.Leader != 0 && nle.Leader != target {
			target = nle.Leader
			continue
		}
		target = target%uint64(len(w.c.ids)) + 1
		select {
		case <-w.stop:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// waitWrites waits until k more writes have succeeded, so that writes flow
// before the next restart.
func (w *rollingWriter) waitWrites(k int) {
	w.c.t.Helper()
	w.mu.Lock()
	target := w.writes + k
	w.mu.Unlock()
	require.Eventually(w.c.t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.writes >= target
	}, 20*time.Second, time.Millisecond, "the writer made no progress")
}

// finish stops the writer and returns how many writes succeeded and the
// longest gap between two of them.
func (w *rollingWriter) finish() (int, time.Duration) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.maxGap
}

// rollingRestart restarts every node in turn with stop while a writer
// proposes, and returns the longest gap between successful writes and the
// errors stop returned. After each restart it waits until the cluster has
// caught up, as an operator would check before the next node.
func rollingRestart(t *testing.T, tune func(*Config), stop func(*Node) error, afterStop func(c *rollingCluster, id uint64, wasLeader bool)) (time.Duration, []error) {
	c := newRollingCluster(t, tune)
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	w := c.startWriter()
	c.waitCaughtUp()
	var errs []error
	for _, id := range c.ids {
		w.waitWrites(20)
		wasLeader := c.node(id).Status().Role == Leader
		if err := c.restart(id, stop); err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", id, err))
		}
		if afterStop != nil {
			afterStop(c, id, wasLeader)
		}
		c.waitCaughtUp()
	}
	w.waitWrites(20)
	writes, gap := w.finish()
	require.Positive(t, writes)
	t.Logf("%d writes; longest gap %v", writes, gap)
	return gap, errs
}

func shutdownNode(n *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.Shutdown(ctx)
}

func closeNode(n *Node) error { return n.Close() }

// TestShutdown_TCPFileStorageRollingRestart restarts each node of a TCP
// cluster on FileStorage in turn with Shutdown, while a client writes:
// every stop of a leader leaves a new leader at once, and the writes go on
// without an election timeout's gap.
func TestShutdown_TCPFileStorageRollingRestart(t *testing.T) {
	const electionTimeout = time.Second
	tune := func(cfg *Config) {
		cfg.ElectionTimeout = electionTimeout
		cfg.HeartbeatInterval = 20 * time.Millisecond
	}
	leaders := 0
	gap, errs := rollingRestart(t, tune, shutdownNode, func(c *rollingCluster, id uint64, wasLeader bool) {
		if !wasLeader {
			return
		}
		leaders++
		// Node id is back as a follower; the leader it handed over to was
		// there when Shutdown returned, or a moment later.
		require.Eventually(t, func() bool { l := c.leader(); return l != 0 && l != id }, handOffBound, time.Millisecond,
			"no new leader %v after the leader's Shutdown", handOffBound)
	})
	require.Empty(t, errs)
	assert.Positive(t, leaders, "a leader was among the nodes restarted")
	assert.Less(t, gap, electionTimeout, "no election timeout without writes")
}

// TestShutdown_RollingRestartBench measures the longest gap between
// successful writes while each node of a 3-node TCP cluster on FileStorage
// (default timeouts) is restarted in turn, stopped with Shutdown and then
// with Close; docs/benchmarks.md has the figures. Run with
//
//	RAFT_ROLLING_BENCH=1 go test -run TestShutdown_RollingRestartBench -count=1 -v .
//
// (RAFT_ROLLING_RUNS sets the number of runs of each variant, 5 by default.)
func TestShutdown_RollingRestartBench(t *testing.T) {
	if os.Getenv("RAFT_ROLLING_BENCH") == "" {
		t.Skip("set RAFT_ROLLING_BENCH=1 to run")
	}
	runs := 5
	fmt.Sscan(os.Getenv("RAFT_ROLLING_RUNS"), &runs)
	// Default timeouts (a 1s election timeout, randomized in [1s, 2s), and
	// 100ms heartbeats), with the jitter drawn at random as in production.
	tune := func(cfg *Config) { cfg.Seed = 0 }
	var viaShutdown, viaClose []time.Duration
	for r := range runs {
		gap, errs := rollingRestart(t, tune, shutdownNode, nil)
		require.Empty(t, errs, "run %d", r)
		viaShutdown = append(viaShutdown, gap)
		gap, _ = rollingRestart(t, tune, closeNode, nil)
		viaClose = append(viaClose, gap)
	}
	slices.Sort(viaShutdown)
	slices.Sort(viaClose)
	medShutdown, medClose := viaShutdown[len(viaShutdown)/2], viaClose[len(viaClose)/2]
	t.Logf("longest gap between writes over a rolling restart of 3 nodes, %d runs each:", runs)
	t.Logf("  Shutdown: median %v (all %v)", medShutdown, viaShutdown)
	t.Logf("  Close:    median %v (all %v)", medClose, viaClose)
	t.Logf("  ratio Close/Shutdown: %.1f", float64(medClose)/float64(medShutdown))
	assert.Less(t, viaShutdown[len(viaShutdown)-1], time.Second, "with Shutdown, no gap of an election timeout")
}
