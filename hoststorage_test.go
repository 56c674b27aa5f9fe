package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// walSize returns the bytes of the segments in dir.
func walSize(t *testing.T, dir string) int64 {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "hwal-*.log"))
	require.NoError(t, err)
	var n int64
	for _, seg := range segs {
		st, err := os.Stat(seg)
		require.NoError(t, err)
		n += st.Size()
	}
	return n
}

// TestHostStorage_IdleGroupDoesNotPinTheLog: one group writes once and
// then stays idle while fifteen others keep writing and compacting. The
// idle group's records would keep the first segment, and so every later
// one, forever: cleaning copies it forward and the log stays bounded (by
// four segments or twice the live data, plus a round of writes), and every
// group, the idle one included, reopens with its data.
func TestHostStorage_IdleGroupDoesNotPinTheLog(t *testing.T) {
	const segSize = 4096
	dir := t.TempDir()
	opts := []FileOption{WithSegmentSize(segSize), WithNoSync()}
	h := openHS(t, dir, opts...)
	idleHS := HardState{Term: 1, Vote: 1, Commit: 20}
	require.NoError(t, openGroup(t, h, 1).Save(idleHS, groupEntries(1, 1, 20, 1)))
	want := map[uint64]modelLog{}
	var written, peak int64
	for round := uint64(1); round <= 300; round++ {
		for id := uint64(2); id <= 16; id++ {
			s := openGroup(t, h, id)
			ents := groupEntries(id, round, round, 1)
			hs := HardState{Term: 1, Vote: id, Commit: round}
			require.NoError(t, s.Save(hs, ents))
			written += int64(len(ents[0].Data))
			if round%10 == 0 {
				require.NoError(t, s.Compact(round-5, 1))
			}
			first, _ := s.FirstIndex()
			want[id] = modelLog{hs: hs, first: first, firstTerm: 1, entries: groupEntries(id, first, round, 1)}
		}
		peak = max(peak, walSize(t, dir))
	}
	h.mu.Lock()
	live := h.live
	h.mu.Unlock()
	t.Logf("%d bytes of entries written; the log peaked at %d bytes (%d live at the end)", written, peak, live)
	require.Greater(t, written, int64(20*segSize), "the groups wrote far more than the bound")
	assert.LessOrEqual(t, peak, int64(8*segSize), "the log stays bounded")
	_, err := os.Stat(filepath.Join(dir, "hwal-0000000000000001.log"))
	assert.True(t, os.IsNotExist(err), "the idle group's first segment was deleted")
	require.NoError(t, h.Close())

	h = openHS(t, dir, opts...)
	defer h.Close()
	idle := readModel(t, openGroup(t, h, 1))
	assert.Equal(t, idleHS, idle.hs)
	assert.Equal(t, groupEntries(1, 1, 20, 1), idle.entries, "the idle group kept its log")
	for id, m := range want {
		got := readModel(t, openGroup(t, h, id))
		assert.Equal(t, describeModel(m), describeModel(got), "group %d", id)
		assert.True(t, entriesEqual(m.entries, got.entries), "group %d", id)
	}
}

func TestHostStorage_CorruptionIsAnError(t *testing.T) {
	build := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		h := openHS(t, dir, WithSegmentSize(4096), WithNoSync())
		for i := uint64(1); i <= 100; i += 5 {
			for id := uint64(1); id <= 3; id++ {
				require.NoError(t, openGroup(t, h, id).Save(HardState{Term: 1, Commit: i}, groupEntries(id, i, i+4, 1)))
			}
		}
		require.NoError(t, h.Close())
		return dir, filepath.Join(dir, "hwal-0000000000000001.log")
	}
	rewrite := func(t *testing.T, path string, change func([]byte) []byte) {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, change(data), 0o644))
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x40; return b }
	}
	lastSeg := func(dir string) string {
		segs, _ := filepath.Glob(filepath.Join(dir, "hwal-*.log"))
		return segs[len(segs)-1]
	}
	// appendRecord appends an intact record of type typ to the last segment.
	appendRecord := func(typ byte) func(t *testing.T, dir, first string) {
		return func(t *testing.T, dir, first string) {
			rewrite(t, lastSeg(dir), func(b []byte) []byte { return appendHostRecord(b, typ, 1, []byte{1, 2, 3}) })
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir, first string)
		want   error
	}{
		{"flipped byte in an early segment", func(t *testing.T, dir, first string) { rewrite(t, first, flip(300)) }, ErrCorrupt},
		{"flipped byte in the middle of the last segment", func(t *testing.T, dir, first string) { rewrite(t, lastSeg(dir), flip(100)) }, ErrCorrupt},
		{"bad magic", func(t *testing.T, dir, first string) { rewrite(t, first, flip(0)) }, ErrCorrupt},
		{"missing segment", func(t *testing.T, dir, first string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "hwal-0000000000000002.log")))
		}, ErrCorrupt},
		{"stray segment name", func(t *testing.T, dir, first string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "hwal-zz.log"), nil, 0o644))
		}, ErrCorrupt},
		{"stray group directory name", func(t *testing.T, dir, first string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "group-zz"), 0o755))
		}, ErrCorrupt},
		{"a copy holding another group's record", func(t *testing.T, dir, first string) {
			rewrite(t, lastSeg(dir), func(b []byte) []byte {
				other := appendHostEntry(nil, 2, &Entry{Index: 101, Term: 1})
				b = appendHostRecord(b, recGroupCopy, 1, binary.AppendUvarint(nil, uint64(len(other))))
				return append(b, other...)
			})
		}, ErrCorrupt},
		{"newer segment version", func(t *testing.T, dir, first string) {
			rewrite(t, first, func(b []byte) []byte { copy(b, "RKHWAL02"); return b })
		}, ErrNewerVersion},
		{"record of an unknown type at the end", appendRecord(9), ErrNewerVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, first := build(t)
			tc.damage(t, dir, first)
			_, err := OpenHostStorage(dir, WithSegmentSize(4096))
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestHostStorage_ZeroFilledTail(t *testing.T) {
	dir := t.TempDir()
	h := openHS(t, dir)
	require.NoError(t, openGroup(t, h, 1).Save(HardState{Term: 1}, groupEntries(1, 1, 3, 1)))
	require.NoError(t, h.Close())
	seg := filepath.Join(dir, "hwal-0000000000000001.log")
	f, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(make([]byte, 5000))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	h = openHS(t, dir)
	defer h.Close()
	assert.Equal(t, groupEntries(1, 1, 3, 1), allEntries(t, openGroup(t, h, 1)))
}

// A FileStorage's directory is not a HostStorage's, nor the other way
// round: opening one as the other would find no log and start empty.
func TestHostStorage_RefusesAFileStorageDirectory(t *testing.T) {
	fsDir, hostDir := t.TempDir(), t.TempDir()
	fs := openFS(t, fsDir)
	require.NoError(t, fs.Save(HardState{Term: 1}, testEntries(1, 2, 1)))
	require.NoError(t, fs.Close())
	_, err := OpenHostStorage(fsDir)
	assert.ErrorIs(t, err, ErrInvalidConfig)
	h := openHS(t, hostDir)
	require.NoError(t, openGroup(t, h, 1).Save(HardState{Term: 1}, groupEntries(1, 1, 2, 1)))
	require.NoError(t, h.Close())
	_, err = OpenFileStorage(hostDir)
	assert.ErrorIs(t, err, ErrInvalidConfig)
	// And a HostStorage holds the lock like a FileStorage.
	h = openHS(t, hostDir)
	defer h.Close()
	_, err = OpenHostStorage(hostDir)
	assert.ErrorIs(t, err, ErrLocked)
}

func TestHostStorage_ErrorsWrapSentinels(t *testing.T) {
	h := openHS(t, t.TempDir(), WithNoSync())
	s := openGroup(t, h, 1)
	require.NoError(t, s.Save(HardState{Term: 1}, groupEntries(1, 1, 2, 1)))
	_, err := s.Entries(1, 4)
	assert.ErrorIs(t, err, ErrOutOfRange)
	_, err = s.Term(3)
	assert.ErrorIs(t, err, ErrOutOfRange)
	assert.Error(t, s.Save(HardState{Term: 1}, groupEntries(1, 5, 6, 1)), "a gap")
	assert.Equal(t, groupEntries(1, 1, 2, 1), allEntries(t, s), "a refused save changes nothing")
	_, _, err = s.Snapshot()
	assert.ErrorIs(t, err, ErrNoSnapshot)
	assert.ErrorContains(t, s.SaveSnapshot(SnapshotMeta{Index: 1, Term: 1}, nil), "nil")
	require.NoError(t, h.Close())
	_, err = s.Term(2)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, s.Save(HardState{Term: 1}, nil), ErrClosed)
	_, err = h.Group(2)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = OpenHostStorage(t.TempDir(), WithSegmentSize(10))
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestHostStorage_RemoveGroup(t *testing.T) {
	dir := t.TempDir()
	h := openHS(t, dir, WithSegmentSize(4096), WithNoSync())
	for id := uint64(1); id <= 3; id++ {
		s := openGroup(t, h, id)
		require.NoError(t, s.Save(HardState{Term: 1, Commit: 5}, groupEntries(id, 1, 5, 1)))
		require.NoError(t, s.SaveSnapshot(SnapshotMeta{Index: 3, Term: 1, Members: []Member{{ID: 1}}}, strings.NewReader("state")))
	}
	old := openGroup(t, h, 2)
	require.NoError(t, h.RemoveGroup(2))
	assert.Equal(t, []uint64{1, 3}, h.Groups())
	assert.NoDirExists(t, h.groupDir(2), "its snapshots are gone")
	_, err := old.InitialState()
	assert.ErrorIs(t, err, ErrClosed, "the removed group's Storage is unusable")
	assert.ErrorIs(t, old.Save(HardState{Term: 2}, nil), ErrClosed)
	// A new group of the same ID starts empty.
	fresh := openGroup(t, h, 2)
	assert.Equal(t, newModelLog(), readModel(t, fresh))
	require.NoError(t, fresh.Save(HardState{Term: 7}, groupEntries(2, 1, 1, 7)))
	require.NoError(t, h.RemoveGroup(3))
	require.NoError(t, h.RemoveGroup(42), "removing a group that holds nothing")
	require.NoError(t, h.Close())

	h = openHS(t, dir, WithSegmentSize(4096), WithNoSync())
	assert.Equal(t, []uint64{1, 2}, h.Groups())
	assert.Equal(t, groupEntries(2, 1, 1, 7), allEntries(t, openGroup(t, h, 2)))
	_, _, err = openGroup(t, h, 2).Snapshot()
	assert.ErrorIs(t, err, ErrNoSnapshot)
	assert.Equal(t, groupEntries(1, 1, 5, 1), allEntries(t, openGroup(t, h, 1)))
	require.NoError(t, h.Close())

	// A crash after the removal record, before the directory was deleted:
	// opening finishes the removal.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "group-0000000000000003"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "group-0000000000000003", snapName(3, 1)), []byte("old"), 0o644))
	h = openHS(t, dir, WithSegmentSize(4096), WithNoSync())
	defer h.Close()
	assert.Equal(t, []uint64{1, 2}, h.Groups())
	assert.NoDirExists(t, filepath.Join(dir, "group-0000000000000003"))
}

func TestHostStorage_SnapshotsPerGroup(t *testing.T) {
	dir := t.TempDir()
	h := openHS(t, dir, WithNoSync())
	for id := uint64(1); id <= 2; id++ {
		s := openGroup(t, h, id)
		for i := uint64(1); i <= 3; i++ {
			meta := SnapshotMeta{Index: 10 * i, Term: 1, Members: []Member{{ID: id}}}
			require.NoError(t, s.SaveSnapshot(meta, strings.NewReader(fmt.Sprintf("group %d snapshot %d", id, i))))
		}
	}
	// A group whose only state is a snapshot (a crash between SaveSnapshot
	// and the Compact after it) is a group too.
	assert.Equal(t, []uint64{1, 2}, h.Groups())
	require.NoError(t, h.Close())
	for id := uint64(1); id <= 2; id++ {
		snaps, _ := filepath.Glob(filepath.Join(h.groupDir(id), "snap-*.snap"))
		assert.Len(t, snaps, 2, "group %d keeps its two newest snapshots", id)
	}
	// Damage group 2's newest snapshot: group 2 refuses to open, group 1
	// is not affected.
	path := filepath.Join(h.groupDir(2), snapName(30, 1))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)-20] ^= 1
	require.NoError(t, os.WriteFile(path, b, 0o644))
	h = openHS(t, dir, WithNoSync())
	defer h.Close()
	assert.Equal(t, []uint64{1, 2}, h.Groups())
	_, err = h.Group(2)
	assert.ErrorIs(t, err, ErrCorrupt)
	meta, rc, err := openGroup(t, h, 1).Snapshot()
	require.NoError(t, err)
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, uint64(30), meta.Index)
	assert.Equal(t, "group 1 snapshot 3", string(data))
}

// TestHostStorage_NodesOfSeveralGroupsRestart runs four groups of three
// nodes over three hosts, each host's nodes on one HostStorage: the groups
// commit proposals concurrently (their Saves sharing the hosts' fsyncs),
// take snapshots and compact, then every node stops, every HostStorage is
// closed and reopened, and every group comes back with all its data and
// goes on.
func TestHostStorage_NodesOfSeveralGroupsRestart(t *testing.T) {
	const groups, hostsN, proposals = 4, 3, 60
	dirs := make([]string, hostsN)
	hosts := make([]*HostStorage, hostsN)
	for i := range hosts {
		dirs[i] = t.TempDir()
		hosts[i] = openHS(t, dirs[i], WithNoSync())
	}
	// Registered first, so that it runs after the clusters' cleanups have
	// stopped their nodes.
	t.Cleanup(func() {
		for _, h := range hosts {
			h.Close()
		}
	})
	clusters := make([]*testCluster, groups)
	sms := make([]map[uint64]*listSM, groups)
	for g := range clusters {
		group := uint64(100 + g)
		sms[g] = map[uint64]*listSM{}
		clusters[g] = newTestCluster(t, hostsN,
			withConfig(func(cfg *Config) { cfg.SnapshotThreshold, cfg.TrailingEntries = 20, 5 }),
			withStateMachines(func(id uint64) StateMachine {
				sm := &listSM{}
				sms[g][id] = sm
				return sm
			}),
			withStorages(func(id uint64) Storage {
				s, err := hosts[id-1].Group(group)
				require.NoError(t, err)
				return s
			}))
	}
	want := make([][]string, groups)
	propose := func(round string) {
		var wg sync.WaitGroup
		errs := make(chan error, groups)
		for g, c := range clusters {
			leader := c.waitLeader()
			n := c.nodes[leader]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < proposals; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := n.Propose(ctx, []byte(fmt.Sprintf("group %d %s %d", g, round, i)))
					cancel()
					if err != nil {
						errs <- fmt.Errorf("group %d: %w", g, err)
						return
					}
				}
			}()
			for i := 0; i < proposals; i++ {
				want[g] = append(want[g], fmt.Sprintf("group %d %s %d", g, round, i))
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	waitAll := func() {
		for g, c := range clusters {
			for _, id := range c.ids {
				require.Eventually(t, func() bool { return len(sms[g][id].list()) == len(want[g]) }, 10*time.Second, time.Millisecond,
					"group %d node %d applied %d of %d", g, id, len(sms[g][id].list()), len(want[g]))
				require.Equal(t, want[g], sms[g][id].list(), "group %d node %d", g, id)
			}
		}
	}
	propose("before")
	waitAll()
	for _, h := range hosts {
		assert.Equal(t, []uint64{100, 101, 102, 103}, h.Groups())
	}
	// Snapshots were taken and the logs compacted.
	first, err := openGroup(t, hosts[0], 100).FirstIndex()
	require.NoError(t, err)
	assert.Greater(t, first, uint64(1), "group 100 compacted its log")

	for _, c := range clusters {
		for _, id := range c.ids {
			c.stop(id)
		}
	}
	for i, h := range hosts {
		require.NoError(t, h.Close())
		hosts[i] = openHS(t, dirs[i], WithNoSync())
	}
	for _, c := range clusters {
		for _, id := range c.ids {
			c.start(id)
		}
	}
	waitAll()
	propose("after")
	waitAll()
}

// TestHostStorage_IdleGroupMemory measures the memory a HostStorage holds
// per idle group, as a host of many groups has after a restart: each group
// holds its founding configuration entry, its leader's no-op and a hard
// state, and has a Storage handed out to its Node. The figure is the
// storage's share of an idle replica's memory.
func TestHostStorage_IdleGroupMemory(t *testing.T) {
	const groups = 2000
	dir := t.TempDir()
	h := openHS(t, dir, WithNoSync())
	members := encodeMembers([]Member{{ID: 1, Addr: "10.0.0.1:7000"}, {ID: 2, Addr: "10.0.0.2:7000"}, {ID: 3, Addr: "10.0.0.3:7000"}})
	var wg sync.WaitGroup
	for w := uint64(0); w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := w + 1; id <= groups; id += 8 {
				s, err := h.Group(id)
				if !assert.NoError(t, err) {
					return
				}
				ents := []Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: members}, {Index: 2, Term: 2, Type: EntryNoop}}
				assert.NoError(t, s.Save(HardState{Term: 2, Vote: 1, Commit: 2}, ents))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, h.Close())
	h = nil // the HostStorage that wrote the groups is garbage now

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	handles := make([]Storage, 0, groups)
	before := heap()
	h = openHS(t, dir, WithNoSync())
	defer h.Close()
	for id := uint64(1); id <= groups; id++ {
		handles = append(handles, openGroup(t, h, id))
	}
	after := heap()
	perGroup := float64(after-before) / groups
	t.Logf("%d idle groups: %.0f bytes of HostStorage memory per group", groups, perGroup)
	assert.Less(t, perGroup, 1024.0, "an idle group costs the storage well under 1 KiB")
	runtime.KeepAlive(handles)
}

// BenchmarkHostStorage_SixteenGroups: sixteen groups save at once, each one
// Save at a time (as a Node's storage writer does), with fsync: on one
// HostStorage, where their Saves share fsyncs, and on sixteen FileStorages
// in the same file system, one per group. Each Save is one 128-byte entry
// and a hard state. Reports saves/s, saves per fsync, the latency of a Save
// (median and 99th percentile) and the process's CPU time per save (user
// and system: the fsyncs' kernel work included).
func BenchmarkHostStorage_SixteenGroups(b *testing.B) {
	const groups = 16
	run := func(b *testing.B, stores []Storage, syncs *atomic.Int64) {
		var wg sync.WaitGroup
		var next atomic.Int64
		data := make([]byte, 128)
		lats := make([][]time.Duration, len(stores))
		cpu0, cpuOK := processCPU()
		b.ResetTimer()
		for g := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var index uint64
				for next.Add(1) <= int64(b.N) {
					index++
					t0 := time.Now()
					if err := stores[g].Save(HardState{Term: 1, Commit: index - 1}, []Entry{{Index: index, Term: 1, Data: data}}); err != nil {
						b.Error(err)
						return
					}
					lats[g] = append(lats[g], time.Since(t0))
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		all := slices.Concat(lats...)
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
		b.ReportMetric(float64(b.N)/float64(syncs.Load()), "saves/fsync")
		if cpu1, ok := processCPU(); ok && cpuOK {
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/save")
		}
	}
	countSyncs := func(syncs *atomic.Int64) FileOption {
		return func(o *fileOptions) {
			o.syncHook = func(f *os.File) error { syncs.Add(1); return f.Sync() }
		}
	}
	b.Run("host", func(b *testing.B) {
		var syncs atomic.Int64
		h, err := OpenHostStorage(b.TempDir(), countSyncs(&syncs))
		require.NoError(b, err)
		defer h.Close()
		stores := make([]Storage, groups)
		for g := range stores {
			if stores[g], err = h.Group(uint64(g + 1)); err != nil {
				b.Fatal(err)
			}
		}
		syncs.Store(0)
		run(b, stores, &syncs)
	})
	b.Run("files", func(b *testing.B) {
		var syncs atomic.Int64
		stores := make([]Storage, groups)
		for g := range stores {
			s, err := OpenFileStorage(b.TempDir(), countSyncs(&syncs))
			require.NoError(b, err)
			defer s.Close()
			stores[g] = s
		}
		syncs.Store(0)
		run(b, stores, &syncs)
	})
}

// FuzzHostStorageRecovery opens shared logs with arbitrary contents:
// recovery must never panic, and either fail with ErrCorrupt (or
// ErrNewerVersion), or open a log whose every group reads back and accepts
// writes.
func FuzzHostStorageRecovery(f *testing.F) {
	valid := []byte(hostWALMagic)
	for id := uint64(1); id <= 2; id++ {
		for _, e := range groupEntries(id, 1, 3, 2) {
			valid = appendHostEntry(valid, id, &e)
		}
		valid = appendHostRecord(valid, recHardState, id, appendHardStatePayload(nil, HardState{Term: 2, Vote: 1, Commit: 1}, func(uint64) (uint64, bool) { return 2, true }))
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(appendHostRecord(append([]byte(nil), valid...), recCompact, 1, appendCompactPayload(nil, 2, 2)))
	f.Add(appendHostRecord(append([]byte(nil), valid...), recGroupRemoved, 2, nil))
	copied := appendHostEntry(nil, 1, &Entry{Index: 1, Term: 2, Data: []byte("x")})
	withCopy := appendHostRecord(append([]byte(nil), valid...), recGroupCopy, 1, binary.AppendUvarint(nil, uint64(len(copied))))
	f.Add(append(withCopy, copied...))
	f.Add(withCopy)
	f.Add([]byte(hostWALMagic))
	f.Add([]byte("RKH"))
	f.Add(append(append([]byte{}, valid...), make([]byte, 20)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "hwal-0000000000000001.log"), data, 0o644))
		h, err := OpenHostStorage(dir, WithNoSync())
		if err != nil {
			if !errors.Is(err, ErrNewerVersion) {
				require.ErrorIs(t, err, ErrCorrupt)
			}
			return
		}
		defer h.Close()
		for _, id := range append(h.Groups(), 99) {
			s := openGroup(t, h, id)
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			ents, err := s.Entries(first, last+1)
			require.NoError(t, err)
			require.Len(t, ents, int(last+1-first))
			require.NoError(t, s.Save(HardState{Term: 9}, []Entry{{Index: last + 1, Term: 9}}), "the recovered log accepts writes")
		}
	})
}

// TestHostStorage_RecoveryLowersAnUnbackedCommitPerGroup opens a shared
// log in which group 1's last hard state names a commit index that its
// entries do not back (as a log written with the hard state first and torn
// after it would): recovery lowers group 1's commit index to the newest one
// its log backs, and leaves group 2's alone.
func TestHostStorage_RecoveryLowersAnUnbackedCommitPerGroup(t *testing.T) {
	termIs := func(term uint64) func(uint64) (uint64, bool) {
		return func(uint64) (uint64, bool) { return term, true }
	}
	log := []byte(hostWALMagic)
	for _, e := range groupEntries(1, 1, 10, 2) {
		log = appendHostEntry(log, 1, &e)
	}
	log = appendHostRecord(log, recHardState, 1, appendHardStatePayload(nil, HardState{Term: 2, Commit: 5}, termIs(2)))
	for _, e := range groupEntries(2, 1, 7, 3) {
		log = appendHostEntry(log, 2, &e)
	}
	log = appendHostRecord(log, recHardState, 2, appendHardStatePayload(nil, HardState{Term: 3, Commit: 7}, termIs(3)))
	// Group 1's entries 6 and 7 have term 2: this commit is not backed.
	log = appendHostRecord(log, recHardState, 1, appendHardStatePayload(nil, HardState{Term: 3, Commit: 7}, termIs(3)))
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hwal-0000000000000001.log"), log, 0o644))
	h := openHS(t, dir)
	defer h.Close()
	hs, err := openGroup(t, h, 1).InitialState()
	require.NoError(t, err)
	assert.Equal(t, HardState{Term: 3, Commit: 5}, hs, "group 1's commit falls back to the last backed one")
	hs, err = openGroup(t, h, 2).InitialState()
	require.NoError(t, err)
	assert.Equal(t, HardState{Term: 3, Commit: 7}, hs, "group 2's commit is backed")
}

// TestHostStorage_ReplayFromTheMiddleOfAGroupsHistory opens logs whose
// first segments were deleted, so that a group's first surviving records
// continue a history whose start is gone (each case was found by
// TestHostStorage_PowerLossRandomized): replay must rebuild what the later
// records say, and refuse a group whose start nothing explains.
func TestHostStorage_ReplayFromTheMiddleOfAGroupsHistory(t *testing.T) {
	type rec func([]byte) []byte
	entry := func(i, term uint64) rec {
		return func(b []byte) []byte {
			return appendHostEntry(b, 1, &Entry{Index: i, Term: term, Data: []byte{byte(i)}})
		}
	}
	compact := func(i, term uint64) rec {
		return func(b []byte) []byte { return appendHostRecord(b, recCompact, 1, appendCompactPayload(nil, i, term)) }
	}
	copyOf := func(recs ...rec) rec {
		return func(b []byte) []byte {
			var body []byte
			for _, r := range recs {
				body = r(body)
			}
			b = appendHostRecord(b, recGroupCopy, 1, binary.AppendUvarint(nil, uint64(len(body))))
			return append(b, body...)
		}
	}
	cases := []struct {
		name             string
		recs             []rec
		first, firstTerm uint64
		terms            []uint64 // of the entries from first on
	}{
		{"an entry whose predecessor is gone, after a compaction point", []rec{compact(52, 6), entry(54, 7), entry(55, 7), entry(56, 7), compact(54, 7)}, 55, 7, []uint64{7, 7}},
		{"a compaction point below a run whose start is gone, then the run rewritten", []rec{entry(8, 1), compact(6, 1), entry(7, 2), entry(8, 2)}, 7, 1, []uint64{2, 2}},
		{"a gap in the middle, closed by a later compaction", []rec{entry(1, 1), entry(2, 1), entry(5, 1), entry(6, 1), compact(4, 1)}, 5, 1, []uint64{1, 1}},
		{"a copy starts the group over", []rec{entry(1, 1), entry(2, 1), copyOf(compact(10, 2), entry(11, 2), entry(12, 3))}, 11, 2, []uint64{2, 3}},
		{"nothing explains the start", []rec{entry(5, 1), entry(6, 1)}, 0, 0, nil},
		{"nothing closes the gap", []rec{compact(3, 1), entry(4, 1), entry(7, 1)}, 0, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := []byte(hostWALMagic)
			for _, r := range tc.recs {
				log = r(log)
			}
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "hwal-0000000000000001.log"), log, 0o644))
			h, err := OpenHostStorage(dir, WithNoSync())
			if tc.first == 0 {
				assert.ErrorIs(t, err, ErrCorrupt)
				return
			}
			require.NoError(t, err)
			defer h.Close()
			got := readModel(t, openGroup(t, h, 1))
			assert.Equal(t, tc.first, got.first)
			assert.Equal(t, tc.firstTerm, got.firstTerm)
			var terms []uint64
			for _, e := range got.entries {
				terms = append(terms, e.Term)
			}
			assert.Equal(t, tc.terms, terms)
		})
	}
}
