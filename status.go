package raft

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

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

// MarshalText encodes the role as its name, so that JSON shows "Leader".
func (r Role) MarshalText() ([]byte, error) {
	if r > Leader {
		return nil, fmt.Errorf("raft: unknown role %d", uint8(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText decodes a role's name.
func (r *Role) UnmarshalText(b []byte) error {
	for v := Follower; v <= Leader; v++ {
		if v.String() == string(b) {
			*r = v
			return nil
		}
	}
	return fmt.Errorf("raft: unknown role %q", b)
}

// Status is a snapshot of a node's state, for monitoring and tests. It
// encodes to JSON with the role as text and the error as a string (see
// MarshalJSON); Node.Changed tells when it changes.
type Status struct {
	ID     uint64 `json:"id"`
	Term   uint64 `json:"term"`
	Leader uint64 `json:"leader"` // 0: unknown
	Role   Role   `json:"role"`
	// CommitIndex is the highest log index this node knows committed,
	// AppliedIndex the highest its state machine has applied, LastIndex
	// the last in its log, and SnapshotIndex that of its newest snapshot.
	// AppliedIndex is read as Status is called; the others are as the
	// node last published them, at most one pass of its event loop old,
	// but never shown below AppliedIndex. Right after a snapshot from the
	// leader is restored, SnapshotIndex and Members may lag AppliedIndex
	// for that long: wait on the field you need.
	CommitIndex   uint64 `json:"commitIndex"`
	AppliedIndex  uint64 `json:"appliedIndex"`
	LastIndex     uint64 `json:"lastIndex"`
	SnapshotIndex uint64 `json:"snapshotIndex"`
	// Members is the configuration in effect on this node: that of the
	// last configuration entry in its log, committed or not. Learners are
	// the members with Learner set.
	Members []Member `json:"members"`
	// Outgoing is, while the cluster is in a joint configuration (during a
	// ChangeMembership of several voters), the configuration it is
	// leaving: elections and commitment then need a majority of the
	// voters of Members and of Outgoing. nil otherwise.
	Outgoing []Member `json:"outgoing,omitempty"`
	// Progress is, on the leader, what it knows of every other member's
	// log (and of members being removed that it still sends to), sorted by
	// ID, as of its last tick (the shorter of HeartbeatInterval and a tenth
	// of ElectionTimeout), or of its election or last configuration change
	// if it has not ticked since: a leader lists every member from the
	// Status in which it first shows itself leader, at Match 0 until it
	// ticks after their answers (Raft Figure 2). Use it to see that a
	// learner has caught up before promoting it. nil on other nodes.
	Progress []MemberProgress `json:"progress,omitempty"`
	// Removed reports that this node applied a configuration that removed
	// it from the cluster: it no longer takes part, and Propose,
	// LinearizableRead and the membership calls fail with ErrRemoved. It
	// turns false again if a later configuration adds the node back. A
	// removed node restarted from a snapshot taken after its removal (its
	// log no longer holds the change) does not know it was removed: it
	// starts as a node waiting to be added, with Removed false.
	Removed bool `json:"removed"`
	// Err is the fatal error that stopped the node, or ErrClosed once
	// Close or Shutdown stopped it; nil while it runs.
	Err error `json:"-"`
	// Origin identifies the cluster: a fingerprint of its founding
	// configuration, the same on every node of the cluster, whatever the
	// order of the founders' InitialMembers. 0 while this node does not
	// know it (a joiner no leader has reached yet). Nodes of different
	// origins refuse each other's messages (ErrClusterMismatch). In JSON it
	// is a decimal string (it does not fit a JavaScript number).
	Origin uint64 `json:"origin,string,omitempty"`
}

// statusJSON is Status as it is encoded, with Err as its message.
type statusJSON struct {
	statusFields
	Err string `json:"err,omitempty"`
}

type statusFields Status // Status without its methods

// MarshalJSON encodes s with Role as text ("Leader") and Err as its
// message (omitted when nil).
func (s Status) MarshalJSON() ([]byte, error) {
	j := statusJSON{statusFields: statusFields(s)}
	if s.Err != nil {
		j.Err = s.Err.Error()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes; Err comes back as an
// error with the same message (not the original error value).
func (s *Status) UnmarshalJSON(b []byte) error {
	var j statusJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Status(j.statusFields)
	if j.Err != "" {
		s.Err = errors.New(j.Err)
	}
	return nil
}

// ReplicationState is how the leader sends its log to a member
// (MemberProgress.State; dissertation §3.5 and §5.4 for the flow control).
type ReplicationState uint8

const (
	// ReplicationProbe: the leader is finding where the member's log
	// matches its own, one append at a time (after a rejection, a restart
	// of the member, or a new leadership).
	ReplicationProbe ReplicationState = iota
	// ReplicationReplicate: the logs match up to Match, and entries stream
	// to the member without waiting for each answer.
	ReplicationReplicate
	// ReplicationSnapshot: the member needs entries that were compacted
	// away; the leader is sending it a snapshot.
	ReplicationSnapshot
)

var replicationStateNames = [...]string{"Probe", "Replicate", "Snapshot"}

// String returns the state's name, e.g. "Replicate".
func (s ReplicationState) String() string {
	if int(s) < len(replicationStateNames) {
		return replicationStateNames[s]
	}
	return fmt.Sprintf("ReplicationState(%d)", uint8(s))
}

// MarshalText encodes the state as its name.
func (s ReplicationState) MarshalText() ([]byte, error) {
	if int(s) >= len(replicationStateNames) {
		return nil, fmt.Errorf("raft: unknown replication state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state's name.
func (s *ReplicationState) UnmarshalText(b []byte) error {
	for i, name := range replicationStateNames {
		if name == string(b) {
			*s = ReplicationState(i)
			return nil
		}
	}
	return fmt.Errorf("raft: unknown replication state %q", b)
}

// MemberProgress is the leader's view of one member's log (Status.Progress).
type MemberProgress struct {
	ID uint64 `json:"id"`
	// Match is the index up to which the member's log is known to match
	// the leader's: how far it has caught up (compare with the leader's
	// LastIndex). Next is the next index the leader will send it.
	Match uint64           `json:"match"`
	Next  uint64           `json:"next"`
	State ReplicationState `json:"state"`
	// Learner: the member does not vote (in either half of a joint
	// configuration). Leaving: a configuration removed it, and the leader
	// sends it the log until it knows of its removal.
	Learner bool `json:"learner"`
	Leaving bool `json:"leaving,omitempty"`
	// SinceContact is the time since the member's last message to the
	// leader, counted in ticks (see Status.Progress); it encodes to JSON as
	// text, such as "300ms".
	SinceContact time.Duration `json:"-"`
	// SnapshotIndex is, in ReplicationSnapshot, the index of the snapshot
	// being sent.
	SnapshotIndex uint64 `json:"snapshotIndex,omitempty"`
}

type memberProgressJSON struct {
	memberProgressFields
	SinceContact string `json:"sinceContact"`
}

type memberProgressFields MemberProgress

// MarshalJSON encodes p with its state as text and SinceContact as a
// duration string ("30ms").
func (p MemberProgress) MarshalJSON() ([]byte, error) {
	return json.Marshal(memberProgressJSON{memberProgressFields(p), p.SinceContact.String()})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (p *MemberProgress) UnmarshalJSON(b []byte) error {
	var j memberProgressJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = MemberProgress(j.memberProgressFields)
	if j.SinceContact != "" {
		d, err := time.ParseDuration(j.SinceContact)
		if err != nil {
			return fmt.Errorf("raft: sinceContact: %w", err)
		}
		p.SinceContact = d
	}
	return nil
}
