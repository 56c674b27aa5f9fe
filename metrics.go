package raft

// Metrics through the OpenTelemetry metric API (docs/observability.md,
// "Metrics", lists every instrument). The host passes a MeterProvider in
// Config; without one the Node creates no instrument and every recording
// site below is a nil check, so a host that does not want metrics pays
// nothing. Nothing is registered globally.
//
// What already exists as state (term, indexes, role, leader) is read by an
// observable callback when the host's reader collects, so the event loop
// does nothing for it. Counts of what happens on the hot path (proposals
// committed and applied, messages and bytes sent, bytes written) are atomic
// counters that the same callback reports: an SDK counter's Add costs about
// 100ns, an uncontended atomic add a few. Durations go to synchronous
// histograms, read with the monotonic clock alone, and rare events (drops,
// failures) to synchronous counters; their attribute sets are built once per
// node and once per peer, so that recording does not allocate.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// meterName is the instrumentation scope of every instrument.
const meterName = "github.com/raftkit/raft"

// The attribute keys. Node and peer IDs are strings, so that every uint64
// ID is shown exactly.
const (
	attrNodeID     = attribute.Key("raft.node.id")
	attrGroupID    = attribute.Key("raft.group.id") // a Host's group (host_metrics.go)
	attrPeerID     = attribute.Key("raft.peer.id")
	attrDropReason = attribute.Key("raft.drop.reason")
	attrErrorType  = attribute.Key("error.type")
)

// Bucket boundaries: durations from 50µs (an in-memory write) to 30s (a
// large snapshot), sizes from 1 KiB to 16 GiB.
var (
	durationBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
		0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	sizeBuckets = []float64{1 << 10, 16 << 10, 256 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30, 4 << 30, 16 << 30}
)

// proposalFailure classifies why a proposal failed, for the error.type
// attribute: a fixed list keeps its cardinality bounded.
type proposalFailure uint8

const (
	failNotLeader proposalFailure = iota
	failBusy
	failTransfer
	failLeadershipLost
	failRemoved
	failClosed
	failStopped
	failOther
	failKinds
)

var failureNames = [failKinds]string{"not_leader", "busy", "transfer_in_progress", "leadership_lost",
	"removed", "closed", "stopped", "other"}

func classifyFailure(err error) proposalFailure {
	switch {
	case errors.Is(err, ErrNotLeader):
		return failNotLeader
	case errors.Is(err, ErrBusy):
		return failBusy
	case errors.Is(err, ErrTransferInProgress):
		return failTransfer
	case errors.Is(err, ErrLeadershipLost):
		return failLeadershipLost
	case errors.Is(err, ErrRemoved):
		return failRemoved
	case errors.Is(err, ErrStopped):
		return failStopped
	case errors.Is(err, ErrClosed):
		return failClosed
	}
	return failOther
}

// dropReason says why a transport dropped a message (raft.drop.reason).
type dropReason uint8

const (
	dropQueueFull   dropReason = iota // TCP: the peer's queue was full
	dropUnreachable                   // TCP: a dial failed or a connection broke
	dropUnknownPeer                   // no address (TCP) or not a peer (in memory)
	dropTooLarge                      // TCP: larger than MaxFrameSize, or not encodable
	dropPartition                     // in memory: Partition, Isolate or Cut
	dropFault                         // in memory: a random fault (Faults.Drop)
	dropNoReceiver                    // in memory: no node attached at the receiver
	dropReasons
)

var dropReasonNames = [dropReasons]string{"queue_full", "unreachable", "unknown_peer", "too_large",
	"partition", "fault", "no_receiver"}

// peerOptions are the precomputed measurement options of one peer, and
// what was sent to it.
type peerOptions struct {
	rec  []metric.RecordOption
	obs  []metric.ObserveOption
	drop [dropReasons][]metric.AddOption

	sentMessages, sentBytes atomic.Int64
}

// peerSets builds the options of each peer once; lookups do not lock. A
// node has a series per peer it sent to: its members, past and present.
type peerSets struct {
	node  []attribute.KeyValue // the node's ID, and its group's in a Host
	mu    sync.Mutex
	peers atomic.Pointer[map[uint64]*peerOptions] // replaced, never modified
}

func (s *peerSets) get(id uint64) *peerOptions {
	if m := s.peers.Load(); m != nil {
		if p := (*m)[id]; p != nil {
			return p
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	current := s.peers.Load()
	if current != nil {
		if p := (*current)[id]; p != nil {
			return p
		}
	}
	peer := attrPeerID.String(strconv.FormatUint(id, 10))
	opt := metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(s.node), peer)...))
	p := &peerOptions{rec: []metric.RecordOption{opt}, obs: []metric.ObserveOption{opt}}
	for r := range dropReasons {
		set := attribute.NewSet(append(slices.Clone(s.node), peer, attrDropReason.String(dropReasonNames[r]))...)
		p.drop[r] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	next := make(map[uint64]*peerOptions)
	if current != nil {
		for k, v := range *current {
			next[k] = v
		}
	}
	next[id] = p
	s.peers.Store(&next)
	return p
}

// nodeMetrics holds a Node's instruments. A nil *nodeMetrics records
// nothing: every method checks.
type nodeMetrics struct {
	meter metric.Meter
	rec   []metric.RecordOption
	obs   []metric.ObserveOption
	fail  [failKinds][]metric.AddOption

	proposalsFailed                             metric.Int64Counter
	applyDuration, readDuration                 metric.Float64Histogram
	snapTake, snapSend, snapRestore             metric.Float64Histogram
	snapTakeSize, snapSendSize, snapRestoreSize metric.Int64Histogram

	isLeader, hasLeader, term, commitIndex, appliedIndex metric.Int64ObservableGauge
	lastIndex, snapshotIndex                             metric.Int64ObservableGauge
	pending                                              metric.Int64ObservableUpDownCounter
	leaderChanges, inboxDropped                          metric.Int64ObservableCounter
	proposalsCommitted, proposalsApplied                 metric.Int64ObservableCounter
	messagesSent, bytesSent, bytesWritten                metric.Int64ObservableCounter
	lastContact                                          metric.Float64ObservableGauge
	registration                                         metric.Registration

	// Published by the event loop and the applier for the callback.
	pendingCount    atomic.Int64
	lastContactNano atomic.Int64 // <0: no leader to hear from (this node leads, or knows none)
	leaderSeen      atomic.Int64
	committedCount  atomic.Int64
	appliedCount    atomic.Int64
	// timeApply asks the applier to time its next batch; each tick sets it
	// (see applyStart).
	timeApply atomic.Bool

	peers     *peerSets
	storage   *storageMetrics
	transport *transportMetrics
}

// storageMetrics are the instruments a Storage of this package records to.
type storageMetrics struct {
	rec          []metric.RecordOption
	write, fsync metric.Float64Histogram
	written      atomic.Int64 // bytes, reported by the node's callback
}

// transportMetrics are the instruments a Transport of this package records
// to; what is sent is counted in the peers' peerOptions.
type transportMetrics struct {
	peers              *peerSets
	dropped, dropBytes metric.Int64Counter
}

// storageInstrumented and transportInstrumented are implemented by the
// Storage and Transport implementations of this package: the Node hands
// them its instruments (nil: none), so that one MeterProvider in Config
// covers a node's storage and transport too, with the same node ID
// attribute. They are unexported: a Storage or Transport of the host's
// records to the host's provider itself, if it wants to.
type storageInstrumented interface{ instrument(*storageMetrics) }
type transportInstrumented interface{ instrument(*transportMetrics) }

// newNodeMetrics creates the instruments of node id, the replica of group
// group in a Host (0: a single node); nil when mp is nil.
func newNodeMetrics(mp metric.MeterProvider, id, group uint64) (*nodeMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	meter := mp.Meter(meterName)
	node := []attribute.KeyValue{attrNodeID.String(strconv.FormatUint(id, 10))}
	if group != 0 {
		node = append(node, attrGroupID.String(strconv.FormatUint(group, 10)))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(node...))
	m := &nodeMetrics{
		meter: meter,
		rec:   []metric.RecordOption{opt},
		obs:   []metric.ObserveOption{opt},
		peers: &peerSets{node: node},
	}
	for k := range failKinds {
		set := attribute.NewSet(append(slices.Clone(node), attrErrorType.String(failureNames[k]))...)
		m.fail[k] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	m.lastContactNano.Store(-1)
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	duration := func(name, desc string) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		check(err)
		return h
	}
	size := func(name, desc string) metric.Int64Histogram {
		h, err := meter.Int64Histogram(name, metric.WithUnit("By"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(sizeBuckets...))
		check(err)
		return h
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return g
	}

	m.proposalsFailed = counter("raft.proposals.failed", "{proposal}", "Proposals made on this node that failed, by error.type.")
	m.applyDuration = duration("raft.apply.duration", "Time to apply one batch of committed entries to the state machine.")
	m.readDuration = duration("raft.linearizable_read.duration", "Latency of successful LinearizableRead calls.")
	m.snapTake = duration("raft.snapshot.take.duration", "Time to take a snapshot and write it to storage.")
	m.snapSend = duration("raft.snapshot.send.duration", "Time to send a snapshot to a follower, until it installed it.")
	m.snapRestore = duration("raft.snapshot.restore.duration", "Time to restore the state machine from a received snapshot.")
	m.snapTakeSize = size("raft.snapshot.take.size", "Size of the snapshots taken.")
	m.snapSendSize = size("raft.snapshot.send.size", "Bytes of snapshot data sent to a follower per transfer.")
	m.snapRestoreSize = size("raft.snapshot.restore.size", "Size of the received snapshots restored.")

	m.isLeader = gauge("raft.is_leader", "1", "1 if this node is the leader, else 0.")
	m.hasLeader = gauge("raft.has_leader", "1", "1 if this node knows a leader, else 0.")
	m.term = gauge("raft.term", "{term}", "The current term.")
	m.commitIndex = gauge("raft.log.commit_index", "{index}", "The highest log index known committed.")
	m.appliedIndex = gauge("raft.log.applied_index", "{index}", "The highest log index applied by the state machine.")
	m.lastIndex = gauge("raft.log.last_index", "{index}", "The last index in the log.")
	m.snapshotIndex = gauge("raft.snapshot.index", "{index}", "The last index covered by the newest snapshot.")
	observedCounter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	m.proposalsCommitted = observedCounter("raft.proposals.committed", "{proposal}", "Proposals made on this node whose entries committed.")
	m.proposalsApplied = observedCounter("raft.proposals.applied", "{proposal}", "Proposals made on this node applied by its state machine, their result returned.")
	m.leaderChanges = observedCounter("raft.leader.changes", "{change}", "Leaders this node learned of for a new term (itself included).")
	m.inboxDropped = observedCounter("raft.inbound.messages.dropped", "{message}", "Inbound messages dropped because the node's queue was full (MaxInboundMessages).")
	m.messagesSent = observedCounter("raft.transport.messages.sent", "{message}", "Messages sent to a peer.")
	m.bytesSent = observedCounter("raft.transport.data.sent", "By", "Encoded bytes of the messages sent to a peer (TCP).")
	m.bytesWritten = observedCounter("raft.storage.data.written", "By", "Bytes written to the write-ahead log (FileStorage).")
	var err error
	m.pending, err = meter.Int64ObservableUpDownCounter("raft.proposals.pending", metric.WithUnit("{proposal}"),
		metric.WithDescription("Proposals appended by this leader and not yet committed."))
	check(err)
	m.lastContact, err = meter.Float64ObservableGauge("raft.leader.last_contact", metric.WithUnit("s"),
		metric.WithDescription("On a follower or learner that knows a leader: time since it last heard from it."))
	check(err)

	m.storage = &storageMetrics{rec: m.rec}
	m.storage.write = duration("raft.storage.write.duration", "Time of one write to the write-ahead log, fsync excluded (FileStorage).")
	m.storage.fsync = duration("raft.storage.fsync.duration", "Time of one fsync of the write-ahead log (FileStorage).")
	m.transport = &transportMetrics{peers: m.peers}
	m.transport.dropped = counter("raft.transport.messages.dropped", "{message}", "Messages to a peer dropped, by raft.drop.reason.")
	m.transport.dropBytes = counter("raft.transport.data.dropped", "By", "Encoded bytes of the messages to a peer dropped (TCP, when their size was known).")
	if len(errs) > 0 {
		return nil, fmt.Errorf("raft: creating metric instruments: %w", errors.Join(errs...))
	}
	return m, nil
}

// observe registers the callback that reports n's state; unregister undoes it.
func (m *nodeMetrics) observe(n *Node) error {
	if m == nil {
		return nil
	}
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n.statusMu.Lock()
		st := n.status
		n.statusMu.Unlock()
		o.ObserveInt64(m.isLeader, boolInt(st.Role == Leader), m.obs...)
		o.ObserveInt64(m.hasLeader, boolInt(st.Leader != 0), m.obs...)
		o.ObserveInt64(m.term, int64(st.Term), m.obs...)
		o.ObserveInt64(m.commitIndex, int64(st.CommitIndex), m.obs...)
		o.ObserveInt64(m.appliedIndex, int64(n.applied.Load()), m.obs...)
		o.ObserveInt64(m.lastIndex, int64(st.LastIndex), m.obs...)
		o.ObserveInt64(m.snapshotIndex, int64(st.SnapshotIndex), m.obs...)
		o.ObserveInt64(m.pending, m.pendingCount.Load(), m.obs...)
		o.ObserveInt64(m.leaderChanges, m.leaderSeen.Load(), m.obs...)
		o.ObserveInt64(m.inboxDropped, int64(n.dropped.Load()), m.obs...)
		if c := m.lastContactNano.Load(); c >= 0 {
			o.ObserveFloat64(m.lastContact, time.Duration(c).Seconds(), m.obs...)
		}
		o.ObserveInt64(m.proposalsCommitted, m.committedCount.Load(), m.obs...)
		o.ObserveInt64(m.proposalsApplied, m.appliedCount.Load(), m.obs...)
		if w := m.storage.written.Load(); w > 0 {
			o.ObserveInt64(m.bytesWritten, w, m.obs...)
		}
		if peers := m.peers.peers.Load(); peers != nil {
			for _, p := range *peers {
				if k := p.sentMessages.Load(); k > 0 {
					o.ObserveInt64(m.messagesSent, k, p.obs...)
				}
				if b := p.sentBytes.Load(); b > 0 {
					o.ObserveInt64(m.bytesSent, b, p.obs...)
				}
			}
		}
		return nil
	}, m.isLeader, m.hasLeader, m.term, m.commitIndex, m.appliedIndex, m.lastIndex, m.snapshotIndex,
		m.pending, m.leaderChanges, m.inboxDropped, m.lastContact, m.proposalsCommitted, m.proposalsApplied,
		m.messagesSent, m.bytesSent, m.bytesWritten)
	if err != nil {
		return fmt.Errorf("raft: registering the metrics callback: %w", err)
	}
	m.registration = reg
	return nil
}

func (m *nodeMetrics) unregister() {
	if m != nil && m.registration != nil {
		_ = m.registration.Unregister()
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// publish records, on the event loop, the state the callback reads that
// Status does not hold: the pending proposals, the time since the leader
// was last heard from (to the tick: the core counts ticks), and a count of
// leaders learned of, for each new leader or term.
func (m *nodeMetrics) publish(n *Node, st coreStatus, newLeadership bool) {
	if m == nil {
		return
	}
	m.pendingCount.Store(int64(len(n.pendingProps)))
	contact := int64(-1)
	if st.leader != 0 && st.role != Leader {
		contact = int64(n.core.ticksSinceLeaderContact()) * int64(n.tickInterval)
	}
	m.lastContactNano.Store(contact)
	if newLeadership {
		m.leaderSeen.Add(1)
	}
	if n.ticked {
		m.timeApply.Store(true)
	}
}

// ticksSinceLeaderContact returns the ticks since this follower last heard
// from its leader: the election timer, which such messages reset (§5.2).
func (c *core) ticksSinceLeaderContact() int { return c.electionElapsed }

func (m *nodeMetrics) proposalsFailedBy(err error, k int) {
	if m == nil || k == 0 {
		return
	}
	m.proposalsFailed.Add(context.Background(), int64(k), m.fail[classifyFailure(err)]...)
}

func (m *nodeMetrics) committed(k int) {
	if m != nil && k > 0 {
		m.committedCount.Add(int64(k))
	}
}

// applyStart returns the time the applier starts a batch at, and whether
// the batch is to be timed: the first batch after each tick is, so that
// raft.apply.duration costs two clock reads and a Record per tick at most,
// whatever the throughput (timing every batch cost 5% of the in-memory
// benchmark's CPU), and every batch when they come less often than ticks.
func (m *nodeMetrics) applyStart() (time.Duration, bool) {
	if m == nil || !m.timeApply.Load() || !m.timeApply.CompareAndSwap(true, false) {
		return 0, false
	}
	return monotonic(), true
}

// applyDone records a batch applied, timed from t0 if timed, with k
// proposals answered.
func (m *nodeMetrics) applyDone(t0 time.Duration, timed bool, k int) {
	if m == nil {
		return
	}
	if timed {
		m.applyDuration.Record(context.Background(), (monotonic() - t0).Seconds(), m.rec...)
	}
	if k > 0 {
		m.appliedCount.Add(int64(k))
	}
}

// readDone records a LinearizableRead that started at t0 (start).
func (m *nodeMetrics) readDone(t0 time.Duration) {
	if m != nil {
		m.readDuration.Record(context.Background(), (monotonic() - t0).Seconds(), m.rec...)
	}
}

// monotonicBase is what monotonic measures from.
var monotonicBase = time.Now()

// monotonic reads the monotonic clock alone: time.Since of a time that has
// a monotonic reading does not read the wall clock, which time.Now does
// (about half the cost).
func monotonic() time.Duration { return time.Since(monotonicBase) }

// start returns the time a duration starts at, or 0 when nothing is
// recorded (a clock read saved).
func (m *nodeMetrics) start() time.Duration {
	if m == nil {
		return 0
	}
	return monotonic()
}

// snapshotTaken, snapshotSent and snapshotRestored record a snapshot's
// duration and size.
func (m *nodeMetrics) snapshotTaken(took time.Duration, size int64) {
	if m != nil {
		m.snapTake.Record(context.Background(), took.Seconds(), m.rec...)
		m.snapTakeSize.Record(context.Background(), size, m.rec...)
	}
}

func (m *nodeMetrics) snapshotSent(peer uint64, took time.Duration, size int64) {
	if m != nil {
		rec := m.peers.get(peer).rec
		m.snapSend.Record(context.Background(), took.Seconds(), rec...)
		m.snapSendSize.Record(context.Background(), size, rec...)
	}
}

func (m *nodeMetrics) snapshotRestored(took time.Duration, size int64) {
	if m != nil {
		m.snapRestore.Record(context.Background(), took.Seconds(), m.rec...)
		m.snapRestoreSize.Record(context.Background(), size, m.rec...)
	}
}

// storageMetrics returns m's storage instruments, nil for a nil m.
func (m *nodeMetrics) storageMetrics() *storageMetrics {
	if m == nil {
		return nil
	}
	return m.storage
}

// transportMetrics returns m's transport instruments, nil for a nil m.
func (m *nodeMetrics) transportMetrics() *transportMetrics {
	if m == nil {
		return nil
	}
	return m.transport
}

// now returns monotonic(), or 0 when nothing is recorded.
func (m *storageMetrics) now() time.Duration {
	if m == nil {
		return 0
	}
	return monotonic()
}

// wrote records one write of n bytes to the log, started at t0, and the
// fsync that started at t1 (now), if there was one.
func (m *storageMetrics) wrote(n int, t0, t1 time.Duration, synced bool) {
	if m == nil {
		return
	}
	m.written.Add(int64(n))
	m.write.Record(context.Background(), (t1 - t0).Seconds(), m.rec...)
	if synced {
		m.fsync.Record(context.Background(), (monotonic() - t1).Seconds(), m.rec...)
	}
}

// sentTo records messages (and, when known, bytes) sent to peer.
func (m *transportMetrics) sentTo(peer uint64, messages, bytes int) {
	if m == nil || messages == 0 {
		return
	}
	p := m.peers.get(peer)
	p.sentMessages.Add(int64(messages))
	if bytes > 0 {
		p.sentBytes.Add(int64(bytes))
	}
}

// droppedTo records messages (and, when known, bytes) to peer dropped for reason.
func (m *transportMetrics) droppedTo(peer uint64, reason dropReason, messages, bytes int) {
	if m == nil || messages == 0 {
		return
	}
	p := m.peers.get(peer)
	m.dropped.Add(context.Background(), int64(messages), p.drop[reason]...)
	if bytes > 0 {
		m.dropBytes.Add(context.Background(), int64(bytes), p.drop[reason]...)
	}
}

// droppedQueued records the queued messages to peer, lost with a
// connection (TCP).
func (m *transportMetrics) droppedQueued(peer uint64, lost []tcpQueued) {
	if m == nil || len(lost) == 0 {
		return
	}
	bytes := 0
	for i := range lost {
		bytes += lost[i].size
	}
	m.droppedTo(peer, dropUnreachable, len(lost), bytes)
}
