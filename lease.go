package raft

// Lease reads (dissertation §6.4.1; docs/protocol.md, "Lease reads"). A
// leader that a quorum of voters acknowledged in a heartbeat round knows
// that none of them grants a vote to another candidate for an election
// timeout after it received that round (CheckQuorum's follower lease,
// inLease). Counting from the round's SEND time, which comes before every
// receipt, and stopping short of the election timeout by a margin for clock
// drift, the leader can answer reads from its commit index with no round of
// messages: no other leader can have committed anything meanwhile.
//
// The lease counts ticks of this node's clock. It is void, and reads fall
// back to ReadIndex, while:
//   - the leader has not committed an entry of its term (its commit index
//     may lag its predecessor's, as for ReadIndex);
//   - a configuration change is uncommitted, or the round that started the
//     lease was sent under an earlier configuration: a quorum of the new
//     configuration need not intersect the one that acknowledged it, and
//     until the change commits a candidate may be elected by either;
//   - a leadership transfer may still take effect: its target's election is
//     heard by followers in their lease (campaignTransfer).

// leaseState is the leader's read lease, and the clock it runs on.
type leaseState struct {
	// ticks is the lease's length in ticks; 0 turns lease reads off, and
	// then none of this is used.
	ticks int
	// now counts this node's ticks since it started: the lease's clock.
	now uint64
	// rounds are the heartbeat rounds sent in this term that a quorum has
	// not yet acknowledged, ascending by seq (the ReadIndex round number,
	// which every heartbeat carries).
	rounds []leaseRound
	// held: start is the send tick of the newest round a quorum
	// acknowledged that may start a lease, sent under configuration
	// configIndex.
	held        bool
	start       uint64
	configIndex uint64
	// quiet is set from this node's start until it hears from a leader, or
	// any other role change: it ignores candidates as a follower in a
	// leader's lease does (see inLease), since a lease may have been
	// granted by this node before it restarted, and the restart forgot it.
	quiet bool
	// served counts the reads the lease answered (tests).
	served uint64
}

// leaseRound is one heartbeat round of the leader.
type leaseRound struct {
	seq, sentAt, configIndex uint64
	// usable: nothing voided the lease when the round was sent.
	usable bool
}

// maxLeaseRounds bounds the rounds a leader remembers while no quorum
// answers; dropping the oldest only delays the lease.
const maxLeaseRounds = 1 << 12

// heartbeatSeq returns the ReadIndex round a periodic heartbeat carries:
// with lease reads on, every heartbeat starts a round of its own, whose send
// time can start a lease.
func (c *core) heartbeatSeq() uint64 {
	if c.lease.ticks == 0 {
		return c.reads.seq
	}
	c.reads.seq++
	c.leaseRoundSent(c.reads.seq)
	return c.reads.seq
}

// leaseRoundSent records the send time of the heartbeat round seq.
func (c *core) leaseRoundSent(seq uint64) {
	if c.lease.ticks == 0 {
		return
	}
	if len(c.lease.rounds) >= maxLeaseRounds {
		c.lease.rounds = append(c.lease.rounds[:0], c.lease.rounds[1:]...)
	}
	c.lease.rounds = append(c.lease.rounds, leaseRound{seq: seq, sentAt: c.lease.now, configIndex: c.configIndex, usable: c.leaseUnvoided()})
	c.renewLease() // a single voter acknowledges its own round at once
}

// renewLease moves the lease's start to the send time of the newest round
// a quorum of voters has acknowledged (the leader counts itself). In a
// joint configuration both majorities must have (quorum.committed).
func (c *core) renewLease() {
	if c.lease.ticks == 0 || len(c.lease.rounds) == 0 || c.role != Leader {
		return
	}
	acked := c.ackedReadRound()
	n := 0
	for _, r := range c.lease.rounds {
		if r.seq > acked {
			break
		}
		n++
		if r.usable && r.configIndex == c.configIndex {
			c.lease.held, c.lease.start, c.lease.configIndex = true, r.sentAt, r.configIndex
		}
	}
	c.lease.rounds = append(c.lease.rounds[:0], c.lease.rounds[n:]...)
}

// leaseUnvoided reports whether nothing voids a lease now: the leader
// committed an entry of its term, its configuration is committed, and no
// leadership transfer can still take effect.
func (c *core) leaseUnvoided() bool {
	if c.role != Leader || !c.committedInTerm() || c.configIndex > c.log.committed || c.transferTarget != 0 {
		return false
	}
	// A transfer abandoned after its MsgTimeoutNow went out may still make
	// its target campaign until the target holds the fence (transferSettled);
	// a target removed before it was seen to hold it voids the lease for
	// the rest of the term.
	for target, fence := range c.transferFences {
		if pr := c.progress[target]; pr == nil || pr.match < fence {
			return false
		}
	}
	return true
}

// leaseValid reports whether this leader holds a lease now.
func (c *core) leaseValid() bool {
	return c.lease.ticks > 0 && c.lease.held && c.lease.configIndex == c.configIndex &&
		c.lease.now-c.lease.start < uint64(c.lease.ticks) && c.leaseUnvoided()
}

// resetLease drops the lease and its rounds, at every change of role or term.
func (c *core) resetLease() {
	c.lease.rounds = c.lease.rounds[:0]
	c.lease.held, c.lease.start, c.lease.configIndex, c.lease.quiet = false, 0, 0, false
}

// leaseRead asks for a read index that a valid lease confirms with no
// round of messages. The leader answers from its lease, or else by
// ReadIndex; a follower or learner asks the leader, marking the request
// (Message.Done) so that the leader may answer it from its lease.
func (c *core) leaseRead(id uint64) {
	switch {
	case c.role == Leader && c.leaseValid():
		c.lease.served++
		c.reads.results = append(c.reads.results, readResult{id: id, index: c.log.committed})
	case c.role == Leader:
		c.queueRead(readRequest{id: id})
	case c.leader != 0:
		c.send(Message{Type: MsgReadIndex, To: c.leader, Context: id, Done: true})
	default:
		c.reads.results = append(c.reads.results, readResult{id: id, err: c.notLeader()})
	}
}

// read asks for a read index by ReadIndex, or with lease set by leaseRead.
func (c *core) read(id uint64, lease bool) {
	if lease {
		c.leaseRead(id)
	} else {
		c.readIndex(id)
	}
}

// readRequested is the leader's side of MsgReadIndex: a request marked as
// accepting a lease answer (Done) is answered at once while the lease is
// valid; any other waits for a ReadIndex round.
func (c *core) readRequested(m Message) {
	if m.Done && c.leaseValid() {
		c.lease.served++
		c.sendCommit(m.From) // the follower waits to apply up to the read index
		c.send(Message{Type: MsgReadIndexResp, To: m.From, Index: c.log.committed, Context: m.Context})
		return
	}
	c.queueRead(readRequest{id: m.Context, from: m.From})
}
