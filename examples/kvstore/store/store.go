// Package store is the kvstore example's replicated state machine: a map
// from keys to values, each with the revision (the Raft log index) of the
// write that last changed it. It implements raft.StateMachine, including
// Snapshot and Restore, so the log can be compacted.
//
// Writes reach it as commands in committed log entries (Encode them, hand
// them to raft.Node.Propose, and the Node calls Apply on every node in the
// same order); reads are local (Get), and are linearizable when they follow
// a successful raft.Node.LinearizableRead on the same node.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/raftkit/raft"
)

// Limits on what a command may carry. They keep a single entry small enough
// for the log and the transport, and they are what the HTTP API enforces.
const (
	MaxKeySize   = 1 << 10 // 1 KiB
	MaxValueSize = 1 << 20 // 1 MiB
)

// Op is what a command does.
type Op string

// The operations.
const (
	OpPut    Op = "put"
	OpDelete Op = "delete"
)

// Command is one write, as it travels in a log entry (JSON: readable in a
// log dump, and easy to extend with new fields that old nodes ignore).
type Command struct {
	Op    Op     `json:"op"`
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
	// IfRevision, when set, makes the write a compare-and-swap: it applies
	// only if the key's current revision is *IfRevision (0: the key must
	// not exist). It is decided in Apply, so every node decides the same.
	IfRevision *uint64 `json:"ifRevision,omitempty"`
}

// ValidKey checks a key: 1 byte to MaxKeySize, valid UTF-8 (commands are
// JSON, which would turn other bytes into U+FFFD and merge distinct keys),
// and, split at its slashes, with no empty, "." or ".." segment (they
// would not survive the URL path /kv/{key}: HTTP servers and proxies
// clean such paths).
func ValidKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > MaxKeySize:
		return fmt.Errorf("key of %d bytes is longer than the limit of %d", len(key), MaxKeySize)
	case !utf8.ValidString(key):
		return fmt.Errorf("key %q is not valid UTF-8", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key %q has an empty, \".\" or \"..\" segment between slashes", key)
		}
	}
	return nil
}

// Validate checks the command against the limits.
func (c Command) Validate() error {
	if err := ValidKey(c.Key); err != nil {
		return err
	}
	switch {
	case c.Op != OpPut && c.Op != OpDelete:
		return fmt.Errorf("unknown operation %q", c.Op)
	case len(c.Value) > MaxValueSize:
		return fmt.Errorf("value of %d bytes is longer than the limit of %d", len(c.Value), MaxValueSize)
	}
	return nil
}

// Encode returns the command as log entry data.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // a struct of strings and bytes always marshals
	}
	return b
}

// Result is what Apply returns for a command, and so what the
// raft.Node.Propose call that proposed it returns on the leader.
type Result struct {
	// Revision is the log index of the command when it was applied; when a
	// compare-and-swap failed (Conflict), the key's current revision.
	Revision uint64
	// Conflict reports that the command's IfRevision did not match: nothing
	// changed.
	Conflict bool
	// Err reports a command that could not be decoded (written by a newer
	// version of the program, say); nothing changed.
	Err error
}

// item is a key's value and the revision that wrote it.
type item struct {
	Value    []byte `json:"value"`
	Revision uint64 `json:"revision"`
}

// Store is the state machine. Its methods are safe to call concurrently:
// the Node calls Apply, Snapshot and Restore from its apply goroutine while
// the HTTP handlers call Get.
type Store struct {
	mu      sync.RWMutex
	items   map[string]item
	applied uint64 // the index of the last command applied
}

// New returns an empty Store.
func New() *Store { return &Store{items: map[string]item{}} }

// Get returns the key's value and revision, and whether it exists. The value
// is shared: do not modify it.
func (s *Store) Get(key string) (value []byte, revision uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items[key]
	return it.Value, it.Revision, ok
}

// Len returns the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.items)
}

// Apply applies one committed command; it implements raft.StateMachine.
func (s *Store) Apply(e raft.Entry) any {
	var c Command
	if err := json.Unmarshal(e.Data, &c); err != nil {
		return Result{Err: fmt.Errorf("undecodable command at index %d: %w", e.Index, err)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = e.Index
	if c.IfRevision != nil && s.items[c.Key].Revision != *c.IfRevision {
		return Result{Revision: s.items[c.Key].Revision, Conflict: true}
	}
	switch c.Op {
	case OpPut:
		s.items[c.Key] = item{Value: c.Value, Revision: e.Index}
	case OpDelete:
		delete(s.items, c.Key)
	default:
		return Result{Err: fmt.Errorf("unknown operation %q at index %d", c.Op, e.Index)}
	}
	return Result{Revision: e.Index}
}

// snapshotData is the snapshot's format: JSON, small and readable; a store
// of many gigabytes would want a streaming format instead.
type snapshotData struct {
	Applied uint64          `json:"applied"`
	Items   map[string]item `json:"items"`
}

// Snapshot returns a point-in-time copy of the store; it implements
// raft.StateMachine. Copying the map is cheap next to writing it out, which
// happens on another goroutine while Apply goes on. The values are never
// modified after they are stored, so the copy shares them.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return snapshot{Applied: s.applied, Items: maps.Clone(s.items)}, nil
}

// Restore replaces the store with a snapshot's contents; it implements
// raft.StateMachine.
func (s *Store) Restore(r io.Reader) error {
	var d snapshotData
	if err := json.NewDecoder(r).Decode(&d); err != nil {
		return fmt.Errorf("store: reading the snapshot: %w", err)
	}
	if d.Items == nil {
		d.Items = map[string]item{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items, s.applied = d.Items, d.Applied
	return nil
}

// snapshot is a copy of the store, written out as JSON.
type snapshot snapshotData

func (sn snapshot) WriteTo(w io.Writer) (int64, error) {
	b, err := json.Marshal(snapshotData(sn))
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (sn snapshot) Release() {}
