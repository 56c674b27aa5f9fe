package raft

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
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
	// list, see Member; while joint, the old list too, see
	// ChangeMembership). It takes effect as soon as it is appended (Raft
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
	ID      uint64 `json:"id"`      // non-zero, unique in the cluster
	Addr    string `json:"addr"`    // what the Transport dials; may be empty for the in-memory network
	Learner bool   `json:"learner"` // receives the log but does not vote or count for quorum
	// Meta is the application's data about the member, replicated with the
	// configuration and kept in snapshots: for example the address its
	// clients use ("http": "10.0.0.1:8080"), which a *NotLeaderError then
	// carries to redirect clients to the leader. Keep it small; nil and an
	// empty map are the same. Treat it as read-only: the Node shares it.
	Meta map[string]string `json:"meta,omitempty"`
}

// Equal reports whether m and o are the same member with the same address,
// role and metadata.
func (m Member) Equal(o Member) bool {
	return m.ID == o.ID && m.Addr == o.Addr && m.Learner == o.Learner && maps.Equal(m.Meta, o.Meta)
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

// encodeMembers is the payload of an EntryConfChange that is not joint.
func encodeMembers(members []Member) []byte { return encodeConfig(members, nil) }

// encodeConfig is the payload of an EntryConfChange, and how snapshots
// store their configuration: a version byte, then the member list: the
// member count, then per member its ID, flags (bit 0: learner; bit 1:
// metadata follows) and address, all as uvarints (strings as a uvarint
// length and the bytes), then, with bit 1, the number of metadata pairs and
// each key and value, sorted by key. Version 3 (a joint configuration,
// outgoing not empty) has a second member list after the first: the outgoing
// half. Version 1 (no metadata, not joint) is what is written whenever it
// can be, so that nodes of earlier versions can read it; version 2 (some
// member has metadata) and 3 are written only when the feature is used, and
// nodes that predate them refuse them (ErrCorrupt) rather than misread them:
// use metadata or joint changes only once every node runs a version that
// knows them.
func encodeConfig(members, outgoing []Member) []byte {
	version := byte(1)
	for _, m := range members {
		if len(m.Meta) > 0 {
			version = 2
		}
	}
	if len(outgoing) > 0 {
		version = 3
	}
	buf := make([]byte, 0, 2+(len(members)+len(outgoing))*16)
	buf = append(buf, version)
	buf = appendMemberList(buf, members)
	if version == 3 {
		buf = appendMemberList(buf, outgoing)
	}
	return buf
}

func appendMemberList(buf []byte, members []Member) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(members)))
	appendString := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	for _, m := range members {
		buf = binary.AppendUvarint(buf, m.ID)
		var flags uint64
		if m.Learner {
			flags |= 1
		}
		if len(m.Meta) > 0 {
			flags |= 2
		}
		buf = binary.AppendUvarint(buf, flags)
		appendString(m.Addr)
		if len(m.Meta) > 0 {
			buf = binary.AppendUvarint(buf, uint64(len(m.Meta)))
			for _, k := range slices.Sorted(maps.Keys(m.Meta)) {
				appendString(k)
				appendString(m.Meta[k])
			}
		}
	}
	return buf
}

// decodeMembers decodes encodeConfig's format, any version, and returns the
// configuration's members (the incoming half of a joint configuration).
func decodeMembers(data []byte) ([]Member, error) {
	members, _, err := decodeConfig(data)
	return members, err
}

// decodeConfig decodes encodeConfig's format, any version; outgoing is nil
// unless the configuration is joint.
func decodeConfig(data []byte) (members, outgoing []Member, err error) {
	if len(data) == 0 || data[0] < 1 || data[0] > 3 {
		return nil, nil, fmt.Errorf("%w: configuration entry: unknown format (from a newer version?)", ErrCorrupt)
	}
	d := memberDecoder{data: data[1:]}
	if members, err = d.list(); err != nil {
		return nil, nil, err
	}
	if data[0] == 3 {
		if outgoing, err = d.list(); err != nil {
			return nil, nil, err
		}
		if !slices.ContainsFunc(outgoing, func(m Member) bool { return !m.Learner }) {
			// A joint configuration with no outgoing voter could never
			// commit: refuse it rather than stall.
			return nil, nil, fmt.Errorf("%w: configuration entry: joint configuration without outgoing voters", ErrCorrupt)
		}
	}
	if len(d.data) != 0 {
		return nil, nil, fmt.Errorf("%w: configuration entry: trailing bytes", ErrCorrupt)
	}
	return members, outgoing, nil
}

type memberDecoder struct{ data []byte }

func (d *memberDecoder) uvarint(what string) (uint64, error) {
	v, k := binary.Uvarint(d.data)
	if k <= 0 {
		return 0, fmt.Errorf("%w: configuration entry: truncated %s", ErrCorrupt, what)
	}
	d.data = d.data[k:]
	return v, nil
}

func (d *memberDecoder) str(what string) (string, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return "", err
	}
	if n > uint64(len(d.data)) {
		return "", fmt.Errorf("%w: configuration entry: truncated %s", ErrCorrupt, what)
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s, nil
}

func (d *memberDecoder) list() ([]Member, error) {
	n, err := d.uvarint("member count")
	if err != nil || n > uint64(len(d.data)) {
		return nil, fmt.Errorf("%w: configuration entry: bad member count", ErrCorrupt)
	}
	members := make([]Member, 0, n)
	for i := uint64(0); i < n; i++ {
		var m Member
		var flags uint64
		if m.ID, err = d.uvarint("member"); err != nil {
			return nil, err
		}
		if flags, err = d.uvarint("member"); err != nil {
			return nil, err
		}
		if m.Addr, err = d.str("address"); err != nil {
			return nil, err
		}
		m.Learner = flags&1 != 0
		if flags&2 != 0 {
			pairs, err := d.uvarint("metadata")
			if err != nil || pairs > uint64(len(d.data)) {
				return nil, fmt.Errorf("%w: configuration entry: bad metadata count", ErrCorrupt)
			}
			m.Meta = make(map[string]string, pairs)
			for j := uint64(0); j < pairs; j++ {
				k, err := d.str("metadata key")
				if err != nil {
					return nil, err
				}
				if m.Meta[k], err = d.str("metadata value"); err != nil {
					return nil, err
				}
			}
		}
		members = append(members, m)
	}
	return members, nil
}
