package store

import (
	"bytes"
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
