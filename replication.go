package raft

import (
	"fmt"

	"go.uber.org/zap"
)

// propose appends a client command to the leader's log. It fails with
// ErrNotLeader off the leader, ErrTransferInProgress while leadership is
// being handed over, and ErrBusy beyond the uncommitted bounds.
// The entry goes out at the next ready, batched with every other proposal
// made in between.
func (c *core) propose(data []byte) (index, term uint64, err error) {
	if c.role != Leader {
		return 0, 0, c.notLeader()
	}
	if c.transferTarget != 0 {
		return 0, 0, fmt.Errorf("%w: to %d", ErrTransferInProgress, c.transferTarget)
	}
	if c.log.lastIndex()-c.log.committed >= c.maxUncommittedEnts ||
		(c.uncommittedBytes > 0 && c.uncommittedBytes+uint64(len(data)) > c.maxUncommittedSize) {
		return 0, 0, ErrBusy
	}
	if c.trackApplied && c.log.lastIndex()-min(c.applied, c.log.lastIndex()) >= c.maxUncommittedEnts {
		// The state machine is behind: refuse rather than queue without
		// bound (the same bound as for uncommitted entries).
		return 0, 0, fmt.Errorf("%w: %d entries wait to be applied", ErrBusy, c.log.lastIndex()-c.applied)
	}
	c.appendLeaderEntries(Entry{Type: EntryCommand, Data: data})
	c.pendingBroadcast = true
	return c.log.lastIndex(), c.term, nil
}

// proposeConfig appends a configuration entry holding members (and
// outgoing, for a joint configuration: see changeMembers); it takes
// effect at once (dissertation §4.1). Only one may be uncommitted at a time,
// and none is accepted while a leadership transfer may still take effect:
// the target campaigns in the configuration it holds, which must be the
// leader's (see abandonTransfer).
func (c *core) proposeConfig(members, outgoing []Member) (index, term uint64, err error) {
	if c.role != Leader {
		return 0, 0, c.notLeader()
	}
	if c.transferring() {
		return 0, 0, fmt.Errorf("%w: a membership change waits until it ends", ErrTransferInProgress)
	}
	if c.configIndex > c.log.committed || !c.committedInTerm() {
		// The second condition is the fix of dissertation §4.1's bug note: a
		// leader must commit an entry of its own term before changing the
		// configuration, or two overlapping changes could commit.
		return 0, 0, ErrMembershipChange
	}
	c.appendLeaderEntries(Entry{Type: EntryConfChange, Data: encodeConfig(members, outgoing)})
	c.pendingBroadcast = true
	return c.log.lastIndex(), c.term, nil
}

// appliedTo is the runtime's report that the state machine has applied
// every entry up to index; propose refuses new entries while too many wait
// to be applied.
func (c *core) appliedTo(index uint64) {
	c.applied, c.trackApplied = index, true
}

func (c *core) notLeader() error {
	e := &NotLeaderError{Leader: c.leader}
	if m, ok := c.member(c.leader); ok {
		e.Addr, e.Member = m.Addr, m
	}
	return e
}

// committedInTerm reports whether the leader has committed an entry of its
// own term (its no-op), which ReadIndex and membership changes wait for.
func (c *core) committedInTerm() bool {
	t, _ := c.log.term(c.log.committed)
	return t == c.term
}

// leaderSettling reports whether this node leads but has not yet committed
// an entry of its term, before which it refuses membership changes.
func (c *core) leaderSettling() bool {
	return c.role == Leader && !c.committedInTerm()
}

// appendLeaderEntries stamps ents with the next indexes and the current
// term and appends them to the leader's log.
func (c *core) appendLeaderEntries(ents ...Entry) {
	last := c.log.lastIndex()
	for i := range ents {
		ents[i].Index = last + 1 + uint64(i)
		ents[i].Term = c.term
		c.uncommittedBytes += uint64(len(ents[i].Data))
	}
	c.log.appendEntries(ents...)
	if pr := c.progress[c.id]; pr != nil && c.hooks.countSelfBeforeDurable {
		pr.match = c.log.lastIndex()
		c.maybeCommit()
	}
	for _, e := range ents {
		if e.Type == EntryConfChange {
			if err := c.applyConfig(e); err != nil {
				// proposeConfig encoded it itself; this cannot happen.
				panic(fmt.Sprintf("raft: own configuration entry does not decode: %v", err))
			}
		}
	}
}

// broadcastAppend sends what each follower is missing.
func (c *core) broadcastAppend() {
	for _, id := range c.replicaIDs() {
		c.sendAppend(id, false)
	}
}

// sendAppend sends the next AppendEntries to follower id if flow control
// allows. With sendEmpty it sends one even when there is nothing new, to
// carry the commit index.
func (c *core) sendAppend(id uint64, sendEmpty bool) {
	pr := c.progress[id]
	if pr.paused(c.maxInflight) {
		return
	}
	last := c.log.lastIndex()
	if pr.next > last && !sendEmpty && pr.state == replicate {
		return
	}
	prev := pr.next - 1
	prevTerm, ok := c.log.term(prev)
	if !ok {
		// The entries the follower needs were compacted away: it gets the
		// snapshot instead (Raft §7).
		pr.becomeSnapshot(c.snap.Index)
		c.snapshotsToSend = append(c.snapshotsToSend, id)
		c.logger.Info("follower needs the snapshot", zap.Uint64("to", id), zap.Uint64("next", pr.next), zap.Uint64("snapshot", c.snap.Index))
		return
	}
	ents := c.log.slice(pr.next, last+1, c.maxAppendBytes)
	c.send(Message{Type: MsgAppend, To: id, Index: prev, LogTerm: prevTerm, Entries: ents, Commit: c.log.committed})
	pr.commitSent = max(pr.commitSent, c.log.committed)
	switch pr.state {
	case probe:
		pr.probeSent = true
	case replicate:
		if n := len(ents); n > 0 {
			pr.next = ents[n-1].Index + 1
			pr.inflight = append(pr.inflight, ents[n-1].Index)
		}
	}
}

// handleAppend is the follower's side of AppendEntries (Raft §5.3).
func (c *core) handleAppend(m Message) {
	if err := checkAppend(m); err != nil {
		c.logger.Warn("dropping malformed append", zap.Uint64("from", m.From), zap.Error(err))
		return
	}
	if c.diverged != nil {
		return // stopping: answer nothing
	}
	if m.Index < c.log.committed {
		c.handleAppendBelowCommit(m)
		return
	}
	if !c.log.matchTerm(m.Index, m.LogTerm) {
		hintIndex, hintTerm := c.log.findConflictByTerm(m.Index, m.LogTerm)
		c.send(Message{Type: MsgAppendResp, To: m.From, Reject: true, Index: m.Index, HintIndex: hintIndex, HintTerm: hintTerm})
		return
	}
	lastNew := m.Index + uint64(len(m.Entries))
	// Only truncate at a real conflict: entries we already hold with the
	// same term are identical (Log Matching), so a retransmitted or
	// reordered append whose entries we hold changes nothing.
	for i, e := range m.Entries {
		t, ok := c.log.term(e.Index)
		if ok && t == e.Term {
			continue
		}
		if e.Index <= c.log.committed {
			// Impossible from a correct leader (Leader Completeness, §5.4):
			// refuse to overwrite a committed entry rather than lose it.
			c.logger.Error("append conflicts with a committed entry; dropped", zap.Uint64("from", m.From),
				zap.Uint64("index", e.Index), zap.Uint64("term", e.Term), zap.Uint64("committedTerm", t))
			return
		}
		c.truncateAndAppend(m.Entries[i:])
		break
	}
	c.log.commitTo(min(m.Commit, lastNew))
	c.send(Message{Type: MsgAppendResp, To: m.From, Index: lastNew, Commit: c.log.committed})
}

// handleAppendBelowCommit answers an append whose previous entry is below
// our commit index: a stale or duplicated message, or a leader probing for
// where our logs match. It must not truncate anything, and it reports as
// matching only what it has checked against the message: every entry we
// count as committed must equal the leader's (Leader Completeness, §5.4),
// and if one does not, our commit index was wrong (storage lost or tore a
// write), so the node stops rather than acknowledge entries that differ
// from the leader's, which the leader would then never repair.
func (c *core) handleAppendBelowCommit(m Message) {
	if !c.checkCommitted(m.Index, m.LogTerm, m.From) {
		return
	}
	match := m.Index
	for _, e := range m.Entries {
		if e.Index > c.log.committed {
			break
		}
		if !c.checkCommitted(e.Index, e.Term, m.From) {
			return
		}
		match = e.Index
	}
	c.send(Message{Type: MsgAppendResp, To: m.From, Index: match, Commit: c.log.committed})
}

// checkCommitted checks the leader's entry (index, term) against ours, for
// an index we count as committed; an index in our snapshot, or beyond our
// commit index, passes. A mismatch means our commit index was wrong: the
// node stops (see core.diverged).
func (c *core) checkCommitted(index, term, leader uint64) bool {
	if index <= c.log.offset || index > c.log.committed || c.log.matchTerm(index, term) {
		return true
	}
	t, _ := c.log.term(index)
	c.diverged = fmt.Errorf("%w: committed entry %d has term %d, but leader %d of term %d has term %d there: this node's storage lost committed data",
		ErrCorrupt, index, t, leader, c.term, term)
	c.logger.Error("log diverges from the leader's below the commit index; stopping", zap.Error(c.diverged))
	return false
}

// checkAppend rejects an append that no correct leader sends: entries that
// do not follow Index, terms that go down or exceed the message's term.
func checkAppend(m Message) error {
	prevTerm := m.LogTerm
	if prevTerm > m.Term {
		return fmt.Errorf("previous entry's term %d is above the message's term %d", prevTerm, m.Term)
	}
	for i, e := range m.Entries {
		switch {
		case e.Index != m.Index+1+uint64(i):
			return fmt.Errorf("entry %d of the message has index %d, want %d", i, e.Index, m.Index+1+uint64(i))
		case e.Term < prevTerm || e.Term > m.Term:
			return fmt.Errorf("entry %d has term %d outside [%d, %d]", e.Index, e.Term, prevTerm, m.Term)
		case e.Type >= entryTypeEnd:
			return fmt.Errorf("entry %d has unknown type %d", e.Index, e.Type)
		}
		prevTerm = e.Term
	}
	return nil
}

// truncateAndAppend writes leader entries into a follower's log and keeps
// the configuration in step: entries that removed the configuration entry
// in effect revert it, and new configuration entries apply at once.
func (c *core) truncateAndAppend(ents []Entry) {
	at := ents[0].Index
	c.log.truncateAndAppend(ents)
	if c.configIndex >= at {
		if err := c.reloadConfig(); err != nil {
			c.logger.Error("bad configuration entry from the leader", zap.Error(err))
		}
		return
	}
	for _, e := range ents {
		if e.Type == EntryConfChange {
			if err := c.applyConfig(e); err != nil {
				c.logger.Error("bad configuration entry from the leader", zap.Error(err))
			}
		}
	}
}

// handleHeartbeat is the follower's side of a heartbeat.
func (c *core) handleHeartbeat(m Message) {
	// The leader sends at most the index it knows we match, so this never
	// commits an entry we hold but which differs from the leader's.
	c.log.commitTo(m.Commit)
	c.send(c.receiving.status(Message{Type: MsgHeartbeatResp, To: m.From, Context: m.Context, Commit: c.log.committed}))
}

// handleAppendResp is the leader's side of an AppendEntries answer.
func (c *core) handleAppendResp(pr *progress, m Message) {
	pr.heard()
	if m.Reject {
		if m.Index <= pr.match && m.HintIndex <= 1 && pr.match > 1 && pr.state != snapshotState {
			// The follower's log ends at the founding configuration, below
			// entries it acknowledged: it restarted on a wiped disk. Raft
			// assumes a follower keeps what it acknowledged (Figure 2), so
			// without this the leader would go on probing above match and
			// never catch it up. A late duplicate of a rejection from before
			// the follower had any entry lands here too, and costs only a
			// probe from the start: match going down is conservative, since
			// the commit index never goes back.
			c.logger.Warn("follower lost the entries it acknowledged (wiped storage?); replicating to it from the start",
				zap.Uint64("to", m.From), zap.Uint64("match", pr.match), zap.Uint64("followerLast", m.HintIndex))
			pr.match = m.HintIndex
			pr.becomeProbe(m.HintIndex + 1)
			c.sendAppend(m.From, false)
			return
		}
		// Ignore stale rejections: ones about an index we already know to
		// match, or, while probing, about a probe we no longer wait for, or
		// any while the snapshot is on its way.
		if m.Index <= pr.match || (pr.state == probe && m.Index != pr.next-1) || pr.state == snapshotState {
			return
		}
		next := m.HintIndex
		if m.HintTerm > 0 {
			// Skip every entry of ours whose term is above the follower's
			// conflicting term: none of them can match.
			next, _ = c.log.findConflictByTerm(m.HintIndex, m.HintTerm)
		}
		pr.becomeProbe(min(next+1, m.Index))
		c.sendAppend(m.From, false)
		return
	}
	if pr.matched(m.Index) {
		c.maybeCommit()
	} else if pr.state == probe && m.Index == pr.match && m.Index == pr.next-1 {
		pr.becomeReplicate()
	}
	if m.From == c.transferTarget {
		c.maybeSendTimeoutNow()
		return
	}
	c.sendAppend(m.From, false)
}

// handleHeartbeatResp records liveness and ReadIndex confirmations, and
// restarts replication to a follower that is behind.
func (c *core) handleHeartbeatResp(pr *progress, m Message) {
	pr.heard()
	if m.From == c.transferTarget {
		// Resend a MsgTimeoutNow that may have been lost.
		c.maybeSendTimeoutNow()
	}
	if m.Context > pr.readAck {
		pr.readAck = m.Context
		c.confirmReads()
		c.renewLease()
	}
	if pr.state == snapshotState && m.Done {
		// The follower says how far it got with the snapshot: the runtime
		// resumes or restarts the transfer from there if a chunk or an
		// acknowledgment was lost.
		c.snapshotMsgs = append(c.snapshotMsgs, m)
	}
	if pr.match < c.log.lastIndex() {
		if pr.state == probe {
			pr.probeSent = false // the probe was lost, or is answered slowly: send another
		} else if len(pr.inflight) > 0 && pr.ticksSinceAck >= c.electionTicks/2+1 {
			// Pipelined appends went unanswered for half an election timeout:
			// some were lost. Find the match point again.
			pr.becomeProbe(pr.match + 1)
		}
		c.sendAppend(m.From, false)
	} else if m.Commit <= 1 && pr.match > 1 && c.log.committed > 1 && pr.state != snapshotState {
		// The follower holds every entry as far as we know, yet it cannot
		// commit beyond the founding configuration: it lost its log (a
		// wiped disk; or this answers a heartbeat of the cluster's first
		// moments). An empty append tells: a follower without our last
		// entry rejects it, and handleAppendResp replicates to it from the
		// start. Without it, a leader with nothing to append would never
		// send it anything but heartbeats.
		pr.probeSent = false
		c.sendAppend(m.From, true)
	}
}

// broadcastHeartbeat sends a heartbeat to every follower, carrying the
// ReadIndex round readSeq.
func (c *core) broadcastHeartbeat(readSeq uint64) {
	// Iterate a sorted list, not the progress map, so that the order of
	// messages is deterministic.
	for _, id := range c.replicaIDs() {
		if pr := c.progress[id]; pr != nil {
			commit := min(pr.match, c.log.committed)
			c.send(Message{Type: MsgHeartbeat, To: id, Commit: commit, Context: readSeq})
			pr.commitSent = max(pr.commitSent, commit)
		}
	}
}

// sendCommit sends follower id an append without new entries if the last
// commit index it was sent is behind ours, as far as the follower holds the
// entries (match). A follower's commit index is advisory: it only decides
// when the follower applies (Raft §5.3), so the leader does not spend a
// message on each advance. The next append with entries carries it, or
// failing that flushCommit, which the runtime calls once the commit index
// has stayed put for a short grace period, and the leader's next tick at
// the latest.
func (c *core) sendCommit(id uint64) {
	if c.owesCommit(id, c.progress[id]) {
		c.sendAppend(id, true)
	}
}

// owesCommit reports whether follower id holds entries up to an index the
// leader has committed without having been sent that commit index, and
// flow control would let an append carry it now.
func (c *core) owesCommit(id uint64, pr *progress) bool {
	return pr != nil && id != c.id && pr.commitSent < min(pr.match, c.log.committed) && !pr.paused(c.maxInflight)
}

// commitPending reports whether a flushCommit would send anything: some
// follower lacks the commit index, and flow control lets an append go to it
// now (one it holds back gets the commit index with the append that its
// next answer releases). The runtime asks after each pass of its event
// loop, so that an idle loop never wakes only to find nothing to send.
func (c *core) commitPending() bool {
	if c.role != Leader {
		return false
	}
	for id, pr := range c.progress {
		if c.owesCommit(id, pr) {
			return true
		}
	}
	return false
}

// flushCommit sends the commit index to every follower that lacks it
// (sendCommit). Called on each tick, and by the runtime once the commit
// index it owes has stayed put for a short grace period: a sequential
// client's next proposal carries it at no cost within that period, and
// without one a follower applies about a grace period after the leader
// instead of a tick later.
func (c *core) flushCommit() {
	if c.role != Leader {
		return
	}
	for _, id := range c.replicaIDs() {
		c.sendCommit(id)
	}
}

// maybeCommit advances the commit index to the highest index stored on a
// quorum, if that entry is of the current term: a leader never commits an
// entry of an earlier term by counting replicas (Raft §5.4.2, Figure 8).
// The new commit index reaches followers with the next append or
// heartbeat (see sendCommit).
func (c *core) maybeCommit() {
	var q quorum = c.voters
	if j, ok := q.(joint); ok && c.hooks.commitWithIncomingOnly {
		q = j.incoming
	}
	idx := q.committed(func(id uint64) uint64 {
		if pr := c.progress[id]; pr != nil {
			return pr.match
		}
		return 0
	})
	if idx <= c.log.committed {
		return
	}
	if t, _ := c.log.term(idx); t != c.term && !c.hooks.commitPreviousTermByCounting {
		return
	}
	for i := c.log.committed + 1; i <= idx; i++ {
		c.uncommittedBytes -= min(c.uncommittedBytes, uint64(len(c.log.entry(i).Data)))
	}
	c.log.commitTo(idx)
}

// persisted tells the core that the log up to (index, term) is durable. The
// leader counts itself toward a quorum only from here on (dissertation
// §10.2.1): it may send entries to followers before its own write ends, but
// it must not count a vote its disk could still lose.
func (c *core) persisted(index, term uint64) {
	if !c.log.matchTerm(index, term) || index <= c.log.stable {
		return // the log changed meanwhile; a later persist covers it
	}
	c.log.stable = index
	if c.role == Leader {
		if pr := c.progress[c.id]; pr != nil && index > pr.match {
			pr.match = index
			c.maybeCommit()
		}
	}
}

// peerUnreachable takes a transport's report that a message to m.From was
// lost. A lost snapshot chunk (Index set) goes to the runtime, which sends
// it again. After any other loss, the appends pipelined to the follower
// were probably lost too: probe for the match point again rather than wait
// for half an election timeout of silence.
func (c *core) peerUnreachable(m Message) {
	pr := c.progress[m.From]
	switch {
	case c.role != Leader || pr == nil:
	case m.Index != 0:
		if pr.state == snapshotState {
			c.snapshotMsgs = append(c.snapshotMsgs, m)
		}
	case pr.state == replicate:
		pr.becomeProbe(pr.match + 1)
	}
}
