package raft

// Linearizable reads with ReadIndex (dissertation §6.4). The leader notes
// its commit index as the read index, confirms that it is still the leader
// by hearing from a quorum in a heartbeat round that started after the read
// arrived, and the read is served once the state machine has applied up to
// the read index. Concurrent reads share one heartbeat round. A follower or
// learner asks the leader for a read index (§6.4.1) and waits until its own
// state machine reaches it.

// readRequest is a read waiting for its read index.
type readRequest struct {
	id    uint64 // chosen by the asking node's runtime
	from  uint64 // the asking node; 0 for this node
	index uint64 // the read index, once the round started
	seq   uint64 // the heartbeat round that confirms it
}

// readResult is a read index, or why none can be had, for the runtime.
type readResult struct {
	id    uint64
	index uint64
	err   error
}

// readIndexState holds the reads in flight.
type readIndexState struct {
	seq     uint64               // the last heartbeat round started in this term (leader)
	batch   []readRequest        // arrived, round not yet started (leader)
	pending []readRequest        // in a round, ascending seq (leader)
	results []readResult         // for the runtime, drained by ready
	queued  map[readKey]struct{} // everything in batch and pending
}

// readKey identifies a read request across retries.
type readKey struct{ id, from uint64 }

// readIndex asks for a read index for the local read id. The answer comes
// out of ready as a readResult with the same id.
func (c *core) readIndex(id uint64) {
	switch {
	case c.role == Leader:
		c.queueRead(readRequest{id: id})
	case c.leader != 0:
		c.send(Message{Type: MsgReadIndex, To: c.leader, Context: id})
	default:
		c.reads.results = append(c.reads.results, readResult{id: id, err: c.notLeader()})
	}
}

// maxQueuedReads bounds the reads a leader holds for confirmation, so that
// retries and followers' requests cannot grow it without bound while it
// cannot reach a quorum.
const maxQueuedReads = 1 << 14

// queueRead adds a read to the next round, once: a retried request that is
// already queued is not queued again.
func (c *core) queueRead(r readRequest) {
	key := readKey{id: r.id, from: r.from}
	if _, dup := c.reads.queued[key]; dup || len(c.reads.queued) >= maxQueuedReads {
		return
	}
	if c.reads.queued == nil {
		c.reads.queued = map[readKey]struct{}{}
	}
	c.reads.queued[key] = struct{}{}
	c.reads.batch = append(c.reads.batch, r)
}

// startReadRound starts one heartbeat round for every read that arrived
// since the last one. A new leader does not know the commit index of its
// predecessor until it commits an entry of its own term, so reads wait for
// its no-op to commit (dissertation §6.4, step 1).
//
// One round is in flight at a time: reads that arrive while one is out wait
// for it to be confirmed and then share the next. Under many concurrent
// reads a round per event-loop pass would send close to one heartbeat per
// read to every follower and cost each follower a message per read; this
// bounds the rounds to one per round trip. A read still gets a round that
// starts after it arrived, and its read index is the commit index when that
// round starts, which is what §6.4 asks. If a heartbeat of the round is
// lost, the periodic heartbeats carry the same round and confirm it.
func (c *core) startReadRound() {
	if len(c.reads.batch) == 0 || len(c.reads.pending) > 0 || !c.committedInTerm() {
		return
	}
	c.reads.seq++
	c.leaseRoundSent(c.reads.seq)
	for _, r := range c.reads.batch {
		r.index, r.seq = c.log.committed, c.reads.seq
		c.reads.pending = append(c.reads.pending, r)
	}
	c.reads.batch = c.reads.batch[:0]
	c.broadcastHeartbeat(c.reads.seq)
	c.confirmReads() // a single-voter cluster confirms at once
}

// confirmReads releases every read whose round a quorum has confirmed.
// ackedReadRound returns the newest heartbeat round that a quorum of voters
// has acknowledged (the leader counts itself; while joint, both majorities).
func (c *core) ackedReadRound() uint64 {
	return c.voters.committed(func(id uint64) uint64 {
		if id == c.id {
			return c.reads.seq
		}
		if pr := c.progress[id]; pr != nil {
			return pr.readAck
		}
		return 0
	})
}

func (c *core) confirmReads() {
	if len(c.reads.pending) == 0 {
		return
	}
	acked := c.reads.seq
	if !c.hooks.readWithoutConfirmation {
		acked = c.ackedReadRound()
	}
	n := 0
	for _, r := range c.reads.pending {
		if r.seq > acked {
			break
		}
		n++
		delete(c.reads.queued, readKey{id: r.id, from: r.from})
		if r.from == 0 {
			c.reads.results = append(c.reads.results, readResult{id: r.id, index: r.index})
		} else {
			c.sendCommit(r.from) // the follower waits to apply up to the read index
			c.send(Message{Type: MsgReadIndexResp, To: r.from, Index: r.index, Context: r.id})
		}
	}
	c.reads.pending = append(c.reads.pending[:0], c.reads.pending[n:]...)
}

// readAnswered handles the leader's answer to a forwarded read.
func (c *core) readAnswered(m Message) {
	if m.From != c.leader {
		return // an answer from a former leader; the request will be retried
	}
	if m.Reject {
		c.reads.results = append(c.reads.results, readResult{id: m.Context, err: c.notLeader()})
		return
	}
	c.reads.results = append(c.reads.results, readResult{id: m.Context, index: m.Index})
}

// resetReads fails the local reads of a term that ended; remote askers
// time out and retry on their own.
func (c *core) resetReads() {
	for _, list := range [][]readRequest{c.reads.batch, c.reads.pending} {
		for _, r := range list {
			if r.from == 0 {
				c.reads.results = append(c.reads.results, readResult{id: r.id, err: ErrLeadershipLost})
			}
		}
	}
	c.reads.batch, c.reads.pending, c.reads.seq = c.reads.batch[:0], c.reads.pending[:0], 0
	clear(c.reads.queued)
	c.resetLease()
}
