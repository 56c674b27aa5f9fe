package raft

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// recordingSM is a StateMachine that records what it applies; Apply
// returns the entry's index, so a test can tell which entry a result is for.
type recordingSM struct {
	mu      sync.Mutex
	applied []Entry
}

func (s *recordingSM) Apply(e Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.applied); n > 0 && s.applied[n-1].Index >= e.Index {
		panic(fmt.Sprintf("entry %d applied after %d", e.Index, s.applied[n-1].Index))
	}
	s.applied = append(s.applied, e)
	return e.Index
}

func (s *recordingSM) Snapshot() (Snapshot, error) { return nil, fmt.Errorf("not supported") }
func (s *recordingSM) Restore(io.Reader) error     { return fmt.Errorf("not supported") }

func (s *recordingSM) entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied)
}

// testCluster runs Nodes over an InmemNetwork.
type testCluster struct {
	t        *testing.T
	net      *InmemNetwork
	ids      []uint64
	nodes    map[uint64]*Node
	storages map[uint64]*MemoryStorage
	sms      map[uint64]*recordingSM
	cfg      func(id uint64) Config
	// wrap, when set, wraps each node's transport as start makes it.
	wrap func(id uint64, tr Transport) Transport
	// newSM, when set, makes each node's state machine as start makes the
	// node, instead of a recordingSM (checkSameHistory then has nothing to
	// check for it).
	newSM func(id uint64) StateMachine
	// newStorage, when set, gives each node its storage as start makes the
	// node, instead of the node's MemoryStorage.
	newStorage func(id uint64) Storage
}

// clusterOption shapes a testCluster before its nodes start, so that no
// test restarts its nodes only to change what they run with.
type clusterOption func(*clusterOptions)

type clusterOptions struct {
	network    []InmemOption
	tune       []func(*Config)
	newSM      func(id uint64) StateMachine
	newStorage func(id uint64) Storage
	wrap       func(id uint64, tr Transport) Transport
	noStart    bool
}

// withConfig adjusts every node's Config (after fastConfig's defaults);
// several are applied in order.
func withConfig(tune func(*Config)) clusterOption {
	return func(o *clusterOptions) { o.tune = append(o.tune, tune) }
}

// withStateMachines makes each node's state machine, instead of a
// recordingSM, each time the node starts.
func withStateMachines(newSM func(id uint64) StateMachine) clusterOption {
	return func(o *clusterOptions) { o.newSM = newSM }
}

// withStorages gives each node its storage each time the node starts,
// instead of the MemoryStorage the cluster keeps for it.
func withStorages(newStorage func(id uint64) Storage) clusterOption {
	return func(o *clusterOptions) { o.newStorage = newStorage }
}

// withTransportWrapper wraps each node's transport each time the node
// starts.
func withTransportWrapper(wrap func(id uint64, tr Transport) Transport) clusterOption {
	return func(o *clusterOptions) { o.wrap = wrap }
}

// withNetwork passes options to the cluster's InmemNetwork.
func withNetwork(opts ...InmemOption) clusterOption {
	return func(o *clusterOptions) { o.network = append(o.network, opts...) }
}

// withoutStarting builds the cluster but starts no node: for clusters that
// start their nodes their own way (linCluster).
func withoutStarting() clusterOption {
	return func(o *clusterOptions) { o.noStart = true }
}

// fastConfig uses short timeouts so that tests run quickly.
func fastConfig(t *testing.T, id uint64, members []Member) Config {
	return Config{
		ID:                id,
		InitialMembers:    members,
		ElectionTimeout:   100 * time.Millisecond,
		HeartbeatInterval: 10 * time.Millisecond,
		Seed:              int64(id),
		Logger:            zaptest.NewLogger(t).Named(fmt.Sprint(id)),
	}
}

// newTestCluster starts n nodes, 1 to n, over an InmemNetwork, each on a
// MemoryStorage with a recordingSM and fastConfig, unless opts say
// otherwise.
func newTestCluster(t *testing.T, n int, opts ...clusterOption) *testCluster {
	t.Helper()
	var o clusterOptions
	for _, opt := range opts {
		opt(&o)
	}
	c := &testCluster{t: t, net: NewInmemNetwork(o.network...), nodes: map[uint64]*Node{}, storages: map[uint64]*MemoryStorage{}, sms: map[uint64]*recordingSM{},
		wrap: o.wrap, newSM: o.newSM, newStorage: o.newStorage}
	var members []Member
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
		members = append(members, Member{ID: uint64(i)})
	}
	c.cfg = func(id uint64) Config {
		cfg := fastConfig(t, id, members)
		for _, tune := range o.tune {
			tune(&cfg)
		}
		return cfg
	}
	t.Cleanup(c.close)
	for _, id := range c.ids {
		c.storages[id] = NewMemoryStorage()
		if !o.noStart {
			c.start(id)
		}
	}
	return c
}

// start (re)starts node id on its storage, with a fresh state machine.
func (c *testCluster) start(id uint64) {
	c.t.Helper()
	var sm StateMachine
	if c.newSM != nil {
		delete(c.sms, id)
		sm = c.newSM(id)
	} else {
		c.sms[id] = &recordingSM{}
		sm = c.sms[id]
	}
	// Through the storage writer's goroutine, as with a FileStorage, so
	// that every cluster test runs the asynchronous write pipeline.
	var storage Storage = asyncMemStorage{c.storages[id]}
	if c.newStorage != nil {
		storage = c.newStorage(id)
	}
	tr := c.net.Transport(id)
	if c.wrap != nil {
		tr = c.wrap(id, tr)
	}
	n, err := NewNode(c.cfg(id), sm, storage, tr)
	require.NoError(c.t, err)
	c.nodes[id] = n
}

// stop closes node id, as a crash in which every Save had reached the disk.
func (c *testCluster) stop(id uint64) {
	require.NoError(c.t, c.nodes[id].Close())
	delete(c.nodes, id)
}

func (c *testCluster) close() {
	for id := range c.nodes {
		c.stop(id)
	}
	c.net.Close()
}

// waitLeader waits for a leader that every running node in among agrees on.
func (c *testCluster) waitLeader(among ...uint64) uint64 {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	var leader uint64
	require.Eventually(c.t, func() bool {
		leader = 0
		for _, id := range among {
			s := c.nodes[id].Status()
			if s.Role == Leader {
				leader = id
			}
		}
		if leader == 0 {
			return false
		}
		term := c.nodes[leader].Status().Term
		for _, id := range among {
			if s := c.nodes[id].Status(); s.Leader != leader || s.Term != term {
				return false
			}
		}
		return true
	}, 10*time.Second, 2*time.Millisecond, "no agreed leader among %v: %s", among, lazyStatuses{c})
	return leader
}

// follower returns a node other than leader: the first of c.ids that is
// not leader.
func (c *testCluster) follower(leader uint64) uint64 {
	for _, id := range c.ids {
		if id != leader {
			return id
		}
	}
	c.t.Fatalf("no node other than %d", leader)
	return 0
}

// others returns every node of c.ids but id, in order.
func (c *testCluster) others(id uint64) []uint64 {
	var ids []uint64
	for _, other := range c.ids {
		if other != id {
			ids = append(ids, other)
		}
	}
	return ids
}

func (c *testCluster) running() []uint64 {
	var ids []uint64
	for _, id := range c.ids {
		if c.nodes[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// propose proposes on whichever node leads, retrying on leader changes.
func (c *testCluster) propose(data string) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		leader := c.waitLeader()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := c.nodes[leader].Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return res.(uint64)
		}
	}
	c.t.Fatalf("could not commit %q", data)
	return 0
}

// waitApplied waits until node id has applied through index.
func (c *testCluster) waitApplied(id, index uint64) {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return c.nodes[id].Status().AppliedIndex >= index }, 10*time.Second, time.Millisecond,
		"node %d did not apply %d (status %+v)", id, index, c.nodes[id].Status())
}

// waitAllApplied waits until every node of c.ids has applied through index.
func (c *testCluster) waitAllApplied(index uint64) {
	c.t.Helper()
	for _, id := range c.ids {
		c.waitApplied(id, index)
	}
}

// checkSameHistory asserts that no two state machines applied different
// entries at the same index (State Machine Safety, Raft §5.4.3).
func (c *testCluster) checkSameHistory() {
	c.t.Helper()
	byIndex := map[uint64]Entry{}
	for id, sm := range c.sms {
		for _, e := range sm.entries() {
			if prev, ok := byIndex[e.Index]; ok {
				require.Equal(c.t, prev.Term, e.Term, "node %d applied a different entry at %d", id, e.Index)
				require.Equal(c.t, prev.Data, e.Data, "node %d applied a different entry at %d", id, e.Index)
			}
			byIndex[e.Index] = e
		}
	}
}

// envSeed returns RAFT_SEED, for replaying a randomized test.
func envSeed() int64 {
	var s int64
	fmt.Sscan(os.Getenv("RAFT_SEED"), &s)
	return s
}

// lazyStatuses prints every running node's status when formatted.
type lazyStatuses struct{ c *testCluster }

func (l lazyStatuses) String() string {
	var b strings.Builder
	for _, id := range l.c.running() {
		s := l.c.nodes[id].Status()
		fmt.Fprintf(&b, "\n  node %d: %s term %d leader %d commit %d applied %d last %d", id, s.Role, s.Term, s.Leader, s.CommitIndex, s.AppliedIndex, s.LastIndex)
	}
	return b.String()
}

// asyncMemStorage is a MemoryStorage that the node writes through its
// storage writer goroutine, as it writes a FileStorage, instead of inline.
type asyncMemStorage struct{ *MemoryStorage }

func (asyncMemStorage) writesInline() bool { return false }
