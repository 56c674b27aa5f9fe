package raft

import (
	"cmp"
	"slices"
	"time"
)

// The leader's view of each follower: how far their logs match (Raft
// Figure 2's matchIndex and nextIndex) and how entries flow to it (probe,
// replicate or snapshot, dissertation §3.5 and §5.4's flow control), with
// every transition between those states. The runtime never reads or sets
// these fields; it asks the core (see core.needsSnapshot).

// progressState is how the leader replicates to one follower.
type progressState uint8

const (
	// probe: the leader does not know where the follower's log matches its
	// own; it sends one AppendEntries at a time and backs off on rejection.
	probe progressState = iota
	// replicate: the logs are known to match up to match; the leader streams
	// entries optimistically (pipelining), up to maxInflight messages.
	replicate
	// snapshotState: the follower needs entries that were compacted away;
	// the runtime streams it the snapshot, and appends wait for its answer.
	snapshotState
)

// progress is the leader's view of one member (Raft Figure 2's nextIndex
// and matchIndex, plus the flow-control state).
type progress struct {
	match, next     uint64
	state           progressState
	probeSent       bool     // probe: an append is outstanding; wait for its answer or a heartbeat answer
	pendingSnapshot uint64   // snapshotState: the index of the snapshot being sent
	inflight        []uint64 // replicate: last index of each unacknowledged append, ascending
	ticksSinceAck   int      // ticks since this follower last acknowledged an append
	recentActive    bool     // heard from within the current election timeout (CheckQuorum)
	ticksSinceHeard int      // ticks since the follower's last message of any kind
	readAck         uint64   // highest ReadIndex round this follower confirmed in this term
	commitSent      uint64   // highest commit index sent to this follower, in an append or heartbeat
	learner         bool
}

// progressStatus returns the leader's view of every other member's log,
// sorted by ID, with times counted in ticks of length tick; nil off the
// leader.
func (c *core) progressStatus(tick time.Duration) []MemberProgress {
	if c.role != Leader {
		return nil
	}
	out := make([]MemberProgress, 0, len(c.progress))
	for id, pr := range c.progress {
		if id == c.id {
			continue
		}
		p := MemberProgress{ID: id, Match: pr.match, Next: pr.next, Learner: !c.voters.contains(id),
			Leaving:      slices.ContainsFunc(c.leaving, func(l leavingMember) bool { return l.ID == id }),
			SinceContact: time.Duration(pr.ticksSinceHeard) * tick}
		switch pr.state {
		case probe:
			p.State = ReplicationProbe
		case replicate:
			p.State = ReplicationReplicate
		case snapshotState:
			p.State, p.SnapshotIndex = ReplicationSnapshot, pr.pendingSnapshot
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b MemberProgress) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// paused reports whether flow control holds appends to this follower
// back: the snapshot is on its way, a probe awaits its answer, or the
// inflight window is full.
func (pr *progress) paused(maxInflight int) bool {
	switch pr.state {
	case snapshotState:
		return true
	case probe:
		return pr.probeSent
	default:
		return len(pr.inflight) >= maxInflight
	}
}

// heard records a message from the follower.
func (pr *progress) heard() {
	pr.recentActive = true
	pr.ticksSinceHeard = 0
}

// newProgress starts tracking member id, optimistically at the end of the
// leader's log (Raft Figure 2: nextIndex starts at the leader's last log
// index + 1); the leader's own entry counts what is durable.
func (c *core) newProgress(id uint64) *progress {
	pr := &progress{next: c.log.lastIndex() + 1, recentActive: true}
	if id == c.id {
		pr.match = c.log.stable
		pr.state = replicate
	}
	return pr
}

// becomeProbe makes the leader look for the point where the follower's log
// matches its own, one append at a time from next (never below match+1).
func (pr *progress) becomeProbe(next uint64) {
	pr.state = probe
	pr.next = max(next, pr.match+1)
	pr.probeSent = false
	pr.inflight = pr.inflight[:0]
}

// becomeReplicate streams entries after match without waiting for each
// answer, up to the inflight window.
func (pr *progress) becomeReplicate() {
	pr.state = replicate
	pr.next = pr.match + 1
	pr.inflight = pr.inflight[:0]
}

// matched records the follower's acknowledgment that its log matches the
// leader's up to index, and reports whether that is news. A follower that
// was probing, or receiving the snapshot, is then replicated to.
func (pr *progress) matched(index uint64) bool {
	if index <= pr.match {
		return false
	}
	pr.match = index
	pr.ticksSinceAck = 0
	pr.acked(index)
	if pr.state == probe || pr.state == snapshotState {
		pr.becomeReplicate()
	}
	if pr.next <= pr.match {
		pr.next = pr.match + 1
	}
	return true
}

// becomeSnapshot stops appends to the follower, which needs the snapshot
// at index because the entries it lacks were compacted away (Raft §7); the
// runtime streams it, and its answer moves the follower back to probing.
func (pr *progress) becomeSnapshot(index uint64) {
	pr.state, pr.pendingSnapshot = snapshotState, index
	pr.inflight = pr.inflight[:0]
}

// acked frees the inflight slots of appends up to index.
func (pr *progress) acked(index uint64) {
	i := 0
	for i < len(pr.inflight) && pr.inflight[i] <= index {
		i++
	}
	pr.inflight = append(pr.inflight[:0], pr.inflight[i:]...)
}
