package raft

import (
	"fmt"
	"math/rand"

	"go.uber.org/zap"
)

// core is the pure Raft state machine: it owns the protocol and nothing
// else. It starts no goroutine, reads no clock and does no I/O; its only
// inputs are step (a message), tick (a unit of logical time), propose and
// readIndex, and its only outputs are collected by ready. Given the same
// inputs and seed it produces the same outputs, which is what lets the
// simulator replay any run exactly.
//
// The Node runtime (node.go) drives it from one goroutine.
type core struct {
	id     uint64
	term   uint64
	vote   uint64
	role   Role
	leader uint64
	log    raftLog
	// diverged is set when this node finds that an entry it counts as
	// committed differs from the leader's: its storage lost or tore a write
	// (or a bug broke safety). The runtime stops the node with it.
	diverged error
	// origin identifies the cluster this node belongs to (0: unknown, see
	// origin.go); originErr is set when this node finds it was bootstrapped
	// into another cluster's members, and stops the node like diverged.
	origin         uint64
	originErr      error
	refusedOrigins map[uint64]uint64 // peer -> the other origin last logged for it

	// Membership. members is the configuration in effect: that of the last
	// configuration entry in the log, committed or not (dissertation §4.1).
	// While it is joint (§4.3), outgoing is the configuration being left,
	// and voters needs a majority of both; outgoing is nil otherwise.
	members     []Member
	outgoing    []Member
	configIndex uint64
	voters      quorum

	// snap is the newest snapshot this node has: followers that need
	// entries compacted away get it (Raft §7).
	snap SnapshotMeta
	// receiving is the snapshot transfer this node takes part in as a
	// follower, as the runtime last reported it; heartbeat responses carry it.
	receiving snapshotTransfer

	// Leader state.
	progress           map[uint64]*progress
	leaving            []leavingMember // removed members still sent the log until they know of their removal
	pendingBroadcast   bool            // entries were proposed; send them at the next flush
	sentCommit         uint64          // the commit index when the leader last flushed
	uncommittedBytes   uint64          // data bytes of entries after the commit index
	maxUncommittedEnts uint64
	maxUncommittedSize uint64
	maxInflight        int
	maxAppendBytes     uint64
	trailingBytes      uint64 // bound on the data of the entries kept behind a snapshot; 0: none

	// applied is the index the state machine has applied, as the runtime
	// last reported it (see appliedTo); trackApplied is false when no
	// runtime reports it (unit tests and the simulator apply at once).
	applied      uint64
	trackApplied bool

	transferTarget  uint64 // leadership transfer in progress to this node
	transferElapsed int    // ticks since the transfer began
	transferSent    bool   // a MsgTimeoutNow of the transfer in progress went out
	// transferFences maps the target of each transfer of this term that was
	// abandoned after its MsgTimeoutNow went out to the fence, the entry
	// appended then: until the target holds it, a delayed MsgTimeoutNow could
	// still make it campaign (see abandonTransfer).
	transferFences map[uint64]uint64

	// Candidate state.
	votes        map[uint64]bool
	campaignKind campaignKind // campaignElection or campaignTransfer

	// Timers, in ticks.
	electionElapsed   int
	heartbeatElapsed  int
	electionTicks     int
	heartbeatTicks    int
	randomizedTimeout int
	rand              *rand.Rand

	preVote     bool
	checkQuorum bool
	// fresh is set when this node's storage held nothing beyond the founding
	// configuration at start (a joiner, a founder, a wiped node): see
	// freshVoteRefused.
	fresh bool

	reads readIndexState
	lease leaseState

	// quiesce: a Host's idle groups rest (quiesce.go).
	quiesce quiesceState

	// Output, drained by ready.
	msgs []Message
	// snapshotsToSend are followers that need the snapshot (leader).
	snapshotsToSend []uint64
	// snapshotMsgs are MsgSnapshot chunks (follower), and MsgSnapshotResp
	// acknowledgments, snapshot statuses of heartbeat responses and
	// MsgUnreachable reports of lost chunks (leader), for the runtime, which
	// moves the data.
	snapshotMsgs []Message

	logger *zap.Logger
	hooks  coreHooks
}

// coreHooks switch protocol rules off, for tests that prove the simulator and
// the unit tests catch a broken rule. Production code never sets them.
type coreHooks struct {
	commitPreviousTermByCounting bool // break Figure 8 (Raft §5.4.2)
	grantEveryVote               bool // break "one vote per term" (Raft §5.2)
	readWithoutConfirmation      bool // break ReadIndex: answer without a heartbeat round (D§6.4)
	voteWhenFresh                bool // let a node with no history (a wiped disk) vote as if it had never voted
	commitWithIncomingOnly       bool // break joint consensus: commit with the new voters' majority alone (D§4.3)
	countSelfBeforeDurable       bool // break D§10.2.1: the leader counts its own entries toward commitment before its write is durable
}

// coreConfig is what newCore needs; the runtime builds it from Config and
// what Storage holds.
type coreConfig struct {
	id                    uint64
	electionTicks         int
	heartbeatTicks        int
	preVote               bool
	checkQuorum           bool
	maxInflight           int
	maxAppendBytes        uint64
	maxUncommittedEntries uint64
	maxUncommittedBytes   uint64
	trailingBytes         uint64 // Config.TrailingBytes; 0: only the number of trailing entries is bounded
	seed                  int64
	logger                *zap.Logger
	// fresh: the storage held nothing beyond index 1 (see core.fresh).
	fresh bool
	// leaseTicks is the read lease's length in ticks; 0: no lease reads
	// (lease.go). It needs checkQuorum.
	leaseTicks int

	hardState HardState
	// entries are the stored log; they follow firstIndex-1, whose term is
	// firstTerm.
	firstIndex uint64
	firstTerm  uint64
	entries    []Entry
	// snapshot is the newest stored snapshot (zero if none).
	snapshot SnapshotMeta
}

func newCore(cfg coreConfig) (*core, error) {
	logger := cfg.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	c := &core{
		id:                 cfg.id,
		electionTicks:      cfg.electionTicks,
		heartbeatTicks:     cfg.heartbeatTicks,
		preVote:            cfg.preVote,
		checkQuorum:        cfg.checkQuorum,
		fresh:              cfg.fresh,
		maxInflight:        cfg.maxInflight,
		maxAppendBytes:     cfg.maxAppendBytes,
		trailingBytes:      cfg.trailingBytes,
		maxUncommittedEnts: cfg.maxUncommittedEntries,
		maxUncommittedSize: cfg.maxUncommittedBytes,
		rand:               rand.New(rand.NewSource(cfg.seed)),
		logger:             logger.With(zap.Uint64("node", cfg.id)),
	}
	first := cfg.firstIndex
	if first == 0 {
		first = 1
	}
	for i, e := range cfg.entries {
		if e.Index != first+uint64(i) {
			return nil, fmt.Errorf("%w: stored entry %d found where %d was expected", ErrCorrupt, e.Index, first+uint64(i))
		}
		if i > 0 && e.Term < cfg.entries[i-1].Term {
			return nil, fmt.Errorf("%w: stored entry %d has term %d below its predecessor's %d", ErrCorrupt, e.Index, e.Term, cfg.entries[i-1].Term)
		}
	}
	c.log = raftLog{offset: first - 1, offsetTerm: cfg.firstTerm, entries: cfg.entries}
	c.snap = cfg.snapshot
	if c.snap.Index < c.log.offset {
		return nil, fmt.Errorf("%w: the log was compacted to %d, past the newest snapshot at %d", ErrCorrupt, c.log.offset, c.snap.Index)
	}
	c.log.stable = c.log.lastIndex()
	c.log.handedOff = c.log.stable
	hs := cfg.hardState
	if last := c.log.lastTerm(); hs.Term < last {
		// Storage writes a Save's entries before its hard state, so a crash
		// can keep entries of a term whose hard state was lost. A vote is
		// sent only once its hard state is durable, so no vote in that term
		// was cast (and a candidate's own term is durable before it counts
		// votes): adopting the term with no vote is what the node would
		// have had on learning the term from the entries' leader (§5.1).
		logger.Warn("stored term is below the last entry's term: the write that raised it was torn; adopting the entry's term",
			zap.Uint64("node", cfg.id), zap.Uint64("storedTerm", hs.Term), zap.Uint64("lastEntryTerm", last))
		hs.Term, hs.Vote = last, 0
	}
	c.term, c.vote, c.origin = hs.Term, hs.Vote, hs.Origin
	c.log.committed = min(max(hs.Commit, c.snap.Index, c.log.offset), c.log.lastIndex())
	// The runtime restored the state machine from the snapshot.
	c.log.applying = max(c.log.offset, min(c.snap.Index, c.log.lastIndex()))
	if err := c.reloadConfig(); err != nil {
		return nil, err
	}
	if cfg.leaseTicks > 0 && !cfg.checkQuorum {
		return nil, fmt.Errorf("%w: lease reads need CheckQuorum", ErrInvalidConfig)
	}
	c.lease.ticks = cfg.leaseTicks
	c.becomeFollower(c.term, 0)
	c.lease.quiet = c.lease.ticks > 0
	return c, nil
}

// coreStatus is what the runtime may read of the core's state: it never
// reads the core's fields itself.
type coreStatus struct {
	id, term, leader uint64
	role             Role
	committed, last  uint64
	applying         uint64 // the last entry handed to the state machine
	snapshotIndex    uint64
	members          []Member // the configuration in effect; never modified in place
	outgoing         []Member // while joint, the outgoing half; nil otherwise
	configIndex      uint64
	configCommitted  bool // the configuration in effect has committed
	leavingMembers   int  // removed members the leader still replicates to
	origin           uint64
}

// status returns the core's state for the runtime.
func (c *core) status() coreStatus {
	return coreStatus{
		id: c.id, term: c.term, leader: c.leader, role: c.role,
		committed: c.log.committed, last: c.log.lastIndex(), applying: c.log.applying, snapshotIndex: c.snap.Index,
		members: c.members, outgoing: c.outgoing, configIndex: c.configIndex, configCommitted: c.configIndex <= c.log.committed,
		leavingMembers: len(c.leaving), origin: c.origin,
	}
}

// needsSnapshot reports whether this node leads and wants the runtime to
// stream its snapshot to follower id (the follower's progress is in the
// snapshot state, progress.go).
func (c *core) needsSnapshot(id uint64) bool {
	pr := c.progress[id]
	return c.role == Leader && pr != nil && pr.state == snapshotState
}

// hardState returns what must be durable before this node's messages leave.
func (c *core) hardState() HardState {
	return HardState{Term: c.term, Vote: c.vote, Commit: c.log.committed, Origin: c.origin}
}

// send queues m, stamping it with this node's ID and cluster origin and,
// unless it is a response whose term was set on purpose, the current term.
func (c *core) send(m Message) {
	m.From, m.Origin = c.id, c.origin
	if m.Term == 0 {
		m.Term = c.term
	}
	c.msgs = append(c.msgs, m)
}

// step advances the core by one inbound message. It first applies the
// rules every role shares about terms (Raft §5.1: a node always moves to a
// higher term it sees and rejects requests of a lower one), then hands the
// message to the role's step function.
func (c *core) step(m Message) {
	if c.quiesce.after > 0 {
		c.quiesceOnStep(m)
	}
	if m.Type == MsgUnreachable && m.From != 0 && m.From != c.id {
		c.peerUnreachable(m) // a local report, not a message of any term
		return
	}
	if m.Type == 0 || m.Type >= msgTypeEnd || m.From == 0 || m.From == c.id {
		return
	}
	if c.originRefused(m) {
		return // from another cluster: nothing of it is stepped (origin.go)
	}
	switch {
	case m.Term > c.term:
		if (m.Type == MsgVote || m.Type == MsgPreVote) && c.inLease() &&
			(campaignKind(m.Context) != campaignTransfer || !c.log.isUpToDate(m.Index, m.LogTerm)) {
			// CheckQuorum's lease (dissertation §4.2.3, §9.6): a follower that
			// heard from a live leader within the minimum election timeout
			// ignores candidates, so that a node rejoining from a partition
			// or one removed from the cluster cannot depose a healthy leader.
			// The election of a leadership transfer is heard, unless the
			// candidate lacks entries we hold: the leader appended them after
			// it gave that transfer up.
			return
		}
		switch {
		case m.Type == MsgPreVote:
			// A PreVote does not change anyone's term.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted PreVote carries the term we would campaign in.
		default:
			leader := uint64(0)
			if m.Type == MsgAppend || m.Type == MsgHeartbeat || m.Type == MsgSnapshot {
				leader = m.From
			}
			c.logger.Debug("newer term seen", zap.Uint64("term", c.term), zap.Uint64("newTerm", m.Term), zap.Stringer("msg", m.Type), zap.Uint64("from", m.From))
			c.becomeFollower(m.Term, leader)
		}
	case m.Term < c.term:
		switch m.Type {
		case MsgAppend, MsgHeartbeat, MsgSnapshot:
			// A stale leader: tell it our term so that it steps down. Without
			// this, a leader cut off from the cluster whose followers moved on
			// under PreVote and CheckQuorum would never learn of the new term.
			c.send(Message{Type: MsgAppendResp, To: m.From, Reject: true, Index: m.Index})
		case MsgPreVote:
			c.send(Message{Type: MsgPreVoteResp, To: m.From, Reject: true})
		}
		return
	}

	if m.Type == MsgAppend || m.Type == MsgHeartbeat || m.Type == MsgSnapshot {
		c.adoptOrigin(m) // from the leader of this term
	}
	switch m.Type {
	case MsgVote, MsgPreVote:
		c.handleVoteRequest(m)
		return
	}
	switch c.role {
	case Leader:
		c.stepLeader(m)
	case Candidate, PreCandidate:
		c.stepCandidate(m)
	default:
		c.stepFollower(m)
	}
}

// stepFollower is what a follower does with each message.
func (c *core) stepFollower(m Message) {
	switch m.Type {
	case MsgAppend:
		c.electionElapsed = 0
		c.heardLeader(m.From)
		c.handleAppend(m)
	case MsgHeartbeat:
		c.electionElapsed = 0
		c.heardLeader(m.From)
		c.handleHeartbeat(m)
	case MsgTimeoutNow:
		c.handleTimeoutNow(m)
	case MsgReadIndex:
		// We are not the leader: tell the asker so that it retries elsewhere.
		c.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
	case MsgReadIndexResp:
		c.readAnswered(m)
	case MsgSnapshot:
		c.electionElapsed = 0
		c.heardLeader(m.From)
		if m.Index <= c.log.committed {
			// We already have everything the snapshot holds: tell the
			// leader, once we checked that we hold its last entry.
			c.answerCoveredSnapshot(m.Index, m.LogTerm, m.From)
			return
		}
		c.snapshotMsgs = append(c.snapshotMsgs, m)
	}
}

// heardLeader notes that id leads the current term. A fresh node (see
// freshVoteRefused) also takes it as its vote in this term, if it has none:
// it may have voted in this term before its storage was lost, and once it
// forgets the leader (an election timeout without word from it) it would
// otherwise vote again in the term, for a candidate that missed the
// election, and elect a second leader. id won the term, so the vote
// changes nothing else; like any vote, it is durable before the node
// answers (see ready).
func (c *core) heardLeader(id uint64) {
	c.leader = id
	if c.fresh && c.vote == 0 && !c.hooks.voteWhenFresh {
		c.vote = id
	}
}

// stepCandidate is what a candidate or pre-candidate does with each message.
func (c *core) stepCandidate(m Message) {
	switch m.Type {
	case MsgAppend, MsgHeartbeat, MsgSnapshot:
		if c.role == PreCandidate && c.campaignKind == campaignTransfer && m.Term == c.term &&
			(m.Type == MsgHeartbeat || m.Type == MsgAppend && m.Index+uint64(len(m.Entries)) <= c.log.lastIndex()) {
			// The leader that asked for this election keeps its office until
			// the vote, since PreVote changes no term: answer it as a
			// follower would, without giving the campaign up. New entries,
			// though, mean that the leader gave the transfer up (it appends
			// none while one runs): then the campaign ends, below.
			if m.Type == MsgAppend {
				c.handleAppend(m)
			} else {
				c.handleHeartbeat(m)
			}
			return
		}
		// Someone won this term (Raft §5.2): follow it.
		c.becomeFollower(m.Term, m.From)
		c.stepFollower(m)
	case MsgVoteResp, MsgPreVoteResp:
		if (m.Type == MsgVoteResp) != (c.role == Candidate) {
			return // a response from an earlier phase
		}
		c.votes[m.From] = !m.Reject
		switch c.voters.vote(c.votes) {
		case voteWon:
			if c.role == PreCandidate {
				c.campaign(c.campaignKind, false)
			} else {
				c.becomeLeader()
			}
		case voteLost:
			c.becomeFollower(c.term, 0)
		}
	case MsgReadIndex:
		c.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
	}
}

// stepLeader is what a leader does with each message.
func (c *core) stepLeader(m Message) {
	pr := c.progress[m.From]
	switch m.Type {
	case MsgAppendResp:
		if pr != nil {
			c.handleAppendResp(pr, m)
			c.maybeRetireLeaving(m.From, m.Commit)
		}
	case MsgHeartbeatResp:
		if pr != nil {
			c.handleHeartbeatResp(pr, m)
			c.maybeRetireLeaving(m.From, m.Commit)
		}
	case MsgReadIndex:
		c.readRequested(m)
	case MsgSnapshotResp:
		if pr != nil {
			pr.heard()
			c.snapshotMsgs = append(c.snapshotMsgs, m)
		}
	}
}

// becomeFollower moves to term as a follower of leader (0: unknown).
func (c *core) becomeFollower(term, leader uint64) {
	if term > c.term {
		c.term = term
		c.vote = 0
	}
	if c.role == Leader {
		c.logger.Info("stepping down", zap.Uint64("term", c.term))
	}
	c.role = Follower
	c.leader = leader
	c.resetRoleState()
}

// resetRoleState clears what belongs to a role and restarts the timers.
func (c *core) resetRoleState() {
	c.electionElapsed = 0
	c.heartbeatElapsed = 0
	c.randomizedTimeout = c.electionTicks + c.rand.Intn(c.electionTicks)
	c.progress = nil
	c.leaving = nil
	c.votes = nil
	c.pendingBroadcast = false
	c.uncommittedBytes = 0
	c.sentCommit = 0
	c.transferTarget = 0
	c.transferSent = false
	c.transferFences = nil
	c.resetReads()
}

// isVoter reports whether this node may vote and campaign.
func (c *core) isVoter() bool { return c.voters.contains(c.id) }

// ready is everything the core asks of the runtime after a batch of inputs.
// The runtime must, in this order: send the leader's appends (optional: they
// may also wait); make entries and hardState durable; call persisted; send
// the other messages; hand committed to the state machine. Responses and
// votes are in messages, so they leave only once what they promise is on
// disk (Raft Figure 2, "respond to RPCs after updating stable storage").
type ready struct {
	sendSnapshots []uint64  // followers to stream the snapshot to (leader)
	snapshotMsgs  []Message // chunks to store, or acknowledgments to route
	hardState     HardState
	saveState     bool    // hardState changed since the last ready
	entries       []Entry // to persist
	messages      []Message
	committed     []Entry // to apply, in order
	reads         []readResult
	err           error // fatal: the node must stop (see core.diverged, core.originErr)
}

// empty reports whether rd asks for nothing.
func (rd *ready) empty() bool {
	return !rd.saveState && len(rd.entries) == 0 && len(rd.messages) == 0 && len(rd.committed) == 0 && len(rd.reads) == 0 &&
		len(rd.sendSnapshots) == 0 && len(rd.snapshotMsgs) == 0 && rd.err == nil
}

// flush turns the leader's pending work into messages: one append per
// follower for every proposal made since the last flush (batching), and one
// heartbeat round for the reads that arrived. A new commit index rides on
// those appends; a follower with nothing new to receive learns it from the
// next heartbeat, or from flushCommit (called on each tick, and by the
// runtime once the commit index has stayed put for a moment), rather than
// from an append of its own for each advance.
func (c *core) flush() {
	if c.role != Leader {
		return
	}
	c.maybeLeaveJoint()
	commitChanged := c.log.committed > c.sentCommit
	// A committed configuration change is sent at once: removed members
	// learn of their removal from it, and a removed leader steps down below
	// (dissertation §4.2.2, §4.2.3).
	configCommitted := commitChanged && (len(c.leaving) > 0 || (c.configIndex > c.sentCommit && c.configIndex <= c.log.committed))
	if c.pendingBroadcast || commitChanged {
		for _, id := range c.replicaIDs() {
			c.sendAppend(id, configCommitted)
		}
		c.pendingBroadcast = false
		c.sentCommit = c.log.committed
	}
	c.startReadRound()
	if !c.isVoter() && c.configIndex <= c.log.committed {
		// This leader's removal has committed (the commit index went out
		// above): it steps down (dissertation §4.2.2).
		c.logger.Info("removed from the cluster; stepping down", zap.Uint64("term", c.term))
		c.becomeFollower(c.term, 0)
	}
}

// ready collects the outputs since the last call; prev is the HardState the
// runtime last queued for writing (durable or in flight). Committed entries are marked as handed over.
func (c *core) ready(prev HardState) ready {
	c.flush()
	rd := ready{
		hardState: c.hardState(),
		entries:   c.log.takeUnstable(),
		messages:  c.msgs,
		committed: c.log.toApply(),
		reads:     c.reads.results,

		sendSnapshots: c.snapshotsToSend,
		snapshotMsgs:  c.snapshotMsgs,
		err:           c.diverged,
	}
	if rd.err == nil {
		rd.err = c.originErr
	}
	c.snapshotsToSend, c.snapshotMsgs = nil, nil
	// The commit index rides along with the next write; it alone is not
	// worth an fsync, since a restarted node learns it from the leader.
	rd.saveState = rd.hardState.Term != prev.Term || rd.hardState.Vote != prev.Vote || rd.hardState.Origin != prev.Origin
	c.msgs = nil
	c.reads.results = nil
	if n := len(rd.committed); n > 0 {
		c.log.applying = rd.committed[n-1].Index
	}
	return rd
}
