package raft

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/anishathalye/porcupine"
)

// A replicated key-value store for the linearizability tests (lin_test.go):
// the state machine that runs on the Nodes, and the sequential specification
// (a porcupine.Model) that the histories of its clients are checked against.

type kvOpKind uint8

const (
	kvGet kvOpKind = iota + 1
	kvPut
	kvAppend
)

func (k kvOpKind) String() string {
	switch k {
	case kvGet:
		return "get"
	case kvPut:
		return "put"
	case kvAppend:
		return "append"
	}
	return fmt.Sprintf("kvOpKind(%d)", uint8(k))
}

// kvInput is what a client asked for.
type kvInput struct {
	kind       kvOpKind
	key, value string // value: for put and append
}

// kvOutput is what the client was told. Get returns the value read, Append
// the value of the key after the append, Put nothing. unknown marks a write
// whose outcome the client never learned (see lin_test.go): it may or may not
// have taken effect, and its output is not checked.
type kvOutput struct {
	value   string
	unknown bool
}

// encodeKV is the command in Entry.Data: the kind, the key's length as a
// uvarint, the key, then the value.
func encodeKV(kind kvOpKind, key, value string) []byte {
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(key)+len(value))
	buf = append(buf, byte(kind))
	buf = binary.AppendUvarint(buf, uint64(len(key)))
	buf = append(buf, key...)
	return append(buf, value...)
}

func decodeKV(data []byte) (kind kvOpKind, key, value string, err error) {
	if len(data) == 0 {
		return 0, "", "", fmt.Errorf("empty command")
	}
	kind = kvOpKind(data[0])
	if kind != kvPut && kind != kvAppend {
		return 0, "", "", fmt.Errorf("bad command kind %d", data[0])
	}
	n, k := binary.Uvarint(data[1:])
	if k <= 0 || n > uint64(len(data)-1-k) {
		return 0, "", "", fmt.Errorf("bad key length")
	}
	rest := data[1+k:]
	return kind, string(rest[:n]), string(rest[n:]), nil
}

// kvSM is the key-value state machine. It also records what it applies
// (rec), so that testCluster.checkSameHistory works on a cluster of kvSMs.
type kvSM struct {
	rec recordingSM

	mu       sync.Mutex
	data     map[string]string
	restores int // snapshots restored (the runs must exercise InstallSnapshot)
}

func newKVSM() *kvSM { return &kvSM{data: map[string]string{}} }

// Apply runs a put or an append. It returns "" for a put and the key's new
// value for an append; the Node hands that to the Propose call.
func (s *kvSM) Apply(e Entry) any {
	s.rec.Apply(e) // also panics if entries come out of order
	kind, key, value, err := decodeKV(e.Data)
	if err != nil {
		// Only the tests propose, and only well-formed commands: a bad one
		// means the log was corrupted on its way here.
		panic(fmt.Sprintf("entry %d (term %d): %v", e.Index, e.Term, err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind == kvPut {
		s.data[key] = value
		return ""
	}
	s.data[key] += value
	return s.data[key]
}

// get reads key locally. It is linearizable only after a successful
// Node.LinearizableRead on the node this state machine belongs to.
func (s *kvSM) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data[key]
}

// Snapshot copies the map: a point-in-time view that WriteTo encodes later,
// while Apply goes on.
func (s *kvSM) Snapshot() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return kvSnapshot(maps.Clone(s.data)), nil
}

// Restore replaces the map with a snapshot's.
func (s *kvSM) Restore(r io.Reader) error {
	data := map[string]string{}
	br := bufio.NewReader(r)
	for {
		key, err := readKVString(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		value, err := readKVString(br)
		if err != nil {
			return fmt.Errorf("snapshot: value of %q: %w", key, err)
		}
		data[key] = value
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = data
	s.restores++
	return nil
}

func readKVString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// kvSnapshot is a copy of the map, encoded as uvarint-prefixed key, value
// pairs in key order.
type kvSnapshot map[string]string

func (k kvSnapshot) WriteTo(w io.Writer) (int64, error) {
	var buf []byte
	for _, key := range slices.Sorted(maps.Keys(k)) {
		buf = binary.AppendUvarint(buf, uint64(len(key)))
		buf = append(buf, key...)
		buf = binary.AppendUvarint(buf, uint64(len(k[key])))
		buf = append(buf, k[key]...)
	}
	n, err := w.Write(buf)
	return int64(n), err
}

func (k kvSnapshot) Release() {}

// kvModel is the sequential specification of the store, partitioned by key:
// operations on different keys never constrain each other, so each key is
// checked on its own and its state is just the key's value.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			key := op.Input.(kvInput).key
			if _, ok := byKey[key]; !ok {
				keys = append(keys, key)
			}
			byKey[key] = append(byKey[key], op)
		}
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, key := range keys {
			parts = append(parts, byKey[key])
		}
		return parts
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		value, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.kind {
		case kvGet:
			return out.unknown || out.value == value, value
		case kvPut:
			return true, in.value
		case kvAppend:
			next := value + in.value
			return out.unknown || out.value == next, next
		}
		return false, value
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		var s string
		if in.kind == kvGet {
			s = fmt.Sprintf("get(%s)", in.key)
		} else {
			s = fmt.Sprintf("%s(%s, %q)", in.kind, in.key, in.value)
		}
		switch {
		case out.unknown:
			return s + " -> ?"
		case in.kind == kvPut:
			return s
		}
		return s + " -> " + shortValue(out.value)
	},
	DescribeState: func(state any) string { return shortValue(state.(string)) },
	DescribeOperationMetadata: func(info any) string {
		if info == nil {
			return ""
		}
		return fmt.Sprint(info)
	},
}

// shortValue abbreviates a long value (appends make values grow) to its end,
// which names the last writes.
func shortValue(v string) string {
	const keep = 40
	if len(v) <= keep {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q", "…"+v[len(v)-keep:]) + fmt.Sprintf(" (%d bytes, %d writes)", len(v), strings.Count(v, ";"))
}
