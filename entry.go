package raft

import (
	"encoding/binary"
	"fmt"
	"io"
)

// EntryType says what a log entry holds. The values are part of the wire and
// storage formats: never renumber them.
type EntryType uint8

const (
	// EntryCommand holds a command proposed by the application; committed
	// commands are passed to StateMachine.Apply.
	EntryCommand EntryType = iota
	// EntryNoop is appended by every new leader so that it can commit
	// entries of earlier terms (Raft §5.4.2, §8). It is never applied.
	EntryNoop
	// EntryConfChange holds a new cluster configuration (the full member
	// list, see Member). It takes effect as soon as it is appended (Raft
	// dissertation §4.1) and is never passed to StateMachine.Apply.
	EntryConfChange

	entryTypeEnd
)

// String returns the type's name.
func (t EntryType) String() string {
	switch t {
	case EntryCommand:
		return "EntryCommand"
	case EntryNoop:
		return "EntryNoop"
	case EntryConfChange:
		return "EntryConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Index, Term uint64
	Type        EntryType
	Data        []byte // the command for EntryCommand; owned by the log once proposed, never modified
}

// Member is one node of the cluster.
type Member struct {
	ID      uint64 // non-zero, unique in the cluster
	Addr    string // what the Transport dials; may be empty for the in-memory network
	Learner bool   // receives the log but does not vote or count for quorum
}

// StateMachine is the application's replicated state. The Node calls its
// methods from a single goroutine (the apply goroutine), never concurrently.
type StateMachine interface {
	// Apply is called once for every committed EntryCommand, in log order, on
	// one goroutine. Its result is returned to the Propose call that created
	// the entry (on that node).
	Apply(e Entry) any
	// Snapshot captures a point-in-time view cheaply; the Snapshot is written
	// out on another goroutine.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with a snapshot's contents: at
	// start-up from the newest stored snapshot, and when the leader sends
	// one. SnapshotMetaOf(r) tells which log index (and term and
	// configuration) the snapshot's state is at.
	Restore(r io.Reader) error
}

// Snapshot is a point-in-time view of a StateMachine, written out by
// WriteTo while the state machine goes on applying entries.
type Snapshot interface {
	// WriteTo writes the snapshot's contents to w.
	WriteTo(w io.Writer) (int64, error)
	// Release is called when the snapshot is no longer needed.
	Release()
}

// encodeMembers is the payload of an EntryConfChange: a version byte, the
// member count, then per member its ID, flags and address, all as uvarints.
func encodeMembers(members []Member) []byte {
	buf := make([]byte, 0, 2+len(members)*16)
	buf = append(buf, 1) // format version
	buf = binary.AppendUvarint(buf, uint64(len(members)))
	for _, m := range members {
		buf = binary.AppendUvarint(buf, m.ID)
		var flags uint64
		if m.Learner {
			flags |= 1
		}
		buf = binary.AppendUvarint(buf, flags)
		buf = binary.AppendUvarint(buf, uint64(len(m.Addr)))
		buf = append(buf, m.Addr...)
	}
	return buf
}

// decodeMembers parses what encodeMembers wrote. It never panics and never
// allocates more than the input can justify.
func decodeMembers(data []byte) ([]Member, error) {
	if len(data) == 0 || data[0] != 1 {
		return nil, fmt.Errorf("%w: configuration entry: unknown format", ErrCorrupt)
	}
	data = data[1:]
	n, k := binary.Uvarint(data)
	if k <= 0 || n > uint64(len(data)) {
		return nil, fmt.Errorf("%w: configuration entry: bad member count", ErrCorrupt)
	}
	data = data[k:]
	members := make([]Member, 0, n)
	for i := uint64(0); i < n; i++ {
		var fields [3]uint64
		for j := range fields {
			v, k := binary.Uvarint(data)
			if k <= 0 {
				return nil, fmt.Errorf("%w: configuration entry: truncated member", ErrCorrupt)
			}
			fields[j] = v
			data = data[k:]
		}
		if fields[2] > uint64(len(data)) {
			return nil, fmt.Errorf("%w: configuration entry: truncated address", ErrCorrupt)
		}
		members = append(members, Member{ID: fields[0], Learner: fields[1]&1 != 0, Addr: string(data[:fields[2]])})
		data = data[fields[2]:]
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: configuration entry: trailing bytes", ErrCorrupt)
	}
	return members, nil
}
