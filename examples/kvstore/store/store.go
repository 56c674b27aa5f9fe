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
	"bufio"
	"encoding/binary"
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

// Command is one write, as it travels in a log entry (Encode,
// DecodeCommand).
type Command struct {
	Op    Op     `json:"op"`
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
	// IfRevision, when set, makes the write a compare-and-swap: it applies
	// only if the key's current revision is *IfRevision (0: the key must
	// not exist). It is decided in Apply, so every node decides the same.
	IfRevision *uint64 `json:"ifRevision,omitempty"`
}

// ValidKey checks a key: 1 byte to MaxKeySize, valid UTF-8 (keys are text:
// JSON error messages, and earlier versions' JSON commands and snapshots,
// would turn other bytes into U+FFFD and merge distinct keys),
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

// The log entry format of a command (Encode). A format byte comes first;
// commands written as JSON by earlier versions of the example start with
// '{' and are still read. commandV1 is:
//
//	byte     commandV1
//	byte     the operation: opPutCode, opDeleteCode, or opNamed, then
//	         the operation's name as a uvarint length and the bytes (an
//	         operation this version does not know: Apply refuses it)
//	byte     flags: bit 0 (flagIfRevision): IfRevision follows
//	uvarint  IfRevision, with flagIfRevision
//	uvarint  the key's length, then the key
//	...      the value: the rest of the entry (put only)
//
// A binary format rather than JSON: decoding a command is part of every
// Apply on every node, and JSON (with base64 for the value) cost more CPU
// than the rest of Apply together. A new field needs a new format byte,
// which nodes of earlier versions refuse (Result.Err): upgrade every node
// before writing it.
const (
	commandV1      = 0x01
	opPutCode      = 'p'
	opDeleteCode   = 'd'
	opNamed        = 0
	flagIfRevision = 0x01
)

// Encode returns the command as log entry data.
func (c Command) Encode() []byte {
	b := make([]byte, 0, 3+2*binary.MaxVarintLen64+len(c.Key)+len(c.Value))
	b = append(b, commandV1)
	switch c.Op {
	case OpPut:
		b = append(b, opPutCode)
	case OpDelete:
		b = append(b, opDeleteCode)
	default:
		b = append(b, opNamed)
		b = binary.AppendUvarint(b, uint64(len(c.Op)))
		b = append(b, c.Op...)
	}
	flags := len(b)
	b = append(b, 0)
	if c.IfRevision != nil {
		b[flags] |= flagIfRevision
		b = binary.AppendUvarint(b, *c.IfRevision)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Key)))
	b = append(b, c.Key...)
	return append(b, c.Value...)
}

// DecodeCommand decodes log entry data written by Encode (or, as JSON, by
// earlier versions). The value is a copy: it does not share data's array.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if len(data) > 0 && data[0] == '{' {
		err := json.Unmarshal(data, &c)
		return c, err
	}
	if len(data) < 3 || data[0] != commandV1 {
		return c, errors.New("not a command: unknown format")
	}
	rest := data[2:]
	switch data[1] {
	case opPutCode:
		c.Op = OpPut
	case opDeleteCode:
		c.Op = OpDelete
	case opNamed:
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return c, errors.New("truncated operation name")
		}
		c.Op, rest = Op(rest[k:k+int(n)]), rest[k+int(n):]
	default:
		return c, fmt.Errorf("unknown operation code %q", data[1])
	}
	if len(rest) == 0 {
		return c, errors.New("truncated flags")
	}
	flags, rest := rest[0], rest[1:]
	if flags&^flagIfRevision != 0 {
		return c, fmt.Errorf("unknown flags %#x", flags)
	}
	if flags&flagIfRevision != 0 {
		rev, n := binary.Uvarint(rest)
		if n <= 0 {
			return c, errors.New("truncated IfRevision")
		}
		c.IfRevision, rest = &rev, rest[n:]
	}
	klen, n := binary.Uvarint(rest)
	if n <= 0 || klen > uint64(len(rest)-n) {
		return c, errors.New("truncated key")
	}
	rest = rest[n:]
	c.Key, rest = string(rest[:klen]), rest[klen:]
	switch {
	case c.Op != OpDelete:
		c.Value = append([]byte{}, rest...)
	case len(rest) > 0:
		return c, errors.New("a delete with a value")
	}
	return c, nil
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
	c, err := DecodeCommand(e.Data)
	if err != nil {
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

// The snapshot format (snapshot.WriteTo, Store.Restore):
//
//	byte     snapshotV1
//	uvarint  the index of the last command applied
//	uvarint  the number of keys
//	per key, in no particular order:
//	uvarint  the key's length, then the key
//	uvarint  its revision
//	uvarint  the value's length, then the value
//
// Every node writes one every few thousand entries (-snapshot-threshold),
// and a back-up is one: a binary format costs a fraction of JSON's CPU
// (whose base64 values and sorted keys made it cost, at 10,000 keys, as
// much as a few thousand writes) and streams. Snapshots written as JSON by
// earlier versions of the example (snapshotJSON, starting with '{') are
// still read.
const snapshotV1 = 0x01

// snapshotJSON is the snapshot format of earlier versions: JSON.
type snapshotJSON struct {
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
	return snapshot{applied: s.applied, items: maps.Clone(s.items)}, nil
}

// Restore replaces the store with a snapshot's contents; it implements
// raft.StateMachine.
func (s *Store) Restore(r io.Reader) error {
	applied, items, err := readSnapshot(bufio.NewReaderSize(r, 64<<10))
	if err != nil {
		return fmt.Errorf("store: reading the snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items, s.applied = items, applied
	return nil
}

func readSnapshot(br *bufio.Reader) (applied uint64, items map[string]item, err error) {
	format, err := br.Peek(1)
	if err != nil {
		return 0, nil, err
	}
	if format[0] == '{' {
		var d snapshotJSON
		if err := json.NewDecoder(br).Decode(&d); err != nil {
			return 0, nil, err
		}
		if d.Items == nil {
			d.Items = map[string]item{}
		}
		return d.Applied, d.Items, nil
	}
	if format[0] != snapshotV1 {
		return 0, nil, fmt.Errorf("unknown format %#x", format[0])
	}
	br.ReadByte() //nolint:errcheck // peeked
	// A truncated snapshot ends in io.ErrUnexpectedEOF, not a clean EOF.
	uvarint := func(what string) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		if v, err = binary.ReadUvarint(br); err != nil {
			err = fmt.Errorf("%s: %w", what, noEOF(err))
		}
		return v
	}
	bytesOf := func(what string, max uint64) []byte {
		n := uvarint(what + " length")
		if err != nil {
			return nil
		}
		if n > max {
			err = fmt.Errorf("%s of %d bytes is longer than the limit of %d", what, n, max)
			return nil
		}
		b := make([]byte, n)
		if _, rerr := io.ReadFull(br, b); rerr != nil {
			err = fmt.Errorf("%s: %w", what, noEOF(rerr))
		}
		return b
	}
	applied = uvarint("applied index")
	count := uvarint("key count")
	items = make(map[string]item, min(count, 1<<20))
	for i := uint64(0); i < count && err == nil; i++ {
		key := string(bytesOf("key", MaxKeySize))
		rev := uvarint("revision")
		value := bytesOf("value", MaxValueSize)
		items[key] = item{Value: value, Revision: rev}
	}
	if err != nil {
		return 0, nil, err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return 0, nil, errors.New("data after the last key")
	}
	return applied, items, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// snapshot is a copy of the store, written out in the snapshot format.
type snapshot struct {
	applied uint64
	items   map[string]item
}

func (sn snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var num [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) { bw.Write(binary.AppendUvarint(num[:0], v)) } //nolint:errcheck // Flush reports it
	bw.WriteByte(snapshotV1)                                                 //nolint:errcheck
	uvarint(sn.applied)
	uvarint(uint64(len(sn.items)))
	for k, it := range sn.items {
		uvarint(uint64(len(k)))
		bw.WriteString(k) //nolint:errcheck
		uvarint(it.Revision)
		uvarint(uint64(len(it.Value)))
		bw.Write(it.Value) //nolint:errcheck
	}
	err := bw.Flush()
	return cw.n, err
}

func (sn snapshot) Release() {}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
