package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openFS(t *testing.T, dir string, opts ...FileOption) *FileStorage {
	t.Helper()
	s, err := OpenFileStorage(dir, opts...)
	require.NoError(t, err)
	return s
}

func testEntries(from, to, term uint64) []Entry {
	var out []Entry
	for i := from; i <= to; i++ {
		out = append(out, Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("entry %d term %d", i, term))})
	}
	return out
}

func allEntries(t *testing.T, s Storage) []Entry {
	t.Helper()
	first, err := s.FirstIndex()
	require.NoError(t, err)
	last, err := s.LastIndex()
	require.NoError(t, err)
	ents, err := s.Entries(first, last+1)
	require.NoError(t, err)
	return ents
}

func TestFileStorage_EmptyAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir)
	hs, err := s.InitialState()
	require.NoError(t, err)
	assert.Zero(t, hs)
	assert.Empty(t, allEntries(t, s))

	require.NoError(t, s.Save(HardState{Term: 2, Vote: 1, Commit: 3}, testEntries(1, 5, 2)))
	require.NoError(t, s.Save(HardState{Term: 2, Vote: 1, Commit: 5}, nil))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	s = openFS(t, dir)
	defer s.Close()
	hs, _ = s.InitialState()
	assert.Equal(t, HardState{Term: 2, Vote: 1, Commit: 5}, hs)
	assert.Equal(t, testEntries(1, 5, 2), allEntries(t, s))
}

func TestFileStorage_SuffixTruncation(t *testing.T) {
	cases := []struct {
		name  string
		saves [][]Entry
		want  []Entry
	}{
		{"append", [][]Entry{testEntries(1, 3, 1), testEntries(4, 6, 1)}, testEntries(1, 6, 1)},
		{"overwrite the middle", [][]Entry{testEntries(1, 6, 1), testEntries(4, 4, 2)}, append(testEntries(1, 3, 1), testEntries(4, 4, 2)...)},
		{"overwrite everything", [][]Entry{testEntries(1, 6, 1), testEntries(1, 2, 3)}, testEntries(1, 2, 3)},
		{"overwrite then extend", [][]Entry{testEntries(1, 6, 1), testEntries(3, 8, 2)}, append(testEntries(1, 2, 1), testEntries(3, 8, 2)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openFS(t, dir)
			for _, ents := range tc.saves {
				require.NoError(t, s.Save(HardState{Term: 3}, ents))
			}
			assert.Equal(t, tc.want, allEntries(t, s))
			require.NoError(t, s.Close())
			s = openFS(t, dir)
			defer s.Close()
			assert.Equal(t, tc.want, allEntries(t, s), "after reopening")
		})
	}
}

func TestFileStorage_Segments(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir, WithSegmentSize(4096))
	var want []Entry
	for i := uint64(1); i <= 500; i += 10 {
		ents := testEntries(i, i+9, 1)
		require.NoError(t, s.Save(HardState{Term: 1, Commit: i}, ents))
		want = append(want, ents...)
	}
	// A truncation reaching back into an earlier segment.
	require.NoError(t, s.Save(HardState{Term: 2, Commit: 100}, testEntries(101, 120, 2)))
	want = append(want[:100], testEntries(101, 120, 2)...)
	require.NoError(t, s.Close())
	segs, _ := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	assert.Greater(t, len(segs), 3, "the log spans several segments")

	s = openFS(t, dir, WithSegmentSize(4096))
	defer s.Close()
	assert.Equal(t, want, allEntries(t, s))
	hs, _ := s.InitialState()
	assert.Equal(t, HardState{Term: 2, Commit: 100}, hs)
	part, err := s.Entries(95, 105)
	require.NoError(t, err)
	assert.Equal(t, want[94:104], part)
}

func TestFileStorage_BadInput(t *testing.T) {
	s := openFS(t, t.TempDir())
	defer s.Close()
	require.NoError(t, s.Save(HardState{Term: 1}, testEntries(1, 3, 1)))
	assert.Error(t, s.Save(HardState{Term: 1}, testEntries(5, 6, 1)), "a gap")
	assert.Error(t, s.Save(HardState{Term: 1}, []Entry{{Index: 4, Term: 1}, {Index: 6, Term: 1}}), "not consecutive")
	_, err := s.Entries(0, 2)
	assert.Error(t, err)
	_, err = s.Entries(2, 9)
	assert.Error(t, err)
	assert.Equal(t, testEntries(1, 3, 1), allEntries(t, s), "a refused save changes nothing")
	_, err = OpenFileStorage(t.TempDir(), WithSegmentSize(10))
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestFileStorage_DirectoryLock(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir)
	_, err := OpenFileStorage(dir)
	assert.ErrorIs(t, err, ErrLocked)
	require.NoError(t, s.Close())
	s = openFS(t, dir)
	require.NoError(t, s.Close())
}

func TestFileStorage_FailedSyncIsSticky(t *testing.T) {
	diskFull := errors.New("no space left on device")
	var fail atomic.Bool
	hook := func(f *os.File) error {
		if fail.Load() {
			return diskFull
		}
		return nil
	}
	dir := t.TempDir()
	s := openFS(t, dir, func(o *fileOptions) { o.syncHook = hook })
	require.NoError(t, s.Save(HardState{Term: 1}, testEntries(1, 2, 1)))
	fail.Store(true)
	err := s.Save(HardState{Term: 1}, testEntries(3, 3, 1))
	assert.ErrorIs(t, err, diskFull)
	fail.Store(false)
	assert.ErrorIs(t, s.Save(HardState{Term: 1}, testEntries(3, 3, 1)), diskFull, "fsync errors are not retried")
	_, err = s.InitialState()
	assert.ErrorIs(t, err, diskFull)
	require.NoError(t, s.Close())
	// Reopening recovers what is on disk.
	s = openFS(t, dir)
	defer s.Close()
	assert.GreaterOrEqual(t, len(allEntries(t, s)), 2)
}

func TestFileStorage_GroupCommit(t *testing.T) {
	var syncs atomic.Int64
	s := openFS(t, t.TempDir(), func(o *fileOptions) {
		o.syncHook = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	})
	defer s.Close()
	before := syncs.Load()
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				assert.NoError(t, s.Save(HardState{Term: uint64(w*each + i + 1)}, nil))
			}
		}()
	}
	wg.Wait()
	n := syncs.Load() - before
	t.Logf("%d saves, %d fsyncs", writers*each, n)
	assert.Less(t, n, int64(writers*each), "concurrent saves share fsyncs")
}

// lastRecordOffset returns where the last record of the segment starts.
func lastRecordOffset(t *testing.T, path string) (int, int) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	off, last := len(walMagic), 0
	for off < len(data) {
		_, _, n, ok := parseRecord(data[off:])
		require.True(t, ok)
		last = off
		off += n
	}
	return last, len(data)
}

func TestFileStorage_TornTailAtEveryOffset(t *testing.T) {
	base := t.TempDir()
	s := openFS(t, base)
	require.NoError(t, s.Save(HardState{Term: 1, Commit: 1}, testEntries(1, 4, 1)))
	// The hard state is unchanged, so entry 5 is the last record.
	require.NoError(t, s.Save(HardState{Term: 1, Commit: 1}, testEntries(5, 5, 1)))
	require.NoError(t, s.Close())
	seg := filepath.Join(base, "wal-0000000000000001.log")
	lastOff, size := lastRecordOffset(t, seg)
	orig, err := os.ReadFile(seg)
	require.NoError(t, err)

	for cut := lastOff; cut < size; cut++ {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), orig[:cut], 0o644))
		s, err := OpenFileStorage(dir)
		require.NoError(t, err, "cut at %d", cut)
		ents := allEntries(t, s)
		require.Equal(t, testEntries(1, 4, 1), ents, "cut at %d: the torn record goes, the rest stays", cut)
		// The log goes on cleanly after the cut.
		require.NoError(t, s.Save(HardState{Term: 1}, testEntries(5, 6, 2)))
		require.NoError(t, s.Close())
		s = openFS(t, dir)
		require.Equal(t, append(testEntries(1, 4, 1), testEntries(5, 6, 2)...), allEntries(t, s))
		require.NoError(t, s.Close())
	}
}

// TestFileStorage_TornSaveNeverCommitsReplacedEntries tears, at every byte
// offset, a Save that replaces a suffix and advances the commit index over
// the new entries: a follower holds 6..10 of term 2, uncommitted, and the
// term-3 leader overwrites 6..7 and says commit 7. Power loss keeps any
// prefix of the write. Whatever survives, the recovered commit index must
// not cover an entry of term 2 at 6 or 7: applying it on restart would apply
// an entry that was never committed.
func TestFileStorage_TornSaveNeverCommitsReplacedEntries(t *testing.T) {
	base := t.TempDir()
	s := openFS(t, base)
	require.NoError(t, s.Save(HardState{Term: 2, Commit: 5}, testEntries(1, 10, 2)))
	seg := filepath.Join(base, "wal-0000000000000001.log")
	info, err := os.Stat(seg)
	require.NoError(t, err)
	saveStart := int(info.Size())
	require.NoError(t, s.Save(HardState{Term: 3, Commit: 7}, testEntries(6, 7, 3)))
	require.NoError(t, s.Close())
	orig, err := os.ReadFile(seg)
	require.NoError(t, err)

	for cut := saveStart; cut <= len(orig); cut++ {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), orig[:cut], 0o644))
		s, err := OpenFileStorage(dir)
		require.NoError(t, err, "cut at %d", cut)
		hs, err := s.InitialState()
		require.NoError(t, err)
		assert.GreaterOrEqual(t, hs.Commit, uint64(5), "cut at %d: a commit index the disk held before the write is kept", cut)
		for i := uint64(6); i <= hs.Commit; i++ {
			term, err := s.Term(i)
			require.NoError(t, err, "cut at %d", cut)
			require.Equal(t, uint64(3), term, "cut at %d: commit %d covers entry %d of the replaced term", cut, hs.Commit, i)
		}
		if cut == len(orig) {
			assert.Equal(t, HardState{Term: 3, Commit: 7}, hs)
			assert.Equal(t, append(testEntries(1, 5, 2), testEntries(6, 7, 3)...), allEntries(t, s))
		}
		require.NoError(t, s.Close())
	}
}

// TestFileStorage_RecoveryLowersAnUnbackedCommit opens logs whose last hard
// state names a commit index that the surviving entries do not back, as a
// log written with the hard state first and torn after it would be.
// Recovery lowers the commit index to the newest one that is backed.
func TestFileStorage_RecoveryLowersAnUnbackedCommit(t *testing.T) {
	termIs := func(term uint64) func(uint64) (uint64, bool) {
		return func(uint64) (uint64, bool) { return term, true }
	}
	base := []byte(walMagic)
	for _, e := range testEntries(1, 10, 2) {
		base = appendEntry(base, &e)
	}
	base = appendHardState(base, HardState{Term: 2, Commit: 5}, termIs(2))
	cases := []struct {
		name       string
		tail       []byte
		wantCommit uint64
		wantOrigin uint64
	}{
		{"commit over an entry of another term", appendHardState(nil, HardState{Term: 3, Commit: 7}, termIs(3)), 5, 0},
		{"commit past the last entry", appendHardState(nil, HardState{Term: 2, Commit: 12}, termIs(2)), 5, 0},
		{"backed commit is kept", appendHardState(nil, HardState{Term: 2, Commit: 8}, termIs(2)), 8, 0},
		{"a record without the term cannot be checked and is trusted", appendHardState(nil, HardState{Term: 3, Commit: 7}, func(uint64) (uint64, bool) { return 0, false }), 7, 0},
		{"the origin follows the commit term", appendHardState(nil, HardState{Term: 2, Commit: 8, Origin: 42}, termIs(2)), 8, 42},
		{"an unbacked commit with an origin is lowered", appendHardState(nil, HardState{Term: 3, Commit: 7, Origin: 42}, termIs(3)), 5, 42},
		{"before an origin, an unknown commit term is 0: trusted", appendHardState(nil, HardState{Term: 3, Commit: 7, Origin: 42}, func(uint64) (uint64, bool) { return 0, false }), 7, 42},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log := append(append([]byte(nil), base...), tc.tail...)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "wal-0000000000000001.log"), log, 0o644))
			s := openFS(t, dir)
			hs, err := s.InitialState()
			require.NoError(t, err)
			assert.Equal(t, tc.wantCommit, hs.Commit)
			assert.Equal(t, tc.wantOrigin, hs.Origin)
			require.NoError(t, s.Close())
		})
	}
}

// TestNode_StopsWhenItsCommittedLogDiffersFromTheLeaders runs the whole
// scenario over a real FileStorage: a log written by an older version (hard
// state before entries, no commit term) was torn by power loss, keeping
// HardState{Term: 3, Commit: 7} but not the term-3 entries 6..7 that the
// Save was writing over node 3's uncommitted 6..10 of term 2. Recovery
// cannot check such a record, so node 3 restarts counting 6/2 and 7/2 as
// committed. When the leader probes it, it must stop with ErrCorrupt rather
// than acknowledge a match up to 7 and diverge from the cluster for good.
func TestNode_StopsWhenItsCommittedLogDiffersFromTheLeaders(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	config := Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(members)}
	healthy := append([]Entry{config}, append(testEntries(2, 5, 2), testEntries(6, 7, 3)...)...)
	torn := append([]Entry{config}, testEntries(2, 10, 2)...)

	dir := t.TempDir()
	log := []byte(walMagic)
	for i := range torn {
		log = appendEntry(log, &torn[i])
	}
	noTerm := func(uint64) (uint64, bool) { return 0, false }
	log = appendHardState(log, HardState{Term: 2, Commit: 5}, noTerm)
	log = appendHardState(log, HardState{Term: 3, Commit: 7}, noTerm) // its entries were torn off
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wal-0000000000000001.log"), log, 0o644))
	store3 := openFS(t, dir)
	defer store3.Close()

	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := map[uint64]*Node{}
	for _, id := range []uint64{1, 2} {
		store := NewMemoryStorage()
		require.NoError(t, store.Save(HardState{Term: 3, Commit: 7}, healthy))
		n, err := NewNode(fastConfig(t, id, members), &recordingSM{}, store, nw.Transport(id))
		require.NoError(t, err)
		nodes[id] = n
	}
	n3, err := NewNode(fastConfig(t, 3, members), &recordingSM{}, store3, nw.Transport(3))
	require.NoError(t, err)
	nodes[3] = n3
	defer func() {
		for _, n := range nodes {
			require.NoError(t, n.Close())
		}
	}()

	require.Eventually(t, func() bool { return n3.Status().Err != nil }, 10*time.Second, time.Millisecond,
		"node 3 never noticed that its committed entries differ from the leader's")
	assert.ErrorIs(t, n3.Status().Err, ErrCorrupt)
	_, err = n3.Propose(context.Background(), []byte("x"))
	assert.ErrorIs(t, err, ErrStopped)
	// The healthy majority goes on.
	require.Eventually(t, func() bool {
		for _, id := range []uint64{1, 2} {
			if nodes[id].Status().Role == Leader {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := nodes[id].Propose(ctx, []byte("after"))
				return err == nil
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond)
}

func TestFileStorage_ZeroFilledTail(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir)
	require.NoError(t, s.Save(HardState{Term: 1}, testEntries(1, 3, 1)))
	require.NoError(t, s.Close())
	seg := filepath.Join(dir, "wal-0000000000000001.log")
	f, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(make([]byte, 5000))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	s = openFS(t, dir)
	defer s.Close()
	assert.Equal(t, testEntries(1, 3, 1), allEntries(t, s))
}

func TestFileStorage_CorruptionIsAnError(t *testing.T) {
	build := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		s := openFS(t, dir, WithSegmentSize(4096))
		for i := uint64(1); i <= 300; i += 10 {
			require.NoError(t, s.Save(HardState{Term: 1, Commit: i}, testEntries(i, i+9, 1)))
		}
		require.NoError(t, s.Close())
		return dir, filepath.Join(dir, "wal-0000000000000001.log")
	}
	flip := func(t *testing.T, path string, off int64) {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		data[off] ^= 0x40
		require.NoError(t, os.WriteFile(path, data, 0o644))
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir, first string)
	}{
		{"flipped byte in an early segment", func(t *testing.T, dir, first string) { flip(t, first, 200) }},
		{"flipped byte in the middle of the last segment", func(t *testing.T, dir, first string) {
			segs, _ := filepath.Glob(filepath.Join(dir, "wal-*.log"))
			flip(t, segs[len(segs)-1], 100)
		}},
		{"bad magic", func(t *testing.T, dir, first string) { flip(t, first, 0) }},
		{"missing segment", func(t *testing.T, dir, first string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "wal-0000000000000002.log")))
		}},
		{"stray file", func(t *testing.T, dir, first string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "wal-zz.log"), nil, 0o644))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, first := build(t)
			tc.damage(t, dir, first)
			_, err := OpenFileStorage(dir, WithSegmentSize(4096))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// FuzzFileStorageRecovery opens logs with arbitrary contents: recovery must
// never panic, and either open a log whose entries read back, or fail with
// ErrCorrupt.
func FuzzFileStorageRecovery(f *testing.F) {
	valid := []byte(walMagic)
	for _, e := range testEntries(1, 3, 2) {
		valid = appendEntry(valid, &e)
	}
	valid = appendHardState(valid, HardState{Term: 2, Vote: 1, Commit: 1}, func(uint64) (uint64, bool) { return 2, true })
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	compacted := appendCompact(append([]byte(nil), valid...), 2, 2)
	f.Add(compacted)
	noTerm := func(uint64) (uint64, bool) { return 0, false }
	f.Add(appendCompact(appendHardState([]byte(walMagic), HardState{Term: 3}, noTerm), 40, 3))
	f.Add([]byte(walMagic))
	f.Add([]byte("RKW"))
	f.Add(append(append([]byte{}, valid...), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "wal-0000000000000001.log"), data, 0o644))
		s, err := OpenFileStorage(dir, WithNoSync())
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		defer s.Close()
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		ents, err := s.Entries(first, last+1)
		require.NoError(t, err)
		require.Len(t, ents, int(last+1-first))
		require.NoError(t, s.Save(HardState{Term: 9}, []Entry{{Index: last + 1, Term: 9}}), "the recovered log accepts writes")
	})
}

// BenchmarkFileStorage_Append measures sequential Saves with fsync, for
// batches of 1 and 64 entries of 128 bytes.
func BenchmarkFileStorage_Append(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s, err := OpenFileStorage(b.TempDir())
			require.NoError(b, err)
			defer s.Close()
			data := make([]byte, 128)
			ents := make([]Entry, batch)
			next := uint64(1)
			b.SetBytes(int64(batch * len(data)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range ents {
					ents[j] = Entry{Index: next, Term: 1, Data: data}
					next++
				}
				if err := s.Save(HardState{Term: 1, Commit: next - 1}, ents); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkFileStorage_ConcurrentSaves: 16 goroutines save at once; group
// commit shares each fsync among them.
func BenchmarkFileStorage_ConcurrentSaves(b *testing.B) {
	var syncs atomic.Int64
	s, err := OpenFileStorage(b.TempDir(), func(o *fileOptions) {
		o.syncHook = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	})
	require.NoError(b, err)
	defer s.Close()
	var term atomic.Uint64
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Save(HardState{Term: term.Add(1)}, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
	b.ReportMetric(float64(b.N)/float64(syncs.Load()), "saves/fsync")
}

func TestFileStorage_FailedFsyncStopsTheNode(t *testing.T) {
	eio := errors.New("input/output error")
	var fail atomic.Bool
	s := openFS(t, t.TempDir(), func(o *fileOptions) {
		o.syncHook = func(f *os.File) error {
			if fail.Load() {
				return eio
			}
			return nil
		}
	})
	defer s.Close()
	nw := NewInmemNetwork()
	defer nw.Close()
	cfg := fastConfig(t, 1, []Member{{ID: 1}})
	n, err := NewNode(cfg, &recordingSM{}, s, nw.Transport(1))
	require.NoError(t, err)
	defer n.Close()
	require.Eventually(t, func() bool { return n.Status().Role == Leader }, 5*time.Second, time.Millisecond)
	_, err = n.Propose(context.Background(), []byte("ok"))
	require.NoError(t, err)

	fail.Store(true)
	_, err = n.Propose(context.Background(), []byte("lost"))
	require.ErrorIs(t, err, ErrStopped)
	require.ErrorIs(t, err, eio)
	require.ErrorIs(t, n.Status().Err, eio)
	_, err = n.Propose(context.Background(), []byte("after"))
	require.ErrorIs(t, err, ErrStopped, "a stopped node takes no more proposals")
}

// Replay after a suffix truncation and then a compaction: the records that
// replaced the truncated entries lie in a later segment than the ones they
// replaced, and the compaction leaves the first segment with only discarded
// records; reopening must give back the same log and first index.
func TestFileStorage_ReplayAfterTruncationThenCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openFS(t, dir, WithSegmentSize(4096))
	data := make([]byte, 100)
	var f2 uint64 // first entry of the second segment
	for i := uint64(1); f2 == 0; i++ {
		require.NoError(t, s.Save(HardState{Term: 1}, []Entry{{Index: i, Term: 1, Data: data}}))
		s.mu.Lock()
		if len(s.segs) == 2 {
			f2 = i
		}
		s.mu.Unlock()
	}
	for i := f2 + 1; i <= f2+5; i++ {
		require.NoError(t, s.Save(HardState{Term: 1}, []Entry{{Index: i, Term: 1, Data: data}}))
	}
	// A new leader overwrites from f2-10: the records land in segment 2.
	var rewrite []Entry
	for i := f2 - 10; i <= f2+2; i++ {
		rewrite = append(rewrite, Entry{Index: i, Term: 2, Data: data})
	}
	require.NoError(t, s.Save(HardState{Term: 2}, rewrite))
	require.NoError(t, s.Compact(f2-5, 2)) // segment 1 holds only discarded records now
	want := allEntries(t, s)
	require.NoError(t, s.Close())
	s, err := OpenFileStorage(dir, WithSegmentSize(4096))
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, want, allEntries(t, s))
	first, _ := s.FirstIndex()
	assert.Equal(t, f2-4, first)
}
