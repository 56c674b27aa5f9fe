package raft

import (
	"fmt"
	"sync"
)

// storageWriter makes a node's writes durable on a goroutine of its own, so
// that the event loop keeps stepping messages, sending appends and
// collecting acknowledgments while a write (and its fsync) is in flight
// (dissertation §10.2.1; docs/io-ordering.md).
//
// Writes are carried out in the order they were queued. Every write queued
// while the previous one was in flight is coalesced into one Save (group
// commit): its entries are the queued writes' entries, a later write's
// replacing what an earlier one wrote from its first index on (as Save
// itself replaces a stored suffix), and its hard state is the last one
// queued. A torn coalesced Save leaves a prefix of its entries under the
// hard state of before it, which is what a torn Save of the first of the
// writes alone could leave, plus some of the later writes' entries: nothing
// in any of them was acknowledged, so that is safe (rule 7 of
// docs/io-ordering.md).
//
// Compactions are queued with the writes and carried out in order with
// them, so that Save and Compact never run concurrently (the Storage
// contract) and a compaction sees exactly the log written before it.
//
// The writer reports progress through durable: the sequence number of the
// last write that is durable, and the error that stopped it. It never
// waits for the event loop.
//
// On a storage that writes inline (MemoryStorage, see inlineWriter) there
// is no goroutine: the event loop carries out each write itself, at once,
// through the same ordering code.
//
// A writer on demand (a Host's group, whose replicas are mostly idle) has
// no goroutine while nothing is queued: the first write queued starts one,
// which exits once the queue is empty, so that an idle group costs no
// goroutine. A Node's writer keeps its goroutine for its whole life.
type storageWriter struct {
	storage Storage
	inline  bool
	// durable is called (on the writer's goroutine) after each Save or
	// Compact with the sequence number of the last durable write, or with
	// the error that stopped the writer.
	durable func(seq uint64, err error)

	mu      sync.Mutex
	queue   []diskOp
	closing bool // no more writes will be queued: finish the queue and exit
	wake    chan struct{}
	stopped chan struct{}

	// onDemand: a goroutine runs only while writes are queued (running,
	// under mu); draining counts it.
	onDemand bool
	running  bool
	draining sync.WaitGroup
	// failed is the error that stopped the writer (its goroutine's).
	failed error
}

// diskOp is one queued write: a Save, or a Compact.
type diskOp struct {
	seq     uint64
	hs      HardState
	entries []Entry // owned by the writer (a copy of the core's)
	compact *compactOp
}

// compactOp is a Compact waited for by the event loop.
type compactOp struct {
	index, term uint64
	done        chan error
}

// inlineWriter is implemented by storages whose writes are memory
// operations that never wait for a device: handing them to a goroutine
// would cost more than the write itself, so the node writes them on its
// event loop. The order of writes and messages is the same either way.
type inlineWriter interface {
	writesInline() bool
}

// newStorageWriter returns the writer of storage; with onDemand, its
// goroutine runs only while writes are queued.
func newStorageWriter(storage Storage, durable func(seq uint64, err error), onDemand bool) *storageWriter {
	w := &storageWriter{storage: storage, durable: durable, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	if s, ok := storage.(inlineWriter); ok && s.writesInline() {
		w.inline = true
		close(w.stopped)
		return w
	}
	if onDemand {
		w.onDemand = true
		close(w.stopped)
		return w
	}
	go w.run()
	return w
}

// saveInline writes hs and entries at once, on the caller's goroutine (an
// inline writer only).
func (w *storageWriter) saveInline(hs HardState, entries []Entry) error {
	if err := w.storage.Save(hs, entries); err != nil {
		return fmt.Errorf("raft: saving to storage: %w", err)
	}
	return nil
}

// save queues a Save of hs and entries as write seq. entries are copied:
// the writer must not share the core's slice.
func (w *storageWriter) save(seq uint64, hs HardState, entries []Entry) {
	op := diskOp{seq: seq, hs: hs}
	if len(entries) > 0 {
		op.entries = append([]Entry(nil), entries...)
	}
	w.push(op)
}

// compact queues a Compact behind every write queued so far and waits for
// it. The event loop calls it: it blocks the loop for the writes before it,
// which is rare (a snapshot) and keeps the log and the storage in step.
func (w *storageWriter) compact(index, term uint64) error {
	if w.inline {
		return w.storage.Compact(index, term)
	}
	op := &compactOp{index: index, term: term, done: make(chan error, 1)}
	w.push(diskOp{compact: op})
	return <-op.done
}

func (w *storageWriter) push(op diskOp) {
	w.mu.Lock()
	w.queue = append(w.queue, op)
	start := w.onDemand && !w.running
	if start {
		// The event loop alone pushes, and close comes after its last
		// push: this Add never races with close's Wait.
		w.running = true
		w.draining.Add(1)
	}
	w.mu.Unlock()
	if w.onDemand {
		// The drain under way takes what was just queued; nothing reads
		// wake in this mode.
		if start {
			go w.drain()
		}
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// close makes the writer finish what is queued and exit; it returns once
// it has. It is called once the event loop has exited, so that nothing is
// queued after it.
func (w *storageWriter) close() {
	if w.inline {
		return
	}
	if w.onDemand {
		w.draining.Wait()
		return
	}
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
}

func (w *storageWriter) run() {
	defer close(w.stopped)
	for {
		<-w.wake
		for {
			w.mu.Lock()
			ops, closing := w.queue, w.closing
			w.queue = nil
			w.mu.Unlock()
			if len(ops) == 0 {
				if closing {
					return
				}
				break
			}
			w.failed = w.carryOut(ops, w.failed)
		}
	}
}

// drain is the goroutine of a writer on demand: it carries out what is
// queued, and exits once nothing is.
func (w *storageWriter) drain() {
	defer w.draining.Done()
	for {
		w.mu.Lock()
		ops := w.queue
		w.queue = nil
		if len(ops) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.failed = w.carryOut(ops, w.failed)
	}
}

// carryOut writes ops in order, coalescing consecutive Saves; after a
// failure it writes nothing more (the node cannot know what the disk
// holds) and fails every Compact waited for.
func (w *storageWriter) carryOut(ops []diskOp, failed error) error {
	for len(ops) > 0 {
		if c := ops[0].compact; c != nil {
			ops = ops[1:]
			err := failed
			if err == nil {
				if err = w.storage.Compact(c.index, c.term); err != nil {
					failed = fmt.Errorf("raft: compacting the log to %d: %w", c.index, err)
					w.durable(0, failed)
				}
			}
			c.done <- err
			continue
		}
		k := 1
		for k < len(ops) && ops[k].compact == nil {
			k++
		}
		if failed == nil {
			hs, entries, err := coalesce(ops[:k])
			if err == nil {
				err = w.storage.Save(hs, entries)
			}
			if err != nil {
				failed = fmt.Errorf("raft: saving to storage: %w", err)
				w.durable(0, failed)
			} else {
				w.durable(ops[k-1].seq, nil)
			}
		}
		ops = ops[k:]
	}
	return failed
}

// coalesce merges consecutive writes into one: the last hard state, and
// the entries the log holds once every write is applied in order, from the
// lowest index any of them writes.
func coalesce(ops []diskOp) (HardState, []Entry, error) {
	if len(ops) == 1 {
		return ops[0].hs, ops[0].entries, nil
	}
	var entries []Entry
	for _, op := range ops {
		if len(op.entries) == 0 {
			continue
		}
		at := op.entries[0].Index
		switch {
		case len(entries) == 0, at <= entries[0].Index:
			// Replaces everything merged so far (and, in storage, every
			// entry from at on).
			entries = append(entries[:0], op.entries...)
		case at <= entries[len(entries)-1].Index+1:
			entries = append(entries[:at-entries[0].Index], op.entries...)
		default:
			// Each write continues the log written before it (the core
			// hands entries over in order), so this is a bug: stop rather
			// than write a log with a gap.
			return HardState{}, nil, fmt.Errorf("%w: a write of entry %d does not follow entry %d", ErrCorrupt, at, entries[len(entries)-1].Index)
		}
	}
	return ops[len(ops)-1].hs, entries, nil
}
