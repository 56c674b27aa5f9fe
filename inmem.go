package raft

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"
)

// InmemNetwork connects Nodes of one process without sockets, for tests of
// replicated services. Each node gets its endpoint from Transport(id); the
// network then carries messages between the attached endpoints. Like
// TCPTransport, an endpoint sends only to the nodes it knows: those of its
// last SetPeers and those it has received a message from (TCPTransport
// dials the members it is given and answers the nodes that connected to
// it); messages to any other node are dropped. The network can also be
// told to misbehave: Partition, Isolate and Cut drop messages between chosen
// nodes, and SetFaults drops, duplicates, delays and reorders messages at
// random, repeatably when the network is built WithSeed.
//
// A message dropped in Send because its receiver cannot be reached
// (Partition, Isolate, Cut, no endpoint attached) is reported to the
// sending Node with Unreachable, as a transport that sees a connection fail
// would report it; of the random drops only snapshot chunks are, as a
// broken connection would lose them, and the others go unnoticed, as lost
// packets do. A delayed message that finds no receiver is not reported.
//
// Every fault takes effect for messages sent after the call that sets it;
// messages already on their way (delayed) are not affected. Reachability
// (Partition, Isolate, Cut) is judged when a message is sent, not when a
// delayed message arrives.
//
// Without faults and delays a message is delivered synchronously from inside
// Send, on the sender's goroutine, which is as fast as an in-memory transport
// can be; with delays it is delivered later from a timer goroutine. A deliver
// callback is therefore called from many goroutines at once, as the Transport
// contract allows. The network holds no lock while it calls one, so a
// callback may itself Send.
//
// Hosts (HostConfig.Network) join the network too, each with one endpoint,
// its host ID, carrying the messages of all its groups: the faults above
// then apply to hosts. A host's endpoint and a single node's do not reach
// each other (the message is dropped for want of a receiver, and
// reported), as a Host and a TCPTransport refuse each other's handshake.
//
// All methods are safe for concurrent use. Call Close when the test is over:
// it cancels the delayed deliveries that are still pending, so that no timer
// or goroutine outlives the test.
type InmemNetwork struct {
	seed int64

	// mu serializes the writers of state. Readers (Send and the delayed
	// deliveries) only load the snapshot and never lock.
	mu    sync.Mutex
	state atomic.Pointer[inmemState]

	randMu sync.Mutex // guards random
	random *rand.Rand

	// pendingMu guards pending and closed. Every delayed copy of a message is
	// in pending from the moment its timer is created until it fires or Close
	// cancels it.
	pendingMu sync.Mutex
	pending   map[*inmemDelayed]struct{}
	closed    bool
	// firing counts the delayed deliveries that left pending and are being
	// handed to their receiver; Close waits for them.
	firing sync.WaitGroup

	stats inmemCounters

	// filter, when set, judges each message before the faults do; tests use
	// it to drop chosen messages.
	filter atomic.Pointer[inmemFilter]
}

// inmemFilter decides the fate of a message from node from; see
// InmemNetwork.filter. It runs on the sender's goroutine and may change m
// (which a real transport must not), so that a test can make a node look
// like an earlier version of itself.
type inmemFilter func(from uint64, m *Message) inmemVerdict

type inmemVerdict uint8

const (
	inmemPass         inmemVerdict = iota
	inmemDropSilently              // lost without a trace, as a packet on a lossy link
	inmemDropReported              // lost and reported to the sender, as a broken connection
)

// setFilter installs f (nil: none) for messages sent from now on.
func (nw *InmemNetwork) setFilter(f inmemFilter) {
	if f == nil {
		nw.filter.Store(nil)
		return
	}
	nw.filter.Store(&f)
}

// InmemOption configures an InmemNetwork; pass it to NewInmemNetwork.
type InmemOption func(*inmemOptions)

type inmemOptions struct {
	seed   int64
	seeded bool
}

// WithSeed seeds the network's random source, so that the random faults set
// with SetFaults (drops, duplicates, delays) are the same from one run to the
// next, given the same sequence of Send calls. Without it the seed comes from
// the clock; Seed reports it either way, so a test can log the seed of a run
// that failed and replay it. It seeds the network's faults only: each Node's
// election timeouts have their own seed, Config.Seed.
func WithSeed(seed int64) InmemOption {
	return func(o *inmemOptions) {
		o.seed = seed
		o.seeded = true
	}
}

// Faults describes the random misbehaviour of an InmemNetwork; see SetFaults.
// The zero value means a perfect network.
type Faults struct {
	// Drop is the probability, from 0 to 1, that a message is lost.
	Drop float64
	// Duplicate is the probability, from 0 to 1, that a message that was not
	// dropped is delivered twice. Each copy gets its own delay.
	Duplicate float64
	// MinDelay and MaxDelay bound the delay of each delivered copy, drawn
	// uniformly from [MinDelay, MaxDelay]. When they differ, messages between
	// the same two nodes can arrive out of order. Zero delays mean synchronous
	// delivery from Send. A MaxDelay below MinDelay counts as MinDelay.
	MinDelay, MaxDelay time.Duration
}

// InmemStats counts what an InmemNetwork did with the messages it was given.
// Once no message is in flight (Pending is 0 and no Send is running),
//
//	Sent + Duplicated == Delivered + DroppedByFault + DroppedByPartition + DroppedNoReceiver + DroppedUnknownPeer
//
// While messages are moving the counters are read one by one and may be
// slightly out of step with each other.
type InmemStats struct {
	Sent               uint64 // messages passed to Send
	Delivered          uint64 // calls of a receiver's deliver callback, duplicates included
	Duplicated         uint64 // extra copies made by Faults.Duplicate
	Delayed            uint64 // copies scheduled for delivery after a delay
	DroppedByFault     uint64 // messages lost to Faults.Drop
	DroppedByPartition uint64 // messages stopped by Partition, Isolate or Cut
	DroppedNoReceiver  uint64 // copies with no attached receiver, sent after Close, or cancelled by Close
	Reported           uint64 // losses reported to the sender's Node (see Unreachable); not messages
	DroppedUnknownPeer uint64 // messages to a node the sender was not given by SetPeers and has not heard from
	Pending            uint64 // delayed copies still waiting for their delivery time
}

type inmemCounters struct {
	sent, delivered, duplicated, delayed                  atomic.Uint64
	droppedByFault, droppedByPartition, droppedNoReceiver atomic.Uint64
	reported                                              atomic.Uint64
	droppedUnknownPeer                                    atomic.Uint64
	pending                                               atomic.Int64
}

// inmemState is an immutable snapshot of the network's configuration. Writers
// copy it, change the copy and publish it; Send reads it without locking.
type inmemState struct {
	endpoints map[uint64]*inmemEndpoint // the newest attached endpoint of each node
	rules     *inmemRules               // nil when every node can reach every other
	faults    Faults                    // normalized
	faulty    bool                      // faults is not the zero value
	closed    bool
}

// inmemRules holds the reachability faults. It is immutable once published.
type inmemRules struct {
	// groups lists, for each node named in the last Partition, the indexes
	// of the groups it belongs to, in increasing order. A nil map means no
	// Partition is in force; a non-nil map isolates every node it omits.
	groups   map[uint64][]int
	isolated map[uint64]struct{}
	cut      map[inmemLink]struct{}
}

type inmemLink struct{ from, to uint64 }

var (
	errInmemClosed   = errors.New("raft: in-memory network closed")
	errInmemDetached = errors.New("raft: in-memory transport already detached; call InmemNetwork.Transport again for a new one")
)

// NewInmemNetwork returns a network with no nodes and no faults.
func NewInmemNetwork(opts ...InmemOption) *InmemNetwork {
	var o inmemOptions
	for _, opt := range opts {
		opt(&o)
	}
	if !o.seeded {
		o.seed = time.Now().UnixNano()
	}
	nw := &InmemNetwork{
		seed:    o.seed,
		random:  rand.New(rand.NewSource(o.seed)),
		pending: make(map[*inmemDelayed]struct{}),
	}
	nw.state.Store(&inmemState{endpoints: map[uint64]*inmemEndpoint{}})
	return nw
}

// Seed returns the seed of the network's random source: the one given
// WithSeed, or the one taken from the clock.
func (nw *InmemNetwork) Seed() int64 { return nw.seed }

// Transport returns a new endpoint for node id, to be passed to NewNode.
//
// Every call returns a fresh endpoint. To restart a node, close it (which
// detaches its endpoint) and start it again with a new endpoint from
// Transport(id); an endpoint cannot be attached again once detached.
//
// Messages addressed to id go to the endpoint for id that was attached last.
// If a new endpoint for id is attached while an older one still is, the new
// one takes over the inbound messages; the older one receives nothing more
// but can still send, like a stale process that has not noticed it was
// replaced, and its Detach leaves the new one in place. A delayed message goes
// to the endpoint attached for its To when the delay expires, so a message
// sent before a restart may reach the restarted node, as a late packet would.
//
// Partition, Isolate and Cut judge a message by the id of the endpoint that
// sends it and by the message's To.
func (nw *InmemNetwork) Transport(id uint64) Transport {
	return &inmemEndpoint{
		network: nw,
		id:      id,
		gate:    inmemGate{drained: make(chan struct{}, 1)},
	}
}

// Partition splits the network into groups: from now on two nodes can
// exchange messages only if some group lists both of them, and a node listed
// in no group can reach no one. Groups may overlap, which makes a node that
// is in two groups a bridge that reaches both sides while they cannot reach
// each other. Partition() with no groups isolates every node.
//
// A call replaces the previous Partition, but adds to the nodes isolated with
// Isolate and the links cut with Cut: a message must pass all three. Heal
// removes all of them.
func (nw *InmemNetwork) Partition(groups ...[]uint64) {
	membership := make(map[uint64][]int)
	for i, group := range groups {
		for _, id := range group {
			in := membership[id]
			if len(in) == 0 || in[len(in)-1] != i {
				membership[id] = append(in, i)
			}
		}
	}
	nw.updateRules(func(r *inmemRules) { r.groups = membership })
}

// Isolate cuts node id off from every other node, in both directions, until
// Heal. It adds to any Partition and Cut in force.
func (nw *InmemNetwork) Isolate(id uint64) {
	nw.updateRules(func(r *inmemRules) {
		isolated := make(map[uint64]struct{}, len(r.isolated)+1)
		for n := range r.isolated {
			isolated[n] = struct{}{}
		}
		isolated[id] = struct{}{}
		r.isolated = isolated
	})
}

// Cut drops the messages that node from sends to node to, until Heal.
// Messages from to to from still pass: Cut(a, b) and Cut(b, a) together
// sever the link in both directions. It adds to any Partition and Isolate in
// force.
func (nw *InmemNetwork) Cut(from, to uint64) {
	nw.updateRules(func(r *inmemRules) {
		cut := make(map[inmemLink]struct{}, len(r.cut)+1)
		for link := range r.cut {
			cut[link] = struct{}{}
		}
		cut[inmemLink{from, to}] = struct{}{}
		r.cut = cut
	})
}

// Heal undoes Partition, Isolate and Cut: every node can reach every other
// again. It leaves the random faults of SetFaults as they are; call
// SetFaults(Faults{}) to clear those.
func (nw *InmemNetwork) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	next := *nw.state.Load()
	next.rules = nil
	nw.state.Store(&next)
}

// SetFaults replaces the random faults applied to messages sent from now on;
// messages already delayed keep the delay they were given. Probabilities are
// clamped to [0, 1] and negative delays count as zero. Faults{} turns random
// faults off; Heal does not.
func (nw *InmemNetwork) SetFaults(f Faults) {
	f = f.normalized()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	next := *nw.state.Load()
	next.faults = f
	next.faulty = f != Faults{}
	nw.state.Store(&next)
}

// Stats returns the network's counters; see InmemStats.
func (nw *InmemNetwork) Stats() InmemStats {
	c := &nw.stats
	pending := c.pending.Load()
	if pending < 0 {
		pending = 0
	}
	return InmemStats{
		Sent:               c.sent.Load(),
		Delivered:          c.delivered.Load(),
		Duplicated:         c.duplicated.Load(),
		Delayed:            c.delayed.Load(),
		DroppedByFault:     c.droppedByFault.Load(),
		DroppedByPartition: c.droppedByPartition.Load(),
		DroppedNoReceiver:  c.droppedNoReceiver.Load(),
		Reported:           c.reported.Load(),
		DroppedUnknownPeer: c.droppedUnknownPeer.Load(),
		Pending:            uint64(pending),
	}
}

// Close shuts the network down: the delayed messages still pending are
// dropped and their timers stopped, deliveries already under way are waited
// for, and from then on every message sent is dropped and attaching an
// endpoint fails. After Close returns the network runs no goroutine and holds
// no timer. Close is idempotent. It must not be called from inside a deliver
// callback, which it would wait for.
func (nw *InmemNetwork) Close() {
	nw.mu.Lock()
	if st := nw.state.Load(); !st.closed {
		next := *st
		next.closed = true
		nw.state.Store(&next)
	}
	nw.mu.Unlock()

	nw.pendingMu.Lock()
	nw.closed = true
	for d := range nw.pending {
		d.timer.Stop()
		nw.stats.droppedNoReceiver.Add(1)
		nw.stats.pending.Add(-1)
	}
	clear(nw.pending)
	nw.pendingMu.Unlock()
	nw.firing.Wait()
}

// updateRules publishes a copy of the reachability rules changed by change,
// which must replace (not modify) any map it changes.
func (nw *InmemNetwork) updateRules(change func(*inmemRules)) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	next := *nw.state.Load()
	var rules inmemRules
	if next.rules != nil {
		rules = *next.rules
	}
	change(&rules)
	next.rules = &rules
	nw.state.Store(&next)
}

// updateEndpoints publishes a copy of the endpoint table changed by change.
// It fails when the network is closed.
func (nw *InmemNetwork) updateEndpoints(change func(map[uint64]*inmemEndpoint)) error {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	next := *nw.state.Load()
	if next.closed {
		return errInmemClosed
	}
	endpoints := make(map[uint64]*inmemEndpoint, len(next.endpoints)+1)
	for id, ep := range next.endpoints {
		endpoints[id] = ep
	}
	change(endpoints)
	next.endpoints = endpoints
	nw.state.Store(&next)
	return nil
}

// allows reports whether a message from node from may reach node to.
func (r *inmemRules) allows(from, to uint64) bool {
	if _, ok := r.isolated[from]; ok {
		return false
	}
	if _, ok := r.isolated[to]; ok {
		return false
	}
	if _, ok := r.cut[inmemLink{from, to}]; ok {
		return false
	}
	if r.groups == nil {
		return true
	}
	// Both lists are sorted: look for a common group.
	a, b := r.groups[from], r.groups[to]
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0] == b[0]:
			return true
		case a[0] < b[0]:
			a = a[1:]
		default:
			b = b[1:]
		}
	}
	return false
}

func (f Faults) normalized() Faults {
	clamp := func(p float64) float64 {
		if p > 0 { // false for NaN
			return min(p, 1)
		}
		return 0
	}
	f.Drop = clamp(f.Drop)
	f.Duplicate = clamp(f.Duplicate)
	f.MinDelay = max(f.MinDelay, 0)
	f.MaxDelay = max(f.MaxDelay, f.MinDelay)
	return f
}

// delay draws a delay; the caller holds randMu.
func (f *Faults) delay(random *rand.Rand) time.Duration {
	if f.MaxDelay == f.MinDelay {
		return f.MinDelay
	}
	span := int64(f.MaxDelay - f.MinDelay)
	if span < math.MaxInt64 {
		span++ // make MaxDelay itself possible
	}
	return f.MinDelay + time.Duration(random.Int63n(span))
}

// deliver hands m, of group, to the endpoint attached for m.To, if any,
// and reports whether it did. host says whether a Host sent it: a Host's
// endpoint and a single node's do not reach each other, as over TCP,
// where each refuses the other's handshake.
func (st *inmemState) deliver(host bool, group uint64, m *Message) bool {
	ep := st.endpoints[m.To]
	return ep != nil && ep.host == host && ep.receive(group, m)
}

// sendCounts accumulates the outcome of one Send call, so that the shared
// counters are updated once per call rather than once per message.
type sendCounts struct {
	delivered, duplicated, delayed                        uint64
	droppedByFault, droppedByPartition, droppedNoReceiver uint64
	droppedUnknownPeer                                    uint64
}

func (nw *InmemNetwork) addCounts(sent uint64, c *sendCounts) {
	add := func(counter *atomic.Uint64, n uint64) {
		if n != 0 {
			counter.Add(n)
		}
	}
	s := &nw.stats
	add(&s.sent, sent)
	add(&s.delivered, c.delivered)
	add(&s.duplicated, c.duplicated)
	add(&s.delayed, c.delayed)
	add(&s.droppedByFault, c.droppedByFault)
	add(&s.droppedByPartition, c.droppedByPartition)
	add(&s.droppedNoReceiver, c.droppedNoReceiver)
	add(&s.droppedUnknownPeer, c.droppedUnknownPeer)
}

// sendFaulty applies the random faults of st to m, whose sender may reach its
// receiver.
func (nw *InmemNetwork) sendFaulty(st *inmemState, host bool, group uint64, m *Message, c *sendCounts) {
	f := &st.faults
	var delays [2]time.Duration
	copies := 1
	nw.randMu.Lock()
	if f.Drop > 0 && nw.random.Float64() < f.Drop {
		nw.randMu.Unlock()
		c.droppedByFault++
		return
	}
	if f.Duplicate > 0 && nw.random.Float64() < f.Duplicate {
		copies = 2
	}
	for i := range copies {
		delays[i] = f.delay(nw.random)
	}
	nw.randMu.Unlock()

	c.duplicated += uint64(copies - 1)
	for _, delay := range delays[:copies] {
		switch {
		case delay > 0:
			c.delayed++
			if !nw.schedule(host, group, *m, delay) {
				c.droppedNoReceiver++
			}
		case st.deliver(host, group, m):
			c.delivered++
		default:
			c.droppedNoReceiver++
		}
	}
}

// inmemDelayed is one copy of a message waiting for its delivery time.
type inmemDelayed struct {
	network *InmemNetwork
	msg     Message
	host    bool   // sent by a Host
	group   uint64 // the message's group, on a Host
	timer   *time.Timer
}

// schedule arranges for m to be delivered after delay; it returns false when
// the network is closed.
func (nw *InmemNetwork) schedule(host bool, group uint64, m Message, delay time.Duration) bool {
	d := &inmemDelayed{network: nw, msg: m, host: host, group: group}
	nw.pendingMu.Lock()
	defer nw.pendingMu.Unlock()
	if nw.closed {
		return false
	}
	nw.stats.pending.Add(1)
	// fire locks pendingMu, so it cannot run before d is in pending.
	d.timer = time.AfterFunc(delay, d.fire)
	nw.pending[d] = struct{}{}
	return true
}

func (d *inmemDelayed) fire() {
	nw := d.network
	nw.pendingMu.Lock()
	if _, ok := nw.pending[d]; !ok { // cancelled by Close
		nw.pendingMu.Unlock()
		return
	}
	delete(nw.pending, d)
	nw.firing.Add(1)
	nw.pendingMu.Unlock()
	defer nw.firing.Done()

	// The receiver is the endpoint attached now, which may be a restarted
	// node: like a packet on a real network, a late message reaches whoever
	// listens at the address when it arrives.
	if nw.state.Load().deliver(d.host, d.group, &d.msg) {
		nw.stats.delivered.Add(1)
	} else {
		nw.stats.droppedNoReceiver.Add(1)
	}
	nw.stats.pending.Add(-1)
}

// inmemEndpoint is the Transport of one node on an InmemNetwork.
type inmemEndpoint struct {
	network *InmemNetwork
	id      uint64

	mu    sync.Mutex // guards phase; serializes Attach and Detach
	phase inmemPhase

	// deliver is set by Attach before the endpoint is published in the
	// network's state, and never changed afterwards; on a Host's endpoint
	// deliverGroup is, instead.
	deliver      func(Message)
	deliverGroup func(group uint64, m Message)
	gate         inmemGate
	// host: the endpoint of a Host (host.go), whose messages carry a group.
	host bool

	// The nodes the endpoint may send to: peers from the last SetPeers,
	// heard those it received a message from. Both maps are immutable once
	// published, so Send and receive read them without locking; writers
	// hold knownMu.
	peers   atomic.Pointer[map[uint64]struct{}]
	heard   atomic.Pointer[map[uint64]struct{}]
	knownMu sync.Mutex

	metrics atomic.Pointer[transportMetrics] // set by the Node (metrics.go); nil: none
}

type inmemPhase uint8

const (
	inmemFresh inmemPhase = iota
	inmemAttached
	inmemDetached
)

var _ Transport = (*inmemEndpoint)(nil)

// Attach registers deliver for the messages addressed to the endpoint's node.
func (ep *inmemEndpoint) Attach(id uint64, deliver func(Message)) error {
	if deliver == nil {
		return errors.New("raft: in-memory transport: nil deliver function")
	}
	return ep.attach(id, deliver, nil)
}

// hostTransport returns a new endpoint for the Host id, whose messages
// carry a group; attach it with attachHost. It reaches the other Hosts'
// endpoints and no single node's.
func (nw *InmemNetwork) hostTransport(id uint64) *inmemEndpoint {
	ep := nw.Transport(id).(*inmemEndpoint)
	ep.host = true
	return ep
}

// attachHost registers deliver for the messages addressed to the Host's
// endpoint, with their groups.
func (ep *inmemEndpoint) attachHost(deliver func(group uint64, m Message)) error {
	return ep.attach(ep.id, nil, deliver)
}

func (ep *inmemEndpoint) attach(id uint64, deliver func(Message), deliverGroup func(uint64, Message)) error {
	if id != ep.id {
		return fmt.Errorf("raft: in-memory transport of node %d cannot attach node %d", ep.id, id)
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	switch ep.phase {
	case inmemAttached:
		return fmt.Errorf("raft: in-memory transport of node %d is already attached", ep.id)
	case inmemDetached:
		return errInmemDetached
	}
	ep.deliver, ep.deliverGroup = deliver, deliverGroup
	err := ep.network.updateEndpoints(func(endpoints map[uint64]*inmemEndpoint) {
		endpoints[ep.id] = ep
	})
	if err != nil {
		ep.deliver, ep.deliverGroup = nil, nil
		return err
	}
	ep.phase = inmemAttached
	return nil
}

// Send delivers or schedules each message; it never blocks.
func (ep *inmemEndpoint) Send(msgs []Message) { ep.sendGroup(0, msgs) }

// sendGroup is Send for the messages of one group of a Host.
func (ep *inmemEndpoint) sendGroup(group uint64, msgs []Message) {
	if len(msgs) == 0 {
		return
	}
	nw := ep.network
	st := nw.state.Load()
	var c sendCounts
	if st.closed {
		c.droppedNoReceiver = uint64(len(msgs))
		nw.addCounts(uint64(len(msgs)), &c)
		return
	}
	filter := nw.filter.Load()
	var r inmemReporter
	peers, heard := ep.peers.Load(), ep.heard.Load()
	tm := ep.metrics.Load()
	var tally inmemTally
	for i := range msgs {
		m := &msgs[i]
		before := c
		switch {
		case !inmemKnows(peers, m.To) && !inmemKnows(heard, m.To):
			c.droppedUnknownPeer++
			r.report(ep, group, m)
		case st.rules != nil && !st.rules.allows(ep.id, m.To):
			c.droppedByPartition++
			r.report(ep, group, m)
		case filter != nil:
			switch (*filter)(ep.id, m) {
			case inmemPass:
				nw.sendOne(st, group, m, &c, &r, ep)
			case inmemDropReported:
				r.report(ep, group, m)
				fallthrough
			default:
				c.droppedByFault++
			}
		default:
			nw.sendOne(st, group, m, &c, &r, ep)
		}
		if tm != nil {
			tally.add(tm, m.To, &before, &c)
		}
	}
	tally.flush(tm)
	nw.addCounts(uint64(len(msgs)), &c)
}

// inmemTally sums the messages one Send call delivered (or scheduled) per
// peer, so that the sent counter is updated once per peer and call; drops
// are recorded as they happen.
type inmemTally struct {
	peers [8]uint64
	sent  [8]int
	n     int
}

func (t *inmemTally) add(tm *transportMetrics, to uint64, before, after *sendCounts) {
	for _, d := range [...]struct {
		reason dropReason
		n      uint64
	}{
		{dropUnknownPeer, after.droppedUnknownPeer - before.droppedUnknownPeer},
		{dropPartition, after.droppedByPartition - before.droppedByPartition},
		{dropFault, after.droppedByFault - before.droppedByFault},
		{dropNoReceiver, after.droppedNoReceiver - before.droppedNoReceiver},
	} {
		if d.n > 0 {
			tm.droppedTo(to, d.reason, int(d.n), 0)
		}
	}
	sent := int(after.delivered - before.delivered + after.delayed - before.delayed)
	if sent == 0 {
		return
	}
	for i := range t.n {
		if t.peers[i] == to {
			t.sent[i] += sent
			return
		}
	}
	if t.n == len(t.peers) {
		t.flush(tm)
	}
	t.peers[t.n], t.sent[t.n] = to, sent
	t.n++
}

func (t *inmemTally) flush(tm *transportMetrics) {
	for i := range t.n {
		tm.sentTo(t.peers[i], t.sent[i], 0)
	}
	t.n = 0
}

// sendOne delivers or schedules m, which its sender may send to m.To.
// What is lost for want of a receiver is reported to the sender, as a
// refused connection would be; of what random faults drop, only snapshot
// chunks are, as a broken connection would lose them (a lost packet of any
// other message goes unnoticed).
func (nw *InmemNetwork) sendOne(st *inmemState, group uint64, m *Message, c *sendCounts, r *inmemReporter, ep *inmemEndpoint) {
	if !st.faulty {
		if st.deliver(ep.host, group, m) {
			c.delivered++
		} else {
			c.droppedNoReceiver++
			r.report(ep, group, m)
		}
		return
	}
	lost, absent := c.droppedByFault, c.droppedNoReceiver
	nw.sendFaulty(st, ep.host, group, m, c)
	if c.droppedNoReceiver > absent || (c.droppedByFault > lost && m.Type == MsgSnapshot) {
		r.report(ep, group, m)
	}
}

// inmemReporter reports the messages one Send call lost to its sender's
// Node (see Unreachable).
type inmemReporter struct{ lossReports }

func (r *inmemReporter) report(ep *inmemEndpoint, group uint64, m *Message) {
	if (ep.deliver == nil && ep.deliverGroup == nil) || m.To == ep.id || !r.wantsIn(group, m) {
		return // never attached: no Node to tell; a message to itself; or reported already
	}
	report := Unreachable(*m)
	if ep.receive(group, &report) {
		ep.network.stats.reported.Add(1)
	}
}

// instrument makes ep record to m (nil: nothing); the Node calls it.
func (ep *inmemEndpoint) instrument(m *transportMetrics) { ep.metrics.Store(m) }

// SetPeers replaces the nodes the endpoint sends to (besides those it has
// heard from), as TCPTransport's SetPeers does. Addresses are ignored: a
// member without one is reachable, which over TCP it is not.
func (ep *inmemEndpoint) SetPeers(members []Member) {
	peers := make(map[uint64]struct{}, len(members))
	for _, m := range members {
		peers[m.ID] = struct{}{}
	}
	ep.knownMu.Lock()
	ep.peers.Store(&peers)
	ep.knownMu.Unlock()
}

// hear records that the endpoint received a message from node id, which it
// may answer from now on whatever its peers are.
func (ep *inmemEndpoint) hear(id uint64) {
	if inmemKnows(ep.heard.Load(), id) {
		return
	}
	ep.knownMu.Lock()
	defer ep.knownMu.Unlock()
	current := ep.heard.Load()
	if inmemKnows(current, id) {
		return
	}
	next := map[uint64]struct{}{id: {}}
	if current != nil {
		for n := range *current {
			next[n] = struct{}{}
		}
	}
	ep.heard.Store(&next)
}

func inmemKnows(set *map[uint64]struct{}, id uint64) bool {
	if set == nil {
		return false
	}
	_, ok := (*set)[id]
	return ok
}

// Detach unregisters the endpoint and waits for the deliveries to it that
// are under way; it must not be called from inside its own deliver callback.
func (ep *inmemEndpoint) Detach() {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.phase == inmemDetached {
		return
	}
	wasAttached := ep.phase == inmemAttached
	ep.phase = inmemDetached
	if wasAttached {
		// A closed network keeps its endpoint table; the gate below is
		// what stops deliveries then.
		_ = ep.network.updateEndpoints(func(endpoints map[uint64]*inmemEndpoint) {
			if endpoints[ep.id] == ep {
				delete(endpoints, ep.id)
			}
		})
	}
	ep.gate.close()
}

// receive calls the endpoint's deliver callback unless the endpoint is
// detached, and reports whether it did.
func (ep *inmemEndpoint) receive(group uint64, m *Message) bool {
	if !ep.gate.enter() {
		return false
	}
	defer ep.gate.exit()
	if m.Type != MsgUnreachable {
		// A loss report names the peer that was not reached; it is not
		// word from that peer.
		ep.hear(m.From)
	}
	if ep.host {
		ep.deliverGroup(group, *m)
	} else {
		ep.deliver(*m)
	}
	return true
}

// inmemGate lets Detach wait until no deliver call is running and stop all
// later ones, without making the deliveries take a lock: a delivery only
// counts itself in and out with one atomic add each, and never waits, so a
// deliver callback may itself Send (even back to its sender) without risk of
// deadlock.
type inmemGate struct {
	// state is the number of deliveries under way plus inmemGateClosed once
	// the gate is closed.
	state atomic.Int64
	// drained receives a token whenever the count drops to zero after the
	// gate closed. It is buffered (capacity 1) so that exit never blocks.
	drained chan struct{}
}

const inmemGateClosed = 1 << 62

// enter reports whether a delivery may go ahead; if so the caller must call
// exit when it is done.
func (g *inmemGate) enter() bool {
	if g.state.Add(1)&inmemGateClosed != 0 {
		g.exit()
		return false
	}
	return true
}

func (g *inmemGate) exit() {
	if g.state.Add(-1) == inmemGateClosed {
		select {
		case g.drained <- struct{}{}:
		default: // a token is already waiting
		}
	}
}

// close stops new deliveries and waits for those under way. Once the gate is
// closed the count only drops back to zero, and the exit that brings it there
// leaves a token in drained, so the loop cannot miss the last exit.
func (g *inmemGate) close() {
	g.state.Or(inmemGateClosed)
	for g.state.Load() != inmemGateClosed {
		<-g.drained
	}
}
