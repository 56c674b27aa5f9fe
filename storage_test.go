package raft

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemoryStorage(t *testing.T) {
	s := NewMemoryStorage()
	hs, err := s.InitialState()
	require.NoError(t, err)
	assert.Zero(t, hs)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	assert.Equal(t, uint64(1), first)
	assert.Equal(t, uint64(0), last)

	ents := []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1}, {Index: 3, Term: 2}}
	require.NoError(t, s.Save(HardState{Term: 2, Vote: 1, Commit: 2}, ents))
	got, err := s.Entries(1, 4)
	require.NoError(t, err)
	assert.Equal(t, ents, got)
	hs, _ = s.InitialState()
	assert.Equal(t, HardState{Term: 2, Vote: 1, Commit: 2}, hs)

	// Replacing a suffix truncates it and leaves earlier slices intact.
	require.NoError(t, s.Save(HardState{Term: 3}, []Entry{{Index: 2, Term: 3}}))
	last, _ = s.LastIndex()
	assert.Equal(t, uint64(2), last)
	assert.Equal(t, uint64(1), got[1].Term, "a slice returned earlier does not change")
	now, err := s.Entries(1, 3)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), now[1].Term)

	// Bad input is an error, not a panic.
	assert.Error(t, s.Save(HardState{}, []Entry{{Index: 5, Term: 3}}), "gap")
	assert.Error(t, s.Save(HardState{}, []Entry{{Index: 3, Term: 3}, {Index: 5, Term: 3}}), "not consecutive")
	_, err = s.Entries(0, 2)
	assert.Error(t, err)
	_, err = s.Entries(2, 9)
	assert.Error(t, err)
}

// TestStorage_ErrorsWrapSentinels: both storages report out-of-range reads
// with ErrOutOfRange, and a closed FileStorage with ErrClosed, so that
// callers can tell them apart with errors.Is.
func TestStorage_ErrorsWrapSentinels(t *testing.T) {
	fs, err := OpenFileStorage(t.TempDir(), WithNoSync())
	require.NoError(t, err)
	for name, s := range map[string]Storage{"memory": NewMemoryStorage(), "file": fs} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, s.Save(HardState{Term: 1}, []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1}}))
			_, err := s.Entries(1, 4)
			assert.ErrorIs(t, err, ErrOutOfRange)
			_, err = s.Entries(0, 2)
			assert.ErrorIs(t, err, ErrOutOfRange)
			_, err = s.Term(3)
			assert.ErrorIs(t, err, ErrOutOfRange)
			require.NoError(t, s.Compact(1, 1))
			_, err = s.Term(0)
			assert.ErrorIs(t, err, ErrOutOfRange, "compacted away")
		})
	}
	require.NoError(t, fs.Close())
	_, err = fs.Term(2)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, fs.Save(HardState{Term: 1}, nil), ErrClosed)
}

// SaveSnapshot with a nil reader is a clear error, not a panic, in both
// storages.
func TestStorage_SaveSnapshotRefusesNilData(t *testing.T) {
	fs, err := OpenFileStorage(t.TempDir())
	require.NoError(t, err)
	defer fs.Close()
	for name, st := range map[string]Storage{"memory": NewMemoryStorage(), "file": fs} {
		err := st.SaveSnapshot(SnapshotMeta{Index: 1, Term: 1, Members: []Member{{ID: 1}}}, nil)
		assert.ErrorContains(t, err, "nil", name)
		_, _, err = st.Snapshot()
		assert.ErrorIs(t, err, ErrNoSnapshot, name)
	}
}
