package raft

// Host: many Raft groups in one process, sharing the transport, the clock
// and the CPU. docs/multigroup.md is the user's guide.
//
// The host is in these files:
//
//	host.go            HostConfig, Host and its methods: NewHost,
//	                   StartGroup, StopGroup, Group, Groups, Stats, Close;
//	                   routing inbound messages to their groups
//	host_transport.go  the link to the other hosts (a TCPTransport in host
//	                   mode, or an InmemNetwork endpoint), each group's view
//	                   of it (groupTransport), and the union of the groups'
//	                   peers (hostPeers)
//	host_clock.go      the shared ticker that drives every group's ticks
//	host_workers.go    the pool of workers that runs the groups' event
//	                   loops, one pass at a time
//	host_quiesce.go    the resting groups (quiescence, quiesce.go): the
//	                   liveness messages between hosts, and the followers
//	                   woken when their leader's host falls silent
//	host_balance.go    spreading the groups' leaders over the hosts
//	                   (BalanceLeaders, HostConfig.BalanceInterval)
//	host_metrics.go    what the host shows of its groups: GroupSummary,
//	                   GroupStatuses, HostConfig.MeterProvider's metrics
//
// Identity. A group's members are hosts: the replica of a group on a host
// has the host's ID as its node ID (Config.ID), and a member's Addr is its
// host's address. One host runs at most one replica of a group. That is
// what lets one connection to a peer host carry the messages of every
// group the two hosts share, with one handshake (and, under TLS, one
// certificate) per host, and it is what the TCP handshake checks: a
// message's From is the host that sent it.

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
)

// HostConfig configures a Host. Set ID and exactly one of TCP and Network.
type HostConfig struct {
	// ID is the host's ID, non-zero and unique among the hosts: it is the
	// member ID of every group replica the host runs (Config.ID), and what
	// its peers dial it as. Required.
	ID uint64
	// TCP makes the host listen and dial over TCP with these settings
	// (ListenAddr, ClusterID, TLS, timeouts and limits; see TCPConfig and
	// docs/tcp.md). The connections are in host mode: a Host reaches only
	// other Hosts, never a single node's TCPTransport. With TLS, a host's
	// certificate names its host ID (the node ID of TCPConfig's
	// identity rules).
	TCP *TCPConfig
	// Network puts the host on an in-memory network instead, for tests: its
	// endpoint there is its ID, so InmemNetwork's faults (Partition,
	// Isolate, Cut, SetFaults) apply to hosts. A Host's endpoint and a
	// single node's on the same network do not reach each other.
	Network *InmemNetwork
	// TickInterval is the period of the host's clock, which ticks every
	// group. Each group's tick (Config: the shorter of HeartbeatInterval
	// and ElectionTimeout/10) must be a whole multiple of it; the groups
	// whose tick is k host ticks long are spread over k host ticks, so
	// that their heartbeats do not all leave at once. Default 10ms.
	TickInterval time.Duration
	// QuiesceAfter is how long a group has nothing to do (nothing to
	// replicate, read, change or transfer) before it quiesces: its leader
	// tells the followers, and the group stops ticking and heartbeating
	// until a message, proposal, read or membership call wakes it. Between
	// two hosts, one message per heartbeat interval then stands for the
	// heartbeats of all the groups they share, and a follower whose leader's
	// host falls silent for an election timeout wakes and elects a new
	// leader as usual (docs/multigroup.md, "Quiescence"). At least the
	// group's election timeout is used. Default DefaultQuiesceAfter;
	// negative: groups never quiesce.
	QuiesceAfter time.Duration
	// Workers is the number of goroutines that run the groups' event loops
	// (receiving, ticking, stepping the protocol, sending), whatever the
	// number of groups: a group with work waits in a queue for a worker,
	// which runs one pass of its loop and moves on to the next group. A
	// group never runs on two workers at once. Applying committed entries
	// and writing to storage happen off the workers, as for a Node. Default
	// runtime.GOMAXPROCS(0), which keeps every CPU busy when many groups
	// are; more help only when a pass waits for a device (a compaction
	// after a snapshot), which holds its worker meanwhile. Negative is
	// invalid.
	Workers int
	// Logger receives the host's logs and, for a group whose Config has no
	// Logger, the group's, with the group's ID as a field. Default
	// zap.NewNop().
	Logger *zap.Logger
	// BalanceInterval, when positive, runs BalanceLeaders with
	// BalanceOptions about that often (give or take a fifth, at random),
	// until Close: set it on every host and the groups' leaders spread over
	// the hosts and stay spread (docs/multigroup.md, "Placement and
	// balancing"). Default 0: the host balances only when BalanceLeaders is
	// called.
	BalanceInterval time.Duration
	// BalanceOptions are the options of the periodic balancing.
	BalanceOptions BalanceOptions
	// MeterProvider receives the host's metrics: its groups counted by
	// role, resting and without a leader, the leaders per host, and the
	// balancing's transfers (docs/observability.md, "A host's groups"). A
	// group's own metrics come from its Config.MeterProvider. Default nil:
	// none.
	MeterProvider metric.MeterProvider
}

// Validate returns an error naming the first invalid field, or nil. Every
// error wraps ErrInvalidConfig.
func (c HostConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: HostConfig.%s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ID == 0:
		return bad("ID must be non-zero")
	case c.TCP == nil && c.Network == nil:
		return bad("TCP or Network must be set: the host needs a way to reach the others")
	case c.TCP != nil && c.Network != nil:
		return bad("TCP and Network are both set; set one")
	case c.TickInterval < 0:
		return bad("TickInterval %v is negative", c.TickInterval)
	case c.Workers < 0:
		return bad("Workers %d is negative (0 means runtime.GOMAXPROCS(0))", c.Workers)
	case c.BalanceInterval < 0:
		return bad("BalanceInterval %v is negative (0: no periodic balancing)", c.BalanceInterval)
	}
	if err := c.BalanceOptions.validate("HostConfig.BalanceOptions"); err != nil {
		return err
	}
	if c.TCP != nil {
		return c.TCP.Validate()
	}
	return nil
}

// Host runs many Raft groups in one process over one shared transport, one
// shared clock and one pool of workers: one listener, and a small fixed number of connections
// to each peer host whatever the number of groups (two lanes, as
// TCPTransport's: one for messages, one for snapshots and large appends),
// carrying the messages of all groups in one stream of frames per lane,
// each frame tagged with its group's ID; one ticker for every group's
// timeouts; and a fixed number of goroutines (HostConfig.Workers) that run
// the event loops of the groups that have work. Each group is a *Node, used as any Node is (Propose, reads,
// membership, snapshots, Status), with its own StateMachine and Storage.
//
// A group's members are hosts: the replica of a group on a host has the
// host's ID as its node ID and the host's address as its Addr (see
// StartGroup). A message for a group the host does not run is dropped and
// counted (HostStats.DroppedUnknownGroup); Raft retransmits once the group
// is started.
//
// All methods are safe for concurrent use. Close it when done: it closes
// every group's Node, then the transport. It does not close the groups'
// Storages, which belong to their creator.
type Host struct {
	id     uint64
	cfg    HostConfig // with defaults
	logger *zap.Logger
	addr   string // the address the host's peers reach it at; "" on an in-memory network
	link   hostLink
	tcp    *TCPTransport // nil on an in-memory network
	clock  *hostClock
	// workers run the groups' event loops (host_workers.go).
	workers *workerPool
	peers   *hostPeers
	// quiesce tracks the resting groups (host_quiesce.go).
	quiesce *hostQuiesce

	routesMu sync.RWMutex
	routes   map[uint64]*groupTransport // attached groups, by group ID

	mu       sync.Mutex
	closed   bool
	groups   map[uint64]*hostGroup // running, or starting (node nil)
	starting sync.WaitGroup        // StartGroup calls under way

	droppedUnknownGroup atomic.Uint64
	closing             sync.Once

	balancer     *hostBalancer // nil without HostConfig.BalanceInterval (host_balance.go)
	balanceStats balanceStats
	metrics      *hostMetrics // nil without HostConfig.MeterProvider (host_metrics.go)
}

// hostGroup is a group the host runs, or is starting.
type hostGroup struct {
	node *Node // nil while StartGroup runs
	view *groupTransport
}

var errHostClosed = fmt.Errorf("%w: the host is closed", ErrClosed)

// NewHost validates cfg and starts the host: its listener (with TCP) or its
// endpoint (with Network), and its clock. It runs no group yet: add them
// with StartGroup.
func NewHost(cfg HostConfig) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = DefaultHostTickInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	switch {
	case cfg.QuiesceAfter == 0:
		cfg.QuiesceAfter = DefaultQuiesceAfter
	case cfg.QuiesceAfter < 0:
		cfg.QuiesceAfter = 0
	}
	h := &Host{
		id:     cfg.ID,
		cfg:    cfg,
		logger: cfg.Logger.With(zap.Uint64("host", cfg.ID)),
		routes: map[uint64]*groupTransport{},
		groups: map[uint64]*hostGroup{},
	}
	if cfg.TCP != nil {
		tcfg := *cfg.TCP
		if tcfg.Logger == nil {
			tcfg.Logger = h.logger
		}
		t, err := newTCPTransport(tcfg, true)
		if err != nil {
			return nil, err
		}
		if err := t.attach(cfg.ID, h.route); err != nil {
			t.Close()
			return nil, err
		}
		h.tcp, h.link, h.addr = t, tcpHostLink{t}, t.advertise
	} else {
		ep := cfg.Network.hostTransport(cfg.ID)
		if err := ep.attachHost(h.route); err != nil {
			return nil, fmt.Errorf("raft: host %d: %w", cfg.ID, err)
		}
		h.link = inmemHostLink{ep}
	}
	h.peers = newHostPeers(h.link, h.logger)
	h.quiesce = newHostQuiesce(h, cfg.QuiesceAfter)
	var afterTick func(time.Time)
	if cfg.QuiesceAfter > 0 {
		afterTick = h.quiesce.check
	}
	h.workers = newWorkerPool(cfg.Workers)
	h.clock = newHostClock(cfg.TickInterval, afterTick)
	if err := h.observe(cfg.MeterProvider); err != nil {
		h.clock.close()
		h.workers.close()
		h.link.close()
		return nil, err
	}
	h.startBalancer()
	h.logger.Info("host started", zap.String("addr", h.addr), zap.Duration("tickInterval", cfg.TickInterval),
		zap.Duration("quiesceAfter", cfg.QuiesceAfter), zap.Int("workers", cfg.Workers))
	return h, nil
}

// ID returns the host's ID: the node ID of each of its group replicas.
func (h *Host) ID() uint64 { return h.id }

// Addr returns the address the host listens on (with the port the system
// chose when TCPConfig.ListenAddr had port 0), or "" on an in-memory
// network.
func (h *Host) Addr() string {
	if h.tcp == nil {
		return ""
	}
	return h.tcp.Addr()
}

// StartGroup starts the host's replica of group groupID, as NewNode starts
// a node, and returns its Node; it runs until StopGroup, Node.Close or
// Host.Close. cfg is the group's Config, as for NewNode, with these rules:
//
//   - cfg.ID is the host's ID (0 stands for it): a group's members are
//     hosts, and this host runs one replica of the group.
//   - Each member's Addr (InitialMembers, AddVoter, AddLearner) is its
//     host's address, Host.Addr; over TCP every member needs one.
//   - The group's tick (the shorter of HeartbeatInterval and
//     ElectionTimeout/10) is a whole multiple of HostConfig.TickInterval.
//   - Without cfg.Logger, the group logs to the host's logger.
//
// A group restarted on the same Storage (StopGroup, then StartGroup)
// recovers its state, as a Node does. StartGroup fails with an error
// wrapping ErrInvalidConfig for a group ID of 0, a nil StateMachine or
// Storage, a HostStorage.Group Storage of another group ID, or a cfg that
// breaks the rules above or Config.Validate;
// ErrGroupExists when the group already runs here; ErrClosed after Close.
func (h *Host) StartGroup(groupID uint64, cfg Config, sm StateMachine, storage Storage) (*Node, error) {
	every, err := h.checkGroup(groupID, &cfg, sm, storage)
	if err != nil {
		return nil, err
	}
	view := newGroupTransport(h, groupID, every)
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, errHostClosed
	case h.groups[groupID] != nil:
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: group %d", ErrGroupExists, groupID)
	}
	rec := &hostGroup{view: view}
	h.groups[groupID] = rec
	h.starting.Add(1)
	h.mu.Unlock()
	defer h.starting.Done()

	node, err := NewNode(cfg, sm, storage, view)
	if err != nil {
		view.Detach() // also forgets the reservation
		return nil, fmt.Errorf("raft: starting group %d: %w", groupID, err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		node.Close()
		return nil, errHostClosed
	}
	if h.groups[groupID] == rec { // not closed meanwhile through the Node
		rec.node = node
	}
	h.mu.Unlock()
	h.warnStoredAddr(node, cfg.Logger)
	return node, nil
}

// warnStoredAddr warns when a group's stored configuration lists this host
// at an address other than the one it listens at (a process restarted on
// another port): InitialMembers are ignored once a Storage holds state, and
// the peers dial the stored address, so they do not reach this replica.
func (h *Host) warnStoredAddr(node *Node, logger *zap.Logger) {
	if h.addr == "" {
		return
	}
	for _, m := range node.Status().Members {
		if m.ID == h.id && m.Addr != "" && m.Addr != h.addr {
			logger.Warn("the group's stored configuration lists this host at another address: its peers dial that one and do not reach "+
				"this replica; restart the host at that address, or change the member's address in the group",
				zap.String("stored", m.Addr), zap.String("addr", h.addr))
		}
	}
}

// checkGroup validates StartGroup's arguments, completing cfg (its ID and
// Logger), and returns the group's tick in host ticks.
func (h *Host) checkGroup(groupID uint64, cfg *Config, sm StateMachine, storage Storage) (int, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: group %d: %s", ErrInvalidConfig, groupID, fmt.Sprintf(format, args...))
	}
	switch {
	case groupID == 0:
		return 0, fmt.Errorf("%w: group ID 0 is reserved; group IDs are non-zero", ErrInvalidConfig)
	case sm == nil:
		return 0, bad("nil StateMachine")
	case storage == nil:
		return 0, bad("nil Storage")
	case cfg.ID == 0:
		cfg.ID = h.id
	case cfg.ID != h.id:
		return 0, bad("Config.ID %d is not the host's ID %d: in a Host, a group's members are hosts, "+
			"and the replica on this host has its ID (leave Config.ID 0 for it)", cfg.ID, h.id)
	}
	if gs, ok := storage.(*groupStorage); ok && gs.g.id != groupID {
		// Two groups on one group's log would each read the other's
		// entries and overwrite them.
		return 0, bad("the Storage is HostStorage.Group(%d)'s; each group needs its own: HostStorage.Group(%d)", gs.g.id, groupID)
	}
	if err := cfg.Validate(); err != nil {
		return 0, fmt.Errorf("group %d: %w", groupID, err)
	}
	tick, _, _ := cfg.withDefaults().ticks()
	if tick%h.cfg.TickInterval != 0 {
		return 0, bad("the group's tick %v (the shorter of HeartbeatInterval and ElectionTimeout/10) is not a multiple of "+
			"HostConfig.TickInterval %v, the host's clock that ticks every group", tick, h.cfg.TickInterval)
	}
	for _, m := range cfg.InitialMembers {
		switch {
		case m.ID == h.id && m.Addr != "" && h.addr != "" && m.Addr != h.addr:
			return 0, bad("InitialMembers lists this host (ID %d) at %q, but the host is at %q: a group's members are hosts, "+
				"reached at their host's address (set TCPConfig.AdvertiseAddr if peers reach this host by another one)", m.ID, m.Addr, h.addr)
		case m.ID != h.id && m.Addr == "" && h.tcp != nil:
			return 0, bad("InitialMembers lists host %d without an Addr: over TCP, every member needs its host's address", m.ID)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = h.logger
	}
	cfg.Logger = cfg.Logger.With(zap.Uint64("group", groupID))
	return int(tick / h.cfg.TickInterval), nil
}

// StopGroup closes the host's replica of group groupID (Node.Close: it does
// not hand leadership over; call Node.Shutdown first for that). Its
// Storage is left as it is, for a later StartGroup. It fails with
// ErrUnknownGroup when the group does not run here.
func (h *Host) StopGroup(groupID uint64) error {
	node, ok := h.Group(groupID)
	if !ok {
		return fmt.Errorf("%w: group %d", ErrUnknownGroup, groupID)
	}
	return node.Close()
}

// Group returns the Node of group groupID, if it runs on the host.
func (h *Host) Group(groupID uint64) (*Node, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec := h.groups[groupID]
	if rec == nil || rec.node == nil {
		return nil, false
	}
	return rec.node, true
}

// Groups returns the IDs of the groups running on the host, in increasing
// order.
func (h *Host) Groups() []uint64 {
	h.mu.Lock()
	ids := make([]uint64, 0, len(h.groups))
	for id, rec := range h.groups {
		if rec.node != nil {
			ids = append(ids, id)
		}
	}
	h.mu.Unlock()
	slices.Sort(ids)
	return ids
}

// HostStats counts what a Host did; see Host.Stats.
type HostStats struct {
	Groups int // groups running
	// Quiesced is the number of groups resting (quiesced) on the host now:
	// they neither tick nor heartbeat (HostConfig.QuiesceAfter).
	Quiesced int
	// QuiescePings counts the liveness messages the host sent to peer hosts
	// for the resting groups it leads: one per peer host and heartbeat
	// interval, instead of a heartbeat per group.
	QuiescePings uint64
	// DroppedUnknownGroup counts inbound messages for a group the host does
	// not run (not started yet, stopped, or never here); they are dropped.
	DroppedUnknownGroup uint64
	// TCP is the host's TCP transport's counters, for all groups together
	// (zero on an in-memory network).
	TCP TCPStats
}

// Stats returns the host's counters.
func (h *Host) Stats() HostStats {
	s := HostStats{Groups: len(h.Groups()), DroppedUnknownGroup: h.droppedUnknownGroup.Load(),
		Quiesced: h.quiesce.resting(), QuiescePings: h.quiesce.pings.Load()}
	if h.tcp != nil {
		s.TCP = h.tcp.Stats()
	}
	return s
}

// Close closes every group's Node (as Node.Close, without handing
// leadership over), waits for StartGroup calls under way, then stops the
// clock, the workers and the transport. It is idempotent.
func (h *Host) Close() error {
	h.closing.Do(func() {
		h.stopBalancer()
		h.metrics.unregister()
		h.mu.Lock()
		h.closed = true
		var nodes []*Node
		for _, rec := range h.groups {
			if rec.node != nil {
				nodes = append(nodes, rec.node)
			}
		}
		h.mu.Unlock()
		for _, n := range nodes {
			n.Close()
		}
		h.starting.Wait()
		h.clock.close()
		h.workers.close() // every group's loop has exited: nothing is queued
		if err := h.link.close(); err != nil {
			h.logger.Warn("closing the transport", zap.Error(err))
		}
		h.logger.Info("host closed", zap.Int("groupsClosed", len(nodes)))
	})
	return nil
}

// route hands an inbound message, or a loss report, to its group.
func (h *Host) route(group uint64, m Message) {
	if m.Type != MsgUnreachable {
		h.quiesce.heardFrom(m.From) // the sending host is alive (host_quiesce.go)
	}
	h.routesMu.RLock()
	g := h.routes[group]
	h.routesMu.RUnlock()
	if g == nil {
		if m.Type != MsgUnreachable { // a stopped group's loss report is nobody's news
			h.droppedUnknownGroup.Add(1)
			if ce := h.logger.Check(zap.DebugLevel, "dropping a message for a group this host does not run"); ce != nil {
				ce.Write(zap.Uint64("group", group), zap.Uint64("from", m.From), zap.Stringer("type", m.Type))
			}
		}
		return
	}
	g.receive(m)
}

func (h *Host) addRoute(g *groupTransport) {
	h.routesMu.Lock()
	h.routes[g.group] = g
	h.routesMu.Unlock()
}

func (h *Host) removeRoute(g *groupTransport) {
	h.routesMu.Lock()
	if h.routes[g.group] == g {
		delete(h.routes, g.group)
	}
	h.routesMu.Unlock()
}

// forget removes the group of view g from the host's groups, once its node
// closed (or failed to start).
func (h *Host) forget(g *groupTransport) {
	h.mu.Lock()
	if rec := h.groups[g.group]; rec != nil && rec.view == g {
		delete(h.groups, g.group)
	}
	h.mu.Unlock()
}
