package raft

// Quiescence: a group of a Host (host.go) that has had nothing to do for a
// while stops ticking and heartbeating, and wakes on the first message,
// proposal, read or membership call. docs/multigroup.md, "Quiescence", is
// the user's guide; host_quiesce.go is the Host's side.
//
// It changes liveness and cost, never safety: what a quiesced node stops is
// its timers (heartbeats, CheckQuorum, the election timeout), and Raft's
// safety never rests on a timer (Raft §5.2, §5.6: timing decides who leads
// and when, not what is committed). A quiesced follower that misses its
// leader's failure only delays an election, and the Host bounds that delay:
// it wakes the followers of a leader host it stops hearing from.
//
// The core's side:
//
//   - A leader that, for quiesce.after ticks in a row, had nothing to do
//     (every member holds and has acknowledged its whole log, which is
//     committed and durable here; no read, transfer, configuration change,
//     leaving member or snapshot in flight; every follower heard from
//     within an election timeout) sends each follower a heartbeat with
//     Done set (the quiesce notice), and rests: its ticks then only count
//     lease time, so it neither heartbeats nor counts toward CheckQuorum.
//   - A follower that steps a quiesce notice from its leader of the
//     current term rests too: its ticks stop counting toward the election
//     timeout.
//   - A resting node wakes on any input but the quiet traffic of a resting
//     group (another notice from its leader, for a follower; the answer to
//     a notice, for the leader). A leader that wakes sends heartbeats at
//     once and drops its read lease: the lease was measured by ticks it did
//     not take, so a lease read after quiescence waits for a new heartbeat
//     round (lease.go). A follower that wakes starts a full election
//     timeout.
//
// On the wire the notice is a MsgHeartbeat with Done set, a flag that
// heartbeats did not use (docs/protocol.md, "Formats and versions"): a
// node that does not know it takes it as a plain heartbeat. Only groups on
// a Host quiesce (quiesce.after is 0 for a single node, which behaves and
// writes as before), and Hosts speak only to Hosts.
//
// The runtime's side (Node): after every turn of its event loop, the node
// tells its transport when its core starts or stops resting
// (quiesceListener), so that a Host stops ticking a resting group, and
// keeps up a liveness signal per pair of hosts instead of heartbeats per
// group (host_quiesce.go).

import (
	"time"

	"go.uber.org/zap"
)

// quiesceState is the core's quiescence.
type quiesceState struct {
	// after is how many idle ticks in a row make a leader quiesce; 0: never.
	after int
	// idle counts the leader's idle ticks in a row; last is its last index
	// at the previous tick, so that entries appended and committed between
	// two ticks count as activity.
	idle int
	last uint64
	// resting: this node rests, in term, under leader (itself when it
	// leads). It is checked against the node's role, term and leader
	// (quiesced), so that any change of them ends it.
	resting      bool
	term, leader uint64
	// notices are the quiesce notices the leader sent when it began to
	// rest, for the runtime to resend as a liveness signal (host_quiesce.go).
	notices []Message
	// reported: the runtime last told its transport that this node rests.
	reported bool
}

// quiesced reports whether this node rests: as the leader, or as a
// follower of the leader that sent it the quiesce notice in this term.
func (c *core) quiesced() bool {
	q := &c.quiesce
	if !q.resting || q.term != c.term {
		return false
	}
	if c.role == Leader {
		return q.leader == c.id
	}
	return c.role == Follower && c.leader == q.leader
}

// isQuiesceNotice reports whether m is a leader's quiesce notice.
func isQuiesceNotice(m Message) bool { return m.Type == MsgHeartbeat && m.Done }

// quiesceOnStep runs before m is stepped, on a node that may quiesce. A
// quiesce notice makes a follower rest once it is stepped (quiesced checks
// that it was accepted); any other input but the quiet traffic of a
// resting group wakes the node.
func (c *core) quiesceOnStep(m Message) {
	if isQuiesceNotice(m) && c.role != Leader && m.Term >= c.term {
		c.quiesce.resting, c.quiesce.term, c.quiesce.leader = true, m.Term, m.From
		c.quiesce.notices = nil
		return
	}
	if !c.quiesced() {
		return
	}
	if c.role == Leader && m.Type == MsgHeartbeatResp && m.Term == c.term && m.Index == 0 && m.Context <= c.reads.seq {
		// A follower's answer to a notice (receiving no snapshot: Index 0):
		// it rests too. Its liveness is what the Host watches now.
		return
	}
	c.wakeUp("message", m.Type)
}

// wakeUp ends this node's rest. A leader resumes heartbeats at once and
// gives CheckQuorum a whole election timeout from now; its lease is void
// until a new round renews it, since the ticks it did not take while
// resting did not count the time that passed. A follower starts a whole
// election timeout, leaving its leader time to be heard.
func (c *core) wakeUp(cause string, msg MessageType) {
	if !c.quiesce.resting {
		return
	}
	resting := c.quiesced()
	c.quiesce.resting, c.quiesce.notices, c.quiesce.idle = false, nil, 0
	if !resting {
		return
	}
	if ce := c.logger.Check(zap.DebugLevel, "waking from quiescence"); ce != nil {
		ce.Write(zap.String("cause", cause), zap.Stringer("msg", msg), zap.Stringer("role", c.role))
	}
	c.electionElapsed = 0
	if c.role != Leader {
		return
	}
	c.resetLease()
	for _, pr := range c.progress {
		pr.recentActive = true // they were heard when the leader quiesced; CheckQuorum counts from now
		pr.ticksSinceAck, pr.ticksSinceHeard = 0, 0
	}
	c.heartbeatElapsed = 0
	c.broadcastHeartbeat(c.heartbeatSeq())
}

// maybeQuiesce runs at the end of a leader's tick: it counts the ticks in
// a row with nothing to do, and quiesces the group after quiesce.after of
// them.
func (c *core) maybeQuiesce() {
	q := &c.quiesce
	if q.after == 0 || c.role != Leader {
		return
	}
	last := c.log.lastIndex()
	if last != q.last || !c.idleLeader() {
		q.last, q.idle = last, 0
		return
	}
	if q.idle++; q.idle < q.after {
		return
	}
	q.idle = 0
	q.resting, q.term, q.leader = true, c.term, c.id
	q.notices = q.notices[:0]
	for _, id := range c.replicaIDs() {
		// The notice is a heartbeat: it carries the commit index (every
		// follower holds the whole log, so all of it) and no new ReadIndex
		// round.
		c.send(Message{Type: MsgHeartbeat, To: id, Commit: c.log.committed, Context: c.reads.seq, Done: true})
		c.progress[id].commitSent = c.log.committed
		q.notices = append(q.notices, c.msgs[len(c.msgs)-1])
	}
	c.logger.Debug("quiescing: nothing to replicate", zap.Uint64("term", c.term), zap.Uint64("commit", c.log.committed))
}

// idleLeader reports whether this leader has nothing to do but heartbeat:
// its log is committed, durable and held by every member, which it heard
// from recently, and nothing is in flight.
func (c *core) idleLeader() bool {
	last := c.log.lastIndex()
	if c.log.committed != last || c.log.stable != last || !c.committedInTerm() ||
		c.pendingBroadcast || c.transferTarget != 0 || len(c.leaving) > 0 || c.outgoing != nil ||
		c.configIndex > c.log.committed || len(c.reads.batch) > 0 || len(c.reads.pending) > 0 {
		return false
	}
	for id, pr := range c.progress {
		if id == c.id {
			continue
		}
		if pr.match != last || pr.state != replicate || len(pr.inflight) > 0 || pr.ticksSinceHeard >= c.electionTicks {
			return false
		}
	}
	return true
}

// quiesceTick is the tick of a resting node: it only counts lease time.
func (c *core) quiesceTick() { c.lease.now++ }

// quiesceListener is implemented by a Transport that wants to know when its
// node starts or stops resting: a group's view of its Host
// (host_quiesce.go). It is called from the node's event loop.
type quiesceListener interface {
	// quiesceAfter returns how long a group stays idle before it
	// quiesces; 0: never.
	quiesceAfter() time.Duration
	// quiesceChanged reports that the node started resting (q.resting) or
	// stopped.
	quiesceChanged(q quiesceReport)
}

// quiesceReport is what a node tells its transport when it starts or
// stops resting.
type quiesceReport struct {
	resting bool
	leader  uint64 // the group's leader: this node when it leads
	// notices: the quiesce notices the leader sent, one per follower.
	notices []Message
	// electionTimeout is the group's minimum election timeout: a follower
	// that hears nothing from its leader's host for that long wakes.
	// heartbeat is the group's heartbeat interval.
	electionTimeout, heartbeat time.Duration
}

// quiesceTicks returns the idle ticks after which the node's core
// quiesces: 0 unless the transport is a Host's, and at least an election
// timeout.
func quiesceTicks(transport Transport, tick time.Duration, electionTicks int) int {
	l, ok := transport.(quiesceListener)
	if !ok || l.quiesceAfter() <= 0 {
		return 0
	}
	return max(int((l.quiesceAfter()+tick-1)/tick), electionTicks)
}

// wakeForInput wakes the core for a proposal, read or call (membership,
// transfer) before the core sees it: those need a leader that heartbeats.
func (n *Node) wakeForInput() {
	if n.core.quiesce.resting {
		n.core.wakeUp("local request", 0)
	}
}

// syncQuiesce tells the transport when the core started or stopped resting
// in this turn of the event loop.
func (n *Node) syncQuiesce() {
	l, ok := n.transport.(quiesceListener)
	if !ok || n.core.quiesce.after == 0 {
		return
	}
	resting := n.core.quiesced()
	if resting == n.core.quiesce.reported {
		return
	}
	n.core.quiesce.reported = resting
	if !resting {
		if n.clock != nil {
			// The lease was dropped on waking (core.wakeUp): the ticks the
			// resting leader missed need not be made up, and making them
			// up now would count them toward CheckQuorum.
			n.clock.given = n.clock.due()
		}
		l.quiesceChanged(quiesceReport{})
		return
	}
	st := n.core.status()
	l.quiesceChanged(quiesceReport{
		resting: true, leader: st.leader, notices: n.core.quiesce.notices,
		electionTimeout: time.Duration(n.electionTick) * n.tickInterval,
		heartbeat:       time.Duration(n.core.heartbeatTicks) * n.tickInterval,
	})
}
