package raft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openHS(t *testing.T, dir string, opts ...FileOption) *HostStorage {
	t.Helper()
	h, err := OpenHostStorage(dir, opts...)
	require.NoError(t, err)
	return h
}

func openGroup(t *testing.T, h *HostStorage, id uint64) Storage {
	t.Helper()
	s, err := h.Group(id)
	require.NoError(t, err)
	return s
}

// groupEntries returns the entries of group id with the group's payload
// marked in them, so that groups' entries never look alike.
func groupEntries(id, from, to, term uint64) []Entry {
	var out []Entry
	for i := from; i <= to; i++ {
		out = append(out, Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("group %d entry %d term %d", id, i, term))})
	}
	return out
}

// closingGroup is a group of a HostStorage opened for it alone: closing it
// closes the HostStorage, so that the Storage contract tests written for
// one storage per directory run on a group too.
type closingGroup struct {
	Storage
	h *HostStorage
}

func (c closingGroup) Close() error { return c.h.Close() }

// openHostGroup opens the HostStorage in dir and returns group 7 of it,
// after saving into two other groups so that group 7's records lie among
// theirs.
func openHostGroup(t *testing.T, dir string) Storage {
	h := openHS(t, dir, WithSegmentSize(4096))
	for _, id := range []uint64{3, 11} {
		s := openGroup(t, h, id)
		last, err := s.LastIndex()
		require.NoError(t, err)
		require.NoError(t, s.Save(HardState{Term: 1, Commit: last}, groupEntries(id, last+1, last+2, 1)))
	}
	return closingGroup{Storage: openGroup(t, h, 7), h: h}
}

func TestHostStorage_GroupsKeepTheirOwnLogs(t *testing.T) {
	dir := t.TempDir()
	h := openHS(t, dir, WithSegmentSize(4096))
	want := map[uint64][]Entry{}
	hss := map[uint64]HardState{}
	// Interleaved Saves of five groups over several segments, with a
	// truncation in group 2 and a compaction in group 3.
	for round := uint64(0); round < 30; round++ {
		for id := uint64(1); id <= 5; id++ {
			s := openGroup(t, h, id)
			from := uint64(len(want[id])) + 1
			ents := groupEntries(id, from, from+2, 1)
			hs := HardState{Term: 1, Vote: id, Commit: from}
			require.NoError(t, s.Save(hs, ents))
			want[id] = append(want[id], ents...)
			hss[id] = hs
		}
	}
	g2 := openGroup(t, h, 2)
	replaced := groupEntries(2, 50, 52, 2)
	require.NoError(t, g2.Save(HardState{Term: 2, Commit: 50}, replaced))
	want[2] = append(want[2][:49], replaced...)
	hss[2] = HardState{Term: 2, Commit: 50}
	require.NoError(t, openGroup(t, h, 3).Compact(40, 1))
	want[3] = want[3][40:]
	check := func(h *HostStorage) {
		t.Helper()
		assert.Equal(t, []uint64{1, 2, 3, 4, 5}, h.Groups())
		for id := uint64(1); id <= 5; id++ {
			s := openGroup(t, h, id)
			assert.Equal(t, want[id], allEntries(t, s), "group %d", id)
			hs, err := s.InitialState()
			require.NoError(t, err)
			assert.Equal(t, hss[id], hs, "group %d", id)
		}
		first, _ := openGroup(t, h, 3).FirstIndex()
		assert.Equal(t, uint64(41), first)
		term, err := openGroup(t, h, 3).Term(40)
		require.NoError(t, err)
		assert.Equal(t, uint64(1), term)
	}
	check(h)
	require.NoError(t, h.Close())
	segs, _ := filepath.Glob(filepath.Join(dir, "hwal-*.log"))
	assert.Greater(t, len(segs), 3, "the log spans several segments")
	h = openHS(t, dir, WithSegmentSize(4096))
	defer h.Close()
	check(h)
}

func TestHostStorage_GroupCommitAcrossGroups(t *testing.T) {
	var syncs atomic.Int64
	h := openHS(t, t.TempDir(), func(o *fileOptions) {
		o.syncHook = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	})
	defer h.Close()
	before := syncs.Load()
	const groups, each = 16, 40
	var wg sync.WaitGroup
	for g := uint64(1); g <= groups; g++ {
		s := openGroup(t, h, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One Save at a time per group, as a Node's storage writer makes them.
			for i := uint64(1); i <= each; i++ {
				assert.NoError(t, s.Save(HardState{Term: 1, Commit: i - 1}, groupEntries(g, i, i, 1)))
			}
		}()
	}
	wg.Wait()
	n := syncs.Load() - before
	t.Logf("%d saves of %d groups, %d fsyncs", groups*each, groups, n)
	assert.Less(t, n, int64(groups*each/2), "Saves of different groups share fsyncs")
}

func TestHostStorage_FailedSyncStopsEveryGroup(t *testing.T) {
	eio := errors.New("input/output error")
	var fail atomic.Bool
	dir := t.TempDir()
	h := openHS(t, dir, func(o *fileOptions) {
		o.syncHook = func(f *os.File) error {
			if fail.Load() {
				return eio
			}
			return nil
		}
	})
	g1, g2 := openGroup(t, h, 1), openGroup(t, h, 2)
	require.NoError(t, g1.Save(HardState{Term: 1}, groupEntries(1, 1, 2, 1)))
	require.NoError(t, g2.Save(HardState{Term: 1}, groupEntries(2, 1, 2, 1)))
	fail.Store(true)
	assert.ErrorIs(t, g1.Save(HardState{Term: 1}, groupEntries(1, 3, 3, 1)), eio)
	fail.Store(false)
	assert.ErrorIs(t, g2.Save(HardState{Term: 1}, groupEntries(2, 3, 3, 1)), eio, "a failed fsync is not retried, for any group")
	_, err := g2.InitialState()
	assert.ErrorIs(t, err, eio)
	_, err = h.Group(3)
	assert.ErrorIs(t, err, eio)
	require.NoError(t, h.Close())
	h = openHS(t, dir)
	defer h.Close()
	assert.Equal(t, groupEntries(2, 1, 2, 1), allEntries(t, openGroup(t, h, 2)))
}
