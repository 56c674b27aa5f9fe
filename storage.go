package raft

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// HardState is the part of a node's state that must survive a crash
// (Raft Figure 2: currentTerm and votedFor), plus the commit index, which is
// not needed for safety but lets a restarted node re-apply committed entries
// without waiting for the leader.
type HardState struct {
	Term   uint64 // the latest term the node has seen
	Vote   uint64 // the candidate voted for in Term, 0 if none
	Commit uint64 // a commit index the node has learned (may lag the real one)
	// Origin identifies the cluster the node belongs to: a fingerprint of
	// its founding configuration (see Status.Origin), 0 while unknown. A
	// Storage keeps it like the other fields; one that drops it costs only
	// the check against nodes of other clusters after compaction.
	Origin uint64
}

// Storage is the durable home of a node's log and HardState. The Node calls
// it from one goroutine at a time, never concurrently (except SaveSnapshot
// and Snapshot, below): the reading methods while it starts, then Save and
// Compact, in order, from its storage writer goroutine (its event loop for
// a MemoryStorage), so that the event loop goes on while a write is in
// flight (docs/io-ordering.md). A Storage
// belongs to one Node at a time. Node.Close does not close it, so a test
// can restart a node on the same Storage; Close returns once the writes
// the Node made are done.
//
// Contract: Save must be durable when it returns nil. An error from Save is
// fatal to the Node (it stops, see ErrStopped), because after a failed write
// it cannot know what the disk holds.
type Storage interface {
	// InitialState returns the stored HardState; the zero value for a new node.
	InitialState() (HardState, error)
	// FirstIndex returns the index of the first stored entry, 1 when none
	// has ever been compacted away.
	FirstIndex() (uint64, error)
	// LastIndex returns the index of the last stored entry, FirstIndex()-1
	// when the log is empty.
	LastIndex() (uint64, error)
	// Entries returns the stored entries with indexes in [lo, hi), where
	// FirstIndex() <= lo <= hi <= LastIndex()+1; other bounds fail with an
	// error wrapping ErrOutOfRange.
	Entries(lo, hi uint64) ([]Entry, error)
	// Save durably stores entries, then hs. The entries, if any, have
	// consecutive indexes and entries[0].Index <= LastIndex()+1; every stored
	// entry with an index >= entries[0].Index is replaced (a conflicting
	// suffix is truncated, Raft §5.3). Save must not keep a reference to the
	// entries slice, though it may keep the Data slices, which are never
	// modified.
	Save(hs HardState, entries []Entry) error

	// Term returns the term of the entry at index i, for
	// FirstIndex()-1 <= i <= LastIndex(). For FirstIndex()-1 it is the term
	// of the last discarded entry (0 when nothing was ever discarded): the
	// log's consistency check (Raft §5.3) needs it after compaction. Other
	// indexes fail with an error wrapping ErrOutOfRange.
	Term(i uint64) (uint64, error)
	// Compact durably discards every entry up to and including index; term
	// is the term of the entry at index. If the log holds no entry at index
	// with that term (index >= LastIndex(), or a conflicting entry), the
	// whole log is discarded and starts after index: a follower that
	// installed a leader's snapshot keeps only what continues it (Raft §7).
	// index is never above the newest snapshot's index. Compacting below
	// FirstIndex() does nothing.
	Compact(index, term uint64) error
	// SaveSnapshot durably stores a snapshot, reading its data from data
	// until EOF, and makes it the newest once complete: a crash at any point
	// leaves either the previous newest snapshot or this one. A snapshot
	// older than the newest one never replaces it. It may run concurrently
	// with the other methods. On an error the previous newest snapshot stays
	// usable (the new one may or may not have been made the newest).
	SaveSnapshot(meta SnapshotMeta, data io.Reader) error
	// Snapshot opens the newest snapshot; it fails with ErrNoSnapshot when
	// there is none. The reader may be used concurrently with the other
	// methods and stays valid, until closed, when newer snapshots are saved.
	Snapshot() (SnapshotMeta, io.ReadCloser, error)
}

// SnapshotMeta describes a snapshot: the state of the StateMachine after
// it applied every entry up to Index.
type SnapshotMeta struct {
	Index, Term uint64   // the last entry the snapshot covers
	Members     []Member // the configuration in effect at Index
	// Outgoing is, when the configuration at Index is joint (see
	// ChangeMembership), the configuration being left; nil otherwise (an
	// empty list counts as nil). A Storage must give it back with the rest
	// of the metadata: a node restarted from a snapshot taken while joint
	// that lost it would count votes and commitment in Members alone,
	// without the majority of the old voters that the change needs.
	Outgoing []Member
}

// MemoryStorage is a Storage that keeps everything in memory. It is meant for
// tests and examples: nothing survives the process, but a Node restarted on
// the same *MemoryStorage recovers its term, vote and log, as after a crash
// in which every Save had reached the disk.
//
// A MemoryStorage is safe for concurrent use, so a test can inspect it while
// its Node runs.
type MemoryStorage struct {
	mu        sync.Mutex
	hs        HardState
	first     uint64  // index of entries[0]
	firstTerm uint64  // term of the entry at first-1
	entries   []Entry // entries[i].Index == first+i
	snapMeta  SnapshotMeta
	snapData  []byte // nil: no snapshot
	failErr   error
}

// NewMemoryStorage returns an empty MemoryStorage.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{first: 1}
}

// InitialState implements Storage.
func (s *MemoryStorage) InitialState() (HardState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hs, nil
}

// FirstIndex implements Storage.
func (s *MemoryStorage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex implements Storage.
func (s *MemoryStorage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first + uint64(len(s.entries)) - 1, nil
}

// Entries implements Storage. The returned slice is a copy.
func (s *MemoryStorage) Entries(lo, hi uint64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.first + uint64(len(s.entries)) - 1
	if lo < s.first || hi < lo || hi > last+1 {
		return nil, fmt.Errorf("%w: MemoryStorage.Entries(%d, %d) outside [%d, %d]", ErrOutOfRange, lo, hi, s.first, last+1)
	}
	out := make([]Entry, hi-lo)
	copy(out, s.entries[lo-s.first:hi-s.first])
	return out, nil
}

// Save implements Storage.
func (s *MemoryStorage) Save(hs HardState, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return s.failErr
	}
	if len(entries) > 0 {
		at := entries[0].Index
		last := s.first + uint64(len(s.entries)) - 1
		if at < s.first || at > last+1 {
			return fmt.Errorf("raft: MemoryStorage.Save: entry %d does not follow the log [%d, %d]", at, s.first, last)
		}
		for i, e := range entries {
			if e.Index != at+uint64(i) {
				return fmt.Errorf("raft: MemoryStorage.Save: entries are not consecutive at index %d", e.Index)
			}
		}
		if at <= last {
			// Truncating: the three-index slice forces a copy, so that slices
			// handed out earlier never see their contents overwritten.
			kept := at - s.first
			s.entries = append(s.entries[:kept:kept], entries...)
		} else {
			s.entries = append(s.entries, entries...)
		}
	}
	s.hs = hs
	return nil
}

// Term implements Storage.
func (s *MemoryStorage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.first + uint64(len(s.entries)) - 1
	switch {
	case i == s.first-1:
		return s.firstTerm, nil
	case i < s.first || i > last:
		return 0, fmt.Errorf("%w: MemoryStorage.Term(%d) outside [%d, %d]", ErrOutOfRange, i, s.first-1, last)
	}
	return s.entries[i-s.first].Term, nil
}

// Compact implements Storage.
func (s *MemoryStorage) Compact(index, term uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return s.failErr
	}
	if index < s.first {
		return nil
	}
	last := s.first + uint64(len(s.entries)) - 1
	if index >= last || s.entries[index-s.first].Term != term {
		// Past the end, or the log diverges from the snapshot: discard it all.
		s.entries = nil
	} else {
		// Copy, so that the discarded prefix can be freed.
		s.entries = append([]Entry(nil), s.entries[index+1-s.first:]...)
	}
	s.first, s.firstTerm = index+1, term
	return nil
}

// errNilSnapshotData is SaveSnapshot's answer to a nil reader (an empty
// snapshot is an empty reader).
var errNilSnapshotData = errors.New("raft: SaveSnapshot: the data reader is nil")

// SaveSnapshot implements Storage.
func (s *MemoryStorage) SaveSnapshot(meta SnapshotMeta, data io.Reader) error {
	if data == nil {
		return errNilSnapshotData
	}
	b, err := io.ReadAll(data)
	if err != nil {
		return fmt.Errorf("raft: reading snapshot data: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return s.failErr
	}
	if b == nil {
		b = []byte{}
	}
	if s.snapData != nil && meta.Index < s.snapMeta.Index {
		return nil // older than the newest: it never replaces it
	}
	meta.Members, meta.Outgoing = slices.Clone(meta.Members), slices.Clone(meta.Outgoing)
	s.snapMeta, s.snapData = meta, b
	return nil
}

// Snapshot implements Storage.
func (s *MemoryStorage) Snapshot() (SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapData == nil {
		return SnapshotMeta{}, nil, ErrNoSnapshot
	}
	meta := s.snapMeta
	meta.Members, meta.Outgoing = slices.Clone(meta.Members), slices.Clone(meta.Outgoing)
	return meta, io.NopCloser(bytes.NewReader(s.snapData)), nil
}

// writesInline implements inlineWriter: a MemoryStorage is written on the
// node's event loop, where a write costs less than a handoff to another
// goroutine.
func (s *MemoryStorage) writesInline() bool { return true }

// FailSaves makes every later Save return err (nil restores normal
// operation). Tests use it to check how a node reacts to a failing disk.
func (s *MemoryStorage) FailSaves(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failErr = err
}
