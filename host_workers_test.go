package raft

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Tests of a Host's pool of workers (host_workers.go): the groups' event
// loops run on HostConfig.Workers goroutines, whatever the number of
// groups.

// withWorkers makes every host of c run workers workers.
func withWorkers(c *hostCluster, workers int) {
	c.tuneHost = func(_ uint64, cfg *HostConfig) { cfg.Workers = workers }
}

// newWorkersCluster starts three in-memory hosts with workers workers
// each, and checks for leaked goroutines once they are closed.
func newWorkersCluster(t *testing.T, workers int) *hostCluster {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the hosts are closed
	c := newHostCluster(t, 0, false)
	withWorkers(c, workers)
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	return c
}

// One worker per host runs many groups: every group elects a leader,
// commits in every replica, and serves linearizable reads on each of them.
func TestHostWorkers_OneWorkerRunsManyGroups(t *testing.T) {
	c := newWorkersCluster(t, 1)
	groups := groupIDs(30)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	var wg sync.WaitGroup
	last := make([]uint64, len(groups)+1)
	for _, g := range groups {
		wg.Go(func() {
			for i := range 3 {
				last[g] = c.propose(g, fmt.Sprintf("g%d/%d", g, i))
			}
		})
	}
	wg.Wait()
	for _, g := range groups {
		c.waitApplied(g, last[g])
		for h, n := range c.replicas(g) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			require.NoError(t, n.LinearizableRead(ctx), "group %d, host %d", g, h)
			cancel()
			assert.GreaterOrEqual(t, n.Status().AppliedIndex, last[g])
		}
	}
	c.checkSameHistory(groups)
	for id, h := range c.hosts {
		assert.Equal(t, 1, h.cfg.Workers, "host %d", id)
	}
}

// The number of goroutines does not grow with the number of groups: an
// idle group replica has none of its own (its event loop runs on the
// workers; its applier and its storage writer run only while they have
// work).
func TestHostWorkers_GoroutinesDoNotGrowWithGroups(t *testing.T) {
	c := newWorkersCluster(t, 2)
	few := groupIDs(5)
	for _, g := range few {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(few)
	for _, g := range few {
		c.propose(g, fmt.Sprintf("g%d/x", g))
	}
	base := runtime.NumGoroutine()
	many := groupIDs(50)
	for _, g := range many[len(few):] {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(many)
	for _, g := range many {
		c.propose(g, fmt.Sprintf("g%d/y", g)) // every replica writes and applies
	}
	// 45 more groups, 135 more replicas: a goroutine or more each before
	// the pool; a few at a time now, while a write or an apply is under way.
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+5 }, 10*time.Second, 5*time.Millisecond,
		"goroutines: %d with 5 groups, %d with 50", base, runtime.NumGoroutine())
}

// blockPass runs a call on n's event loop that holds its worker until
// release is closed; it returns once the call runs.
func blockPass(t *testing.T, n *Node, release <-chan struct{}) {
	t.Helper()
	entered := make(chan struct{})
	go func() {
		_ = n.call(context.Background(), func() {
			close(entered)
			<-release
		})
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not run on the event loop")
	}
}

// StopGroup while a worker runs a pass of the group waits for the pass,
// then stops the group (and only it) cleanly.
func TestHostWorkers_StopGroupDuringAPass(t *testing.T) {
	c := newWorkersCluster(t, 2)
	groups := groupIDs(4)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	n := c.node(1, 1)
	release := make(chan struct{})
	blockPass(t, n, release)
	stopped := make(chan error, 1)
	go func() { stopped <- c.hosts[1].StopGroup(1) }()
	// Close has asked for the loop's exit while the pass runs: the group is
	// to run again once the pass ends.
	require.Eventually(t, func() bool { return n.task.state.Load() == loopAgain }, 10*time.Second, time.Millisecond)
	select {
	case err := <-stopped:
		t.Fatalf("StopGroup returned (%v) while a pass of the group ran", err)
	default:
	}
	close(release)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("StopGroup hangs")
	}
	assert.Equal(t, loopStopped, n.task.state.Load())
	assert.ErrorIs(t, n.Status().Err, ErrClosed)
	_, ok := c.hosts[1].Group(1)
	assert.False(t, ok)
	for _, g := range groups[1:] {
		c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/after", g)))
	}
}

// Host.Close with groups queued behind a pass that holds the only worker:
// once the pass ends, every group stops, the calls waiting on them fail
// with ErrClosed, and nothing hangs or leaks.
func TestHostWorkers_CloseWithWorkQueued(t *testing.T) {
	c := newWorkersCluster(t, 1)
	groups := groupIDs(10)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	h := c.hosts[1]
	release := make(chan struct{})
	blockPass(t, c.node(1, 1), release)
	// Work for the other groups queues behind the blocked worker: reads,
	// and the host clock's ticks.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for _, g := range groups[1:] {
		n := c.node(g, 1)
		wg.Go(func() {
			if err := n.LinearizableRead(context.Background()); errors.Is(err, ErrClosed) {
				failed.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool {
		h.workers.mu.Lock()
		defer h.workers.mu.Unlock()
		return len(h.workers.queue)-h.workers.head >= len(groups)-1
	}, 10*time.Second, time.Millisecond, "the other groups are queued")
	closed := make(chan struct{})
	go func() {
		assert.NoError(t, h.Close())
		close(closed)
	}()
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.closed
	}, 10*time.Second, time.Millisecond)
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Host.Close hangs")
	}
	wg.Wait() // every read returned
	for _, g := range groups {
		n, ok := h.Group(g)
		assert.False(t, ok, "group %d", g)
		assert.Nil(t, n)
	}
	t.Logf("%d of %d reads failed with ErrClosed (the others completed before)", failed.Load(), len(groups)-1)
	delete(c.hosts, 1)
}

// failingSaves is a storage whose Saves fail once fail is set.
type failingSaves struct {
	asyncMemStorage
	fail *atomic.Bool
}

var errDiskGone = errors.New("disk gone")

func (s failingSaves) Save(hs HardState, entries []Entry) error {
	if s.fail.Load() {
		return errDiskGone
	}
	return s.asyncMemStorage.Save(hs, entries)
}

// A fatal error in one group stops that group's replica only: the other
// groups on the same workers go on.
func TestHostWorkers_FatalErrorStopsOneGroupOnly(t *testing.T) {
	c := newWorkersCluster(t, 1)
	var fail atomic.Bool
	c.newStorage = func(k groupKey) Storage {
		if c.storages[k] == nil {
			c.storages[k] = NewMemoryStorage()
		}
		if k == (groupKey{3, 1}) {
			return failingSaves{asyncMemStorage{c.storages[k]}, &fail}
		}
		return asyncMemStorage{c.storages[k]}
	}
	groups := groupIDs(6)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	broken := c.node(3, 1)
	fail.Store(true)
	// An entry that host 1's replica writes, as leader or follower.
	leader := c.waitLeaders([]uint64{3})[3]
	_, err := c.node(3, leader).ProposeAsync([]byte("g3/x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return broken.Status().Err != nil }, 10*time.Second, time.Millisecond)
	assert.ErrorIs(t, broken.Status().Err, errDiskGone)
	_, err = broken.ProposeAsync([]byte("g3/y"))
	assert.ErrorIs(t, err, ErrStopped)
	assert.Equal(t, loopStopped, broken.task.state.Load())
	for _, g := range groups {
		if g != 3 {
			c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/after", g)))
		}
	}
	// The stopped replica stays on the host until it is closed; then the
	// two replicas left go on.
	require.NoError(t, c.hosts[1].StopGroup(3))
	c.waitApplied(3, c.propose(3, "g3/after"))
}

// The run queue holds a group once, and a group that gets work while a
// worker runs it runs again after (no lost wake-up), never on two workers
// at once.
func TestHostWorkers_NoLostWakeUpsAndOnePassAtATime(t *testing.T) {
	defer goleak.VerifyNone(t)
	// The pool's queue, driven by workers that run a stand-in for a
	// Node's pass (loopTask.run needs a Node) between the same state
	// changes as loopTask.run.
	pool := &workerPool{}
	pool.ready.L = &pool.mu
	const tasks, wakes = 8, 2000
	type counter struct {
		running, overlaps atomic.Int32
		seen, passes      atomic.Int64
		sent              atomic.Int64
	}
	counters := make([]*counter, tasks)
	ts := make([]*loopTask, tasks)
	for i := range ts {
		counters[i] = &counter{}
		ts[i] = &loopTask{pool: pool}
		ts[i].state.Store(loopIdle)
	}
	// A stand-in for Node.pass: it takes what was sent so far.
	runPass := func(i int) {
		cnt := counters[i]
		if cnt.running.Add(1) > 1 {
			cnt.overlaps.Add(1)
		}
		ts[i].notified.Swap(false)
		cnt.seen.Store(cnt.sent.Load())
		cnt.passes.Add(1)
		cnt.running.Add(-1)
	}
	index := map[*loopTask]int{}
	for i, tk := range ts {
		index[tk] = i
	}
	var workers sync.WaitGroup
	for range 4 {
		workers.Go(func() {
			for tk := pool.next(); tk != nil; tk = pool.next() {
				tk.state.Store(loopRunning)
				runPass(index[tk])
				tk.passDone()
			}
		})
	}
	var senders sync.WaitGroup
	for i := range ts {
		for range 2 {
			senders.Go(func() {
				for range wakes {
					counters[i].sent.Add(1)
					ts[i].notified.Store(true)
					ts[i].schedule()
				}
			})
		}
	}
	senders.Wait()
	for i := range ts {
		require.Eventually(t, func() bool { return counters[i].seen.Load() == 2*wakes }, 10*time.Second, time.Millisecond,
			"task %d: a pass after the last wake-up sees it", i)
		assert.Zero(t, counters[i].overlaps.Load(), "task %d ran on two workers at once", i)
	}
	pool.mu.Lock()
	pool.closed = true
	pool.mu.Unlock()
	pool.ready.Broadcast()
	workers.Wait()
	for i := range ts {
		assert.Equal(t, loopIdle, ts[i].state.Load(), "task %d is idle once its work is done", i)
		t.Logf("task %d: %d wake-ups, %d passes", i, 2*wakes, counters[i].passes.Load())
	}
}

// HostConfig.Workers is validated; 0 is runtime.GOMAXPROCS(0).
func TestHostWorkers_Config(t *testing.T) {
	net := NewInmemNetwork()
	defer net.Close()
	_, err := NewHost(HostConfig{ID: 1, Network: net, Workers: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "HostConfig.Workers")
	h, err := NewHost(HostConfig{ID: 1, Network: net})
	require.NoError(t, err)
	assert.Equal(t, runtime.GOMAXPROCS(0), h.cfg.Workers)
	require.NoError(t, h.Close())
}

// Node.Snapshot on an idle group, whose apply goroutine has exited, starts
// one: the snapshot is taken, written and the log compacted behind it
// (through the storage writer, started on demand too), and the goroutines
// exit again.
func TestHostWorkers_SnapshotOnAnIdleGroup(t *testing.T) {
	c := newWorkersCluster(t, 1)
	c.newSM = func(groupKey) StateMachine { return &listSM{} }
	c.tune = func(_ uint64, cfg *Config) { cfg.TrailingEntries = NoTrailingEntries }
	groups := groupIDs(3)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	var last uint64
	for i := range 5 {
		last = c.propose(2, fmt.Sprintf("g2/%d", i))
	}
	c.waitApplied(2, last)
	n := c.node(2, 1)
	idle := func() bool {
		n.applyMu.Lock()
		defer n.applyMu.Unlock()
		n.writer.mu.Lock()
		defer n.writer.mu.Unlock()
		return !n.applyRunning && !n.writer.running
	}
	require.Eventually(t, idle, 10*time.Second, time.Millisecond, "the group's applier and writer exit once idle")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, n.Snapshot(ctx))
	assert.GreaterOrEqual(t, n.Status().SnapshotIndex, last)
	first, err := c.storages[groupKey{2, 1}].FirstIndex()
	require.NoError(t, err)
	assert.Greater(t, first, uint64(1), "the log was compacted behind the snapshot")
	require.Eventually(t, idle, 10*time.Second, time.Millisecond, "and they exit again")
	c.waitApplied(2, c.propose(2, "g2/after"))
}

// A resting group is off the host's clock, so nothing else wakes it: its
// Close has a worker run the loop's exit. StopGroup and Host.Close of
// resting groups return.
func TestHostWorkers_CloseRestingGroups(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	c := newHostCluster(t, 0, false)
	c.tuneHost = func(_ uint64, cfg *HostConfig) { cfg.Workers, cfg.QuiesceAfter = 1, testQuiesceAfter }
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	groups := groupIDs(5)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	// A group of one replica: resting, it gets no message at all (no
	// liveness pings either), so only its Close can wake it.
	c.foundGroup(100, 1)
	c.waitLeaders(append(groups, 100))
	require.Eventually(t, func() bool {
		for id, h := range c.hosts {
			want := len(groups)
			if id == 1 {
				want++
			}
			if h.Stats().Quiesced != want {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "every group rests")
	alone := c.node(100, 1)
	within := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			require.NoError(t, err, what)
		case <-time.After(10 * time.Second):
			clear(c.hosts) // their Close would hang too: leave them (goleak reports them)
			t.Fatalf("%s hangs", what)
		}
	}
	within("Close of a resting group that hears from nobody", alone.Close)
	assert.ErrorIs(t, alone.Status().Err, ErrClosed)
	n := c.node(1, 1)
	within("StopGroup of a resting group", func() error { return c.hosts[1].StopGroup(1) })
	assert.ErrorIs(t, n.Status().Err, ErrClosed)
	h := c.hosts[2]
	delete(c.hosts, 2)
	within("Host.Close with resting groups", h.Close)
}
