package raft

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Tests of Nodes over TCPTransports on loopback (tcpCluster): elections,
// replication and restarts, a snapshot sent in chunks on the bulk lane,
// adding a voter that starts with no members, a removed follower learning
// of its removal; and the TCP cluster benchmarks.

// tcpCluster runs Nodes over TCPTransports on loopback. It reuses
// testCluster's nodes, storages, state machines and helpers (waitLeader,
// propose, waitApplied, checkSameHistory); only starting and stopping
// differ.
type tcpCluster struct {
	*testCluster
	transports map[uint64]*TCPTransport
	addrs      map[uint64]string
	// newSM, when set, makes the state machines instead of recordingSMs
	// (checkSameHistory then has nothing to check).
	newSM func(id uint64) StateMachine
	// tuneTCP, when set, adjusts each transport's config (TLS, say).
	tuneTCP func(id uint64, cfg *TCPConfig)
}

func newTCPCluster(t *testing.T, n int) *tcpCluster {
	return newTCPClusterWith(t, n, nil, nil)
}

// newTCPClusterWith starts n nodes whose configs tune adjusts and whose
// state machines newSM makes (both may be nil).
func newTCPClusterWith(t *testing.T, n int, tune func(*Config), newSM func(id uint64) StateMachine) *tcpCluster {
	t.Helper()
	return newTCPClusterTuned(t, n, tune, newSM, nil)
}

// newTCPClusterTuned is newTCPClusterWith whose transports' configs tuneTCP
// adjusts (it may be nil too).
func newTCPClusterTuned(t *testing.T, n int, tune func(*Config), newSM func(id uint64) StateMachine, tuneTCP func(id uint64, cfg *TCPConfig)) *tcpCluster {
	t.Helper()
	c := &tcpCluster{
		testCluster: &testCluster{t: t, nodes: map[uint64]*Node{}, storages: map[uint64]*MemoryStorage{}, sms: map[uint64]*recordingSM{}},
		transports:  map[uint64]*TCPTransport{},
		addrs:       map[uint64]string{},
		newSM:       newSM,
		tuneTCP:     tuneTCP,
	}
	t.Cleanup(c.closeAll)
	var members []Member
	for i := 1; i <= n; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.listen(id, "127.0.0.1:0")
		members = append(members, Member{ID: id, Addr: c.addrs[id]})
	}
	c.cfg = func(id uint64) Config {
		cfg := fastConfig(t, id, members)
		if tune != nil {
			tune(&cfg)
		}
		return cfg
	}
	for _, id := range c.ids {
		c.storages[id] = NewMemoryStorage()
		c.startNode(id)
	}
	return c
}

// listen starts node id's transport on addr. Right after a restart the
// port may still be held for a moment, so binding is retried.
// newTCPListCluster starts n nodes over TCP whose state machines are
// listSMs (which take and restore snapshots), with configs tune adjusts;
// list returns node id's current state machine.
func newTCPListCluster(t *testing.T, n int, tune func(*Config)) (c *tcpCluster, list func(id uint64) *listSM) {
	t.Helper()
	var mu sync.Mutex
	lists := map[uint64]*listSM{}
	c = newTCPClusterWith(t, n, tune, func(id uint64) StateMachine {
		mu.Lock()
		defer mu.Unlock()
		lists[id] = &listSM{}
		return lists[id]
	})
	return c, func(id uint64) *listSM {
		mu.Lock()
		defer mu.Unlock()
		return lists[id]
	}
}

func (c *tcpCluster) listen(id uint64, addr string) {
	c.t.Helper()
	cfg := TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 200 * time.Millisecond,
		Logger: zaptest.NewLogger(c.t, zaptest.Level(zap.InfoLevel)).Named(fmt.Sprint("tcp", id))}
	if c.tuneTCP != nil {
		c.tuneTCP(id, &cfg)
	}
	var tr *TCPTransport
	require.Eventually(c.t, func() bool {
		var err error
		tr, err = NewTCPTransport(cfg)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	c.transports[id] = tr
	c.addrs[id] = tr.Addr()
}

func (c *tcpCluster) startNode(id uint64) {
	c.t.Helper()
	var sm StateMachine
	if c.newSM != nil {
		sm = c.newSM(id)
	} else {
		c.sms[id] = &recordingSM{}
		sm = c.sms[id]
	}
	n, err := NewNode(c.cfg(id), sm, c.storages[id], c.transports[id])
	require.NoError(c.t, err)
	c.nodes[id] = n
}

// stopNode closes node id and its transport, as a process that exits.
func (c *tcpCluster) stopNode(id uint64) {
	c.t.Helper()
	require.NoError(c.t, c.nodes[id].Close())
	delete(c.nodes, id)
	require.NoError(c.t, c.transports[id].Close())
	delete(c.transports, id)
}

// restartNode starts node id again on its storage, with a new transport on
// its old address.
func (c *tcpCluster) restartNode(id uint64) {
	c.t.Helper()
	c.listen(id, c.addrs[id])
	c.startNode(id)
}

func (c *tcpCluster) closeAll() {
	for id, n := range c.nodes {
		assert.NoError(c.t, n.Close())
		delete(c.nodes, id)
	}
	for id, tr := range c.transports {
		assert.NoError(c.t, tr.Close())
		delete(c.transports, id)
	}
}

func (c *tcpCluster) proposeMany(prefix string, n int) uint64 {
	c.t.Helper()
	var last uint64
	for i := range n {
		last = c.propose(fmt.Sprint(prefix, i))
	}
	return last
}

func TestTCPClusterElectsReplicatesAndSurvivesRestarts(t *testing.T) {
	c := newTCPCluster(t, 3)
	leader := c.waitLeader()
	last := c.proposeMany("first", 20)
	c.waitAllApplied(last)

	// The leader's process goes away (node and transport); the others elect
	// a new leader and go on; it comes back on the same address.
	c.stopNode(leader)
	newLeader := c.waitLeader()
	require.NotEqual(t, leader, newLeader)
	last = c.proposeMany("second", 20)
	c.restartNode(leader)
	c.waitAllApplied(last)

	// A follower misses entries while down and catches up after a restart.
	var follower uint64
	for _, id := range c.ids {
		if id != c.waitLeader() {
			follower = id
			break
		}
	}
	c.stopNode(follower)
	last = c.proposeMany("third", 50)
	c.restartNode(follower)
	c.waitAllApplied(last)
	c.checkSameHistory()
	for _, id := range c.ids {
		assert.Len(t, c.sms[id].entries(), 90, "node %d applied every command once", id)
	}
}

func TestTCPClusterInstallsSnapshotOnRestartedFollower(t *testing.T) {
	// The follower comes back after the leader compacted the entries it
	// misses: it gets them as a snapshot, several MsgSnapshot chunks on the
	// bulk lane, while heartbeats go on beside them.
	c, list := newTCPListCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 50
		cfg.TrailingEntries = 10
		cfg.SnapshotChunkSize = 64 << 10
	})
	leader := c.waitLeader()
	lagging := c.follower(leader)
	c.stopNode(lagging)
	payload := bytes.Repeat([]byte("x"), 1<<10)
	var last uint64
	for i := range 300 {
		last = c.propose(fmt.Sprint(i, string(payload)))
	}
	leader = c.waitLeader()
	require.Eventually(t, func() bool { return c.nodes[leader].Status().SnapshotIndex >= 200 }, 10*time.Second, time.Millisecond)
	first, err := c.storages[leader].FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(100), "the leader compacted past what the lagging node has")

	dialsBefore := c.transports[leader].Stats().Dials
	c.restartNode(lagging)
	c.waitApplied(lagging, last)
	want := list(leader).list()
	require.Eventually(t, func() bool { return slices.Equal(list(lagging).list(), want) }, 10*time.Second, time.Millisecond)
	assert.Positive(t, list(lagging).restored, "the lagging node caught up through a snapshot")
	assert.Len(t, want, 300)
	assert.Greater(t, c.transports[leader].Stats().Dials, dialsBefore, "the leader dialed the restarted node")
	assert.Zero(t, c.transports[lagging].Stats().BadFrames)
}

func TestTCPClusterAddVoterLearnsTheLeadersAddress(t *testing.T) {
	// A new node starts with no members, so it knows no addresses: it
	// answers the leader at the address the leader's handshake advertised.
	c := newTCPCluster(t, 3)
	leader := c.waitLeader()
	c.proposeMany("before", 5)
	c.listen(4, "127.0.0.1:0")
	c.storages[4] = NewMemoryStorage()
	c.sms[4] = &recordingSM{}
	n, err := NewNode(fastConfig(t, 4, nil), c.sms[4], c.storages[4], c.transports[4])
	require.NoError(t, err)
	c.nodes[4] = n
	c.ids = append(c.ids, 4)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, c.addrs[4]))
	last := c.propose("after")
	c.waitApplied(4, last)
	c.checkSameHistory()
	assert.Len(t, c.nodes[4].Status().Members, 4)
}

// TestTCPRemovedFollowerLearnsItsRemoval: over TCP, the append that carries
// the commit of a follower's removal used to be dropped with the lane to
// it, which the transport closed as soon as the removal committed; the
// follower then never learned that it was removed. Several clusters, since
// the loss depended on timing.
func TestTCPRemovedFollowerLearnsItsRemoval(t *testing.T) {
	for round := 0; round < 4; round++ {
		c := newTCPCluster(t, 3)
		leader := c.waitLeader()
		c.proposeMany("x", 5)
		removed := leader%3 + 1
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, c.nodes[leader].RemoveMember(ctx, removed))
		cancel()
		require.Eventually(t, func() bool { return c.nodes[removed].Status().Removed }, 5*time.Second, time.Millisecond,
			"round %d: node %d never learned that it was removed: %+v", round, removed, c.nodes[removed].Status())
		_, err := c.nodes[removed].Propose(context.Background(), []byte("y"))
		assert.ErrorIs(t, err, ErrRemoved)
		c.closeAll()
	}
}

// ---- Benchmark ----

// BenchmarkTCPCluster_64Proposers is the workload of BenchmarkCluster_*
// (bench_test.go) over TCPTransports on loopback, every node on its own
// FileStorage with fsync on. docs/tcp.md has the figures; run with
//
//	go test -run '^$' -bench BenchmarkTCPCluster -benchtime 30000x -count 5 .
func BenchmarkTCPCluster_64Proposers(b *testing.B) {
	benchTCPProposers(b, fileStorage(b), benchDefault)
}

// BenchmarkTCPClusterMem_64Proposers is the same over MemoryStorage (no
// fsync): what the transport itself costs, next to BenchmarkCluster_64Proposers.
func BenchmarkTCPClusterMem_64Proposers(b *testing.B) {
	benchTCPProposers(b, memStorage, benchDefault)
}

// benchTCPProposers runs the workload of shape s on a cluster over TCP.
func benchTCPProposers(b *testing.B, newStorage func(uint64) Storage, s benchShape) {
	var counts messageCounts
	leader, stop := benchTCPCluster(b, s.voters, newStorage, &counts)
	defer stop()
	counts.leader.Store(leader.Status().ID)
	benchProposeFrom(b, leader, s.proposers, s.cmdSize)
	counts.leader.Store(0)
	counts.report(b)
}

// countingTCP is a TCPTransport that counts the messages its node sends.
type countingTCP struct {
	*TCPTransport
	id     uint64
	counts *messageCounts
}

func (c countingTCP) Send(msgs []Message) {
	for i := range msgs {
		c.counts.count(c.id, &msgs[i])
	}
	c.TCPTransport.Send(msgs)
}

// benchTCPCluster is benchCluster over TCP: voters nodes in this process,
// each with its own transport on 127.0.0.1, whose messages counts counts.
func benchTCPCluster(b *testing.B, voters int, newStorage func(id uint64) Storage, counts *messageCounts) (*Node, func()) {
	b.Helper()
	var transports []*TCPTransport
	var members []Member
	for id := uint64(1); id <= uint64(voters); id++ {
		tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		transports = append(transports, tr)
		members = append(members, Member{ID: id, Addr: tr.Addr()})
	}
	var nodes []*Node
	var stores []Storage
	stop := func() {
		for _, n := range nodes {
			n.Close()
		}
		for _, tr := range transports {
			tr.Close()
		}
		for _, st := range stores {
			if c, ok := st.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}
	for i, m := range members {
		st := newStorage(m.ID)
		stores = append(stores, st)
		n, err := NewNode(Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)},
			discardSM{}, st, countingTCP{transports[i], m.ID, counts})
		if err != nil {
			stop()
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	leader := waitBenchLeader(nodes)
	if leader == nil {
		stop()
		b.Fatal("no leader")
	}
	return leader, stop
}

// A command larger than one frame can carry is refused at Propose with
// ErrTooLarge, on the leader and on a follower alike: appended, it would
// never reach a follower and every later commit would wait behind it. The
// largest command allowed commits over TCP, and the cluster goes on.
func TestTCPClusterRefusesACommandNoFrameCanCarry(t *testing.T) {
	const frame = 64 << 10
	c := newTCPClusterTuned(t, 3, nil, nil, func(_ uint64, cfg *TCPConfig) { cfg.MaxFrameSize = frame })
	leader := c.waitLeader()
	follower := leader%3 + 1
	limit := c.nodes[leader].maxCommand
	require.Greater(t, limit, frame-256, "the framing takes little")
	require.Less(t, limit, frame)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []uint64{leader, follower} {
		_, err := c.nodes[id].Propose(ctx, make([]byte, limit+1))
		require.ErrorIs(t, err, ErrTooLarge, "node %d", id)
		assert.ErrorContains(t, err, fmt.Sprint(limit+1))
	}
	_, err := c.nodes[leader].Propose(ctx, bytes.Repeat([]byte{'x'}, limit))
	require.NoError(t, err, "the largest command allowed commits")
	last := c.propose("after")
	c.waitAllApplied(last)
	assert.Zero(t, c.transports[leader].Stats().DroppedTooLarge)
}
