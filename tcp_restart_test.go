package raft

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Restart-to-serving over TCP: a follower's process goes away (node,
// transport and storage closed) and comes back on the same directory and
// address; how long until it serves linearizable reads again? The transport
// runs with its default dial backoff (up to 2 s), as in production.

// restartCluster is a cluster of Nodes over TCPTransport and FileStorage.
type restartCluster struct {
	t        testing.TB
	ids      []uint64
	members  []Member
	dirs     map[uint64]string
	nodes    map[uint64]*Node
	trs      map[uint64]*TCPTransport
	stores   map[uint64]*FileStorage
	logger   func(name string) *zap.Logger
	fileOpts []FileOption
}

func newRestartCluster(t testing.TB, n int, quiet bool, fileOpts ...FileOption) *restartCluster {
	t.Helper()
	c := &restartCluster{t: t, dirs: map[uint64]string{}, nodes: map[uint64]*Node{}, trs: map[uint64]*TCPTransport{},
		stores: map[uint64]*FileStorage{}, fileOpts: fileOpts}
	c.logger = func(name string) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name) }
	if quiet {
		c.logger = func(string) *zap.Logger { return zap.NewNop() }
	}
	t.Cleanup(c.closeAll)
	root := t.TempDir()
	for i := 1; i <= n; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.dirs[id] = filepath.Join(root, fmt.Sprint(id))
		c.listen(id, "127.0.0.1:0")
		c.members = append(c.members, Member{ID: id, Addr: c.trs[id].Addr()})
	}
	for _, id := range c.ids {
		c.startNode(id)
	}
	return c
}

// listen starts node id's transport with the default dial backoff. Binding
// the address of a process that just exited is retried.
func (c *restartCluster) listen(id uint64, addr string) {
	c.t.Helper()
	cfg := TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, Logger: c.logger(fmt.Sprint("tcp", id))}
	var tr *TCPTransport
	require.Eventually(c.t, func() bool {
		var err error
		tr, err = NewTCPTransport(cfg)
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "cannot listen on %s", addr)
	c.trs[id] = tr
}

func (c *restartCluster) startNode(id uint64) {
	c.t.Helper()
	st, err := OpenFileStorage(c.dirs[id], c.fileOpts...)
	require.NoError(c.t, err)
	c.stores[id] = st
	cfg := Config{ID: id, InitialMembers: c.members, ElectionTimeout: 100 * time.Millisecond,
		HeartbeatInterval: 10 * time.Millisecond, Seed: int64(id) + time.Now().UnixNano(), Logger: c.logger(fmt.Sprint(id))}
	n, err := NewNode(cfg, &recordingSM{}, st, c.trs[id])
	require.NoError(c.t, err)
	c.nodes[id] = n
}

// stop closes node id's node, transport and storage, as a process exiting.
func (c *restartCluster) stop(id uint64) {
	c.t.Helper()
	require.NoError(c.t, c.nodes[id].Close())
	require.NoError(c.t, c.trs[id].Close())
	require.NoError(c.t, c.stores[id].Close())
	delete(c.nodes, id)
	delete(c.trs, id)
	delete(c.stores, id)
}

func (c *restartCluster) closeAll() {
	for _, id := range c.ids {
		if c.nodes[id] != nil {
			c.stop(id)
		}
	}
}

// leader waits for a node that leads and returns it.
func (c *restartCluster) leader() uint64 {
	c.t.Helper()
	var leader uint64
	require.Eventually(c.t, func() bool {
		for id, n := range c.nodes {
			if n.Status().Role == Leader {
				leader = id
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond, "no leader")
	return leader
}

// write commits one command through the leader and returns its index.
func (c *restartCluster) write(data string) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := c.nodes[c.leader()].Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return res.(uint64)
		}
	}
	c.t.Fatalf("could not commit %q", data)
	return 0
}

// serving reports whether node id knows a leader, has applied index and
// completes a linearizable read within a short deadline.
func (c *restartCluster) serving(id, index uint64) bool {
	n := c.nodes[id]
	if s := n.Status(); s.Leader == 0 || s.AppliedIndex < index {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return n.LinearizableRead(ctx) == nil
}

// restartFollower stops a follower, keeps it down for downFor while the
// leader goes on writing (and dialing it), restarts it on the same
// directory and address, and returns how long it took from the start of
// the restart until the node served a linearizable read having applied
// the last write made while it was down.
func (c *restartCluster) restartFollower(downFor time.Duration) time.Duration {
	c.t.Helper()
	leader := c.leader()
	follower := c.ids[0]
	if follower == leader {
		follower = c.ids[1]
	}
	addr := c.trs[follower].Addr()
	c.stop(follower)
	// A steady trickle of writes, one every 10 ms, as a service would see:
	// the leader keeps trying to reach the follower, and the follower has a
	// little to catch up on when it comes back.
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	for end := time.Now().Add(downFor); time.Now().Before(end); <-pace.C {
		c.write("while down")
	}
	last := c.write("last before the restart")

	start := time.Now()
	c.listen(follower, addr)
	c.startNode(follower)
	require.Eventually(c.t, func() bool { return c.serving(follower, last) }, 10*time.Second, time.Millisecond,
		"restarted node %d never served", follower)
	return time.Since(start)
}

// TestTCPRestartedFollowerServesWithinAnElectionTimeout: a follower that was
// down long enough for the leader's dial backoff to grow to about a second
// serves again soon after it restarts, not when the leader's backoff
// happens to expire. ElectionTimeout is 100 ms; the bound, 400 ms, is one
// election timeout plus generous room for round trips, fsyncs and a loaded
// machine.
func TestTCPRestartedFollowerServesWithinAnElectionTimeout(t *testing.T) {
	c := newRestartCluster(t, 3, false, WithNoSync())
	c.write("first")
	for i := range 3 {
		took := c.restartFollower(1200 * time.Millisecond)
		t.Logf("restart %d: serving after %v", i, took)
		require.Less(t, took, 400*time.Millisecond, "restart %d: the restarted follower took %v to serve", i, took)
	}
}

// TestTCPRestartToServingBench measures restart-to-serving times of a
// follower in a 3-node cluster over TCP and FileStorage (with fsync), for
// docs/benchmarks.md. It runs only with RAFT_RESTART_BENCH=1;
// RAFT_RESTART_BENCH_N sets the number of restarts (default 25) and
// RAFT_SEED the seed of the down times (uniform in [0, 1.5 s)).
func TestTCPRestartToServingBench(t *testing.T) {
	if os.Getenv("RAFT_RESTART_BENCH") != "1" {
		t.Skip("set RAFT_RESTART_BENCH=1 to measure restart-to-serving times")
	}
	runs := 25
	if s := os.Getenv("RAFT_RESTART_BENCH_N"); s != "" {
		var err error
		runs, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	seed := envSeed()
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay the down times with RAFT_SEED=%d)", seed, seed)
	random := rand.New(rand.NewPCG(uint64(seed), 0))
	c := newRestartCluster(t, 3, true)
	c.write("first")
	var times []time.Duration
	for i := range runs {
		down := time.Duration(random.Int64N(int64(1500 * time.Millisecond)))
		took := c.restartFollower(down)
		t.Logf("restart %d: down %v, serving after %v", i, down.Round(time.Millisecond), took.Round(time.Millisecond))
		times = append(times, took)
	}
	slices.Sort(times)
	pct := func(p float64) time.Duration { return times[int(p*float64(len(times)-1))].Round(time.Millisecond) }
	fmt.Printf("restart-to-serving over %d restarts: median %v, p90 %v, max %v\n", len(times), pct(0.5), pct(0.9), times[len(times)-1].Round(time.Millisecond))
}
