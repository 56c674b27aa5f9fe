package raft

import (
	"errors"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of the storage writer (storage_writer.go): writes in order,
// coalesced while one is in flight, compactions in order with them, and
// nothing written after a failure.

// durableReport is one call of the writer's durable callback.
type durableReport struct {
	seq uint64
	err error
}

func newTestWriter(t *testing.T, st Storage) (*storageWriter, chan durableReport) {
	t.Helper()
	reports := make(chan durableReport, 100)
	w := newStorageWriter(st, func(seq uint64, err error) { reports <- durableReport{seq, err} }, false)
	require.False(t, w.inline, "a mock storage is written on the writer's goroutine")
	return w, reports
}

func nextReport(t *testing.T, reports chan durableReport) durableReport {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no report from the storage writer")
		return durableReport{}
	}
}

func cmdEntry(index, term uint64) Entry {
	return Entry{Index: index, Term: term, Type: EntryCommand, Data: []byte{byte(index)}}
}

// waitQueued waits until the writer's queue holds k operations: those
// queued while a write is in flight.
func waitQueued(t *testing.T, w *storageWriter, k int) {
	t.Helper()
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue) == k
	}, 5*time.Second, time.Millisecond)
}

func TestStorageWriter_CoalescesWritesQueuedWhileOneIsInFlight(t *testing.T) {
	// Group commit: the writes queued while the first is in flight become
	// one Save, whose entries are what the log holds once each is applied
	// in order (the third replaces the second's last entry, Raft §5.3) and
	// whose hard state is the last one. Reports come in order.
	ctrl := gomock.NewController(t)
	st := NewMockStorage(ctrl)
	inFlight, release := make(chan struct{}), make(chan struct{})
	first := st.EXPECT().Save(HardState{Term: 1, Commit: 1}, []Entry{cmdEntry(2, 1), cmdEntry(3, 1)}).
		DoAndReturn(func(HardState, []Entry) error { close(inFlight); <-release; return nil })
	st.EXPECT().Save(HardState{Term: 2, Commit: 3}, []Entry{cmdEntry(4, 1), cmdEntry(5, 2), cmdEntry(6, 2)}).After(first).Return(nil)

	w, reports := newTestWriter(t, st)
	defer w.close()
	w.save(1, HardState{Term: 1, Commit: 1}, []Entry{cmdEntry(2, 1), cmdEntry(3, 1)})
	<-inFlight
	queued := []Entry{cmdEntry(4, 1), cmdEntry(5, 1)}
	w.save(2, HardState{Term: 1, Commit: 3}, queued)
	queued[0] = Entry{} // the writer holds a copy, not the core's slice
	w.save(3, HardState{Term: 2, Commit: 3}, []Entry{cmdEntry(5, 2), cmdEntry(6, 2)})
	w.save(4, HardState{Term: 2, Commit: 3}, nil)
	waitQueued(t, w, 3)
	close(release)
	assert.Equal(t, durableReport{seq: 1}, nextReport(t, reports))
	assert.Equal(t, durableReport{seq: 4}, nextReport(t, reports), "the three queued writes are one Save")
}

func TestStorageWriter_CoalesceReplacesFromTheLowestIndex(t *testing.T) {
	// A queued write that starts at or below the first merged entry replaces
	// them all; one that leaves a gap is a bug, reported as ErrCorrupt.
	hs, ents, err := coalesce([]diskOp{
		{hs: HardState{Term: 1}, entries: []Entry{cmdEntry(5, 1), cmdEntry(6, 1)}},
		{hs: HardState{Term: 3}, entries: []Entry{cmdEntry(4, 3)}},
	})
	require.NoError(t, err)
	assert.Equal(t, HardState{Term: 3}, hs)
	assert.Equal(t, []Entry{cmdEntry(4, 3)}, ents)

	_, _, err = coalesce([]diskOp{{entries: []Entry{cmdEntry(5, 1)}}, {entries: []Entry{cmdEntry(7, 1)}}})
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestStorageWriter_CompactRunsInOrderWithWrites(t *testing.T) {
	// A Compact queued behind a write in flight runs after it, and the
	// writes queued after the Compact run after it: Save and Compact never
	// overlap (the Storage contract), and a compaction sees the log as it
	// was written before it.
	ctrl := gomock.NewController(t)
	st := NewMockStorage(ctrl)
	inFlight, release := make(chan struct{}), make(chan struct{})
	first := st.EXPECT().Save(HardState{Term: 1}, []Entry{cmdEntry(2, 1)}).
		DoAndReturn(func(HardState, []Entry) error { close(inFlight); <-release; return nil })
	compact := st.EXPECT().Compact(uint64(2), uint64(1)).After(first).Return(nil)
	st.EXPECT().Save(HardState{Term: 1}, []Entry{cmdEntry(3, 1)}).After(compact).Return(nil)

	w, reports := newTestWriter(t, st)
	defer w.close()
	w.save(1, HardState{Term: 1}, []Entry{cmdEntry(2, 1)})
	<-inFlight
	compacted := make(chan error, 1)
	go func() { compacted <- w.compact(2, 1) }()
	waitQueued(t, w, 1)
	w.save(2, HardState{Term: 1}, []Entry{cmdEntry(3, 1)})
	close(release)
	assert.Equal(t, durableReport{seq: 1}, nextReport(t, reports))
	require.NoError(t, <-compacted)
	assert.Equal(t, durableReport{seq: 2}, nextReport(t, reports))
}

func TestStorageWriter_WritesNothingAfterAFailure(t *testing.T) {
	// After a failed Save the node cannot know what the disk holds: the
	// writer reports the error and writes nothing more (the mock fails the
	// test on any further call); a Compact waited for gets the error.
	ctrl := gomock.NewController(t)
	st := NewMockStorage(ctrl)
	boom := errors.New("disk on fire")
	st.EXPECT().Save(gomock.Any(), gomock.Any()).Return(boom)

	w, reports := newTestWriter(t, st)
	defer w.close()
	w.save(1, HardState{Term: 1}, []Entry{cmdEntry(2, 1)})
	r := nextReport(t, reports)
	assert.ErrorIs(t, r.err, boom)
	w.save(2, HardState{Term: 1}, []Entry{cmdEntry(3, 1)})
	assert.ErrorIs(t, w.compact(2, 1), boom)
}

func TestStorageWriter_CloseFinishesWhatIsQueued(t *testing.T) {
	// Close is not a crash: what was queued is written before the writer
	// exits (a restart on the same storage finds it).
	st := NewMemoryStorage()
	w, reports := newTestWriter(t, asyncMemStorage{st})
	w.save(1, HardState{Term: 1}, []Entry{cmdEntry(1, 1)})
	w.save(2, HardState{Term: 2}, []Entry{cmdEntry(2, 2)})
	w.close()
	last, err := st.LastIndex()
	require.NoError(t, err)
	assert.Equal(t, uint64(2), last)
	hs, err := st.InitialState()
	require.NoError(t, err)
	assert.Equal(t, uint64(2), hs.Term)
	for len(reports) > 0 {
		assert.NoError(t, (<-reports).err)
	}
}
