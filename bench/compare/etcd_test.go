package compare

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcd raft (go.etcd.io/raft/v3 v3.7.0) is a library without I/O: the
// application runs the Ready loop. This harness is the minimal correct one
// for in-memory nodes (three, or the shape's voters, with IDs from 1),
// written the way the package documentation describes it:
//
//   - Each node has a raft.MemoryStorage and a goroutine running its Ready
//     loop with a 10ms ticker (ElectionTick 10 = 100-200ms election timeout,
//     HeartbeatTick 1 = 10ms heartbeats). For each Ready it saves the
//     HardState and Entries to the MemoryStorage, then sends the Messages,
//     then applies the CommittedEntries (conf changes through
//     ApplyConfChange), then calls Advance. Storage writes are synchronous
//     (AsyncStorageWrites off), so sending after the append is correct.
//   - The transport is a buffered Go channel per node (the inbox) and one
//     goroutine per node that passes each inbound message to Node.Step.
//     Messages are passed by pointer, not serialized: the raftkit and
//     hashicorp in-memory transports do not serialize either.
//   - MaxSizePerMsg 1MiB, MaxInflightMsgs 256 (raftkit's MaxAppendBytes and
//     MaxInflight defaults), PreVote and CheckQuorum on (raftkit's defaults).
//   - Node.Propose returns once the leader has appended the entry, not its
//     apply result. The first 8 bytes of each command carry a unique id;
//     the proposer registers a waiter under that id on the node it proposes
//     to, and that node's Ready loop wakes it when it applies the entry. If
//     the node loses leadership, its pending waiters fail.
//   - No snapshots and no log compaction: the log of a run fits in memory.
//   - The durable variant adds one thing: before the MemoryStorage,
//     the Ready loop appends the HardState and Entries to the node's etcdWAL
//     (etcd_wal_test.go), a plain file in its own temp dir, fsynced when
//     Ready.MustSync is set, so still before the Messages are sent and before
//     Advance.

const (
	etcdTick        = 10 * time.Millisecond
	etcdInboxSize   = 4096
	etcdIDBytes     = 8
	etcdReadyWait   = 5 * time.Second
	etcdMaxInflight = 256
	etcdMaxMsgSize  = 1 << 20
	etcdProposeTO   = 10 * time.Second
)

var errEtcdLostLeadership = errors.New("etcd harness: node lost leadership with proposals pending")

type etcdNode struct {
	id      uint64
	node    raft.Node
	storage *raft.MemoryStorage
	wal     *etcdWAL // nil unless durable
	inbox   chan *raftpb.Message
	leader  atomic.Bool

	mu      sync.Mutex
	waiters map[uint64]chan error // proposal id -> proposer's wake channel
}

type etcdCluster struct {
	nodes   map[uint64]*etcdNode
	cmdSize int
	ctx     context.Context // cancelled by stop
	cancel  context.CancelFunc
	stopc   chan struct{}
	wg      sync.WaitGroup
	nextID  atomic.Uint64

	errOnce sync.Once
	err     error // first internal error, reported by stop
}

// newEtcdCluster starts the nodes of shape s; if walDir is non-nil, each
// node also writes an etcdWAL to the file "wal" in the directory walDir(id)
// returns.
func newEtcdCluster(s shape, walDir func(id uint64) string) (*etcdCluster, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &etcdCluster{
		nodes:   make(map[uint64]*etcdNode),
		cmdSize: s.cmdSize,
		ctx:     ctx,
		cancel:  cancel,
		stopc:   make(chan struct{}),
	}
	var ids []uint64
	var peers []raft.Peer
	for id := uint64(1); id <= uint64(s.voters); id++ {
		ids = append(ids, id)
		peers = append(peers, raft.Peer{ID: id})
	}
	wals := make(map[uint64]*etcdWAL)
	if walDir != nil {
		for _, id := range ids {
			w, err := openEtcdWAL(filepath.Join(walDir(id), "wal"))
			if err != nil {
				for _, w := range wals {
					w.close()
				}
				cancel()
				return nil, err
			}
			wals[id] = w
		}
	}
	discard := &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}
	for _, id := range ids {
		storage := raft.NewMemoryStorage()
		n := &etcdNode{
			id:      id,
			storage: storage,
			wal:     wals[id],
			inbox:   make(chan *raftpb.Message, etcdInboxSize),
			waiters: make(map[uint64]chan error),
		}
		n.node = raft.StartNode(&raft.Config{
			ID:              id,
			ElectionTick:    10,
			HeartbeatTick:   1,
			Storage:         storage,
			MaxSizePerMsg:   etcdMaxMsgSize,
			MaxInflightMsgs: etcdMaxInflight,
			PreVote:         true,
			CheckQuorum:     true,
			Logger:          discard,
		}, peers)
		c.nodes[id] = n
	}
	for _, n := range c.nodes {
		c.wg.Add(2)
		go c.readyLoop(n)
		go c.receiveLoop(n)
	}
	return c, nil
}

// fail records the first internal error; stop reports it.
func (c *etcdCluster) fail(err error) {
	c.errOnce.Do(func() { c.err = err })
}

// stop stops every goroutine of the cluster and returns the first internal
// error, if any.
func (c *etcdCluster) stop() error {
	close(c.stopc)
	c.cancel()
	for _, n := range c.nodes {
		n.node.Stop()
	}
	c.wg.Wait()
	for _, n := range c.nodes {
		if n.wal != nil {
			if err := n.wal.close(); err != nil {
				c.fail(err)
			}
		}
	}
	return c.err
}

func (c *etcdCluster) readyLoop(n *etcdNode) {
	defer c.wg.Done()
	ticker := time.NewTicker(etcdTick)
	defer ticker.Stop()
	for {
		select {
		case <-c.stopc:
			return
		case <-ticker.C:
			n.node.Tick()
		case rd := <-n.node.Ready():
			if rd.SoftState != nil {
				isLeader := rd.SoftState.RaftState == raft.StateLeader
				if n.leader.Swap(isLeader) && !isLeader {
					n.failWaiters(errEtcdLostLeadership)
				}
			}
			// 1. Persist: HardState and Entries to the WAL (durable variant),
			// then to the MemoryStorage (and a snapshot, which this harness
			// never produces).
			if n.wal != nil {
				if err := n.wal.save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
					c.fail(err)
				}
			}
			if !raft.IsEmptySnap(rd.Snapshot) {
				if err := n.storage.ApplySnapshot(rd.Snapshot); err != nil {
					c.fail(err)
				}
			}
			if !raft.IsEmptyHardState(rd.HardState) {
				if err := n.storage.SetHardState(rd.HardState); err != nil {
					c.fail(err)
				}
			}
			if err := n.storage.Append(rd.Entries); err != nil {
				c.fail(err)
			}
			// 2. Send.
			for _, m := range rd.Messages {
				to := c.nodes[m.GetTo()]
				if to == nil {
					continue
				}
				select {
				case to.inbox <- m:
				case <-c.stopc:
					return
				}
			}
			// 3. Apply.
			c.apply(n, rd.CommittedEntries)
			// 4. Advance.
			n.node.Advance()
		}
	}
}

func (c *etcdCluster) receiveLoop(n *etcdNode) {
	defer c.wg.Done()
	for {
		select {
		case <-c.stopc:
			return
		case m := <-n.inbox:
			// Step fails only when the node is stopped or ctx is cancelled.
			_ = n.node.Step(c.ctx, m)
		}
	}
}

// apply applies committed entries: the state machine does nothing, so
// applying a normal entry is waking its proposer if it proposed on this node.
func (c *etcdCluster) apply(n *etcdNode, ents []*raftpb.Entry) {
	locked := false
	for _, e := range ents {
		switch e.GetType() {
		case raftpb.EntryNormal:
			data := e.GetData()
			if len(data) < etcdIDBytes { // the leader's empty entry
				continue
			}
			if !locked {
				n.mu.Lock()
				locked = true
			}
			id := binary.LittleEndian.Uint64(data)
			if ch, ok := n.waiters[id]; ok {
				delete(n.waiters, id)
				ch <- nil
			}
		case raftpb.EntryConfChange:
			// Only the bootstrap entries of StartNode.
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				c.fail(err)
				continue
			}
			n.node.ApplyConfChange(&cc)
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				c.fail(err)
				continue
			}
			n.node.ApplyConfChange(&cc)
		}
	}
	if locked {
		n.mu.Unlock()
	}
}

func (n *etcdNode) failWaiters(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, ch := range n.waiters {
		delete(n.waiters, id)
		ch <- err
	}
}

// propose proposes one command on n and waits until n has applied it. done
// is the proposer's own wake channel (capacity 1), reused across proposals.
func (c *etcdCluster) propose(ctx context.Context, n *etcdNode, done chan error) error {
	id := c.nextID.Add(1)
	// A fresh buffer per proposal: raft keeps the slice in its log.
	data := make([]byte, c.cmdSize)
	binary.LittleEndian.PutUint64(data, id)
	n.mu.Lock()
	n.waiters[id] = done
	n.mu.Unlock()
	if err := n.node.Propose(ctx, data); err != nil {
		n.mu.Lock()
		delete(n.waiters, id)
		n.mu.Unlock()
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		n.mu.Lock()
		delete(n.waiters, id)
		n.mu.Unlock()
		return ctx.Err()
	}
}

// etcdSystem is the etcd raft harness, with an etcdWAL per node if durable.
func etcdSystem(durable bool) system {
	return func(tb testing.TB, s shape) cluster {
		c, leader, stop := etcdStart(tb, s, durable)
		return cluster{
			newProposer: etcdProposer(c, leader),
			voters: func() (int, error) {
				return len(leader.node.Status().Config.Voters.IDs()), nil
			},
			stop: stop,
		}
	}
}

// etcdStart starts the cluster of shape s (with an etcdWAL per node in a
// temp dir if durable) and returns the leader once a proposal has gone
// through it, and a function that stops everything; calling it again does
// nothing.
func etcdStart(tb testing.TB, s shape, durable bool) (*etcdCluster, *etcdNode, func()) {
	tb.Helper()
	var walDir func(uint64) string
	if durable {
		walDir = func(uint64) string { return tb.TempDir() }
	}
	c, err := newEtcdCluster(s, walDir)
	if err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := c.stop(); err != nil {
				tb.Error(err)
			}
		})
	}
	done := make(chan error, 1)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n.leader.Load() {
				ctx, cancel := context.WithTimeout(c.ctx, etcdReadyWait)
				err := c.propose(ctx, n, done)
				cancel()
				if err == nil {
					return c, n, stop
				}
				// A stale result of the failed attempt must not wake the
				// next one.
				select {
				case <-done:
				default:
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	tb.Fatal("etcd: no leader")
	return nil, nil, nil
}

func etcdProposer(c *etcdCluster, leader *etcdNode) func() proposeFunc {
	return func() proposeFunc {
		done := make(chan error, 1)
		return func() error {
			// c.ctx ends when the cluster stops. etcd raft may drop a
			// proposal without telling (a leader that steps down and is
			// elected again between two Readies keeps no trace of it), so a
			// proposal that is not applied in etcdProposeTO fails the
			// benchmark instead of hanging it.
			ctx, cancel := context.WithTimeout(c.ctx, etcdProposeTO)
			defer cancel()
			return c.propose(ctx, leader, done)
		}
	}
}

func BenchmarkEtcd_64Proposers(b *testing.B) { benchSystem(b, "Etcd", defaultShape, proposers) }
func BenchmarkEtcd_Sequential(b *testing.B)  { benchSystem(b, "Etcd", defaultShape, 1) }

// BenchmarkEtcdWAL_64Proposers is the durable variant: every node
// also appends to its own etcdWAL, fsync on.
func BenchmarkEtcdWAL_64Proposers(b *testing.B) { benchSystem(b, "EtcdWAL", defaultShape, proposers) }
func BenchmarkEtcdWAL_Sequential(b *testing.B)  { benchSystem(b, "EtcdWAL", defaultShape, 1) }

// TestEtcdHarness checks that every proposal of 64 concurrent proposers
// returns and ends up exactly once in the log of every node, and in the
// durable variant that replaying each node's WAL gives its HardState and log.
func TestEtcdHarness(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testEtcdHarness(t, false) })
	t.Run("wal", func(t *testing.T) { testEtcdHarness(t, true) })
}

func testEtcdHarness(t *testing.T, durable bool) {
	defer checkLeaks(t)()
	c, leader, stop := etcdStart(t, defaultShape, durable)
	defer stop()
	const total = 2000
	var wg sync.WaitGroup
	errs := make(chan error, proposers)
	var next atomic.Int64
	for range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			for next.Add(1) <= total {
				if err := c.propose(c.ctx, leader, done); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every node ends with the same log of total+1 commands (one from
	// etcdStart), each id once.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range c.nodes {
		for {
			ids, err := etcdLoggedIDs(n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) == total+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d holds %d commands, want %d", n.id, len(ids), total+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !durable {
		return
	}
	stop() // closes the WALs; the MemoryStorages stay readable
	for _, n := range c.nodes {
		hs, ents, err := etcdReadWAL(n.wal.f.Name())
		if err != nil {
			t.Fatal(err)
		}
		memHS, _, err := n.storage.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(hs, memHS) {
			t.Errorf("node %d: WAL HardState %v, MemoryStorage %v", n.id, hs, memHS)
		}
		first, _ := n.storage.FirstIndex()
		last, _ := n.storage.LastIndex()
		memEnts, err := n.storage.Entries(first, last+1, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != len(memEnts) {
			t.Fatalf("node %d: WAL holds %d entries, MemoryStorage %d", n.id, len(ents), len(memEnts))
		}
		for i := range ents {
			if !proto.Equal(ents[i], memEnts[i]) {
				t.Fatalf("node %d: entry %d differs: WAL %v, MemoryStorage %v", n.id, i, ents[i], memEnts[i])
			}
		}
	}
}

func etcdLoggedIDs(n *etcdNode) (map[uint64]bool, error) {
	first, err := n.storage.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := n.storage.LastIndex()
	if err != nil {
		return nil, err
	}
	ents, err := n.storage.Entries(first, last+1, ^uint64(0))
	if err != nil {
		return nil, err
	}
	ids := make(map[uint64]bool)
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) < etcdIDBytes {
			continue
		}
		id := binary.LittleEndian.Uint64(e.GetData())
		if ids[id] {
			return nil, fmt.Errorf("node %d: id %d twice in the log", n.id, id)
		}
		ids[id] = true
	}
	return ids, nil
}
