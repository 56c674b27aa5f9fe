package raft

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every Storage implementation must behave the same for compaction and
// snapshots; reopen is false for MemoryStorage (it has no files).
type storageKind struct {
	name   string
	open   func(t *testing.T, dir string) Storage
	reopen bool
}

var storageKinds = []storageKind{
	{"memory", func(t *testing.T, dir string) Storage { return NewMemoryStorage() }, false},
	{"file", func(t *testing.T, dir string) Storage { return openFS(t, dir, WithSegmentSize(4096)) }, true},
	{"host group", openHostGroup, true},
}

func closeStorage(s Storage) {
	if c, ok := s.(io.Closer); ok {
		c.Close()
	}
}

func TestStorage_CompactAtEveryBoundary(t *testing.T) {
	cases := []struct {
		name      string
		compactTo uint64
		wantFirst uint64
		wantLast  uint64
	}{
		{"index 0 does nothing", 0, 1, 300},
		{"first entry", 1, 2, 300},
		{"middle", 150, 151, 300},
		{"last entry: empty log", 300, 301, 300},
		{"beyond the log (snapshot install)", 500, 501, 500},
	}
	for _, kind := range storageKinds {
		for _, tc := range cases {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s := kind.open(t, dir)
				for i := uint64(1); i <= 300; i += 10 {
					require.NoError(t, s.Save(HardState{Term: 2, Commit: i}, testEntries(i, i+9, 2)))
				}
				term := uint64(2)
				require.NoError(t, s.Compact(tc.compactTo, term))
				check := func(s Storage) {
					first, err := s.FirstIndex()
					require.NoError(t, err)
					last, err := s.LastIndex()
					require.NoError(t, err)
					assert.Equal(t, tc.wantFirst, first)
					assert.Equal(t, tc.wantLast, last)
					pt, err := s.Term(first - 1)
					require.NoError(t, err)
					if tc.compactTo > 0 {
						assert.Equal(t, term, pt, "the term of the last discarded entry is kept")
					}
					ents, err := s.Entries(first, last+1)
					require.NoError(t, err)
					if last >= first {
						assert.Equal(t, testEntries(first, last, 2), ents)
					}
					_, err = s.Entries(first-1, last+1)
					assert.Error(t, err, "compacted entries are gone")
				}
				check(s)
				// The log goes on after compaction.
				require.NoError(t, s.Save(HardState{Term: 3}, testEntries(tc.wantLast+1, tc.wantLast+5, 3)))
				if kind.reopen {
					closeStorage(s)
					s = kind.open(t, dir)
				}
				defer closeStorage(s)
				last, _ := s.LastIndex()
				assert.Equal(t, tc.wantLast+5, last)
				ents, err := s.Entries(tc.wantLast+1, last+1)
				require.NoError(t, err)
				assert.Equal(t, testEntries(tc.wantLast+1, tc.wantLast+5, 3), ents)
			})
		}
	}
}

func TestFileStorage_CompactionDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir, WithSegmentSize(4096))
	for i := uint64(1); i <= 1000; i += 10 {
		require.NoError(t, s.Save(HardState{Term: 1}, testEntries(i, i+9, 1)))
	}
	before, _ := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	require.NoError(t, s.Compact(900, 1))
	after, _ := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	assert.Less(t, len(after), len(before)/2, "segments holding only compacted entries are deleted")
	require.NoError(t, s.Close())
	s = openFS(t, dir, WithSegmentSize(4096))
	defer s.Close()
	first, _ := s.FirstIndex()
	assert.Equal(t, uint64(901), first)
	ents, err := s.Entries(901, 1001)
	require.NoError(t, err)
	assert.Equal(t, testEntries(901, 1000, 1), ents)
}

func TestStorage_Snapshots(t *testing.T) {
	for _, kind := range storageKinds {
		t.Run(kind.name, func(t *testing.T) {
			dir := t.TempDir()
			s := kind.open(t, dir)
			_, _, err := s.Snapshot()
			require.ErrorIs(t, err, ErrNoSnapshot)
			members := []Member{{ID: 1, Addr: "a"}, {ID: 2, Learner: true}}
			for i, data := range []string{"first", "second", "third"} {
				meta := SnapshotMeta{Index: uint64(10 * (i + 1)), Term: 2, Members: members}
				require.NoError(t, s.SaveSnapshot(meta, strings.NewReader(data)))
			}
			check := func(s Storage) {
				meta, rc, err := s.Snapshot()
				require.NoError(t, err)
				defer rc.Close()
				data, err := io.ReadAll(rc)
				require.NoError(t, err)
				assert.Equal(t, "third", string(data))
				assert.Equal(t, SnapshotMeta{Index: 30, Term: 2, Members: members}, meta)
			}
			check(s)
			if kind.reopen {
				closeStorage(s)
				snaps, _ := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
				inGroupDir, _ := filepath.Glob(filepath.Join(dir, "group-*", "snap-*.snap"))
				assert.Len(t, append(snaps, inGroupDir...), 2, "the two newest snapshots are kept")
				s = kind.open(t, dir)
				check(s)
			}
			closeStorage(s)
		})
	}
}

func TestFileStorage_SnapshotCrashSafety(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir)
	require.NoError(t, s.SaveSnapshot(SnapshotMeta{Index: 5, Term: 1}, strings.NewReader("old")))
	require.NoError(t, s.Close())
	// A crash while writing the next one leaves a .tmp file: it is ignored
	// and removed.
	require.NoError(t, os.WriteFile(filepath.Join(dir, snapName(9, 1)+".tmp"), []byte("RKSNAP01 half"), 0o644))
	s = openFS(t, dir)
	meta, rc, err := s.Snapshot()
	require.NoError(t, err)
	data, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, uint64(5), meta.Index)
	assert.Equal(t, "old", string(data))
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	assert.Empty(t, tmps)
	// A failing reader leaves the old snapshot in place.
	err = s.SaveSnapshot(SnapshotMeta{Index: 9, Term: 1}, io.MultiReader(strings.NewReader("part"), errReader{}))
	require.Error(t, err)
	meta, rc, err = s.Snapshot()
	require.NoError(t, err)
	rc.Close()
	assert.Equal(t, uint64(5), meta.Index)
	require.NoError(t, s.Close())
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestFileStorage_CorruptSnapshotDetected(t *testing.T) {
	cases := []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"flipped data byte", func(b []byte) []byte { b[40] ^= 1; return b }},
		{"flipped metadata byte", func(b []byte) []byte { b[13] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-5] }},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openFS(t, dir)
			require.NoError(t, s.SaveSnapshot(SnapshotMeta{Index: 5, Term: 1, Members: []Member{{ID: 1}}}, bytes.NewReader(bytes.Repeat([]byte("x"), 100))))
			require.NoError(t, s.Close())
			path := filepath.Join(dir, snapName(5, 1))
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tc.damage(b), 0o644))
			_, err = OpenFileStorage(dir)
			assert.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

func TestFileStorage_CompactExactlyAtSegmentBoundary(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir, WithSegmentSize(4096))
	for i := uint64(1); i <= 300; i += 10 {
		require.NoError(t, s.Save(HardState{Term: 1}, testEntries(i, i+9, 1)))
	}
	// The last entry of the first segment.
	s.mu.Lock()
	firstSeq := s.segs[0].seq
	var boundary uint64
	for i, loc := range s.locs {
		if loc.seq == firstSeq {
			boundary = s.first + uint64(i)
		}
	}
	s.mu.Unlock()
	require.Positive(t, boundary)
	require.NoError(t, s.Compact(boundary, 1))
	_, err := os.Stat(filepath.Join(dir, "wal-0000000000000001.log"))
	assert.True(t, os.IsNotExist(err), "the first segment held only compacted entries")
	require.NoError(t, s.Close())
	s = openFS(t, dir, WithSegmentSize(4096))
	defer s.Close()
	first, _ := s.FirstIndex()
	assert.Equal(t, boundary+1, first)
	ents, err := s.Entries(first, 301)
	require.NoError(t, err)
	assert.Equal(t, testEntries(first, 300, 1), ents)
}

// TestStorage_SnapshotKeepsMemberMetadata: the configuration a snapshot
// records keeps each member's metadata, in both storages and across a
// reopen of the FileStorage.
func TestStorage_SnapshotKeepsMemberMetadata(t *testing.T) {
	dir := t.TempDir()
	fs, err := OpenFileStorage(dir, WithNoSync())
	require.NoError(t, err)
	meta := SnapshotMeta{Index: 5, Term: 2, Members: []Member{
		{ID: 1, Addr: "a:1", Meta: map[string]string{"http": "10.0.0.1:8080"}},
		{ID: 2, Addr: "b:1", Learner: true},
	}}
	for name, s := range map[string]Storage{"memory": NewMemoryStorage(), "file": fs} {
		require.NoError(t, s.SaveSnapshot(meta, strings.NewReader("state")), name)
		got, rc, err := s.Snapshot()
		require.NoError(t, err, name)
		rc.Close()
		assert.Equal(t, meta, got, name)
	}
	require.NoError(t, fs.Close())
	fs, err = OpenFileStorage(dir, WithNoSync())
	require.NoError(t, err)
	defer fs.Close()
	got, rc, err := fs.Snapshot()
	require.NoError(t, err)
	rc.Close()
	assert.Equal(t, meta, got, "after a reopen")
}
