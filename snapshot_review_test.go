package raft

import (
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for what review of the snapshot code found.

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

func TestSnapshot_TransferSurvivesDuplicatesAndReordering(t *testing.T) {
	sc := newSnapCluster(t, 3, func(c *Config) { c.SnapshotChunkSize = 32 })
	leader := sc.waitLeader()
	lagging, others := sc.isolateFollower(leader)
	last := sc.proposeAmong(others, 150, func(i int) string { return fmt.Sprintf("command %03d", i) })
	sc.net.SetFaults(Faults{Drop: 0.05, Duplicate: 0.3, MaxDelay: 3 * time.Millisecond})
	sc.net.Heal()
	require.Eventually(t, func() bool { return sc.nodes[lagging].Status().AppliedIndex >= last }, 20*time.Second, 5*time.Millisecond,
		"the lagging node catches up despite duplicated and reordered chunks")
	sc.net.SetFaults(Faults{})
	sc.waitSame(last)
}

// slowRestoreSM takes a while to restore, as a large state machine would.
type slowRestoreSM struct{ listSM }

func (s *slowRestoreSM) Restore(r io.Reader) error {
	time.Sleep(300 * time.Millisecond) // simulates a slow Restore, not a wait for a condition
	return s.listSM.Restore(r)
}

// countingStorage counts SaveSnapshot calls.
type countingStorage struct {
	*MemoryStorage
	saves atomic.Int64
}

func (c *countingStorage) SaveSnapshot(meta SnapshotMeta, data io.Reader) error {
	c.saves.Add(1)
	return c.MemoryStorage.SaveSnapshot(meta, data)
}

func TestSnapshot_SlowRestoreIsNotResentAndDoesNotStop(t *testing.T) {
	sc := newSnapCluster(t, 3, nil)
	lagging, last := sc.stopFollowerAndMoveOn(300)
	store := &countingStorage{MemoryStorage: sc.storages[lagging]}
	sm := &slowRestoreSM{}
	n, err := NewNode(sc.cfg(lagging), sm, store, sc.net.Transport(lagging))
	require.NoError(t, err)
	sc.nodes[lagging] = n
	require.Eventually(t, func() bool { return n.Status().AppliedIndex >= last }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, n.Status().Err)
	assert.LessOrEqual(t, store.saves.Load(), int64(3), "the leader does not stream the snapshot again while it is being restored")
	want := sc.lists[sc.waitLeader()].list()
	require.Eventually(t, func() bool { return slices.Equal(sm.list(), want) }, 10*time.Second, time.Millisecond)
}
