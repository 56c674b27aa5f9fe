package raft

import (
	"container/heap"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The deterministic simulator: N pure cores, a seeded scheduler that owns
// every source of nondeterminism (which message arrives next, which is lost
// or duplicated, which node's clock ticks, when a disk write completes, when a
// node crashes, whether its disk is wiped, how the network is partitioned),
// and invariant checks after
// every step. The same seed replays the same run exactly:
//
//	go test -run 'TestSim$' -seed=N -v        (or RAFT_SEED=N)
//	go test -run 'TestSim$' -seed=N -simtrace -v (print every step)
//
// Storage is modelled as the runtime's asynchronous write pipeline on a disk
// that tears writes, as power loss does: writes complete (become durable) at
// a random later step, in order, and a crash keeps any prefix, in order, of
// the records of the writes in flight: some whole writes, then part of the
// next Save, record by record, in the order FileStorage writes them (a
// Save's entries, then its hard state). That Save may be the coalesced
// write of several queued ones (group commit, storage_writer.go's
// coalesce). Messages that promise durable state wait behind the pending
// writes, as docs/io-ordering.md requires of the runtime, while the
// leader's appends leave at once and it counts itself only once its write
// is durable. A leader left owing followers the commit index sends it a
// microtick later, as the runtime does once its event loop is idle
// (core.flushCommit).

var (
	simSeedFlag  = flag.Int64("seed", 0, "TestSim: run only this seed")
	simTraceFlag = flag.Bool("simtrace", false, "TestSim: log every step of the run")
)

// simOptions shape one simulated run.
type simOptions struct {
	nodes     int
	steps     int       // steps with faults
	healTicks int       // bound on the must-heal phase, in ticks per node
	hooks     coreHooks // rules switched off, to prove the checks bite
	faultRate int       // fault events per 1000 steps
	// smallAppends sends one entry per append, so that a leader's old-term
	// entries often reach a quorum before its own no-op does (Figure 8).
	smallAppends bool
	// hardStateFirst makes the disk write a Save's hard state before its
	// entries, an order that breaks the Storage contract: a torn write can
	// then keep a commit index over entries the write was replacing.
	hardStateFirst bool
	// wipeEvery restarts one crashed node in wipeEvery on a wiped disk, where
	// that is safe (wipeSafe); 0 means 2.
	wipeEvery int
	// leaseTicks turns lease reads on (and CheckQuorum with them): every
	// read is a lease read, and leaders hold leases of this many ticks.
	leaseTicks int
	// tickPeriods, when set, are the lowest and highest clock periods (in
	// microticks per tick) that nodes draw from; default 9 and 11.
	tickPeriods [2]int
	// noQuietStart lets a node with lease reads vote as soon as it
	// (re)starts, breaking the rule that it waits an election timeout.
	noQuietStart bool
	// ackBeforeDurable sends every message at once, breaking the rule that
	// acknowledgments and votes wait until what they promise is durable.
	ackBeforeDurable bool
	// slowWrites makes one write in eight take up to 30 microticks more (a
	// slow fsync), so that writes stay in flight while the acknowledgments
	// of other nodes arrive.
	slowWrites bool
}

type simWrite struct {
	hs      HardState
	entries []Entry
	msgs    []Message // wait for this write to be durable
}

type simProposal struct {
	op          int
	index, term uint64
}

type simRead struct {
	op, id   uint64
	index    uint64 // read index, once known
	minIndex uint64 // highest index of a write acknowledged before the read began
	ticks    int
	answered bool
}

type simNode struct {
	id              uint64
	gen             int // incremented by each crash; events of older generations are void
	tickPeriod      int // microticks between ticks: the node's clock rate
	writeDone       int // when the last scheduled write completes (writes are FIFO)
	core            *core
	up              bool
	store           *MemoryStorage // what survives a crash
	writes          []simWrite     // issued, not yet durable, in order
	lastHS          HardState      // the HardState last handed to the disk
	applied         uint64
	props           []simProposal
	nextReadID      uint64
	lastSnap        uint64   // index of the node's newest snapshot
	appliedMembers  []Member // the configuration at the applied index
	appliedOutgoing []Member // its outgoing half while joint
	appliedTerm     uint64
	leaderTerm      uint64 // term of the leadership props belong to
	reads           []*simRead
	flushDue        bool // an evFlush is scheduled for this incarnation
}

type sim struct {
	t       testing.TB
	opts    simOptions
	seed    int64
	rng     *rand.Rand
	step    int // the virtual clock, in microticks
	nodes   []*simNode
	members []Member
	events  simEvents
	seq     int // orders events due at the same time
	delay   int // maximum message delay, in microticks

	cut map[[2]uint64]bool // from -> to blocked
	// netFaultUntil is the step before which the network fault in force stays.
	netFaultUntil int
	drop          float64
	dup           float64

	// Invariant state: Raft's own invariants, then the clients' view.
	check    *invariantChecker
	acked    map[uint64]uint64 // index -> term of acknowledged writes
	maxAcked uint64
	nextOp   int

	// Stats for non-vacuity checks and the docs.
	stats simStats
	// staleRead describes a read that missed an acknowledged write.
	staleRead string

	trace []string

	// hosts, in the multi-group simulator (sim_host_test.go), runs this
	// sim as group number group over shared hosts: the nodes' writes go
	// to their host's shared disk.
	hosts *simHosts
	group int
}

type simStats struct {
	steps, elections, writesAcked, readsOK, crashes, partitions, delivered, dropped, installs, confChanges, jointChanges, faultsWhileJoint, wipes int
	// leaseReads counts the reads a lease answered with no round of messages.
	leaseReads int
	// coalescedTears counts crashes that tore a Save coalesced from several
	// queued writes.
	coalescedTears int
}

func newSim(t testing.TB, seed int64, opts simOptions) *sim {
	s := &sim{
		t: t, opts: opts, seed: seed, rng: rand.New(rand.NewSource(seed)),
		cut: map[[2]uint64]bool{}, check: newInvariantChecker(), acked: map[uint64]uint64{},
	}
	s.check.onLeader = func(c *core) {
		s.stats.elections++
		s.logf("node %d leads term %d (last %d)", c.id, c.term, c.log.lastIndex())
	}
	members := make([]Member, opts.nodes)
	for i := range members {
		members[i] = Member{ID: uint64(i + 1)}
	}
	s.members = members
	founding := Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(members)}
	for i := 0; i < opts.nodes; i++ {
		n := &simNode{id: uint64(i + 1), store: NewMemoryStorage(), tickPeriod: s.clockPeriod(s.rng.Intn(3))}
		if err := n.store.Save(HardState{Term: 1, Commit: 1, Origin: clusterOrigin(members)}, []Entry{founding}); err != nil {
			t.Fatal(err)
		}
		s.nodes = append(s.nodes, n)
		s.restart(n)
		s.schedule(simEvent{at: 1 + s.rng.Intn(n.tickPeriod), kind: evTick, node: n})
	}
	s.delay = 5
	return s
}

// clockPeriod maps a draw of 0, 1 or 2 to a node's clock period: the
// lowest, middle or highest of opts.tickPeriods (9, 10 or 11 by default).
func (s *sim) clockPeriod(draw int) int {
	lo, hi := 9, 11
	if s.opts.tickPeriods != [2]int{} {
		lo, hi = s.opts.tickPeriods[0], s.opts.tickPeriods[1]
	}
	return lo + draw*(hi-lo)/2
}

func (s *sim) logf(format string, args ...any) {
	line := fmt.Sprintf("%5d ", s.step) + fmt.Sprintf(format, args...)
	if s.hosts != nil {
		line = fmt.Sprintf("%5d g%d ", s.step, s.group) + fmt.Sprintf(format, args...)
	}
	if *simTraceFlag {
		s.t.Log(line)
	}
	s.trace = append(s.trace, line)
	if len(s.trace) > 20000 {
		s.trace = s.trace[10000:]
	}
}

// fail reports a broken invariant with the seed and the end of the trace.
func (s *sim) fail(format string, args ...any) error {
	if s.hosts != nil {
		return s.hosts.fail(s, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("seed %d, step %d: %s\nreplay: go test -run 'TestSim$' -seed=%d -simtrace -v\nlast steps:\n%s",
		s.seed, s.step, fmt.Sprintf(format, args...), s.seed, strings.Join(s.trace[max(0, len(s.trace)-60):], "\n"))
}

// restart (re)creates a node's core from what its disk holds.
func (s *sim) restart(n *simNode) {
	// Recover as the runtime does (loadStorage), from the snapshot and the log.
	// A wiped disk is empty: loadStorage bootstraps it from the founding
	// members, as NewNode does with InitialMembers, and reports it fresh.
	st, err := loadStorage(Config{ID: n.id, InitialMembers: s.members}, n.store, simSM{})
	if err != nil {
		s.t.Fatalf("seed %d: recovering %d: %v", s.seed, n.id, err)
	}
	hs := st.hs
	appendBytes := uint64(256)
	if s.opts.smallAppends {
		appendBytes = 1
	}
	c, err := newCore(coreConfig{
		id: n.id, electionTicks: 6, heartbeatTicks: 1, preVote: s.seed%2 == 0, checkQuorum: s.seed%3 != 0 || s.opts.leaseTicks > 0, leaseTicks: s.opts.leaseTicks,
		maxInflight: 4, maxAppendBytes: appendBytes, maxUncommittedEntries: 256, maxUncommittedBytes: 1 << 20,
		seed: s.rng.Int63(), fresh: st.fresh, hardState: hs, firstIndex: st.first, firstTerm: st.firstTerm, entries: st.entries, snapshot: st.snap,
	})
	if err != nil {
		s.t.Fatalf("seed %d: restart of %d: %v", s.seed, n.id, err)
	}
	c.hooks = s.opts.hooks
	if s.opts.noQuietStart {
		c.lease.quiet = false
	}
	n.core, n.up, n.lastHS, n.writes, n.flushDue = c, true, hs, nil, false
	n.applied, n.props, n.reads = c.log.applying, nil, nil
	n.lastSnap, n.appliedTerm, n.appliedMembers, n.appliedOutgoing = st.snap.Index, st.snap.Term, st.snap.Members, st.snap.Outgoing
	// As the runtime does: each incarnation numbers its reads from a random
	// start, so late answers to an earlier incarnation's reads match nothing.
	n.nextReadID = s.rng.Uint64() >> 1
}

// crash stops n; a random prefix of the records of its pending writes
// reaches the disk.
func (s *sim) crash(n *simNode) {
	k := s.rng.Intn(len(n.writes) + 1)
	for i := 0; i < k; i++ {
		s.completeWrite(n, false)
	}
	torn := ""
	if len(n.writes) > 0 && s.rng.Intn(2) == 0 {
		// The storage writer coalesces the writes queued behind the one in
		// flight into one Save: the torn Save may span several of them.
		m := 1
		if len(n.writes) > 1 {
			m += s.rng.Intn(len(n.writes))
		}
		ops := make([]diskOp, m)
		for i, w := range n.writes[:m] {
			ops[i] = diskOp{hs: w.hs, entries: w.entries}
		}
		hs, ents, err := coalesce(ops)
		if err != nil {
			s.t.Fatalf("%v", s.fail("node %d: coalescing writes: %v", n.id, err))
		}
		torn = s.tearWrite(n, simWrite{hs: hs, entries: ents})
		if m > 1 && torn != "" {
			torn += fmt.Sprintf(" (%d writes coalesced)", m)
			s.stats.coalescedTears++
		}
	}
	s.logf("crash %d (%d of %d pending writes reached the disk%s)", n.id, k, k+len(n.writes), torn)
	s.stats.leaseReads += int(n.core.lease.served)
	n.up, n.core, n.writes, n.props, n.reads = false, nil, nil, nil, nil
	n.gen++
	s.stats.crashes++
}

// completeWrite makes n's oldest pending write durable.
func (s *sim) completeWrite(n *simNode, send bool) {
	w := n.writes[0]
	n.writes = n.writes[1:]
	if err := n.store.Save(w.hs, w.entries); err != nil {
		s.t.Fatalf("%v", s.fail("node %d: save: %v", n.id, err))
	}
	if !send {
		return
	}
	if k := len(w.entries); k > 0 {
		n.core.persisted(w.entries[k-1].Index, w.entries[k-1].Term)
	}
	s.send(w.msgs)
}

// tearWrite makes part of w durable, as a power loss in the middle of it
// would: a Save is one record per entry and one for the hard state (when it
// changed), and a random proper prefix of them survives.
func (s *sim) tearWrite(n *simNode, w simWrite) string {
	stored, err := n.store.InitialState()
	if err != nil {
		s.t.Fatal(err)
	}
	records := len(w.entries)
	if w.hs != stored {
		records++
	}
	if records < 2 {
		return "" // nothing between none and all of it
	}
	keep := 1 + s.rng.Intn(records-1)
	hs, ents := stored, w.entries[:min(keep, len(w.entries))]
	if s.opts.hardStateFirst && w.hs != stored {
		hs, ents = w.hs, w.entries[:keep-1]
	}
	if err := n.store.Save(hs, ents); err != nil {
		s.t.Fatalf("%v", s.fail("node %d: torn save: %v", n.id, err))
	}
	return fmt.Sprintf("; %d of the next write's %d records too", keep, records)
}

// truncates reports whether writing ents replaces entries n has written
// (or is writing): a follower overwriting a conflicting suffix (§5.3).
func (s *sim) truncates(n *simNode, ents []Entry) bool {
	if len(ents) == 0 {
		return false
	}
	last, err := n.store.LastIndex()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, w := range n.writes {
		if k := len(w.entries); k > 0 {
			last = w.entries[k-1].Index
		}
	}
	return ents[0].Index <= last
}

// process carries out n's ready until it asks for nothing more.
func (s *sim) process(n *simNode) error {
	for n.up {
		rd := n.core.ready(n.lastHS)
		if rd.empty() {
			break
		}
		if rd.err != nil {
			return s.fail("node %d stopped: %v", n.id, rd.err)
		}
		// Log Matching (§5.3), checked on every entry as it is written.
		if err := s.check.writtenEntries(n.core, rd.entries); err != nil {
			return s.fail("%v", err)
		}
		early, late := splitEarly(rd.messages)
		s.send(early)
		if s.opts.ackBeforeDurable {
			s.send(late)
			late = nil
		}
		switch {
		case rd.saveState || len(rd.entries) > 0:
			risky := s.truncates(n, rd.entries) || (len(rd.entries) > 0 && rd.hardState.Term > n.lastHS.Term)
			if risky && s.step < s.opts.steps && s.rng.Intn(4) == 0 {
				// Power fails while the node overwrites a conflicting suffix
				// or writes entries of a term it has just learned: the writes
				// most exposed to a torn record order.
				if s.hosts != nil {
					s.hosts.crashSoon(n)
				} else {
					s.schedule(simEvent{at: s.step, kind: evCrash, node: n, gen: n.gen})
				}
			}
			n.writes = append(n.writes, simWrite{hs: rd.hardState, entries: slices.Clone(rd.entries), msgs: late})
			n.lastHS = rd.hardState
			if s.hosts != nil {
				s.hosts.queued(n)
				break
			}
			n.writeDone = max(n.writeDone, s.step) + 1 + s.rng.Intn(4)
			if s.opts.slowWrites && s.rng.Intn(8) == 0 {
				// A slow fsync: the write stays in flight while messages
				// come and go (acknowledgments of the same entries from
				// followers, a new leader's appends), up to about half an
				// election timeout.
				n.writeDone += s.rng.Intn(30)
			}
			s.schedule(simEvent{at: n.writeDone, kind: evWrite, node: n, gen: n.gen})
		case len(n.writes) > 0:
			// Later messages must not overtake a pending write's promises.
			n.writes[len(n.writes)-1].msgs = append(n.writes[len(n.writes)-1].msgs, late...)
		default:
			s.send(late)
		}
		for _, e := range rd.committed {
			if err := s.apply(n, e); err != nil {
				return err
			}
		}
		for _, r := range rd.reads {
			s.readAnswered(n, r)
		}
		if err := s.snapshots(n, rd); err != nil {
			return err
		}
		if n.core.role != Leader || n.core.term != n.leaderTerm {
			// As the runtime does: proposals of an ended leadership have an
			// unknown outcome and are no longer waited for.
			n.props, n.leaderTerm = nil, n.core.term
		}
	}
	if n.up && !n.flushDue && n.core.commitPending() {
		// As the runtime does once its event loop is idle for a moment:
		// the commit index that no append carried goes out on its own.
		n.flushDue = true
		s.schedule(simEvent{at: s.step + 1, kind: evFlush, node: n, gen: n.gen})
	}
	return nil
}

// simSM stands in for a state machine when the simulator restarts a node:
// its state is what the simulator tracks (the applied index).
type simSM struct{}

func (simSM) Apply(Entry) any             { return nil }
func (simSM) Snapshot() (Snapshot, error) { return nil, nil }
func (simSM) Restore(r io.Reader) error   { return nil }

// simSnapshotEvery is how many applied entries make a node snapshot; small,
// so that lagging and restarted nodes often need InstallSnapshot.
const simSnapshotEvery, simTrailing = 40, 5

// snapshots takes, sends and installs snapshots for node n. Snapshot I/O is
// synchronous here: the ordering that matters (durable before compacting,
// before acknowledging) is the same.
func (s *sim) snapshots(n *simNode, rd ready) error {
	if n.applied >= n.lastSnap+simSnapshotEvery {
		meta := SnapshotMeta{Index: n.applied, Term: n.appliedTerm, Members: n.appliedMembers, Outgoing: n.appliedOutgoing}
		if err := n.store.SaveSnapshot(meta, strings.NewReader("")); err != nil {
			return err
		}
		n.lastSnap = n.applied
		if index, term, ok := n.core.snapshotTaken(meta, simTrailing); ok {
			if err := n.store.Compact(index, term); err != nil {
				return s.fail("node %d: compacting to %d: %v", n.id, index, err)
			}
		}
	}
	for _, to := range rd.sendSnapshots {
		meta, rc, err := n.store.Snapshot()
		if err != nil {
			return s.fail("leader %d has no snapshot to send: %v", n.id, err)
		}
		rc.Close()
		s.logf("leader %d sends snapshot %d/%d to %d", n.id, meta.Term, meta.Index, to)
		s.send([]Message{{Type: MsgSnapshot, From: n.id, To: to, Term: n.core.term, Index: meta.Index, LogTerm: meta.Term, Done: true,
			Entries: []Entry{{Index: meta.Index, Term: meta.Term, Type: EntryConfChange, Data: encodeConfig(meta.Members, meta.Outgoing)}}}})
		// The runtime gives up on a transfer nobody answers.
		s.schedule(simEvent{at: s.step + 300, kind: evSnapFail, node: n, gen: n.gen, msg: Message{To: to}})
	}
	for _, m := range rd.snapshotMsgs {
		if m.Type != MsgSnapshot {
			continue
		}
		members, outgoing, err := decodeConfig(m.Entries[0].Data)
		if err != nil {
			return s.fail("node %d: bad snapshot configuration: %v", n.id, err)
		}
		meta := SnapshotMeta{Index: m.Index, Term: m.LogTerm, Members: members, Outgoing: outgoing}
		// Earlier writes reach the disk first, in order.
		if s.hosts != nil {
			s.hosts.flush(n)
		}
		for len(n.writes) > 0 {
			s.completeWrite(n, true)
		}
		if err := n.store.SaveSnapshot(meta, strings.NewReader("")); err != nil {
			return err
		}
		if err := n.store.Compact(meta.Index, meta.Term); err != nil {
			return s.fail("node %d: discarding the log behind snapshot %d: %v", n.id, meta.Index, err)
		}
		if n.core.installSnapshot(meta, m.From) {
			n.applied, n.appliedTerm, n.lastSnap, n.appliedMembers, n.appliedOutgoing = meta.Index, meta.Term, meta.Index, meta.Members, meta.Outgoing
			s.stats.installs++
			s.logf("node %d installed snapshot %d/%d from %d", n.id, meta.Term, meta.Index, m.From)
			s.finishReads(n)
		}
	}
	return nil
}

// apply is the simulated state machine.
func (s *sim) apply(n *simNode, e Entry) error {
	if e.Index != n.applied+1 {
		return s.fail("node %d applied %d after %d", n.id, e.Index, n.applied)
	}
	n.applied, n.appliedTerm = e.Index, e.Term
	if e.Type == EntryConfChange {
		members, outgoing, err := decodeConfig(e.Data)
		if err != nil {
			return s.fail("node %d applied a bad configuration at %d: %v", n.id, e.Index, err)
		}
		n.appliedMembers, n.appliedOutgoing = members, outgoing
	}
	// State Machine Safety (§5.4.3).
	if err := s.check.applied(n.core, &e); err != nil {
		return s.fail("%v", err)
	}
	for len(n.props) > 0 && n.props[0].index <= e.Index {
		p := n.props[0]
		n.props = n.props[1:]
		if p.index == e.Index && p.term == e.Term {
			s.acked[e.Index] = e.Term
			s.maxAcked = max(s.maxAcked, e.Index)
			s.stats.writesAcked++
			s.logf("write op %d acknowledged by %d at %d/%d", p.op, n.id, e.Term, e.Index)
		}
	}
	s.finishReads(n)
	return nil
}

func (s *sim) readAnswered(n *simNode, res readResult) {
	for _, r := range n.reads {
		if r.id == res.id && !r.answered {
			if res.err != nil {
				n.reads = slices.DeleteFunc(n.reads, func(x *simRead) bool { return x == r })
				s.logf("read op %d on %d failed: %v", r.op, n.id, res.err)
				return
			}
			r.answered, r.index = true, res.index
			s.finishReads(n)
			return
		}
	}
}

// finishReads completes reads whose read index n has applied, checking that
// each saw every write acknowledged before it began (linearizability of reads).
func (s *sim) finishReads(n *simNode) {
	n.reads = slices.DeleteFunc(n.reads, func(r *simRead) bool {
		if !r.answered || n.applied < r.index {
			return false
		}
		if r.index < r.minIndex {
			s.staleRead = fmt.Sprintf("read op %d on %d: read index %d, but write %d was acknowledged before it began", r.op, n.id, r.index, r.minIndex)
		} else {
			s.stats.readsOK++
		}
		return true
	})
}

// checkInvariants runs after every step: Raft's own invariants
// (invariantChecker), then what the clients saw.
func (s *sim) checkInvariants() error {
	if s.staleRead != "" {
		return s.fail("linearizability: %s", s.staleRead)
	}
	cores := make([]*core, 0, len(s.nodes))
	for _, n := range s.nodes {
		if n.up {
			cores = append(cores, n.core)
		}
	}
	if err := s.check.check(cores...); err != nil {
		return s.fail("%v", err)
	}
	for index, term := range s.acked {
		if c, ok := s.check.committed[index]; !ok || c.term != term {
			return s.fail("acknowledged write %d/%d is not the committed entry there", term, index)
		}
	}
	return nil
}

func (s *sim) upNodes() []*simNode {
	var up []*simNode
	for _, n := range s.nodes {
		if n.up {
			up = append(up, n)
		}
	}
	return up
}

// leader returns a node that thinks it leads, if any.
func (s *sim) leader() *simNode {
	for _, n := range s.upNodes() {
		if n.core.role == Leader {
			return n
		}
	}
	return nil
}

func (s *sim) pick(nodes []*simNode) *simNode {
	if len(nodes) == 0 {
		return nil
	}
	return nodes[s.rng.Intn(len(nodes))]
}

func (s *sim) tickNode(n *simNode) {
	if !n.up {
		return
	}
	n.core.tick()
	for _, rd := range n.reads {
		// The runtime re-asks the leader for lost read indexes.
		if rd.ticks++; !rd.answered && rd.ticks >= n.core.electionTicks {
			rd.ticks = 0
			n.core.read(rd.id, s.opts.leaseTicks > 0)
		}
	}
}

// send puts messages on the simulated network: each may be lost, or
// duplicated, and arrives after its own random delay, so messages reorder.
func (s *sim) send(msgs []Message) {
	for _, m := range msgs {
		if s.rng.Float64() < s.drop {
			s.stats.dropped++
			continue
		}
		copies := 1
		if s.rng.Float64() < s.dup {
			copies = 2
		}
		for i := 0; i < copies; i++ {
			s.schedule(simEvent{at: s.step + 1 + s.rng.Intn(s.delay), kind: evDeliver, node: s.nodes[m.To-1], msg: m})
		}
	}
}

// deliver hands a message that arrived to its node, unless the network is
// cut between the two or the node is down.
func (s *sim) deliver(m Message) {
	to := s.nodes[m.To-1]
	if !to.up || s.cut[[2]uint64{m.From, m.To}] {
		s.stats.dropped++
		// A transport that finds the peer down or cut off reports it, as
		// TCPTransport and InmemNetwork do (see Unreachable).
		if from := s.nodes[m.From-1]; from.up {
			from.core.step(Unreachable(m))
		}
		return
	}
	s.stats.delivered++
	if *simTraceFlag {
		s.logf("deliver %s %d->%d term %d idx %d/%d ents %d commit %d rej %v ctx %d", m.Type, m.From, m.To, m.Term, m.LogTerm, m.Index, len(m.Entries), m.Commit, m.Reject, m.Context)
	}
	to.core.step(m)
}

// Events of the simulation, ordered by time and then by scheduling order.
const (
	evTick = iota
	evDeliver
	evWrite
	evSnapFail
	evCrash
	// evFlush is the runtime's idle flush of the commit index
	// (core.flushCommit), a microtick after a pass left it unsent.
	evFlush
)

type simEvent struct {
	at, seq int
	kind    int
	node    *simNode
	gen     int
	msg     Message
}

type simEvents []simEvent

func (h simEvents) Len() int { return len(h) }
func (h simEvents) Less(i, j int) bool {
	return h[i].at < h[j].at || (h[i].at == h[j].at && h[i].seq < h[j].seq)
}
func (h simEvents) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simEvents) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *simEvents) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func (s *sim) schedule(e simEvent) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.events, e)
}

// advance moves the clock one microtick and runs every event due.
func (s *sim) advance() error {
	s.step++
	for len(s.events) > 0 && s.events[0].at <= s.step {
		e := heap.Pop(&s.events).(simEvent)
		switch e.kind {
		case evTick:
			s.tickNode(e.node)
			s.schedule(simEvent{at: s.step + e.node.tickPeriod, kind: evTick, node: e.node})
		case evDeliver:
			s.deliver(e.msg)
		case evSnapFail:
			if e.node.up && e.gen == e.node.gen {
				e.node.core.snapshotFailed(e.msg.To)
			}
		case evWrite:
			if e.node.up && e.gen == e.node.gen && len(e.node.writes) > 0 {
				s.completeWrite(e.node, true)
			}
		case evCrash:
			if e.node.up && e.gen == e.node.gen && len(s.upNodes()) > len(s.nodes)/2+1 {
				s.crash(e.node)
			}
		case evFlush:
			if e.node.up && e.gen == e.node.gen {
				e.node.flushDue = false
				e.node.core.flushCommit()
			}
		}
		if err := s.process(e.node); err != nil {
			return err
		}
	}
	return s.checkInvariants()
}

func (s *sim) propose() {
	// Clients do not know who really leads: any node that thinks it does
	// may get the write.
	var leaders []*simNode
	for _, n := range s.upNodes() {
		if n.core.role == Leader {
			leaders = append(leaders, n)
		}
	}
	if n := s.pick(leaders); n != nil {
		s.nextOp++
		data := fmt.Sprintf("op%d", s.nextOp)
		index, term, err := n.core.propose([]byte(data))
		if err == nil {
			n.props = append(n.props, simProposal{op: s.nextOp, index: index, term: term})
			s.logf("write op %d proposed on %d at %d/%d", s.nextOp, n.id, term, index)
		}
	}
}

func (s *sim) read() {
	n := s.pick(s.upNodes())
	if n == nil {
		return
	}
	s.nextOp++
	n.nextReadID++
	n.reads = append(n.reads, &simRead{op: uint64(s.nextOp), id: n.nextReadID, minIndex: s.maxAcked})
	s.logf("read op %d on %d (must see index %d)", s.nextOp, n.id, s.maxAcked)
	n.core.read(n.nextReadID, s.opts.leaseTicks > 0)
}

// fault changes the network or crashes or restarts a node.
func (s *sim) fault() {
	if slices.ContainsFunc(s.upNodes(), func(n *simNode) bool { return n.core.outgoing != nil }) {
		s.stats.faultsWhileJoint++
	}
	ids := make([]uint64, len(s.nodes))
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	split := func(a, b []uint64) {
		for _, x := range a {
			for _, y := range b {
				s.cut[[2]uint64{x, y}], s.cut[[2]uint64{y, x}] = true, true
			}
		}
	}
	r := s.rng.Intn(10)
	if r <= 5 && s.step < s.netFaultUntil {
		r = 6 + s.rng.Intn(4) // the current network fault lasts a while yet
	}
	if r >= 2 && r <= 5 {
		// Network faults last long enough for elections and writes on
		// either side of them.
		s.netFaultUntil = s.step + 100 + s.rng.Intn(1000)
	}
	switch r {
	case 0, 1:
		s.cut = map[[2]uint64]bool{}
		s.logf("heal the network")
	case 2: // majority / minority
		s.cut = map[[2]uint64]bool{}
		k := len(ids) / 2
		split(ids[:k], ids[k:])
		s.stats.partitions++
		s.logf("partition %v | %v", ids[:k], ids[k:])
	case 3: // isolate the leader, or crash it
		if n := s.leader(); n != nil && s.rng.Intn(2) == 0 {
			s.crash(n)
			s.netFaultUntil = 0
			break
		}
		for _, n := range s.upNodes() {
			if n.core.role == Leader {
				s.cut = map[[2]uint64]bool{}
				split([]uint64{n.id}, ids)
				s.stats.partitions++
				s.logf("isolate leader %d", n.id)
			}
		}
	case 4: // asymmetric one-way cut
		s.cut[[2]uint64{ids[0], ids[1]}] = true
		s.stats.partitions++
		s.logf("cut %d -> %d", ids[0], ids[1])
	case 5: // bridge: two halves that share one node
		s.cut = map[[2]uint64]bool{}
		k := len(ids) / 2
		split(ids[1:k+1], ids[k+1:])
		s.stats.partitions++
		s.logf("bridge partition %v | %d | %v", ids[1:k+1], ids[0], ids[k+1:])
	case 6:
		// Crash a node; mostly keep a quorum up, sometimes not. Half the
		// time it is a power loss that strikes a node in the middle of a
		// write, when there is one: the moment torn writes come from.
		up := s.upNodes()
		down := len(s.nodes) - len(up)
		if s.rng.Intn(2) == 0 {
			if writing := slices.DeleteFunc(slices.Clone(up), func(n *simNode) bool { return len(n.writes) == 0 }); len(writing) > 0 {
				up = writing
			}
		}
		if n := s.pick(up); n != nil && (down < len(s.nodes)/2 || (down < len(s.nodes)-1 && s.rng.Intn(4) == 0)) {
			s.crash(n)
		}
	case 7, 8:
		for _, n := range s.nodes {
			if !n.up {
				every := s.opts.wipeEvery
				if every == 0 {
					every = 2
				}
				if s.rng.Intn(every) == 0 && s.wipeSafe(n) {
					s.wipe(n)
				}
				s.restart(n)
				s.logf("restart %d at term %d, last %d, commit %d", n.id, n.core.term, n.core.log.lastIndex(), n.core.log.committed)
				break
			}
		}
	case 9:
		s.drop = []float64{0, 0.05, 0.2}[s.rng.Intn(3)]
		s.dup = []float64{0, 0.05, 0.2}[s.rng.Intn(3)]
		s.delay = []int{2, 5, 30}[s.rng.Intn(3)]
		s.logf("faults: drop %.2f duplicate %.2f delay up to %d", s.drop, s.dup, s.delay)
	}
}

// wipe empties the disk of a crashed node: it restarts on empty storage,
// bootstrapped from the founding members (see restart), having forgotten its
// vote and its log.
func (s *sim) wipe(n *simNode) {
	n.store = NewMemoryStorage()
	s.stats.wipes++
	s.logf("wipe %d", n.id)
}

// awaitingCatchUp reports whether n's disk holds nothing beyond the founding
// configuration (it was wiped, or no leader has reached it yet): it is then
// fresh (loadStorage), withholds its vote from candidates with history, and
// so counts as down for elections.
func (s *sim) awaitingCatchUp(n *simNode) bool {
	meta, rc, err := n.store.Snapshot()
	if err == nil {
		rc.Close()
	}
	last, err := n.store.LastIndex()
	if err != nil {
		s.t.Fatal(err)
	}
	return meta.Index == 0 && last <= 1
}

// wipeSafe reports whether n's disk may be wiped now. A wiped disk is a lost
// disk: wiping is allowed only where the cluster survives losing it, so that
// the simulator's checks report bugs, not the fault.
//
//   - Every committed entry, acknowledged writes among them, stays on a
//     majority of every configuration (the running nodes' and the founding
//     one). A node whose disk holds the newest committed entry holds every
//     earlier one (Log Matching and Leader Completeness, §5.3, §5.4), in its
//     log or snapshot. So does every entry n acknowledged: a leader may
//     commit it later, counting the acknowledgment n sent before the wipe.
//   - No leader of a term below the node's may catch it up (see above).
//   - The wiped node counts as down for elections until a leader catches it
//     up, so the others must be able to elect one: no other node awaits a
//     catch-up, every running node's configuration is the whole, committed
//     cluster, and membership changes wait (changeMembership) until it is
//     caught up. Otherwise a leader that removed itself (it does not
//     campaign) or a shrunk configuration could need the wiped node's vote,
//     and the cluster would stall, as docs/protocol.md says it may.
func (s *sim) wipeSafe(n *simNode) bool {
	if s.seed%3 == 0 {
		// Without CheckQuorum a leader cut off from the others leads on in
		// its old term, and can catch the wiped node up and count it, as
		// the node would have refused before it forgot its term: a case
		// docs/protocol.md ("A wiped disk") leaves to CheckQuorum.
		return false
	}
	if hs, err := n.store.InitialState(); err == nil {
		for _, o := range s.upNodes() {
			if o.core.role == Leader && o.core.term < hs.Term {
				return false // such a stale leader, for its last moments
			}
		}
	}
	for _, o := range s.nodes {
		if o != n && s.awaitingCatchUp(o) {
			return false
		}
		if o.up && (len(o.core.members) != len(s.nodes) || o.core.outgoing != nil || o.core.configIndex > o.core.log.committed) {
			return false
		}
	}
	// The newest committed entry, and the entries beyond it that n
	// acknowledged to a leader (as that leader's progress shows, or in an
	// answer still on its way): a leader that has not heard of the wipe can
	// still commit them counting n's acknowledgment.
	type point struct{ index, term uint64 }
	points := []point{{s.check.maxCommitted, s.check.committed[s.check.maxCommitted].term}}
	acked := func(index uint64) bool {
		if index <= s.check.maxCommitted {
			return true
		}
		t, err := n.store.Term(index)
		points = append(points, point{index, t})
		return err == nil
	}
	for _, o := range s.upNodes() {
		if pr := o.core.progress[n.id]; o.core.role == Leader && pr != nil && !acked(pr.match) {
			return false
		}
	}
	for _, e := range s.events {
		if e.kind == evDeliver && e.msg.From == n.id && e.msg.Type == MsgAppendResp && !e.msg.Reject && !acked(e.msg.Index) {
			return false
		}
	}
	configs := [][]Member{s.members}
	for _, o := range s.upNodes() {
		configs = append(configs, o.core.members)
		if o.core.outgoing != nil {
			configs = append(configs, o.core.outgoing)
		}
	}
	for _, p := range points {
		holds := map[uint64]bool{}
		for _, o := range s.nodes {
			if o == n {
				continue
			}
			meta, rc, err := o.store.Snapshot()
			if err == nil {
				rc.Close()
			}
			t, terr := o.store.Term(p.index)
			holds[o.id] = meta.Index >= p.index || (terr == nil && t == p.term)
		}
		for _, members := range configs {
			count := 0
			for _, m := range members {
				if holds[m.ID] {
					count++
				}
			}
			if count <= len(members)/2 {
				return false
			}
		}
	}
	return true
}

// changeMembership has the leader change the voters: half the time one
// server at a time (dissertation §4.1), removing a voter (keeping at least
// three) or adding a removed node back, and otherwise several at once
// through a joint configuration (§4.3), to a random set of at least three
// voters; not while a node awaits its first catch-up (see wipeSafe).
func (s *sim) changeMembership() {
	l := s.leader()
	if l == nil || slices.ContainsFunc(s.nodes, s.awaitingCatchUp) {
		return
	}
	if s.rng.Intn(2) == 0 {
		s.changeVoters(l)
		return
	}
	id := uint64(1 + s.rng.Intn(len(s.nodes)))
	edit, what := addMember(id, "", false), "add"
	if _, ok := l.core.member(id); ok {
		if len(l.core.members) <= 3 {
			return
		}
		edit, what = removeMember(id), "remove"
	}
	if _, _, changed, err := l.core.changeMembers(edit); changed {
		s.stats.confChanges++
		s.logf("leader %d proposes to %s %d", l.id, what, id)
	} else if err != nil {
		s.logf("leader %d cannot %s %d: %v", l.id, what, id, err)
	}
}

// changeVoters has leader l make a random set of three or more nodes the
// voters, in one change: through a joint configuration when more than one
// voter changes.
func (s *sim) changeVoters(l *simNode) {
	ids := make([]uint64, len(s.nodes))
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	keep := ids[:3+s.rng.Intn(len(ids)-2)]
	var edits []membershipEdit
	for _, id := range ids {
		_, member := l.core.member(id)
		switch in := slices.Contains(keep, id); {
		case in:
			edits = append(edits, addMember(id, "", false))
		case member:
			edits = append(edits, removeMember(id))
		}
	}
	slices.Sort(keep)
	if _, _, changed, err := l.core.changeMembers(edits...); changed {
		s.stats.confChanges++
		if l.core.outgoing != nil {
			s.stats.jointChanges++
		}
		s.logf("leader %d proposes voters %v (joint: %v)", l.id, keep, l.core.outgoing != nil)
	} else if err != nil {
		s.logf("leader %d cannot make %v the voters: %v", l.id, keep, err)
	}
}

// run executes the faulty phase, then the must-heal phase.
func (s *sim) run() error {
	for s.step < s.opts.steps {
		if err := s.advance(); err != nil {
			return err
		}
		// Per mille of microticks.
		switch r := s.rng.Intn(1000); {
		case r < 60:
			s.propose()
		case r < 100:
			s.read()
		case r < 100+s.opts.faultRate:
			s.fault()
		case r < 103+s.opts.faultRate:
			s.changeMembership()
		}
		for _, n := range s.nodes {
			if err := s.process(n); err != nil {
				return err
			}
		}
	}
	s.stats.steps = s.step
	err := s.heal()
	for _, n := range s.upNodes() {
		s.stats.leaseReads += int(n.core.lease.served)
	}
	return err
}

// heal stops every fault and requires the cluster to recover within a
// bounded number of ticks: one leader that every node follows, every pending
// request finished, and every log the same.
func (s *sim) heal() error {
	s.logf("heal: faults stop")
	s.cut, s.drop, s.dup, s.delay = map[[2]uint64]bool{}, 0, 0, 5
	for _, n := range s.nodes {
		if !n.up {
			s.restart(n)
		}
	}
	deadline := s.step + s.opts.healTicks*11
	for s.step < deadline {
		if err := s.advance(); err != nil {
			return err
		}
		// Every node back in the configuration, one at a time.
		if l := s.leader(); l != nil && len(l.core.members) < len(s.nodes) {
			for _, n := range s.nodes {
				if _, ok := l.core.member(n.id); !ok {
					l.core.changeMembers(addMember(n.id, "", false))
					break
				}
			}
		}
		if s.healed() {
			return s.checkConverged()
		}
	}
	var b strings.Builder
	for _, n := range s.nodes {
		fmt.Fprintf(&b, "\n  node %d: %s term %d leader %d last %d commit %d applied %d props %d reads %d config %d [%v]", n.id, n.core.role, n.core.term, n.core.leader, n.core.log.lastIndex(), n.core.log.committed, n.applied, len(n.props), len(n.reads), n.core.configIndex, memberList(n.core.members))
		if n.core.outgoing != nil {
			fmt.Fprintf(&b, " outgoing [%v]", memberList(n.core.outgoing))
		}
	}
	return s.fail("the cluster did not heal within %d ticks:%s", s.opts.healTicks, b.String())
}

func (s *sim) healed() bool {
	leader := s.nodes[0].core.leader
	if leader == 0 || s.nodes[leader-1].core.role != Leader {
		return false
	}
	l := s.nodes[leader-1].core
	for _, n := range s.nodes {
		c := n.core
		if c.leader != leader || c.term != l.term || c.log.lastIndex() != l.log.lastIndex() ||
			c.log.committed != l.log.lastIndex() || n.applied != c.log.committed || len(n.reads) > 0 {
			return false
		}
		// Proposals of an earlier leadership have an unknown outcome; the
		// current leader's must all be done.
		if n.id == leader && len(n.props) > 0 {
			return false
		}
	}
	return true
}

// checkConverged asserts that every acknowledged write survived on every node.
func (s *sim) checkConverged() error {
	for _, n := range s.nodes {
		for index, term := range s.acked {
			if index < n.core.log.offset {
				continue // in the node's snapshot
			}
			if t, ok := n.core.log.term(index); !ok || t != term {
				return s.fail("acknowledged write %d/%d lost on node %d", term, index, n.id)
			}
		}
	}
	return nil
}

// simSeeds returns the seeds to run: -seed or RAFT_SEED alone, else count
// seeds from 1 (RAFT_SIM_SEEDS overrides count for long runs).
func simSeeds(t *testing.T, count int) []int64 {
	if *simSeedFlag != 0 {
		return []int64{*simSeedFlag}
	}
	if v := os.Getenv("RAFT_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		require.NoError(t, err)
		return []int64{seed}
	}
	if v := os.Getenv("RAFT_SIM_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		count = n
	}
	seeds := make([]int64, count)
	for i := range seeds {
		seeds[i] = int64(i + 1)
	}
	return seeds
}

func TestSim(t *testing.T) {
	start := time.Now()
	var total simStats
	seeds := simSeeds(t, 400)
	for _, seed := range seeds {
		nodes := 5
		if seed%4 == 0 {
			nodes = 3
		}
		s := newSim(t, seed, simOptions{nodes: nodes, steps: simSteps, healTicks: 2000, faultRate: simFaultRate, smallAppends: seed%5 == 0,
			slowWrites: seed%3 != 0})
		if err := s.run(); err != nil {
			t.Fatal(err)
		}
		total.steps += s.stats.steps
		total.elections += s.stats.elections
		total.writesAcked += s.stats.writesAcked
		total.readsOK += s.stats.readsOK
		total.crashes += s.stats.crashes
		total.partitions += s.stats.partitions
		total.delivered += s.stats.delivered
		total.dropped += s.stats.dropped
		total.installs += s.stats.installs
		total.confChanges += s.stats.confChanges
		total.jointChanges += s.stats.jointChanges
		total.faultsWhileJoint += s.stats.faultsWhileJoint
		total.wipes += s.stats.wipes
		total.coalescedTears += s.stats.coalescedTears
	}
	t.Logf("%d seeds in %v: %+v", len(seeds), time.Since(start).Round(time.Millisecond), total)
	if len(seeds) >= 100 {
		// The runs must exercise what they claim to check.
		require.Greater(t, total.elections, 2*len(seeds), "elections")
		require.Greater(t, total.writesAcked, 10*len(seeds), "acknowledged writes")
		require.Greater(t, total.readsOK, 5*len(seeds), "reads")
		require.Greater(t, total.crashes, len(seeds), "crashes")
		require.Greater(t, total.partitions, len(seeds), "partitions")
		require.Greater(t, total.installs, len(seeds)/4, "snapshot installs")
		require.Greater(t, total.wipes, len(seeds)/5, "wiped disks")
		require.Greater(t, total.coalescedTears, len(seeds)/200, "crashes tearing a coalesced write")
		require.Greater(t, total.jointChanges, len(seeds)/4, "joint configuration changes")
		require.Greater(t, total.faultsWhileJoint, len(seeds)/10, "faults (crashes, partitions, message loss) while joint")
	}
}

// TestSimCatchesBrokenRules proves that the simulator bites: with a rule of
// the protocol switched off through a test-only hook, some seed must fail.
// The seeds found to catch each bug are tried first, so the default run stays
// fast; if a change to the core makes them pass, the search goes on.
func TestSimCatchesBrokenRules(t *testing.T) {
	cases := []struct {
		name           string
		hooks          coreHooks
		hardStateFirst bool
		known          int64
		wipeEvery      int
		leaseTicks     int
		tickPeriods    [2]int
		// ackBeforeDurable: the runtime sends acknowledgments and votes
		// before what they promise is durable.
		ackBeforeDurable bool
		slowWrites       bool
	}{
		{"two votes in a term (§5.2)", coreHooks{grantEveryVote: true}, false, 5, 0, 0, [2]int{}, false, false},
		{"commit an earlier term's entry by counting (§5.4.2, Figure 8)", coreHooks{commitPreviousTermByCounting: true}, false, 336, 0, 0, [2]int{}, false, false},
		{"serve reads without confirming leadership (D§6.4)", coreHooks{readWithoutConfirmation: true}, false, 18, 0, 0, [2]int{}, false, false},
		{"write a Save's hard state before its entries", coreHooks{}, true, 126, 0, 0, [2]int{}, false, false},
		{"a wiped voter votes again in a term it voted in (two leaders in one term)", coreHooks{voteWhenFresh: true}, false, 634, 1, 0, [2]int{}, false, false},
		{"commit with the new voters' majority alone while joint (D§4.3)", coreHooks{commitWithIncomingOnly: true}, false, 90, 0, 0, [2]int{}, false, false},
		// The simulator's election timeout is 6 ticks: a lease of 12 outlives
		// the followers' promise not to vote (TestSimLeaseReads states the
		// bound), with clocks drifting as in TestSimLeaseReads.
		{"a read lease twice the election timeout (lease reads beyond their clock bound)", coreHooks{}, false, 1905, 0, 12, [2]int{8, 12}, false, false},
		// A leader's own write must still be in flight when the followers'
		// acknowledgments arrive: slow writes.
		{"the leader counts itself before its write is durable (D§10.2.1)", coreHooks{countSelfBeforeDurable: true}, false, 46, 0, 0, [2]int{}, false, true},
		{"acknowledgments and votes sent before what they promise is durable (Figure 2)", coreHooks{}, false, 15, 0, 0, [2]int{}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seeds := []int64{tc.known}
			for seed := int64(1); seed <= 3000; seed++ {
				seeds = append(seeds, seed)
			}
			for _, seed := range seeds {
				s := newSim(t, seed, simOptions{nodes: 5, steps: simSteps, healTicks: 2000, faultRate: 20, hooks: tc.hooks,
					hardStateFirst: tc.hardStateFirst, smallAppends: true, wipeEvery: tc.wipeEvery, leaseTicks: tc.leaseTicks, tickPeriods: tc.tickPeriods,
					ackBeforeDurable: tc.ackBeforeDurable, slowWrites: tc.slowWrites})
				if err := s.run(); err != nil {
					t.Logf("caught by seed %d: %v", seed, strings.SplitN(err.Error(), "\n", 2)[0])
					return
				}
			}
			t.Fatal("no seed caught the broken rule")
		})
	}
}

var (
	simSteps     = envInt("RAFT_SIM_STEPS", 3000)
	simFaultRate = envInt("RAFT_SIM_FAULTS", 7)
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// TestSimReplaysExactly: the same seed gives the same run, step for step.
func TestSimReplaysExactly(t *testing.T) {
	run := func() (simStats, []string) {
		s := newSim(t, 42, simOptions{nodes: 5, steps: 2000, healTicks: 2000, faultRate: 20})
		require.NoError(t, s.run())
		return s.stats, s.trace
	}
	stats1, trace1 := run()
	stats2, trace2 := run()
	require.Equal(t, stats1, stats2)
	require.Equal(t, trace1, trace2)
	require.NotEmpty(t, trace1)
}

// TestSimLeaseReads runs the simulator with every read a lease read, and
// clocks whose rates differ by as much as the lease allows. In the
// simulator a node's ticks come exactly every tickPeriod microticks, so a
// follower that received a heartbeat at time r ignores candidates until its
// electionTicks-th tick after r, at r + (electionTicks-1)*Pf or later, while
// a leader uses a lease started by a round sent at s (after its tick L0)
// only before its tick L0+leaseTicks, at s + leaseTicks*Pl at the latest.
// With electionTicks 6 and clock periods from 8 to 12 (a drift of 50%), a
// lease of 3 ticks keeps 3*12 <= 5*8: every read must still be
// linearizable, which the simulator checks (finishReads).
func TestSimLeaseReads(t *testing.T) {
	start := time.Now()
	var total simStats
	seeds := simSeeds(t, 300)
	for _, seed := range seeds {
		nodes := 5
		if seed%4 == 0 {
			nodes = 3
		}
		s := newSim(t, seed, simOptions{nodes: nodes, steps: simSteps, healTicks: 2000, faultRate: simFaultRate, smallAppends: seed%5 == 0,
			leaseTicks: 3, tickPeriods: [2]int{8, 12}, slowWrites: seed%3 != 0})
		if err := s.run(); err != nil {
			t.Fatal(err)
		}
		total.readsOK += s.stats.readsOK
		total.leaseReads += s.stats.leaseReads
		total.elections += s.stats.elections
		total.crashes += s.stats.crashes
		total.partitions += s.stats.partitions
		total.confChanges += s.stats.confChanges
		total.jointChanges += s.stats.jointChanges
	}
	t.Logf("%d seeds in %v: %d reads checked, %d answered by a lease; %d elections, %d crashes, %d partitions, %d membership changes (%d joint)",
		len(seeds), time.Since(start).Round(time.Millisecond), total.readsOK, total.leaseReads, total.elections, total.crashes, total.partitions, total.confChanges, total.jointChanges)
	if len(seeds) >= 100 {
		require.Greater(t, total.leaseReads, 5*len(seeds), "reads answered by a lease")
		require.Greater(t, total.readsOK, 5*len(seeds), "reads")
	}
}
