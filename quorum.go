package raft

import "slices"

// voteResult is the outcome of an election so far.
type voteResult uint8

const (
	votePending voteResult = iota
	voteWon
	voteLost
)

// quorum decides what a set of voters agrees on. Commit, elections and
// ReadIndex confirmation all go through it, so that a change of membership
// never needs a special case in those rules: a simple majority, or, while
// the cluster is joint (dissertation §4.3), a majority of the incoming and
// of the outgoing voters.
type quorum interface {
	// committed returns the highest value v such that a quorum of voters
	// reports a value >= v; ack gives each voter's value (0 if unknown).
	committed(ack func(id uint64) uint64) uint64
	// vote tallies granted (true) and rejected (false) votes.
	vote(votes map[uint64]bool) voteResult
	// contains reports whether id is a voter.
	contains(id uint64) bool
}

// majority is a simple majority configuration (Raft §5): any set of more
// than half of the voters is a quorum.
type majority []uint64

func (q majority) contains(id uint64) bool { return slices.Contains(q, id) }

func (q majority) committed(ack func(id uint64) uint64) uint64 {
	if len(q) == 0 {
		// No voters: nothing can be agreed.
		return 0
	}
	var buf [7]uint64
	vals := buf[:0]
	for _, id := range q {
		vals = append(vals, ack(id))
	}
	slices.Sort(vals)
	// With n voters sorted ascending, the value at n-(n/2+1) is held by
	// n/2+1 voters or more: a majority.
	return vals[len(vals)-(len(vals)/2+1)]
}

func (q majority) vote(votes map[uint64]bool) voteResult {
	granted, rejected := 0, 0
	for _, id := range q {
		v, ok := votes[id]
		switch {
		case !ok:
		case v:
			granted++
		default:
			rejected++
		}
	}
	need := len(q)/2 + 1
	switch {
	case granted >= need:
		return voteWon
	case len(q)-rejected < need:
		return voteLost
	}
	return votePending
}

// joint is the quorum of a joint configuration (dissertation §4.3): any
// decision needs a majority of the incoming voters and a majority of the
// outgoing ones, so that neither configuration can decide alone while the
// cluster moves from one to the other.
type joint struct{ incoming, outgoing majority }

func (q joint) contains(id uint64) bool { return q.incoming.contains(id) || q.outgoing.contains(id) }

func (q joint) committed(ack func(id uint64) uint64) uint64 {
	return min(q.incoming.committed(ack), q.outgoing.committed(ack))
}

func (q joint) vote(votes map[uint64]bool) voteResult {
	in, out := q.incoming.vote(votes), q.outgoing.vote(votes)
	switch {
	case in == voteLost || out == voteLost:
		return voteLost
	case in == voteWon && out == voteWon:
		return voteWon
	}
	return votePending
}
