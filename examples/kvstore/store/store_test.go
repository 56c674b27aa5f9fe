package store

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft"
)

func apply(t *testing.T, s *Store, index uint64, c Command) Result {
	t.Helper()
	res, ok := s.Apply(raft.Entry{Index: index, Type: raft.EntryCommand, Data: c.Encode()}).(Result)
	require.True(t, ok)
	return res
}

func rev(r uint64) *uint64 { return &r }

func TestStore_PutDeleteAndCompareAndSwapOnRevisions(t *testing.T) {
	s := New()
	assert.Equal(t, Result{Revision: 3}, apply(t, s, 3, Command{Op: OpPut, Key: "k", Value: []byte("v1")}))
	v, r, ok := s.Get("k")
	require.True(t, ok)
	assert.Equal(t, "v1", string(v))
	assert.Equal(t, uint64(3), r)

	// A CAS on a stale revision changes nothing and reports the current one.
	assert.Equal(t, Result{Revision: 3, Conflict: true}, apply(t, s, 4, Command{Op: OpPut, Key: "k", Value: []byte("x"), IfRevision: rev(2)}))
	// Revision 0: the key must not exist.
	assert.Equal(t, Result{Revision: 3, Conflict: true}, apply(t, s, 5, Command{Op: OpPut, Key: "k", Value: []byte("x"), IfRevision: rev(0)}))
	assert.Equal(t, Result{Revision: 6}, apply(t, s, 6, Command{Op: OpPut, Key: "k", Value: []byte("v2"), IfRevision: rev(3)}))
	assert.Equal(t, Result{Revision: 7}, apply(t, s, 7, Command{Op: OpPut, Key: "new", Value: []byte("n"), IfRevision: rev(0)}))

	assert.Equal(t, Result{Revision: 6, Conflict: true}, apply(t, s, 8, Command{Op: OpDelete, Key: "k", IfRevision: rev(3)}))
	assert.Equal(t, Result{Revision: 9}, apply(t, s, 9, Command{Op: OpDelete, Key: "k", IfRevision: rev(6)}))
	_, _, ok = s.Get("k")
	assert.False(t, ok)
	assert.Equal(t, 1, s.Len())

	res := s.Apply(raft.Entry{Index: 10, Data: []byte("not json")}).(Result)
	assert.Error(t, res.Err, "an undecodable command is reported, not applied")
	assert.Equal(t, 1, s.Len())
}

func TestStore_SnapshotRestoresTheSameState(t *testing.T) {
	s := New()
	apply(t, s, 1, Command{Op: OpPut, Key: "a", Value: []byte("1")})
	apply(t, s, 2, Command{Op: OpPut, Key: "b", Value: []byte{0, 255, 7}})
	snap, err := s.Snapshot()
	require.NoError(t, err)
	// Writes after the snapshot do not leak into it.
	apply(t, s, 3, Command{Op: OpPut, Key: "a", Value: []byte("changed")})
	var buf bytes.Buffer
	_, err = snap.WriteTo(&buf)
	require.NoError(t, err)
	snap.Release()

	restored := New()
	apply(t, restored, 1, Command{Op: OpPut, Key: "gone", Value: []byte("x")})
	require.NoError(t, restored.Restore(&buf))
	for key, want := range map[string]string{"a": "1", "b": "\x00\xff\x07"} {
		v, _, ok := restored.Get(key)
		require.True(t, ok, key)
		assert.Equal(t, want, string(v))
	}
	_, r, _ := restored.Get("b")
	assert.Equal(t, uint64(2), r, "revisions survive a snapshot, so a CAS works after a restart")
	_, _, ok := restored.Get("gone")
	assert.False(t, ok, "Restore replaces the whole state")

	assert.Error(t, New().Restore(strings.NewReader("{garbage")))
}

func TestCommand_ValidateEnforcesTheLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Command
		err  string
	}{
		{"ok", Command{Op: OpPut, Key: "k", Value: make([]byte, MaxValueSize)}, ""},
		{"empty key", Command{Op: OpPut}, "empty key"},
		{"long key", Command{Op: OpPut, Key: strings.Repeat("k", MaxKeySize+1)}, "longer than the limit"},
		{"long value", Command{Op: OpPut, Key: "k", Value: make([]byte, MaxValueSize+1)}, "longer than the limit"},
		{"unknown op", Command{Op: "append", Key: "k"}, "unknown operation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.err == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.err)
			}
		})
	}
}

func TestCommand_EncodeDecodeRoundTrip(t *testing.T) {
	for _, c := range []Command{
		{Op: OpPut, Key: "k", Value: []byte("v")},
		{Op: OpPut, Key: "a/b", Value: []byte{}},
		{Op: OpPut, Key: "k", Value: []byte{0, '{', 255}, IfRevision: rev(0)},
		{Op: OpDelete, Key: "k"},
		{Op: OpDelete, Key: "k", IfRevision: rev(1 << 40)},
		{Op: OpPut, Key: strings.Repeat("k", MaxKeySize), Value: make([]byte, 1<<16)},
		{Op: "append", Key: "k", Value: []byte("v"), IfRevision: rev(2)}, // a later version's
	} {
		got, err := DecodeCommand(c.Encode())
		require.NoError(t, err)
		if c.Op == OpPut && c.Value == nil {
			c.Value = []byte{}
		}
		assert.Equal(t, c, got)
	}
	res := New().Apply(raft.Entry{Index: 1, Data: Command{Op: "append", Key: "k", Value: []byte("x")}.Encode()}).(Result)
	assert.ErrorContains(t, res.Err, "unknown operation", "an operation this version does not know is refused, not applied")
}

func TestCommand_DecodeReadsEarlierJSONCommands(t *testing.T) {
	// What earlier versions of the example wrote into the log.
	got, err := DecodeCommand([]byte(`{"op":"put","key":"k","value":"djE=","ifRevision":4}`))
	require.NoError(t, err)
	assert.Equal(t, Command{Op: OpPut, Key: "k", Value: []byte("v1"), IfRevision: rev(4)}, got)

	s := New()
	res := s.Apply(raft.Entry{Index: 2, Data: []byte(`{"op":"put","key":"k","value":"djE="}`)}).(Result)
	require.NoError(t, res.Err)
	v, r, ok := s.Get("k")
	require.True(t, ok)
	assert.Equal(t, "v1", string(v))
	assert.Equal(t, uint64(2), r)
}

func TestCommand_DecodeRefusesWhatItCannotRead(t *testing.T) {
	valid := Command{Op: OpPut, Key: "key", Value: []byte("v"), IfRevision: rev(300)}.Encode()
	for name, data := range map[string][]byte{
		"empty":             nil,
		"unknown format":    append([]byte{0x02}, valid[1:]...),
		"unknown op":        {commandV1, 'x', 0, 1, 'k'},
		"truncated op name": {commandV1, opNamed, 5, 'a', 'b'},
		"no flags":          {commandV1, opNamed, 1, 'a'},
		"unknown flag":      {commandV1, opPutCode, 0x02, 1, 'k'},
		"truncated rev":     valid[:4],
		"truncated key":     valid[:7],
		"delete and value":  append(Command{Op: OpDelete, Key: "k"}.Encode(), 'v'),
	} {
		_, err := DecodeCommand(data)
		assert.Error(t, err, name)
	}
}

func TestStore_RestoresEarlierJSONSnapshots(t *testing.T) {
	s := New()
	require.NoError(t, s.Restore(strings.NewReader(`{"applied":9,"items":{"k":{"value":"djE=","revision":7}}}`)))
	v, r, ok := s.Get("k")
	require.True(t, ok)
	assert.Equal(t, "v1", string(v))
	assert.Equal(t, uint64(7), r)
	assert.Equal(t, Result{Revision: 10}, apply(t, s, 10, Command{Op: OpPut, Key: "k", Value: []byte("v2"), IfRevision: rev(7)}))
}

func TestStore_RestoreRefusesADamagedSnapshot(t *testing.T) {
	s := New()
	for i := range 50 {
		apply(t, s, uint64(i+1), Command{Op: OpPut, Key: fmt.Sprint("key", i), Value: bytes.Repeat([]byte{byte(i)}, i)})
	}
	snap, err := s.Snapshot()
	require.NoError(t, err)
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	require.NoError(t, err)
	assert.Equal(t, int64(buf.Len()), n)
	data := buf.Bytes()
	require.NoError(t, New().Restore(bytes.NewReader(data)))

	for name, bad := range map[string][]byte{
		"empty":          {},
		"truncated":      data[:len(data)-1],
		"cut in a key":   data[:len(data)/2],
		"data after":     append(bytes.Clone(data), 0),
		"unknown format": append([]byte{0x7f}, data[1:]...),
		"huge value":     {snapshotV1, 1, 1, 1, 'k', 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		restored := New()
		apply(t, restored, 1, Command{Op: OpPut, Key: "kept", Value: []byte("x")})
		assert.Error(t, restored.Restore(bytes.NewReader(bad)), name)
		_, _, ok := restored.Get("kept")
		assert.True(t, ok, "%s: a failed Restore leaves the store as it was", name)
	}
}
