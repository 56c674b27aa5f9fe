package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of Host (host.go): many groups over shared hosts, over TCP on
// loopback and over the in-memory network, with the same helpers
// (hostCluster): elections and commits in every group, a host's Close,
// membership changes, a snapshot on the bulk lane, bad input; and the
// union of the groups' peers, the shared clock.

// groupKey names one replica: a group on a host.
type groupKey struct{ group, host uint64 }

// hostCluster runs Hosts, over TCP on loopback or an InmemNetwork, and
// groups on them, each replica on a MemoryStorage with a recordingSM
// unless newSM says otherwise.
type hostCluster struct {
	t        *testing.T
	seed     int64
	net      *InmemNetwork // nil over TCP
	hosts    map[uint64]*Host
	addrs    map[uint64]string
	storages map[groupKey]*MemoryStorage
	sms      map[groupKey]*recordingSM
	members  map[uint64][]Member // each group's founding members
	tune     func(group uint64, cfg *Config)
	newSM    func(k groupKey) StateMachine
	// newStorage, when set, gives each replica its Storage instead of a
	// MemoryStorage of the cluster's.
	newStorage func(k groupKey) Storage
	tuneTCP    func(host uint64, cfg *TCPConfig)
	tuneHost   func(host uint64, cfg *HostConfig)
	logLevel   zapcore.Level
}

// newHostCluster starts hosts 1 to n, over TCP when tcp is set. The seed
// (RAFT_SEED replays one) seeds the groups' election timeouts and the
// in-memory network.
func newHostCluster(t *testing.T, n int, tcp bool) *hostCluster {
	t.Helper()
	seed := envSeed()
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (RAFT_SEED=%d replays it)", seed, seed)
	c := &hostCluster{t: t, seed: seed, hosts: map[uint64]*Host{}, addrs: map[uint64]string{},
		storages: map[groupKey]*MemoryStorage{}, sms: map[groupKey]*recordingSM{}, members: map[uint64][]Member{},
		logLevel: zap.WarnLevel}
	if !tcp {
		c.net = NewInmemNetwork(WithSeed(seed))
	}
	t.Cleanup(c.closeAll)
	for id := uint64(1); id <= uint64(n); id++ {
		c.startHost(id)
	}
	return c
}

// startHost starts host id; over TCP on its old address if it had one
// (binding is retried: the port may still be held for a moment).
func (c *hostCluster) startHost(id uint64) *Host {
	c.t.Helper()
	cfg := HostConfig{ID: id, TickInterval: 5 * time.Millisecond,
		Logger: zaptest.NewLogger(c.t, zaptest.Level(c.logLevel)).Named(fmt.Sprint("host", id))}
	if c.tuneHost != nil {
		c.tuneHost(id, &cfg)
	}
	if c.net != nil {
		cfg.Network = c.net
		h, err := NewHost(cfg)
		require.NoError(c.t, err)
		c.hosts[id] = h
		return h
	}
	addr := c.addrs[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tcfg := TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 200 * time.Millisecond}
	if c.tuneTCP != nil {
		c.tuneTCP(id, &tcfg)
	}
	cfg.TCP = &tcfg
	var h *Host
	require.Eventually(c.t, func() bool {
		var err error
		h, err = NewHost(cfg)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	c.hosts[id] = h
	c.addrs[id] = h.Addr()
	return h
}

// closeHost closes host id, as a process that exits: all its groups stop.
func (c *hostCluster) closeHost(id uint64) {
	c.t.Helper()
	require.NoError(c.t, c.hosts[id].Close())
	delete(c.hosts, id)
}

func (c *hostCluster) closeAll() {
	for id, h := range c.hosts {
		assert.NoError(c.t, h.Close())
		delete(c.hosts, id)
	}
	if c.net != nil {
		c.net.Close()
	}
}

// config is the Config of group's replica on host: short timeouts (a tick
// of 10ms, two host ticks), a seed from the cluster's.
func (c *hostCluster) config(group, host uint64, members []Member) Config {
	cfg := Config{
		InitialMembers:    members,
		ElectionTimeout:   100 * time.Millisecond,
		HeartbeatInterval: 10 * time.Millisecond,
		Seed:              c.seed ^ int64(group<<8|host),
	}
	if c.tune != nil {
		c.tune(group, &cfg)
	}
	return cfg
}

// foundGroup starts group on hosts, which found it together.
func (c *hostCluster) foundGroup(group uint64, hosts ...uint64) {
	c.t.Helper()
	var members []Member
	for _, h := range hosts {
		members = append(members, Member{ID: h, Addr: c.addrs[h]})
	}
	c.members[group] = members
	for _, h := range hosts {
		c.startGroup(group, h, members)
	}
}

// startGroup starts (or restarts, on its storage) group's replica on host.
func (c *hostCluster) startGroup(group, host uint64, members []Member) *Node {
	c.t.Helper()
	k := groupKey{group, host}
	var storage Storage
	if c.newStorage != nil {
		storage = c.newStorage(k)
	} else {
		if c.storages[k] == nil {
			c.storages[k] = NewMemoryStorage()
		}
		storage = asyncMemStorage{c.storages[k]}
	}
	var sm StateMachine
	if c.newSM != nil {
		sm = c.newSM(k)
	} else {
		c.sms[k] = &recordingSM{}
		sm = c.sms[k]
	}
	n, err := c.hosts[host].StartGroup(group, c.config(group, host, members), sm, storage)
	require.NoError(c.t, err)
	return n
}

func (c *hostCluster) node(group, host uint64) *Node {
	h := c.hosts[host]
	if h == nil {
		return nil
	}
	n, _ := h.Group(group)
	return n
}

// replicas returns the running replicas of group, by host.
func (c *hostCluster) replicas(group uint64) map[uint64]*Node {
	nodes := map[uint64]*Node{}
	for id := range c.hosts {
		if n := c.node(group, id); n != nil {
			nodes[id] = n
		}
	}
	return nodes
}

// agreedLeader returns the leader every running member of group agrees
// on, or 0. (A replica that is not a member of its configuration, a joiner
// not added yet or a removed one, need not know the leader.)
func (c *hostCluster) agreedLeader(group uint64) uint64 {
	var leader, term uint64
	replicas := c.replicas(group)
	for id, n := range replicas {
		if st := n.Status(); st.Removed || !slices.ContainsFunc(st.Members, func(m Member) bool { return m.ID == id }) {
			delete(replicas, id)
		}
	}
	for id, n := range replicas {
		if s := n.Status(); s.Role == Leader {
			leader, term = id, s.Term
		}
	}
	if leader == 0 {
		return 0
	}
	for _, n := range replicas {
		if s := n.Status(); s.Leader != leader || s.Term != term {
			return 0
		}
	}
	return leader
}

// waitLeaders waits until every group of groups has a leader its running
// replicas agree on, and returns them.
func (c *hostCluster) waitLeaders(groups []uint64) map[uint64]uint64 {
	c.t.Helper()
	leaders := map[uint64]uint64{}
	require.Eventually(c.t, func() bool {
		for _, g := range groups {
			if leaders[g] != 0 && c.agreedLeader(g) == leaders[g] {
				continue
			}
			if leaders[g] = c.agreedLeader(g); leaders[g] == 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "not every group has an agreed leader: %v", lazyGroups{c, groups})
	return leaders
}

// propose commits data in group through whichever replica leads,
// retrying on leader changes, and returns its index.
func (c *hostCluster) propose(group uint64, data string) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		leader := c.waitLeaders([]uint64{group})[group]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := c.node(group, leader).Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return res.(uint64)
		}
	}
	c.t.Fatalf("group %d could not commit %q", group, data)
	return 0
}

// waitApplied waits until every running replica of group applied index.
func (c *hostCluster) waitApplied(group, index uint64) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, n := range c.replicas(group) {
			if n.Status().AppliedIndex < index {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "group %d did not apply %d everywhere: %v", group, index, lazyGroups{c, []uint64{group}})
}

// checkSameHistory asserts, in each group, that no two replicas applied
// different entries at the same index (State Machine Safety, §5.4.3), and
// that no replica applied another group's command.
func (c *hostCluster) checkSameHistory(groups []uint64) {
	c.t.Helper()
	for _, g := range groups {
		byIndex := map[uint64]Entry{}
		for k, sm := range c.sms {
			if k.group != g {
				continue
			}
			for _, e := range sm.entries() {
				require.Contains(c.t, string(e.Data), fmt.Sprintf("g%d/", g), "group %d applied another group's command", g)
				if prev, ok := byIndex[e.Index]; ok {
					require.Equal(c.t, prev, e, "replica on host %d of group %d applied a different entry at %d", k.host, g, e.Index)
				}
				byIndex[e.Index] = e
			}
		}
	}
}

// lazyGroups prints the replicas' statuses of groups when formatted.
type lazyGroups struct {
	c      *hostCluster
	groups []uint64
}

func (l lazyGroups) String() string {
	s := ""
	for i, g := range l.groups {
		if i == 8 {
			s += "\n  ..."
			break
		}
		for id, n := range l.c.replicas(g) {
			st := n.Status()
			s += fmt.Sprintf("\n  group %d host %d: %s term %d leader %d commit %d applied %d", g, id, st.Role, st.Term, st.Leader, st.CommitIndex, st.AppliedIndex)
		}
	}
	return s
}

func groupIDs(n int) []uint64 {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	return ids
}

// testManyGroups: 50 groups of 3 replicas over 3 hosts elect leaders,
// commit in every group, and the groups of a closed host stop while the
// others go on.
func testManyGroups(t *testing.T, tcp bool) {
	c := newHostCluster(t, 3, tcp)
	groups := groupIDs(50)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	for _, h := range c.hosts {
		assert.Len(t, h.Groups(), len(groups))
	}

	// A proposal in every group, from concurrent proposers.
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
		for h := uint64(1); h <= 3; h++ {
			// (A proposal retried after a leader change whose outcome was
			// unknown may be applied twice: count distinct commands.)
			commands := map[string]bool{}
			for _, e := range c.sms[groupKey{g, h}].entries() {
				commands[string(e.Data)] = true
			}
			assert.Len(t, commands, 3, "group %d on host %d applied its three commands", g, h)
		}
	}
	c.checkSameHistory(groups)

	// Host 1 goes away: all its groups stop; every group elects a leader
	// among the two hosts left and commits.
	nodes := make([]*Node, 0, len(groups))
	for _, g := range groups {
		nodes = append(nodes, c.node(g, 1))
	}
	c.closeHost(1)
	for _, n := range nodes {
		_, err := n.Propose(context.Background(), []byte("x"))
		require.ErrorIs(t, err, ErrClosed, "the closed host's groups are closed")
	}
	leaders := c.waitLeaders(groups)
	for _, g := range groups {
		assert.NotEqual(t, uint64(1), leaders[g])
		c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/after", g)))
	}
	c.checkSameHistory(groups)
}

func TestHost_TCP_ManyGroupsElectCommitAndSurviveAHost(t *testing.T) {
	testManyGroups(t, true)
}

func TestHost_Inmem_ManyGroupsElectCommitAndSurviveAHost(t *testing.T) {
	testManyGroups(t, false)
}

// Over TCP, the hosts share their connections: one control connection
// each way per pair of hosts whatever the number of groups, and the
// bulk lane only once something large was sent.
func TestHost_TCP_OneConnectionPerPeerHostAndLane(t *testing.T) {
	c := newHostCluster(t, 3, true)
	groups := groupIDs(20)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	for _, g := range groups {
		c.propose(g, fmt.Sprintf("g%d/x", g))
	}
	for id, h := range c.hosts {
		st := h.Stats()
		// A control connection to each peer, and a bulk one (appends) to
		// each peer it sent appends to, whatever the number of groups.
		assert.GreaterOrEqual(t, st.TCP.OutboundConns, 2, "host %d: a control connection to each of 2 peers", id)
		assert.LessOrEqual(t, st.TCP.OutboundConns, 4, "host %d: at most one connection per lane to each of 2 peers", id)
		assert.GreaterOrEqual(t, st.TCP.InboundConns, 2, "host %d: a control connection from each of 2 peers", id)
		assert.LessOrEqual(t, st.TCP.InboundConns, 4, "host %d: at most one connection per lane from each of 2 peers", id)
		assert.Equal(t, len(groups), st.Groups)
		assert.Zero(t, st.TCP.BadFrames+st.TCP.DroppedMisrouted+st.TCP.HandshakesRefused, "host %d: %+v", id, st.TCP)
	}
}

// A message for a group the receiving host does not run is dropped and
// counted; once the host starts the group, it takes part.
func testUnknownGroup(t *testing.T, tcp bool) {
	c := newHostCluster(t, 3, tcp)
	members := []Member{{ID: 1, Addr: c.addrs[1]}, {ID: 2, Addr: c.addrs[2]}, {ID: 3, Addr: c.addrs[3]}}
	c.members[7] = members
	c.startGroup(7, 1, members)
	c.startGroup(7, 2, members)
	c.waitLeaders([]uint64{7})
	require.Eventually(t, func() bool { return c.hosts[3].Stats().DroppedUnknownGroup > 0 }, 10*time.Second, time.Millisecond,
		"host 3 counts the messages of group 7, which it does not run")
	assert.Zero(t, c.hosts[1].Stats().DroppedUnknownGroup)
	index := c.propose(7, "g7/a")
	c.startGroup(7, 3, members)
	c.waitApplied(7, index)
	require.Len(t, c.replicas(7), 3)
	c.checkSameHistory([]uint64{7})
}

func TestHost_TCP_MessageForAnUnknownGroupIsDroppedAndCounted(t *testing.T) {
	testUnknownGroup(t, true)
}

func TestHost_Inmem_MessageForAnUnknownGroupIsDroppedAndCounted(t *testing.T) {
	testUnknownGroup(t, false)
}

// Membership changes in one group among others: a fourth host joins group
// 1 (AddVoter with its host's address) and catches up; host 1 leaves it.
// The hosts' peer sets follow the union of their groups' members: host 4
// is a peer of the others only while it is a member of a group they share.
func testMembershipChange(t *testing.T, tcp bool) {
	c := newHostCluster(t, 4, tcp)
	groups := []uint64{1, 2, 3}
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	last := c.propose(1, "g1/before")
	require.NotContains(t, peerIDs(c.hosts[2]), uint64(4), "host 4 is no group's member yet")

	c.startGroup(1, 4, nil) // a joiner: no InitialMembers
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	retryChange(t, func() error { return c.node(1, c.waitLeaders(groups)[1]).AddVoter(ctx, 4, c.addrs[4]) })
	c.waitApplied(1, last)
	require.Eventually(t, func() bool { return slices.Contains(peerIDs(c.hosts[2]), 4) }, 10*time.Second, time.Millisecond,
		"host 4 is a peer of host 2 once it is a member of group 1")
	last = c.propose(1, "g1/with4")
	c.waitApplied(1, last)
	assert.Len(t, c.node(1, 4).Status().Members, 4)

	// Host 1's replica leaves group 1; the group goes on with 2, 3 and 4.
	if c.waitLeaders([]uint64{1})[1] == 1 {
		require.NoError(t, c.node(1, 1).TransferLeadership(ctx, 0))
	}
	retryChange(t, func() error { return c.node(1, c.waitLeaders([]uint64{1})[1]).RemoveMember(ctx, 1) })
	require.Eventually(t, func() bool { return c.node(1, 1).Status().Removed }, 10*time.Second, time.Millisecond)
	require.NoError(t, c.hosts[1].StopGroup(1))
	last = c.propose(1, "g1/without1")
	c.waitApplied(1, last)
	for _, g := range groups[1:] {
		c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/x", g)))
	}
	// Host 4 shares no group with host 1: it is no peer of host 1 any more.
	require.Eventually(t, func() bool { return !slices.Contains(peerIDs(c.hosts[1]), 4) }, 10*time.Second, time.Millisecond)
	c.checkSameHistory(groups)
}

func TestHost_TCP_MembershipChangeInOneGroup(t *testing.T) { testMembershipChange(t, true) }

func TestHost_Inmem_MembershipChangeInOneGroup(t *testing.T) { testMembershipChange(t, false) }

// retryChange runs a membership change until it does not fail with
// ErrMembershipChange (the previous change, or the leader's first entry of
// its term, has not committed yet), and requires it to succeed.
func retryChange(t *testing.T, change func() error) {
	t.Helper()
	require.Eventually(t, func() bool {
		err := change()
		if errors.Is(err, ErrMembershipChange) {
			return false
		}
		require.NoError(t, err)
		return true
	}, 10*time.Second, 5*time.Millisecond)
}

// peerIDs returns the hosts h's link was last told to reach.
func peerIDs(h *Host) []uint64 {
	h.peers.mu.Lock()
	defer h.peers.mu.Unlock()
	var ids []uint64
	for id := range h.peers.current {
		if id != h.id {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// A replica that comes back after its group's leader compacted the entries
// it misses is sent a snapshot, in chunks: over TCP on the bulk lane,
// while the other groups go on.
func testSnapshotTransfer(t *testing.T, tcp bool) {
	c := newHostCluster(t, 3, tcp)
	var mu sync.Mutex
	lists := map[groupKey]*listSM{}
	c.newSM = func(k groupKey) StateMachine {
		mu.Lock()
		defer mu.Unlock()
		lists[k] = &listSM{}
		return lists[k]
	}
	list := func(k groupKey) *listSM {
		mu.Lock()
		defer mu.Unlock()
		return lists[k]
	}
	c.tune = func(group uint64, cfg *Config) {
		if group == 1 {
			cfg.SnapshotThreshold = 50
			cfg.TrailingEntries = 10
			cfg.SnapshotChunkSize = 16 << 10
		}
	}
	groups := []uint64{1, 2, 3}
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	leader := c.waitLeaders(groups)[1]
	lagging := uint64(1)
	if leader == lagging {
		lagging = 2
	}
	require.NoError(t, c.hosts[lagging].StopGroup(1))
	payload := string(make([]byte, 1<<10))
	var last uint64
	for i := range 200 {
		last = c.propose(1, fmt.Sprintf("g1/%d%s", i, payload))
	}
	leader = c.waitLeaders([]uint64{1})[1]
	require.Eventually(t, func() bool { return c.node(1, leader).Status().SnapshotIndex >= 150 }, 10*time.Second, time.Millisecond)
	first, err := c.storages[groupKey{1, leader}].FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(100), "the leader compacted past what the lagging replica has")

	c.startGroup(1, lagging, c.members[1])
	c.waitApplied(1, last)
	want := list(groupKey{1, leader}).list()
	require.Eventually(t, func() bool { return slices.Equal(list(groupKey{1, lagging}).list(), want) }, 10*time.Second, time.Millisecond)
	assert.Positive(t, list(groupKey{1, lagging}).restored, "the lagging replica caught up through a snapshot")
	for _, g := range groups[1:] {
		c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/x", g)))
	}
	if tcp {
		h := c.hosts[lagging]
		h.tcp.mu.Lock()
		bulk := h.tcp.streams[tcpStreamKey{from: leader, lane: tcpLaneBulk}]
		h.tcp.mu.Unlock()
		assert.NotNil(t, bulk, "the snapshot came on the bulk lane")
		assert.Zero(t, h.Stats().TCP.BadFrames)
	}
}

func TestHost_TCP_SnapshotOnTheBulkLane(t *testing.T) { testSnapshotTransfer(t, true) }

func TestHost_Inmem_SnapshotTransfer(t *testing.T) { testSnapshotTransfer(t, false) }

// Lease reads work in a group on a Host, whose ticks come from the host's
// clock: the leader gets a lease and answers from it, and makes up the
// ticks its event loop missed from the monotonic clock.
func TestHost_LeaseReadsOnTheSharedClock(t *testing.T) {
	c := newHostCluster(t, 3, false)
	c.tune = func(_ uint64, cfg *Config) { cfg.LeaseReads = true }
	c.foundGroup(1, 1, 2, 3)
	leader := c.waitLeaders([]uint64{1})[1]
	index := c.propose(1, "g1/a")
	n := c.node(1, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		valid := false
		require.NoError(t, n.call(ctx, func() { valid = n.core.leaseValid() }))
		return valid
	}, 10*time.Second, time.Millisecond, "the leader gets a lease")
	var before, after uint64
	require.NoError(t, n.call(ctx, func() { before = n.core.lease.served }))
	require.NoError(t, n.LeaseRead(ctx))
	require.NoError(t, n.call(ctx, func() { after = n.core.lease.served }))
	assert.Greater(t, after, before, "the lease answered")
	assert.GreaterOrEqual(t, n.Status().AppliedIndex, index)

	var made uint64
	require.NoError(t, n.call(ctx, func() {
		now := n.core.lease.now
		n.clock.base = n.clock.base.Add(-5 * n.clock.period) // five periods passed unseen
		n.catchUpClock()
		made = n.core.lease.now - now
	}))
	assert.GreaterOrEqual(t, made, uint64(5), "the leader made up the ticks it missed")
}

// Bad input to NewHost and StartGroup gets a clear error, never a panic.
func TestHost_BadInput(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	for _, tc := range []struct {
		name string
		cfg  HostConfig
		want string
	}{
		{"no ID", HostConfig{Network: nw}, "HostConfig.ID must be non-zero"},
		{"no transport", HostConfig{ID: 1}, "HostConfig.TCP or Network must be set"},
		{"two transports", HostConfig{ID: 1, Network: nw, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0"}}, "TCP and Network are both set"},
		{"negative tick", HostConfig{ID: 1, Network: nw, TickInterval: -1}, "TickInterval -1ns is negative"},
		{"bad TCP config", HostConfig{ID: 1, TCP: &TCPConfig{}}, "TCPConfig.ListenAddr is required"},
	} {
		_, err := NewHost(tc.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, tc.name)
		assert.ErrorContains(t, err, tc.want, tc.name)
	}

	h, err := NewHost(HostConfig{ID: 1, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0"}})
	require.NoError(t, err)
	members := []Member{{ID: 1, Addr: h.Addr()}, {ID: 2, Addr: "127.0.0.1:1"}}
	good := Config{InitialMembers: members}
	sm, store := &recordingSM{}, NewMemoryStorage()
	for _, tc := range []struct {
		name  string
		group uint64
		cfg   Config
		sm    StateMachine
		store Storage
		want  string
	}{
		{"group 0", 0, good, sm, store, "group ID 0 is reserved"},
		{"nil state machine", 1, good, nil, store, "group 1: nil StateMachine"},
		{"nil storage", 1, good, sm, nil, "group 1: nil Storage"},
		{"ID of another host", 1, Config{ID: 2, InitialMembers: members}, sm, store, "Config.ID 2 is not the host's ID 1"},
		{"invalid config", 1, Config{InitialMembers: members, ElectionTimeout: -1}, sm, store, "group 1: raft: invalid config: ElectionTimeout -1ns is negative"},
		{"tick not a multiple", 1, Config{InitialMembers: members, ElectionTimeout: 155 * time.Millisecond, HeartbeatInterval: 15 * time.Millisecond},
			sm, store, "the group's tick 15ms (the shorter of HeartbeatInterval and ElectionTimeout/10) is not a multiple of HostConfig.TickInterval 10ms"},
		{"this host at another address", 1, Config{InitialMembers: []Member{{ID: 1, Addr: "10.0.0.1:7000"}, {ID: 2, Addr: "127.0.0.1:1"}}}, sm, store,
			fmt.Sprintf("InitialMembers lists this host (ID 1) at \"10.0.0.1:7000\", but the host is at %q", h.Addr())},
		{"a member without an address", 1, Config{InitialMembers: []Member{{ID: 1}, {ID: 2}}}, sm, store,
			"InitialMembers lists host 2 without an Addr: over TCP, every member needs its host's address"},
	} {
		_, err := h.StartGroup(tc.group, tc.cfg, tc.sm, tc.store)
		require.ErrorIs(t, err, ErrInvalidConfig, tc.name)
		assert.ErrorContains(t, err, tc.want, tc.name)
	}
	assert.Empty(t, h.Groups(), "no group was started by bad input")

	n, err := h.StartGroup(1, good, sm, store)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), n.Status().ID, "Config.ID 0 stands for the host's")
	_, err = h.StartGroup(1, good, &recordingSM{}, NewMemoryStorage())
	require.ErrorIs(t, err, ErrGroupExists)
	assert.ErrorContains(t, err, "group 1")
	got, ok := h.Group(1)
	require.True(t, ok)
	assert.Same(t, n, got)
	assert.Equal(t, []uint64{1}, h.Groups())

	require.ErrorIs(t, h.StopGroup(2), ErrUnknownGroup)
	require.NoError(t, h.StopGroup(1))
	require.ErrorIs(t, h.StopGroup(1), ErrUnknownGroup, "stopped already")
	_, ok = h.Group(1)
	assert.False(t, ok)

	// Node.Close works as StopGroup: the group can start again.
	n, err = h.StartGroup(1, good, sm, store)
	require.NoError(t, err)
	require.NoError(t, n.Close())
	assert.Empty(t, h.Groups())
	n, err = h.StartGroup(1, good, sm, store)
	require.NoError(t, err, "restarted on its storage")

	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "Close is idempotent")
	_, err = n.Propose(context.Background(), []byte("x"))
	require.ErrorIs(t, err, ErrClosed, "Close closed the group")
	_, err = h.StartGroup(2, good, sm, NewMemoryStorage())
	require.ErrorIs(t, err, ErrClosed)
	assert.ErrorContains(t, err, "the host is closed")
}

// A Host and a single node's TCPTransport refuse each other in the
// handshake with the version refusal of every release (status 1), and
// both sides say why: the host's hello is version 2, which a transport of
// an earlier release refuses as it refuses any unknown version (the reply
// it sends is in testdata/compat: reply-bad-version), and a single node's
// hello, which this build writes byte for byte as earlier releases do
// (TestCompat_OldBuildReadsThisEncoding), is version 1, which a Host
// refuses.
func TestHost_SingleNodeTransportAndHostRefuseEachOther(t *testing.T) {
	hostCore, hostLogs := observer.New(zapcore.WarnLevel)
	h, err := NewHost(HostConfig{ID: 1, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: tcpTestCluster,
		DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 50 * time.Millisecond}, Logger: zap.New(hostCore)})
	require.NoError(t, err)
	defer h.Close()
	nodeCore, nodeLogs := observer.New(zapcore.WarnLevel)
	tr := newTestTCP(t, "single", TCPConfig{ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond,
		MaxDialBackoff: 50 * time.Millisecond, Logger: zap.New(nodeCore)})
	require.NoError(t, tr.Attach(2, func(Message) {}))
	// firstError waits for a log line and returns its error field.
	firstError := func(logs *observer.ObservedLogs, message string) string {
		t.Helper()
		require.Eventually(t, func() bool { return logs.FilterMessage(message).Len() > 0 }, 10*time.Second, time.Millisecond,
			"no log line %q", message)
		return fmt.Sprint(logs.FilterMessage(message).All()[0].ContextMap()["error"])
	}

	// The single node dials the host.
	tr.SetPeers([]Member{{ID: 2, Addr: tr.Addr()}, {ID: 1, Addr: h.Addr()}})
	assert.Contains(t, firstError(nodeLogs, "cannot reach peer; dropping its queued messages"),
		"handshake refused by the peer: unsupported protocol version (this node speaks 1, the peer 2); the peer is a Host")
	assert.Contains(t, firstError(hostLogs, "inbound connection refused: bad hello"),
		"unsupported protocol version 1 (this node speaks 2); the dialer is a single node's TCPTransport")
	assert.Positive(t, h.Stats().TCP.HandshakesRefused)
	tr.SetPeers([]Member{{ID: 2, Addr: tr.Addr()}})

	// The host dials the single node: a group on the host names it.
	sm, store := &recordingSM{}, NewMemoryStorage()
	_, err = h.StartGroup(1, Config{InitialMembers: []Member{{ID: 1, Addr: h.Addr()}, {ID: 2, Addr: tr.Addr()}}}, sm, store)
	require.NoError(t, err)
	assert.Contains(t, firstError(hostLogs, "cannot reach peer; dropping its queued messages"),
		"handshake refused by the peer: unsupported protocol version (this node speaks 2, the peer 1); "+
			"the peer is a single node's TCPTransport (or a release without hosts), and a Host connects only to Hosts")
	assert.Contains(t, firstError(nodeLogs, "inbound connection refused: bad hello"),
		"unsupported protocol version 2 (this node speaks 1); the dialer is a Host")
	assert.Positive(t, tr.Stats().HandshakesRefused)
	assert.Zero(t, tr.Stats().Received, "nothing crossed")
	assert.Zero(t, h.Stats().TCP.Received)
}

// A group's Node refuses a command larger than the host's frames carry,
// as a single Node over TCPTransport does.
func TestHost_TCP_RefusesACommandNoFrameCanCarry(t *testing.T) {
	c := newHostCluster(t, 3, true)
	c.foundGroup(1, 1, 2, 3)
	leader := c.waitLeaders([]uint64{1})[1]
	n := c.node(1, leader)
	limit := n.maxCommand
	require.Greater(t, limit, DefaultTCPMaxFrameSize-256)
	require.Less(t, limit, DefaultTCPMaxFrameSize)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := n.Propose(ctx, make([]byte, limit+1))
	require.ErrorIs(t, err, ErrTooLarge)
	c.propose(1, "g1/after")
}
