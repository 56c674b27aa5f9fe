package raft

import (
	"context"
	"time"
)

// LeaseRead is LinearizableRead under a bounded clock-drift assumption:
// it returns nil once this node's state machine reflects every write
// committed before the call, confirmed by the leader's read lease
// (Config.LeaseReads, docs/protocol.md "Lease reads") instead of a round of
// heartbeats. On a leader holding a valid lease it costs no message; a
// follower or learner asks the leader, which answers from its lease without
// a heartbeat round (one round trip), and then waits until it has applied
// the answer's index. Wherever no lease can answer (LeaseReads off on the
// leader, a leader that has not yet committed an entry of its term, an
// uncommitted membership change, a leadership transfer, a lease expired for
// want of a quorum's heartbeat answers), it falls back to ReadIndex, as
// LinearizableRead does. It fails as LinearizableRead does.
//
// The result is linearizable only if the assumptions of Config.LeaseReads
// hold: clocks whose rates differ by at most LeaseDriftMargin, and
// CheckQuorum, the same ElectionTimeout and LeaseReads on every voter. Use
// LinearizableRead where that is not acceptable.
func (n *Node) LeaseRead(ctx context.Context) error {
	return n.read(ctx, true)
}

// nodeClock feeds the core ticks by the monotonic clock when lease reads
// are on. A time.Ticker drops ticks while the event loop is busy (a long
// storage write), so a leader counting ticker fires would count less time
// than passed, and its lease would outlive its bound. The leader makes up
// the missed ticks at each fire and whenever it takes work from its inbox,
// before it steps any of it (drainInbox), so before it answers a lease read
// that was queued. A follower counts one tick per fire as before, which can
// only lengthen the time it ignores candidates (the safe direction): ticks
// that elapsed before it heard from the leader are never counted after.
type nodeClock struct {
	base       time.Time // when the clock started; read with its monotonic reading
	period     time.Duration
	given      int64 // ticks accounted for since base
	maxCatchUp int   // at most this many ticks at once (an election timeout, longer than the lease)
}

// due returns the whole periods elapsed since base.
func (k *nodeClock) due() int64 { return int64(time.Since(k.base) / k.period) }

// tickCore advances the core at a ticker fire.
func (n *Node) tickCore() {
	if n.clock == nil {
		n.core.tick()
		return
	}
	if n.core.status().role == Leader {
		n.catchUpClock()
		return
	}
	n.core.tick()
	n.clock.given = n.clock.due()
}

// catchUpClock gives a leader the ticks elapsed on the monotonic clock
// since it last counted them, up to maxCatchUp. Making up fewer than
// elapsed after a long stall is still safe: maxCatchUp ticks end any lease.
func (n *Node) catchUpClock() {
	if n.clock == nil || n.core.status().role != Leader {
		return
	}
	due := n.clock.due()
	// Stop if the leader steps down meanwhile (CheckQuorum).
	for i := int64(0); i < min(due-n.clock.given, int64(n.clock.maxCatchUp)) && n.core.status().role == Leader; i++ {
		n.core.tick()
	}
	n.clock.given = max(n.clock.given, due)
	n.ticked = true
}
