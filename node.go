package raft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Node is one member of a Raft cluster. It owns the protocol core, drives
// it from a single event loop, persists to Storage, talks through
// Transport and applies committed commands to the StateMachine on a second
// goroutine. A Node made by NewNode runs its event loop on a goroutine of
// its own; a Host's groups run theirs on the host's workers
// (HostConfig.Workers), one pass at a time. All methods are safe for
// concurrent use.
//
// I/O order (docs/io-ordering.md): writes to Storage run on a goroutine of
// their own, in order, coalesced while one is in flight; the event loop
// goes on meanwhile. The leader sends new entries to followers before its
// own write ends, and counts itself toward the commit quorum only once that
// write is durable (dissertation §10.2.1). Every node makes its term, vote
// and entries durable before any response or vote that depends on them
// leaves (Raft Figure 2): such messages wait behind the writes in flight.
type Node struct {
	cfg          Config
	sm           StateMachine
	storage      Storage
	transport    Transport
	logger       *zap.Logger
	tickInterval time.Duration // how often the core ticks (its timeouts count ticks)
	// commitGrace is how long a leader's event loop stays idle before it
	// sends followers a commit index no append carried (see run).
	commitGrace time.Duration

	// Owned by the event loop.
	core         *core
	queuedState  HardState      // the HardState last queued for writing (durable or not)
	writer       *storageWriter // carries out Save and Compact, in order (storage_writer.go)
	writes       []pendingWrite // queued writes not yet reported durable, in order
	nextWriteSeq uint64
	pendingProps []*Proposal // appended on this leader, ascending Index
	reads        map[uint64]*readWait
	nextReadID   uint64
	wasLeader    bool
	leaderTerm   uint64
	configIndex  uint64 // the configuration the transport's peers were last set for
	peersWide    bool   // they include members of a configuration that has not committed
	peersLeaving int    // leaving members the leader still replicated to when they were set
	electionTick int
	watchers     []func() bool // run after each loop iteration; done when they return true
	fatalErr     error         // a fatal error met outside handleReady (writing or restoring a snapshot), which stops the loop
	senders      map[uint64]*snapSender
	senderRetry  map[uint64]time.Time // no new sender to this follower before then
	receiver     *snapReceiver
	installing   snapshotTransfer // a received snapshot being stored and restored
	clock        *nodeClock       // with lease reads: ticks by the monotonic clock (node_lease.go)
	// task runs the loop of a Host's group on the host's workers
	// (host_workers.go); nil: the loop has a goroutine of its own (run).
	task *loopTask
	// idle is the commit flush timer (see pass); armed while idleArmed,
	// when the commit index was armedCommit.
	idle        *time.Timer
	idleArmed   bool
	armedCommit uint64

	// Snapshots (node_snapshot.go).
	snapMu         sync.Mutex
	snapWaiters    []chan error // Node.Snapshot calls waiting for the next snapshot
	snapshotting   atomic.Bool
	lastSnapIndex  atomic.Uint64
	appliedMembers []Member // apply goroutine: the configuration at the applied index
	// appliedOutgoing is its outgoing half while it is joint, else nil.
	appliedOutgoing []Member
	appliedTerm     uint64 // apply goroutine: the term of the applied entry
	snapRetryAt     uint64 // apply goroutine: after a failed Snapshot, the applied index to try again at
	snapBytes       uint64 // apply goroutine: command bytes applied since the last snapshot was taken (or tried)

	// The inbox: what other goroutines hand to the event loop.
	inboxMu  sync.Mutex
	inMsgs   []Message
	inProps  []*Proposal
	inReads  []*readWait
	inCalls  []func()
	inOut    []Message // snapshot chunks to send, from sender goroutines
	inEvents []func()  // results of snapshot goroutines, run on the loop
	// inDurable is the last write the storage writer reported durable;
	// inWriteErr the error that stopped it.
	inDurable  uint64
	inWriteErr error
	notify     chan struct{}
	idleFired  atomic.Bool // the commit flush timer fired (see run)
	maxInbox   int
	dropped    atomic.Uint64

	// The apply queue: the event loop never blocks on a slow state machine.
	applyMu    sync.Mutex
	applyQueue []applyBatch
	applyWake  chan struct{}
	applied    atomic.Uint64
	removed    atomic.Bool // the applied configuration removed this node

	// A Host's group applies on demand: a goroutine runs only while there
	// is work (applyRunning, under applyMu); applyKicked asks it for
	// another round, and applyStopped (Close) refuses new ones.
	applyOnDemand bool
	applyRunning  bool
	applyKicked   bool
	applyStopped  bool
	applyWaiting  []*readWait // apply goroutine: reads waiting for their index to be applied

	statusMu sync.Mutex
	status   Status
	progress []MemberProgress // the leader's view of the members, as of the last tick or change of leadership or configuration; replaced, never modified
	// changed is closed at the next change of what Changed covers, and
	// replaced by nil; it is made only when someone asks (Changed), so
	// that nobody pays for it when nobody listens. statusKey is that state
	// as last published; changesOver is set once the node has stopped.
	changed     chan struct{}
	statusKey   statusKey
	changesOver bool

	ticked bool // event loop: the core ticked since the last updateStatus
	// followedLeader and followedTerm are the leader this node last knew
	// and its term (event loop): a change is logged (a new leader ID) and
	// counted in raft.leader.changes (a new leader or term).
	followedLeader, followedTerm uint64

	metrics *nodeMetrics // nil without Config.MeterProvider (metrics.go)

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the event loop has exited
	applierWG sync.WaitGroup
	bgWG      sync.WaitGroup // snapshot writers, senders and receivers
	loopWG    sync.WaitGroup
	fatal     atomic.Pointer[error]

	// The first Shutdown hands leadership over; concurrent ones wait for it.
	shutdownOnce sync.Once
	handedOff    chan struct{} // closed when the first Shutdown's hand-off is over
	// maxCommand is the largest command the transport carries (0: no
	// limit); Propose refuses larger ones (ErrTooLarge).
	maxCommand int
	// propBytes is the command bytes of this leader's proposals that are
	// appended but not yet finished (applied, or failed): with the core's
	// bound on uncommitted bytes, it bounds by MaxUncommittedBytes what
	// proposals hold in memory until they are applied.
	propBytes atomic.Int64
}

// applyBatch is work for the apply goroutine: committed entries in order,
// the proposals among them, and reads waiting for an applied index.
type applyBatch struct {
	entries []Entry
	props   []*Proposal
	reads   []*readWait
	restore *restoreRequest // restore the state machine from a received snapshot
}

// NewNode validates cfg, recovers state from storage, and starts the node;
// it runs until Close. A node whose Storage is empty and whose
// cfg.InitialMembers is set founds a new cluster with those members, which
// must include cfg.ID (ErrInvalidConfig otherwise). A node whose Storage
// holds state ignores InitialMembers, logging a difference from the stored
// configuration, so one Config serves a node's whole life. A node founded
// with InitialMembers other than its peers' founding ones stops once they
// refuse it, with ErrClusterMismatch (see Status.Origin).
func NewNode(cfg Config, sm StateMachine, storage Storage, transport Transport) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sm == nil || storage == nil || transport == nil {
		return nil, fmt.Errorf("%w: NewNode needs a StateMachine, a Storage and a Transport", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	tick, electionTicks, heartbeatTicks := cfg.ticks()
	logger := cfg.Logger.With(zap.Uint64("node", cfg.ID))
	metrics, err := newNodeMetrics(cfg.MeterProvider, cfg.ID, hostGroupOf(transport))
	if err != nil {
		return nil, err
	}
	// Also without metrics: a storage reused from a node that had them
	// stops recording to its provider.
	if s, ok := storage.(storageInstrumented); ok {
		s.instrument(metrics.storageMetrics())
	}
	if t, ok := transport.(transportInstrumented); ok {
		t.instrument(metrics.transportMetrics())
	}

	st, err := loadStorage(cfg, storage, sm)
	if err != nil {
		return nil, err
	}
	hs := st.hs
	seed := cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano() ^ int64(cfg.ID)<<32
	}
	c, err := newCore(coreConfig{
		id:                    cfg.ID,
		electionTicks:         electionTicks,
		heartbeatTicks:        heartbeatTicks,
		preVote:               !cfg.DisablePreVote,
		checkQuorum:           !cfg.DisableCheckQuorum,
		maxInflight:           cfg.MaxInflight,
		maxAppendBytes:        cfg.MaxAppendBytes,
		maxUncommittedEntries: cfg.MaxUncommittedEntries,
		maxUncommittedBytes:   cfg.MaxUncommittedBytes,
		trailingBytes:         cfg.TrailingBytes,
		seed:                  seed,
		logger:                cfg.Logger,
		fresh:                 st.fresh,
		leaseTicks:            cfg.leaseTicks(),
		hardState:             hs,
		firstIndex:            st.first,
		firstTerm:             st.firstTerm,
		entries:               st.entries,
		snapshot:              st.snap,
	})
	if err != nil {
		return nil, fmt.Errorf("raft: recovering node %d: %w", cfg.ID, err)
	}
	c.quiesce.after = quiesceTicks(transport, tick, electionTicks) // only a Host's groups quiesce
	n := &Node{
		cfg:          cfg,
		sm:           sm,
		storage:      storage,
		transport:    transport,
		logger:       logger,
		tickInterval: tick,
		commitGrace:  commitGrace(tick),
		core:         c,
		queuedState:  hs,
		reads:        make(map[uint64]*readWait),
		senders:      make(map[uint64]*snapSender),
		senderRetry:  make(map[uint64]time.Time),
		electionTick: electionTicks,
		notify:       make(chan struct{}, 1),
		maxInbox:     cfg.MaxInboundMessages,
		maxCommand:   maxCommandSize(transport),
		applyWake:    make(chan struct{}, 1),
		done:         make(chan struct{}),
		stopped:      make(chan struct{}),
		handedOff:    make(chan struct{}),
		metrics:      metrics,
	}
	cs := c.status()
	n.applied.Store(cs.applying)
	n.lastSnapIndex.Store(st.snap.Index)
	n.appliedMembers, n.appliedOutgoing, n.appliedTerm = st.snap.Members, st.snap.Outgoing, st.snap.Term
	// Read IDs start at random, so that a late answer to a read of an earlier
	// incarnation of this node cannot complete a read of this one.
	n.nextReadID = rand.Uint64() >> 1
	if err := metrics.observe(n); err != nil {
		return nil, err
	}
	pooled, _ := transport.(loopPooled)
	if pooled != nil {
		n.task = newLoopTask(n) // before Attach: deliveries wake the task
	}
	if err := transport.Attach(cfg.ID, n.deliver); err != nil {
		metrics.unregister()
		return nil, fmt.Errorf("raft: attaching transport: %w", err)
	}
	if pooled != nil {
		n.task.pool = pooled.bindLoop(n.task)
	}
	if len(cfg.InitialMembers) > 0 && !st.founded && !sameMembers(cfg.InitialMembers, cs.members) {
		logger.Info("InitialMembers ignored: the storage already holds state, whose configuration differs",
			zap.Stringer("initialMembers", memberList(cfg.InitialMembers)), zap.Stringer("stored", memberList(cs.members)))
	}
	if st.snap.Index > 0 {
		metrics.snapshotRestored(st.restoreTook, st.restoreSize)
	}
	n.setPeers()
	n.updateStatus()
	logger.Info("node started", zap.Uint64("term", hs.Term), zap.Uint64("lastIndex", cs.last), zap.Uint64("commit", cs.committed), zap.Int("members", len(cs.members)))

	n.writer = newStorageWriter(storage, n.writeDurable, n.task != nil)
	if n.task != nil {
		n.applyOnDemand = true // started by the first work (kickApplier)
	} else {
		n.applierWG.Add(1)
		go n.runApplier()
	}
	n.loopWG.Add(1)
	if n.task != nil {
		n.startLoop()
		n.task.start() // runs the work that arrived meanwhile
	} else {
		go n.run()
	}
	return n, nil
}

// maxCommitGrace bounds Node.commitGrace. Long enough for a client that
// proposes again as soon as it is answered (microseconds in memory, about
// an fsync on disk), so that its next append carries the commit index;
// short next to a tick. Go's timers wake an idle process about every
// millisecond at best, so a shorter grace would not make followers apply
// sooner (measured in docs/benchmarks.md).
const maxCommitGrace = time.Millisecond

// commitGrace returns how long a leader's event loop stays idle before it
// sends the commit index on its own: maxCommitGrace, or a tenth of a tick
// if that is shorter.
func commitGrace(tick time.Duration) time.Duration {
	return min(maxCommitGrace, tick/10)
}

// pendingWrite is a write queued to the storage writer and not yet
// reported durable, with the messages that wait for it (event loop).
type pendingWrite struct {
	seq            uint64
	last, lastTerm uint64 // the write's last entry; 0 when it writes none
	msgs           []Message
}

// writeDurable is the storage writer's report that every write up to seq is
// durable, or that it stopped with err (writer goroutine).
func (n *Node) writeDurable(seq uint64, err error) {
	n.inboxMu.Lock()
	if err != nil {
		if n.inWriteErr == nil {
			n.inWriteErr = err
		}
	} else {
		n.inDurable = max(n.inDurable, seq)
	}
	n.inboxMu.Unlock()
	n.wake()
}

// writesDurable takes the writes up to seq as durable (event loop): the
// core may count them (persisted: the leader's own vote toward commitment,
// and entries become appliable), and the messages that waited for them
// leave, in the order they were made.
func (n *Node) writesDurable(seq uint64) {
	k := 0
	var msgs []Message
	for k < len(n.writes) && n.writes[k].seq <= seq {
		w := &n.writes[k]
		if w.last > 0 {
			n.core.persisted(w.last, w.lastTerm)
		}
		if k == 0 {
			msgs = w.msgs // one write (the usual case): no copy
		} else {
			msgs = append(msgs[:len(msgs):len(msgs)], w.msgs...)
		}
		k++
	}
	if k == 0 {
		return
	}
	clear(n.writes[:k])
	if k == len(n.writes) {
		n.writes = n.writes[:0] // keep the array for the next writes
	} else {
		n.writes = n.writes[k:]
	}
	if len(msgs) > 0 {
		n.transport.Send(msgs)
	}
}

// sendBehindWrites sends a message made off the core's ready (a snapshot
// transfer's acknowledgment) behind the writes in flight, whose term it
// states: it must not overtake the promises of messages made before it.
func (n *Node) sendBehindWrites(m Message) {
	if k := len(n.writes); k > 0 {
		n.writes[k-1].msgs = append(n.writes[k-1].msgs, m)
		return
	}
	n.transport.Send([]Message{m})
}

// queueWrite hands hs and entries to the storage writer; msgs leave once
// they are durable. An inline writer makes them durable before it returns.
func (n *Node) queueWrite(hs HardState, entries []Entry, msgs []Message) error {
	n.nextWriteSeq++
	w := pendingWrite{seq: n.nextWriteSeq, msgs: msgs}
	if k := len(entries); k > 0 {
		w.last, w.lastTerm = entries[k-1].Index, entries[k-1].Term
	}
	n.writes = append(n.writes, w)
	n.queuedState = hs
	if n.writer.inline {
		if err := n.writer.saveInline(hs, entries); err != nil {
			return err
		}
		n.writesDurable(w.seq)
		return nil
	}
	n.writer.save(w.seq, hs, entries)
	return nil
}

// stored is what a node recovers from its Storage.
type stored struct {
	hs        HardState
	entries   []Entry
	first     uint64
	firstTerm uint64
	snap      SnapshotMeta
	founded   bool // the storage was empty and now holds the founding configuration
	// restoreTook and restoreSize describe the restore from snap, if any.
	restoreTook time.Duration
	restoreSize int64
	// fresh: the storage holds nothing beyond the founding configuration
	// (a joiner, a founder no leader has reached yet, or a node whose disk
	// was wiped); the core then withholds votes from a cluster with history
	// until a leader has caught it up. It is read from what is stored, not
	// from whether this start found the storage empty, so that a wiped node
	// that restarts again before it is caught up is still fresh.
	fresh bool
}

// loadStorage reads what storage holds and restores the state machine from
// the newest snapshot. For a new founding node it first writes the founding
// configuration as entry 1 of term 1, and the cluster's origin (origin.go)
// in the HardState. Every founder writes the same entry, so the founders'
// logs already match, and it counts as committed: any leader must hold it,
// since all founders do.
func loadStorage(cfg Config, storage Storage, sm StateMachine) (stored, error) {
	var st stored
	wrap := func(err error) error { return fmt.Errorf("raft: reading storage: %w", err) }
	var err error
	if st.hs, err = storage.InitialState(); err != nil {
		return st, wrap(err)
	}
	meta, rc, err := storage.Snapshot()
	switch {
	case err == nil:
		start := time.Now()
		sr := &snapshotReader{r: rc, meta: meta}
		err = sm.Restore(sr)
		rc.Close()
		if err != nil {
			return st, fmt.Errorf("raft: restoring the state machine from snapshot %d: %w", meta.Index, err)
		}
		st.snap, st.restoreTook, st.restoreSize = meta, time.Since(start), sr.read
	case !errors.Is(err, ErrNoSnapshot):
		return st, wrap(err)
	}
	if st.first, err = storage.FirstIndex(); err != nil {
		return st, wrap(err)
	}
	last, err := storage.LastIndex()
	if err != nil {
		return st, wrap(err)
	}
	if last+1 < st.first {
		return st, fmt.Errorf("%w: storage's last index %d is before its first %d", ErrCorrupt, last, st.first)
	}
	if st.snap.Index > 0 {
		// A crash between storing a leader's snapshot and discarding the log
		// it replaces leaves a log that does not continue the snapshot:
		// finish the job now.
		t, terr := storage.Term(st.snap.Index)
		if st.snap.Index > last || terr != nil || t != st.snap.Term {
			if err := storage.Compact(st.snap.Index, st.snap.Term); err != nil {
				return st, fmt.Errorf("raft: discarding the log behind snapshot %d: %w", st.snap.Index, err)
			}
			st.first, last = st.snap.Index+1, st.snap.Index
		}
	}
	if st.firstTerm, err = storage.Term(st.first - 1); err != nil {
		return st, wrap(err)
	}
	if st.hs == (HardState{}) && last == 0 && st.snap.Index == 0 && len(cfg.InitialMembers) > 0 {
		if !slices.ContainsFunc(cfg.InitialMembers, func(m Member) bool { return m.ID == cfg.ID }) {
			return st, fmt.Errorf("%w: the storage is empty and InitialMembers does not include this node's ID %d: "+
				"list it to found a new cluster, or leave InitialMembers empty on a node to be added to an existing one",
				ErrInvalidConfig, cfg.ID)
		}
		st.founded, st.fresh = true, true
		// Sorted by ID, so that founders that list the members in different
		// orders write the same entry; the origin identifies it.
		founding := Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(canonicalMembers(cfg.InitialMembers))}
		st.hs = HardState{Term: 1, Commit: 1, Origin: clusterOrigin(cfg.InitialMembers)}
		if err := storage.Save(st.hs, []Entry{founding}); err != nil {
			return st, fmt.Errorf("raft: writing the founding configuration: %w", err)
		}
		st.entries, st.first = []Entry{founding}, 1
		return st, nil
	}
	if st.entries, err = storage.Entries(st.first, last+1); err != nil {
		return st, wrap(err)
	}
	st.fresh = last <= 1 && st.snap.Index == 0
	return st, nil
}

// deliver is the Transport's callback: queue m for the event loop.
func (n *Node) deliver(m Message) {
	n.inboxMu.Lock()
	if len(n.inMsgs) >= n.maxInbox {
		n.inboxMu.Unlock()
		n.dropped.Add(1)
		return
	}
	n.inMsgs = append(n.inMsgs, m)
	n.inboxMu.Unlock()
	n.wake()
}

// wake tells the event loop that its inbox holds work.
func (n *Node) wake() {
	if n.task != nil {
		n.task.notified.Store(true)
		n.task.schedule()
		return
	}
	select {
	case n.notify <- struct{}{}:
	default:
	}
}

// Propose replicates cmd and returns the StateMachine's Apply result once
// the entry is committed and applied on this node. Only the leader accepts
// proposals: others return a *NotLeaderError at once (naming the leader if
// one is known). See Proposal.Wait for the other errors. The node owns cmd
// from here on: do not modify it.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := n.proposeAsync(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// ProposeAsync returns as soon as the leader has appended cmd to its log,
// with the entry's Index and Term; the Proposal gives the outcome. It fails
// at once with a *NotLeaderError off the leader, ErrTransferInProgress while
// the leader hands leadership over, ErrBusy when too much is uncommitted or
// unapplied, ErrRemoved on a node removed from the cluster, ErrClosed
// after Close, and ErrStopped (wrapping the cause) after a fatal error. In
// each of these cases nothing was appended. A command larger than the
// transport can carry (over TCPTransport, about TCPConfig.MaxFrameSize) is
// refused with ErrTooLarge, on any node.
func (n *Node) ProposeAsync(cmd []byte) (*Proposal, error) {
	return n.proposeAsync(context.Background(), cmd)
}

// proposeAsync is ProposeAsync, giving up when ctx ends before the event
// loop took the proposal; the command may then still be appended.
func (n *Node) proposeAsync(ctx context.Context, cmd []byte) (*Proposal, error) {
	if err := n.serving(); err != nil {
		n.metrics.proposalsFailedBy(err, 1)
		return nil, err
	}
	if n.maxCommand > 0 && len(cmd) > n.maxCommand {
		err := fmt.Errorf("%w: a command of %d bytes; the transport carries commands of at most %d bytes (TCPConfig.MaxFrameSize less the framing)",
			ErrTooLarge, len(cmd), n.maxCommand)
		n.metrics.proposalsFailedBy(err, 1)
		return nil, err
	}
	p := newProposal(cmd)
	n.inboxMu.Lock()
	n.inProps = append(n.inProps, p)
	n.inboxMu.Unlock()
	n.wake()
	select {
	case <-p.appended:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopped:
		select {
		case <-p.appended:
		default:
			err := n.stopErr()
			n.metrics.proposalsFailedBy(err, 1)
			return nil, err
		}
	}
	if p.appendErr != nil {
		n.metrics.proposalsFailedBy(p.appendErr, 1)
		return nil, p.appendErr
	}
	return p, nil
}

// LinearizableRead returns nil once this node's state machine reflects
// every write committed before the call (ReadIndex, dissertation §6.4), so
// that a read of the state machine made after it is linearizable. It works
// on the leader and on followers and learners, which ask the leader for the
// read index. It fails with a *NotLeaderError when no leader is known,
// ErrLeadershipLost when the leader changed meanwhile, ErrRemoved once this
// node is removed from the cluster (it would wait for entries it no longer
// receives), ErrClosed after Close, ErrStopped after a fatal error, or the
// context's error.
func (n *Node) LinearizableRead(ctx context.Context) error {
	return n.read(ctx, false)
}

// read waits for a read index, by ReadIndex or, with lease, LeaseRead.
func (n *Node) read(ctx context.Context, lease bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.serving(); err != nil {
		return err
	}
	t0 := n.metrics.start()
	r := &readWait{done: make(chan struct{}), lease: lease}
	n.inboxMu.Lock()
	n.inReads = append(n.inReads, r)
	n.inboxMu.Unlock()
	n.wake()
	select {
	case <-r.done:
		if r.err == nil {
			n.metrics.readDone(t0)
		}
		return r.err
	case <-ctx.Done():
		r.abandoned.Store(true)
		return ctx.Err()
	case <-n.stopped:
		select {
		case <-r.done:
			return r.err
		default:
			return n.stopErr()
		}
	}
}

// Status returns a snapshot of the node's state.
func (n *Node) Status() Status {
	n.statusMu.Lock()
	s := n.status
	progress := n.progress
	n.statusMu.Unlock()
	s.Members = slices.Clone(s.Members)
	s.Outgoing = slices.Clone(s.Outgoing)
	s.Progress = slices.Clone(progress)
	s.AppliedIndex = n.applied.Load()
	// The applier moves AppliedIndex on at once, the event loop publishes
	// the rest once per pass: an applied entry is committed and in the
	// log, so the published indexes are never shown behind it.
	s.CommitIndex = max(s.CommitIndex, s.AppliedIndex)
	s.LastIndex = max(s.LastIndex, s.CommitIndex)
	s.Removed = n.removed.Load()
	if e := n.fatal.Load(); e != nil {
		s.Err = *e
	} else {
		select {
		case <-n.done:
			// Closed: Changed fires at once from now on, and a loop over
			// it must see why (see Changed).
			s.Err = ErrClosed
		default:
		}
	}
	return s
}

// Close stops the node: its goroutines end, pending calls fail with
// ErrClosed, and the Transport is detached. It neither closes the Storage nor
// the Transport, which belong to their creator. Close is idempotent. It
// does not hand leadership over first: Shutdown does.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.done)
		n.applyMu.Lock()
		n.applyStopped = true // no apply goroutine starts from now on
		n.applyMu.Unlock()
		if n.task != nil {
			n.task.schedule() // a worker runs the loop's exit
		}
		n.loopWG.Wait()
		n.applierWG.Wait()
		n.bgWG.Wait()
		n.transport.Detach()
		n.failApplyQueue()
		n.metrics.unregister()
		n.logger.Info("node closed")
	})
	return nil
}

// Shutdown stops the node as Close does, after handing leadership over if
// this node leads: it transfers leadership to the most up-to-date voter
// (TransferLeadership with to == 0, dissertation §3.10) so that the
// cluster has a new leader when Shutdown returns, instead of going without
// one for an election timeout until the followers notice the leader is
// gone. Use it for planned stops (a rolling restart, an upgrade); Close
// stops at once, without the hand-off.
//
// The hand-off waits at most Config.ElectionTimeout, and no longer than
// ctx allows. Meanwhile the node still answers: the leader refuses
// proposals and membership changes with ErrTransferInProgress, then, once
// the new leader has taken over, with a *NotLeaderError naming it; calls
// made once the node is closing fail with ErrClosed, as after Close.
//
// The node is closed when Shutdown returns, whatever happened. The error is
// nil when the node did not lead (or stopped leading on its own meanwhile),
// when another voter leads (the one chosen or not), when there was no other
// voter to hand leadership to, or when a concurrent Close stopped the node
// first. Otherwise it wraps ErrTransferFailed (and ctx.Err() if ctx ended
// first): the node closed while leading, so the cluster elects a new
// leader after an election timeout, as after Close.
// Shutdown is idempotent, and safe to call with Close. Concurrent calls
// hand over once: only the first reports how that went, the others wait
// for it (or for their ctx) and return nil.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	first := false
	n.shutdownOnce.Do(func() {
		first = true
		defer close(n.handedOff)
		if n.serving() == nil && n.Status().Role == Leader {
			err = n.handOffLeadership(ctx)
		}
	})
	if !first {
		// One hand-off is enough: two would have the leader give up the
		// first transfer for the second.
		select {
		case <-n.handedOff:
		case <-ctx.Done():
		}
	}
	if cerr := n.Close(); cerr != nil {
		return cerr
	}
	return err
}

// handOffLeadership transfers leadership to the most up-to-date voter,
// waiting at most an election timeout, and returns what Shutdown reports.
func (n *Node) handOffLeadership(ctx context.Context) error {
	// An election timeout is how long the core itself gives a transfer
	// before abandoning it: a target that has not taken over by then is
	// not going to, and the followers would elect a leader on their own
	// after that long anyway.
	tctx, cancel := context.WithTimeout(ctx, n.cfg.ElectionTimeout)
	defer cancel()
	err := n.TransferLeadership(tctx, 0)
	if err == nil {
		return nil
	}
	if st := n.Status(); st.Role != Leader && st.Leader != 0 && st.Leader != n.cfg.ID {
		// Another voter leads (not the one chosen, or the node learned of
		// it only now): the cluster has a leader all the same.
		return nil
	}
	switch {
	case errors.Is(err, ErrInvalidConfig): // no other voter: nothing to hand over
		return nil
	case errors.Is(err, ErrClosed), errors.Is(err, ErrRemoved), errors.Is(err, ErrNotLeader):
		// Closed by a concurrent Close, removed, or no longer the leader:
		// there is nothing left to hand over.
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w: closed while leading, before the hand-off completed: %w", ErrTransferFailed, err)
	case tctx.Err() != nil:
		// Only the bound of Shutdown's own ended: the error does not wrap
		// context.DeadlineExceeded, which would say that ctx ended.
		return fmt.Errorf("%w: closed while leading: no voter took over within the election timeout (%v)",
			ErrTransferFailed, n.cfg.ElectionTimeout)
	case errors.Is(err, ErrTransferFailed):
		return fmt.Errorf("raft: closed while leading: %w", err)
	}
	return fmt.Errorf("%w: closed while leading: %w", ErrTransferFailed, err)
}

// usable returns why the node takes no calls, or nil.
func (n *Node) usable() error {
	select {
	case <-n.stopped:
		return n.stopErr()
	default:
		return nil
	}
}

// serving returns why the node takes no calls that need the cluster, or nil.
func (n *Node) serving() error {
	if err := n.usable(); err != nil {
		return err
	}
	if n.removed.Load() {
		return ErrRemoved
	}
	return nil
}

func (n *Node) stopErr() error { return n.stopErrFor(ErrClosed) }

// call runs f on the event loop and waits for it.
func (n *Node) call(ctx context.Context, f func()) error {
	if err := n.usable(); err != nil {
		return err
	}
	ran := make(chan struct{})
	n.inboxMu.Lock()
	n.inCalls = append(n.inCalls, func() { f(); close(ran) })
	n.inboxMu.Unlock()
	n.wake()
	select {
	case <-ran:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return n.stopErr()
	}
}

// run is the event loop of a Node that has a goroutine of its own: it
// waits for a tick or for work and runs a pass for each. A Host's groups
// run the same passes on the host's workers (host_workers.go).
func (n *Node) run() {
	defer n.loopWG.Done()
	defer n.exitLoop()
	n.startLoop() // before the ticker: the lease clock's base comes first
	ticker := time.NewTicker(n.tickInterval)
	defer ticker.Stop()
	for {
		var tick, notified bool
		select {
		case <-n.done:
			return
		case <-ticker.C:
			tick = true
		case <-n.notify:
			notified = true
		}
		if !n.pass(tick, notified) {
			return
		}
	}
}

// startLoop prepares the event loop's first pass.
func (n *Node) startLoop() {
	if n.cfg.LeaseReads {
		// Before the first tick: the k-th tick comes k periods after base
		// or later (a Host's clock may tick a group sooner the first time,
		// host_clock.go, which only shortens a lease).
		n.clock = &nodeClock{base: time.Now(), period: n.tickInterval, maxCatchUp: n.electionTick}
	}
	// A leader whose pass left followers without the commit index sends it
	// once the commit index has stayed put for commitGrace (core.flushCommit):
	// with a client that proposes again at once, the next append carries it
	// instead, and under load the commit index moves on before the timer
	// fires, so that it goes out with the appends that follow. The timer
	// stays armed while the commit index owed moves (it fires about once per
	// grace period), so that a pass costs no clock reading. It wakes the loop
	// through wake: a timer channel in run's select would be added to and
	// removed from the runtime's timer heap each time the loop blocks.
	n.idle = time.AfterFunc(time.Hour, func() {
		n.idleFired.Store(true)
		n.wake()
	})
	n.idle.Stop()
}

// exitLoop ends the event loop, for a Close or a fatal error.
func (n *Node) exitLoop() {
	n.idle.Stop()
	// What is queued is still written (a Close is not a crash), but the
	// messages waiting for it are not sent.
	n.writer.close()
	close(n.stopped)
	n.failPending()
	n.statusMu.Lock()
	n.changesOver = true
	n.signalChangeLocked()
	n.statusMu.Unlock()
}

// pass is one turn of the event loop: it takes a tick (tick) and what the
// inbox holds (notified), carries out what the core asks, and publishes
// the node's status. It returns false when a fatal error stops the node.
func (n *Node) pass(tick, notified bool) bool {
	if tick {
		n.tickCore()
		n.ticked = true
		n.retryReads()
		n.tickReceiver()
	}
	if notified {
		n.drainInbox()
		if n.idleFired.Swap(false) {
			n.idleCheck()
		}
	}
	err := n.fatalErr
	if err == nil {
		err = n.handleReady()
	}
	if err != nil {
		n.fatal.Store(&err)
		n.logger.Error("stopping after a fatal error", zap.Error(err))
		n.updateStatus()
		return false
	}
	n.updateStatus()
	n.syncQuiesce()
	if !n.idleArmed && n.core.commitPending() {
		n.idle.Reset(n.commitGrace)
		n.idleArmed, n.armedCommit = true, n.core.status().committed
	}
	return true
}

// idleCheck runs when the commit flush timer fired: it sends the commit
// index if it stayed put since the timer was armed, or arms it again.
func (n *Node) idleCheck() {
	n.idleArmed = false
	if !n.core.commitPending() {
		return
	}
	if c := n.core.status().committed; c != n.armedCommit {
		n.idle.Reset(n.commitGrace)
		n.idleArmed, n.armedCommit = true, c
		return
	}
	n.core.flushCommit()
}

// drainInbox feeds everything queued to the core. All proposals that
// arrived together become one append to the log and one message per
// follower (batching).
func (n *Node) drainInbox() {
	n.inboxMu.Lock()
	msgs, props, reads, calls := n.inMsgs, n.inProps, n.inReads, n.inCalls
	out, events := n.inOut, n.inEvents
	n.inMsgs, n.inProps, n.inReads, n.inCalls, n.inOut, n.inEvents = nil, nil, nil, nil, nil, nil
	durable, writeErr := n.inDurable, n.inWriteErr
	n.inboxMu.Unlock()
	if writeErr != nil {
		// After a failed write the node cannot know what the disk holds:
		// it stops once this drain is over (docs/io-ordering.md).
		n.fatalErr = writeErr
	} else {
		// First, before anything stepped now can make new messages: the
		// messages that waited for the writes now durable leave ahead of
		// them.
		n.writesDurable(durable)
	}
	// With lease reads, a leader reads its clock now, after the reads and
	// the followers' read requests were taken: each of them began before.
	n.catchUpClock()
	if len(props)+len(reads)+len(calls) > 0 {
		n.wakeForInput() // after the catch-up, which a resting leader takes as lease time only
	}

	for _, ev := range events {
		ev()
	}
	if len(out) > 0 {
		origin := n.core.status().origin
		for i := range out {
			out[i].Origin = origin // built off the loop, which alone reads the core
		}
		n.transport.Send(out)
	}

	for _, m := range msgs {
		n.core.step(m)
	}
	if len(props) > 0 {
		n.core.appliedTo(n.applied.Load())
	}
	var held, added int64 // one atomic read and one add per drain, not per proposal
	if len(props) > 0 {
		held = n.propBytes.Load()
	}
	for _, p := range props {
		if n.core.role == Leader && held > 0 && held+int64(len(p.data)) > int64(n.cfg.MaxUncommittedBytes) {
			// The core bounds the bytes not yet committed; this bounds
			// those not yet applied too, which a slow state machine or a
			// slow disk here lets pile up while the followers commit.
			p.appendErr = fmt.Errorf("%w: %d bytes of proposals wait to be applied (MaxUncommittedBytes is %d)",
				ErrBusy, held, n.cfg.MaxUncommittedBytes)
			close(p.appended)
			continue
		}
		p.Index, p.Term, p.appendErr = n.core.propose(p.data)
		if p.appendErr == nil {
			p.waiting = &n.propBytes
			held += int64(len(p.data))
			added += int64(len(p.data))
			n.pendingProps = append(n.pendingProps, p)
		}
		close(p.appended)
	}
	if added != 0 {
		n.propBytes.Add(added)
	}
	for _, r := range reads {
		n.nextReadID++
		r.id = n.nextReadID
		n.reads[r.id] = r
		n.core.read(r.id, r.lease)
	}
	for _, f := range calls {
		f()
	}
}

// retryReads asks again for read indexes that went unanswered for an
// election timeout (a message may have been lost), and forgets reads whose
// callers gave up. An answer to the first request after a retry is ignored.
func (n *Node) retryReads() {
	for id, r := range n.reads {
		if r.abandoned.Load() {
			delete(n.reads, id)
			continue
		}
		// Also on a leader: a read forwarded while this node was a follower
		// may have been lost before it took office.
		r.ticks++
		if r.ticks >= n.electionTick {
			r.ticks = 0
			n.core.read(id, r.lease)
		}
	}
}

// handleReady carries out what the core asks, in the order that keeps it
// safe (see ready), until the core asks for nothing more.
func (n *Node) handleReady() error {
	for {
		rd := n.core.ready(n.queuedState)
		if rd.empty() {
			break
		}
		if rd.err != nil {
			return rd.err
		}
		// Before any message leaves: the configuration may have changed in
		// ready (a leader leaving a joint configuration), and the transport
		// must know the members the messages go to.
		n.maybeSetPeers()
		if len(rd.sendSnapshots) > 0 || len(rd.snapshotMsgs) > 0 {
			if err := n.handleSnapshotOutput(rd.sendSnapshots, rd.snapshotMsgs); err != nil {
				return err
			}
		}
		write := len(rd.entries) > 0 || rd.saveState
		switch {
		case write || len(n.writes) > 0:
			// Appends and heartbeats promise nothing about this node's disk:
			// they leave now, so that followers write in parallel with us
			// (dissertation §10.2.1). The other messages (acknowledgments,
			// votes, anything stating the term) wait for this ready's write,
			// or, without one, for the last write in flight: a message must
			// not overtake the promises of one made before it (Raft Figure 2).
			early, late := splitEarly(rd.messages)
			if len(early) > 0 {
				n.transport.Send(early)
			}
			if write {
				if err := n.queueWrite(rd.hardState, rd.entries, late); err != nil {
					return err
				}
			} else if len(late) > 0 {
				last := &n.writes[len(n.writes)-1]
				last.msgs = append(last.msgs, late...)
			}
		case len(rd.messages) > 0:
			n.transport.Send(rd.messages)
		}
		n.handleReads(rd.reads)
		// Committed entries go to the applier as soon as they are durable
		// here (the core hands over no others): a leader whose followers
		// committed an entry before its own write ended applies it once
		// that write is durable.
		if len(rd.committed) > 0 {
			n.sendToApplier(rd.committed)
		}
		// After the committed proposals left for the applier: the ones
		// still pending when leadership ends have an unknown fate.
		n.noteRoleChange()
	}
	n.noteRoleChange()
	n.checkSenders()
	if len(n.watchers) > 0 {
		n.watchers = slices.DeleteFunc(n.watchers, func(w func() bool) bool { return w() })
	}
	n.maybeSetPeers()
	return nil
}

// maybeSetPeers calls setPeers when the configuration or the leaving
// members changed since the last call.
func (n *Node) maybeSetPeers() {
	if st := n.core.status(); st.configIndex != n.configIndex || n.peersWide && st.configCommitted || st.leavingMembers != n.peersLeaving {
		n.setPeers()
	}
}

// setPeers gives the transport the nodes this one must reach: the members
// of the configurations from the last committed one to the latest (see
// Transport.SetPeers). Once the latest commits, it is called again to drop
// the members that left.
func (n *Node) setPeers() {
	st := n.core.status()
	n.configIndex = st.configIndex
	n.peersWide = !st.configCommitted
	n.peersLeaving = st.leavingMembers
	n.transport.SetPeers(n.core.peerMembers())
}

// splitEarly separates the messages a leader may send before its own write
// (appends, heartbeats) from the ones that must wait for it.
func splitEarly(msgs []Message) (early, late []Message) {
	allEarly := true
	for i := range msgs {
		if !sendsEarly(msgs[i].Type) {
			allEarly = false
			break
		}
	}
	if allEarly {
		return msgs, nil
	}
	for _, m := range msgs {
		if sendsEarly(m.Type) {
			early = append(early, m)
		} else {
			late = append(late, m)
		}
	}
	return early, late
}

func sendsEarly(t MessageType) bool { return t == MsgAppend || t == MsgHeartbeat }

// noteRoleChange fails the proposals of a leadership that ended: their
// entries may or may not commit under the next leader. Those it committed
// stay pending: the leader may commit entries that its own write has not
// made durable yet (a majority of followers did), and they are applied, and
// answered, once it has.
func (n *Node) noteRoleChange() {
	st := n.core.status()
	isLeader := st.role == Leader
	if n.wasLeader && (!isLeader || st.term != n.leaderTerm) {
		k := 0
		for k < len(n.pendingProps) && n.pendingProps[k].Index <= st.committed {
			k++
		}
		for _, p := range n.pendingProps[k:] {
			p.finish(nil, ErrLeadershipLost)
		}
		n.metrics.proposalsFailedBy(ErrLeadershipLost, len(n.pendingProps)-k)
		clear(n.pendingProps[k:])
		n.pendingProps = n.pendingProps[:k]
	}
	if isLeader && (!n.wasLeader || st.term != n.leaderTerm) {
		n.logger.Info("leading", zap.Uint64("term", st.term))
		// A fresh count: what proposals of earlier terms still hold, were
		// some of them never finished, must not refuse this term's.
		var held int64
		for _, p := range n.pendingProps {
			if !p.finished.Load() {
				held += int64(len(p.data))
			}
		}
		n.propBytes.Store(held)
	}
	n.wasLeader, n.leaderTerm = isLeader, st.term
}

// handleReads routes read indexes: failures to their callers, successes to
// the applier, which releases them once it has applied up to the index.
func (n *Node) handleReads(results []readResult) {
	var ready []*readWait
	for _, res := range results {
		r := n.reads[res.id]
		if r == nil {
			continue // answered already (a retried request), or abandoned
		}
		delete(n.reads, res.id)
		if res.err != nil {
			r.finish(res.err)
			continue
		}
		r.index = res.index
		ready = append(ready, r)
	}
	if len(ready) > 0 {
		n.enqueueApply(applyBatch{reads: ready})
	}
}

// enqueueApply hands work to the apply goroutine without ever blocking.
// Its memory is bounded by the log it refers to: the leader refuses
// proposals beyond MaxUncommittedEntries entries past the applied index.
func (n *Node) enqueueApply(b applyBatch) {
	n.applyMu.Lock()
	n.applyQueue = append(n.applyQueue, b)
	n.applyMu.Unlock()
	n.kickApplier()
}

// kickApplier has the apply goroutine look at its queue and at the
// snapshots due; on demand, it starts one if none runs.
func (n *Node) kickApplier() {
	if !n.applyOnDemand {
		select {
		case n.applyWake <- struct{}{}:
		default:
		}
		return
	}
	n.applyMu.Lock()
	n.applyKicked = true
	start := !n.applyRunning && !n.applyStopped
	if start {
		// applyStopped is set before Close waits: this Add never races
		// with that Wait.
		n.applyRunning = true
		n.applierWG.Add(1)
	}
	n.applyMu.Unlock()
	if start {
		go n.applyOnDemandLoop()
	}
}

// sendToApplier hands committed entries, with their proposals, to the
// apply goroutine. A proposal whose index now holds an entry of another term
// was overwritten by a later leader: it failed.
func (n *Node) sendToApplier(ents []Entry) {
	last := ents[len(ents)-1].Index
	k := 0
	for k < len(n.pendingProps) && n.pendingProps[k].Index <= last {
		k++
	}
	props := n.pendingProps[:k:k]
	n.pendingProps = n.pendingProps[k:]
	lost := 0
	for _, p := range props {
		if e := ents[0]; p.Index < e.Index || ents[p.Index-e.Index].Term != p.Term {
			p.finish(nil, ErrLeadershipLost)
			lost++
		}
	}
	n.metrics.proposalsFailedBy(ErrLeadershipLost, lost)
	n.metrics.committed(len(props) - lost)
	n.enqueueApply(applyBatch{entries: ents, props: props})
}

// runApplier applies committed entries in log order, exactly once each, and
// releases reads once their index is applied.
func (n *Node) runApplier() {
	defer n.applierWG.Done()
	for {
		select {
		case <-n.applyWake:
		case <-n.done:
			return
		}
		if !n.applyQueued() {
			return
		}
	}
}

// applyOnDemandLoop is runApplier for a Host's group: it runs while there
// is work, and exits once there is none, so that an idle group has no
// goroutine.
func (n *Node) applyOnDemandLoop() {
	defer n.applierWG.Done()
	for {
		n.applyMu.Lock()
		if !n.applyKicked || n.applyStopped {
			n.applyRunning = false
			n.applyMu.Unlock()
			return
		}
		n.applyKicked = false
		n.applyMu.Unlock()
		if !n.applyQueued() {
			n.applyMu.Lock()
			n.applyRunning = false
			n.applyMu.Unlock()
			return
		}
	}
}

// applyQueued applies the batches queued, then takes a snapshot if one is
// due (apply goroutine). It returns false when the node is closing.
func (n *Node) applyQueued() bool {
	n.applyMu.Lock()
	batches := n.applyQueue
	n.applyQueue = nil
	n.applyMu.Unlock()
	for i, b := range batches {
		select {
		case <-n.done:
			// Closing: hand the rest back for failApplyQueue.
			n.applyMu.Lock()
			n.applyQueue = append(batches[i:], n.applyQueue...)
			n.applyMu.Unlock()
			return false
		default:
		}
		n.applyWaiting = n.applyBatch(b, n.applyWaiting)
	}
	n.maybeSnapshot()
	return true
}

// applyBatch applies one batch and releases the reads it satisfies; it
// returns the reads still waiting.
func (n *Node) applyBatch(b applyBatch, waiting []*readWait) []*readWait {
	if b.restore != nil {
		n.restoreFromSnapshot(b.restore)
		return waiting
	}
	props := b.props
	t0, timed := n.metrics.applyStart()
	answered := 0
	for _, e := range b.entries {
		if e.Index <= n.applied.Load() {
			continue // covered by a snapshot restored meanwhile
		}
		var result any
		switch e.Type {
		case EntryCommand:
			result = n.sm.Apply(e)
		case EntryConfChange:
			if members, outgoing, err := decodeConfig(e.Data); err == nil {
				n.appliedConfig(members, outgoing, e.Index)
			}
		}
		n.appliedTerm = e.Term
		n.snapBytes += uint64(len(e.Data))
		for len(props) > 0 && props[0].Index <= e.Index {
			if props[0].Index == e.Index && props[0].finish(result, nil) { // false if it already failed
				answered++
			}
			props = props[1:]
		}
		n.applied.Store(e.Index)
	}
	if len(b.entries) > 0 {
		n.metrics.applyDone(t0, timed, answered)
	}
	waiting = append(waiting, b.reads...)
	applied := n.applied.Load()
	removed := n.removed.Load()
	kept := waiting[:0]
	for _, r := range waiting {
		if r.index <= applied {
			r.finish(nil)
		} else if removed {
			r.finish(ErrRemoved) // this node no longer receives the entries
		} else {
			kept = append(kept, r)
		}
	}
	clear(waiting[len(kept):])
	return kept
}

// stopErrFor is the error for calls cut short by a stop: err, or
// ErrStopped with the fatal error that stopped the node.
func (n *Node) stopErrFor(err error) error {
	if e := n.fatal.Load(); e != nil {
		return fmt.Errorf("%w: %w", ErrStopped, *e)
	}
	return err
}

// failPending ends the calls the event loop was tracking; it runs as the
// loop exits, for a Close or a fatal error.
func (n *Node) failPending() {
	n.abortReceiver("the node stops")
	err := n.stopErrFor(ErrClosed)
	for _, p := range n.pendingProps {
		p.finish(nil, err)
	}
	n.metrics.proposalsFailedBy(err, len(n.pendingProps))
	n.pendingProps = nil
	for _, r := range n.reads {
		r.finish(err)
	}
	clear(n.reads)
	n.inboxMu.Lock()
	props, reads := n.inProps, n.inReads
	n.inProps, n.inReads, n.inCalls, n.inMsgs = nil, nil, nil, nil
	n.inboxMu.Unlock()
	for _, p := range props {
		p.appendErr = err
		close(p.appended)
	}
	for _, r := range reads {
		r.finish(err)
	}
}

// failApplyQueue ends the calls handed to the applier but not reached,
// once it has stopped.
func (n *Node) failApplyQueue() {
	err := n.stopErrFor(ErrClosed)
	n.applyMu.Lock()
	batches := n.applyQueue
	n.applyQueue = nil
	n.applyMu.Unlock()
	for _, b := range batches {
		for _, p := range b.props {
			if p.finish(nil, err) {
				n.metrics.proposalsFailedBy(err, 1)
			}
		}
		for _, r := range b.reads {
			r.finish(err)
		}
	}
}

// statusKey is the part of a node's state whose changes Changed reports.
type statusKey struct {
	role                      Role
	term, leader, configIndex uint64
	removed, failed           bool
}

// updateStatus publishes the core's state for Status, and signals a change
// to Changed's callers.
func (n *Node) updateStatus() {
	st := n.core.status()
	newLeadership := st.leader != 0 && (st.leader != n.followedLeader || st.term != n.followedTerm)
	if newLeadership && st.leader != n.followedLeader && st.leader != n.cfg.ID {
		// The leader logs its own election; followers log whom they
		// follow, once per change.
		n.logger.Info("following a new leader", zap.Uint64("leader", st.leader), zap.Uint64("term", st.term))
	}
	if newLeadership {
		n.followedLeader, n.followedTerm = st.leader, st.term
	}
	n.metrics.publish(n, st, newLeadership)
	key := statusKey{role: st.role, term: st.term, leader: st.leader, configIndex: st.configIndex,
		removed: n.removed.Load(), failed: n.fatal.Load() != nil}
	var progress []MemberProgress
	if n.ticked && st.role == Leader {
		progress = n.core.progressStatus(n.tickInterval)
	}
	s := Status{
		ID:            st.id,
		Term:          st.term,
		Leader:        st.leader,
		Role:          st.role,
		CommitIndex:   st.committed,
		LastIndex:     st.last,
		SnapshotIndex: st.snapshotIndex,
		Members:       st.members,
		Outgoing:      st.outgoing,
		Origin:        st.origin,
	}
	n.statusMu.Lock()
	n.status = s
	switch {
	case st.role != Leader:
		n.progress = nil
	case n.ticked:
		n.progress = progress
	case key.role != n.statusKey.role || key.term != n.statusKey.term || key.configIndex != n.statusKey.configIndex:
		// A leader elected in this pass, or with a new configuration, has
		// not ticked since: its view of the members is published now, so
		// that a Status showing a leader lists every member (an empty
		// Progress would read as "every follower caught up" to a check
		// over it).
		n.progress = n.core.progressStatus(n.tickInterval)
	}
	n.ticked = false
	if key != n.statusKey {
		n.statusKey = key
		n.signalChangeLocked()
	}
	n.statusMu.Unlock()
}

// signalChangeLocked wakes Changed's callers; statusMu is held.
func (n *Node) signalChangeLocked() {
	if n.changed != nil {
		close(n.changed)
		n.changed = nil
	}
}

// signalRemoved reports a change of Status.Removed (apply goroutine).
func (n *Node) signalRemoved() {
	n.statusMu.Lock()
	n.statusKey.removed = n.removed.Load()
	n.signalChangeLocked()
	n.statusMu.Unlock()
}

// closedChan is what Changed returns once a node has stopped.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Changed returns a channel that is closed at the next change of the
// node's role, term, leader, configuration, Removed or Err (not at every
// new index: poll Status for those). Read Status after calling Changed to
// see the current state, then wait on the channel, and repeat: no change
// is missed, though several changes in a row may show as one (only the
// latest state matters). The channel is closed at once when the node has
// stopped. Changed never blocks the node, and costs nothing while nobody
// calls it.
//
//	for {
//		ch := n.Changed()
//		st := n.Status()
//		// act on st
//		select {
//		case <-ch:
//		case <-ctx.Done():
//			return
//		}
//	}
func (n *Node) Changed() <-chan struct{} {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	if n.changesOver {
		return closedChan
	}
	if n.changed == nil {
		n.changed = make(chan struct{})
	}
	return n.changed
}

// WaitLeader waits until this node knows a leader, and returns the
// leader's Member (its ID, address and metadata; just the ID if the leader
// is not in this node's configuration, such as a leader removing itself).
// It returns at once if a leader is known. It fails with ctx's error when
// ctx ends first, with ErrRemoved on a removed node, and with ErrClosed or
// the fatal error once the node has stopped.
func (n *Node) WaitLeader(ctx context.Context) (Member, error) {
	for {
		ch := n.Changed()
		if err := n.serving(); err != nil {
			return Member{}, err
		}
		if st := n.Status(); st.Leader != 0 {
			for _, m := range append(st.Members, st.Outgoing...) {
				if m.ID == st.Leader {
					return m, nil
				}
			}
			return Member{ID: st.Leader}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Member{}, ctx.Err()
		}
	}
}
