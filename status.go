package raft

// Role is the part a node plays in its current term.
type Role uint8

// The roles of Raft (§5.1), plus PreCandidate for the PreVote phase
// (dissertation §9.6).
const (
	Follower Role = iota
	PreCandidate
	Candidate
	Leader
)

// String returns the role's name, e.g. "Leader".
func (r Role) String() string {
	switch r {
	case Follower:
		return "Follower"
	case PreCandidate:
		return "PreCandidate"
	case Candidate:
		return "Candidate"
	case Leader:
		return "Leader"
	}
	return "Role(?)"
}

// Status is a snapshot of a node's state, for monitoring and tests.
type Status struct {
	ID, Term, Leader                     uint64 // Leader == 0: unknown
	Role                                 Role
	CommitIndex, AppliedIndex, LastIndex uint64
	SnapshotIndex                        uint64
	Members                              []Member
	// Removed reports that this node applied a configuration that removed
	// it from the cluster: it no longer takes part, and Propose,
	// LinearizableRead and the membership calls fail with ErrRemoved. It
	// turns false again if a later configuration adds the node back. A
	// removed node restarted from a snapshot taken after its removal (its
	// log no longer holds the change) does not know it was removed: it
	// starts as a node waiting to be added, with Removed false.
	Removed bool
	// Err is the fatal error that stopped the node, nil while it runs.
	Err error
	// Origin identifies the cluster: a fingerprint of its founding
	// configuration, the same on every node of the cluster, whatever the
	// order of the founders' InitialMembers. 0 while this node does not
	// know it (a joiner no leader has reached yet). Nodes of different
	// origins refuse each other's messages (ErrClusterMismatch).
	Origin uint64
}
