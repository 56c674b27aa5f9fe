package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// HostStorage keeps the logs of many Raft groups in one write-ahead log,
// so that a process running many groups pays one fsync per round of writes
// instead of one per group: Saves of different groups that arrive while a
// write is in flight are written together, with one write and one fsync
// (group commit across groups). Group returns one group's Storage, used
// with NewNode exactly like a FileStorage.
//
// # On-disk format
//
// The directory holds a LOCK file, segment files named
// hwal-<sequence, 16 hex digits>.log and, for each group that has saved a
// snapshot, a directory group-<group ID, 16 hex digits> holding its
// snapshot files in FileStorage's format (filesnapshot.go). Each segment
// starts with the 8-byte magic "RKHWAL01", whose "01" is the format
// version of every record in the segment, and then holds records:
//
//	length  uint32, little endian: the length N of payload
//	crc     uint32, little endian: CRC-32C (Castagnoli) of type, group and payload
//	type    1 byte: 1 = entry, 2 = hard state, 3 = compaction,
//	        4 = group removed, 5 = copy
//	group   uint64, little endian: the group the record belongs to
//	payload N bytes
//
// Entry, hard-state and compaction payloads are FileStorage's (see
// filestorage.go): an entry is uvarint index, uvarint term, one byte of
// EntryType, then the data; a hard state is uvarint term, vote and commit,
// the uvarint term of the entry at the commit index (0 when unknown) and,
// when known, the uvarint cluster origin; a compaction is the uvarint index
// and term of the last discarded entry. A group-removed record has an empty
// payload: the group's state is dropped. A copy record's payload is the
// uvarint length in bytes of the records that follow it and form the copy:
// the group's compaction point (when it has one), every entry of its log
// and its hard state, all of that group, written again at the head of the
// log so that the segments holding their older records can be deleted (see
// Cleaning, below).
//
// Versions (docs/protocol.md, "Formats and versions"): as in a FileStorage,
// a reader ignores bytes after the fields it knows in hard-state and
// compaction payloads; anything else needs a new segment version.
// OpenHostStorage refuses, with ErrNewerVersion, a segment of a higher
// version and an intact record of a type it does not know.
//
// Replaying the segments in sequence order rebuilds every group's state,
// each from its own records with FileStorage's rules: the last hard state
// wins; an entry record at index i replaces the group's entries from i on;
// a compaction record moves the start of its log. Within a write, each
// group's entries come before its hard state, so a torn write keeps, for
// every group in it, a prefix of what that group wrote (Storage contract,
// docs/io-ordering.md rule 11).
//
// # Recovery
//
// As in a FileStorage: a bad record is a torn write if nothing valid
// follows it in the last segment, and the file is cut there; anywhere else
// it is corruption, and OpenHostStorage fails with ErrCorrupt. A copy whose
// records are not all intact is the start of a torn write: the file is cut
// at the copy record, since applying part of a copy would cut the group's
// log short (its first entry record replaces everything after it). Each
// group's commit index is checked against its log as FileStorage does.
//
// # Compaction and cleaning
//
// A segment is deleted when no group still needs a record in it: its
// latest hard state, its latest compaction record, or an entry of its log.
// A group that stops writing would pin its segments forever, so the log is
// cleaned: when the segments hold more than four segments' worth of bytes
// and more than twice the bytes of the groups' live entries, each flush
// copies the groups that pin the oldest segment to the head of the log (a
// copy record, then their records), in the same write and fsync as the
// Saves it carries, and the segments no group needs any more are deleted.
// The log thus stays within about twice its live data, and at least four
// segments. The in-memory index of a group is FileStorage's: the place and
// term of each entry of its log.
//
// # Failures
//
// A failed write or fsync makes the HostStorage refuse every later call of
// every group with the same error (after a failed fsync the kernel may have
// dropped the dirty pages), and each group's Node stops (ErrStopped).
type HostStorage struct {
	dir      string
	opts     fileOptions
	lockFile *os.File

	mu       sync.Mutex // guards everything below and the segments' files
	groups   map[uint64]*storedGroup
	segs     []*segment // ascending sequence; the last is written to
	walBytes int64      // bytes in all segments
	live     int64      // bytes of the records of the groups' logs
	// reclaimDue says that a group may have stopped pinning a segment.
	reclaimDue bool
	failed     error // sticky write/fsync error
	closed     bool
	buf        []byte
	readBuf    []byte

	// Group commit: requests of every group queue here; one caller writes
	// and syncs for all.
	queue    []*hostRequest
	flushing bool
	flushed  *sync.Cond

	// snapMu makes one Group at a time verify a group's snapshots (outside
	// mu: that reads whole files).
	snapMu sync.Mutex

	// forceCleaning makes every flush clean the log when it has more than
	// one segment (tests).
	forceCleaning bool
}

// storedGroup is one group's state in a HostStorage: its log view, as a
// FileStorage's, and what pins segments.
type storedGroup struct {
	id uint64
	walLog
	hsSeq      uint64 // segment of the latest hard-state record, 0 if none
	compactSeq uint64 // segment of the latest compaction record, 0 if none
	live       int64  // bytes of the records of the entries of its log
	snap       *snapFile
	snapLoaded bool // snap reflects the files in the group's directory
	hasDir     bool // the group's snapshot directory exists
	removed    bool // RemoveGroup was called: the group is gone
	metrics    atomic.Pointer[storageMetrics]
}

const (
	hostWALMagic         = "RKHWAL01"
	hostRecHeaderSize    = 17
	recGroupRemoved      = 4
	recGroupCopy         = 5
	hostCleanFloorSegs   = 4 // cleaning starts past this many segments' worth of bytes
	hostKeepBufferBytes  = 4 << 20
	hostMaxEntryOverhead = 32 // bytes of an entry payload other than its data, at most
)

// hostRequest is one queued write of one group.
type hostRequest struct {
	g           *storedGroup
	kind        byte // recEntry: a Save; recCompact; recGroupRemoved
	hs          HardState
	entries     []Entry
	index, term uint64 // a compaction's
	done        bool
	err         error
}

// OpenHostStorage opens (creating if needed) the shared log in dir,
// recovers the state of every group in it, and locks dir against other
// users until Close. Options are FileStorage's (WithSegmentSize,
// WithNoSync). It fails with an error wrapping ErrCorrupt if the log is
// damaged anywhere but in a torn final write, with one wrapping
// ErrNewerVersion if a newer version of the library wrote it in a format
// this build does not read, and with ErrLocked if dir is in use. A
// directory of a FileStorage is refused (ErrInvalidConfig), as is a
// HostStorage's by OpenFileStorage.
func OpenHostStorage(dir string, opts ...FileOption) (*HostStorage, error) {
	o, lock, err := openLogDir(dir, opts)
	if err != nil {
		return nil, err
	}
	h := &HostStorage{dir: dir, opts: o, lockFile: lock, groups: map[uint64]*storedGroup{}}
	h.flushed = sync.NewCond(&h.mu)
	if err := h.recover(); err != nil {
		h.closeFiles()
		return nil, err
	}
	return h, nil
}

func newHostGroup(id uint64) *storedGroup {
	return &storedGroup{id: id, walLog: walLog{first: 1, startKnown: true}, snapLoaded: true}
}

// Group returns the Storage of group id, creating the group if the
// HostStorage holds nothing for it. The Storage satisfies the whole
// Storage contract and is used with NewNode like a FileStorage; it has no
// Close of its own (close the HostStorage, after the group's Node). Calling
// Group again for the same id gives a Storage over the same state, for a
// restarted Node. Group verifies the group's newest snapshot the first time
// it is called for it, and fails with ErrCorrupt if the snapshot is damaged:
// a damaged group does not keep the others from starting.
func (h *HostStorage) Group(id uint64) (Storage, error) {
	h.mu.Lock()
	if err := h.usable(); err != nil {
		h.mu.Unlock()
		return nil, err
	}
	g := h.groups[id]
	if g == nil {
		g = newHostGroup(id)
		h.groups[id] = g
	}
	if g.removed {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: group %d is being removed", ErrClosed, id)
	}
	loaded := g.snapLoaded
	h.mu.Unlock()
	if !loaded {
		if err := h.loadGroupSnapshots(g); err != nil {
			return nil, err
		}
	}
	return &groupStorage{h: h, g: g}, nil
}

// loadGroupSnapshots removes a group's unfinished snapshots and verifies
// its newest one.
func (h *HostStorage) loadGroupSnapshots(g *storedGroup) error {
	h.snapMu.Lock()
	defer h.snapMu.Unlock()
	h.mu.Lock()
	loaded := g.snapLoaded
	h.mu.Unlock()
	if loaded {
		return nil
	}
	sf, err := loadSnapshotDir(h.groupDir(g.id))
	if err != nil {
		return fmt.Errorf("group %d: %w", g.id, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if g.snap == nil || (sf != nil && sf.meta.Index > g.snap.meta.Index) {
		g.snap = sf
	}
	g.snapLoaded = true
	return nil
}

// Groups returns the IDs of the groups that hold state (anything saved,
// or a snapshot), in ascending order.
func (h *HostStorage) Groups() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []uint64
	for id, g := range h.groups {
		if !g.removed && g.holdsState() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (g *storedGroup) holdsState() bool {
	return g.hs != (HardState{}) || g.first > 1 || len(g.locs) > 0 || g.hasDir
}

// RemoveGroup durably drops everything group id holds: its log, hard
// state and snapshots. Close the group's Node first; its Storage fails
// every later call with ErrClosed, and Group(id) afterwards starts an empty
// group. Removing a group that holds nothing does nothing harmful.
func (h *HostStorage) RemoveGroup(id uint64) error {
	h.mu.Lock()
	if err := h.usable(); err != nil {
		h.mu.Unlock()
		return err
	}
	g := h.groups[id]
	if g == nil {
		g = newHostGroup(id)
		g.hasDir = dirExists(h.groupDir(id))
		h.groups[id] = g
	}
	g.removed = true
	h.mu.Unlock()
	req := &hostRequest{g: g, kind: recGroupRemoved}
	h.submit(req)
	return req.err
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// Close releases the files and the directory lock. It is idempotent. Close
// the groups' Nodes first.
func (h *HostStorage) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	for h.flushing {
		h.flushed.Wait()
	}
	h.closed = true
	return h.closeFiles()
}

func (h *HostStorage) closeFiles() error {
	var errs []error
	for _, seg := range h.segs {
		errs = append(errs, seg.f.Close())
	}
	if h.lockFile != nil {
		errs = append(errs, unlockDir(h.lockFile))
		h.lockFile = nil
	}
	return errors.Join(errs...)
}

// usable returns why the storage cannot be used, or nil.
func (h *HostStorage) usable() error {
	if h.closed {
		return fmt.Errorf("%w: HostStorage", ErrClosed)
	}
	return h.failed
}

// usableGroup returns why g cannot be used, or nil.
func (h *HostStorage) usableGroup(g *storedGroup) error {
	if err := h.usable(); err != nil {
		return err
	}
	if g.removed {
		return fmt.Errorf("%w: group %d was removed from the HostStorage", ErrClosed, g.id)
	}
	return nil
}

func (h *HostStorage) segPath(seq uint64) string {
	return filepath.Join(h.dir, fmt.Sprintf("hwal-%016x.log", seq))
}

func (h *HostStorage) groupDir(id uint64) string {
	return filepath.Join(h.dir, fmt.Sprintf("group-%016x", id))
}

// segment returns the open segment with sequence number seq.
func (h *HostStorage) segment(seq uint64) *segment { return h.segs[seq-h.segs[0].seq] }

// submit queues reqs, in order, and returns once each is done: one caller
// at a time writes and syncs everything queued (group commit).
func (h *HostStorage) submit(reqs ...*hostRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queue = append(h.queue, reqs...)
	for _, req := range reqs {
		for !req.done {
			if !h.flushing {
				h.flush()
				continue
			}
			h.flushed.Wait()
		}
	}
}

// groupWrite is what one request wrote, for its group's metrics.
type groupWrite struct {
	m *storageMetrics
	n int
}

// flush writes every queued request, of every group, with one write and
// one fsync. It is called with mu held and releases it during the I/O.
//
// The in-memory state of each group moves as its requests are encoded,
// before the write: a request is checked against the state the requests
// before it in the batch leave. If the write fails, the HostStorage is
// unusable for good, so the in-memory state is never read again; and the
// only reader of a group's state during its own write would be its own
// Node, which waits for the write (the Storage contract's one goroutine at
// a time).
func (h *HostStorage) flush() {
	batch := h.queue
	h.queue = nil
	h.flushing = true
	err := h.usable()
	var removals []*storedGroup
	if err == nil {
		err = h.rotateIfFull()
	}
	if err == nil {
		seg := h.segs[len(h.segs)-1]
		var buf []byte
		buf, err = h.copyForward(h.buf[:0], seg)
		var writes []groupWrite
		if err == nil {
			for _, req := range batch {
				start := len(buf)
				buf = h.encode(buf, seg, req)
				if req.err == nil && req.kind == recGroupRemoved {
					removals = append(removals, req.g)
				}
				if m := req.g.metrics.Load(); m != nil && len(buf) > start {
					writes = append(writes, groupWrite{m: m, n: len(buf) - start})
				}
			}
		}
		if err == nil && len(buf) > 0 {
			err = h.write(seg, buf, writes)
		}
		if cap(buf) <= hostKeepBufferBytes {
			h.buf = buf[:0]
		} else {
			h.buf = nil
		}
	}
	if err == nil {
		for _, g := range removals {
			if err = h.dropGroupFiles(g); err != nil {
				break
			}
		}
	}
	if err == nil && h.reclaimDue {
		err = h.reclaim()
	}
	for _, req := range batch {
		if req.err == nil {
			req.err = err
		}
		req.done = true
	}
	h.flushing = false
	h.flushed.Broadcast()
}

// write appends buf to seg and syncs it, with mu released meanwhile; a
// failure makes the storage unusable.
func (h *HostStorage) write(seg *segment, buf []byte, writes []groupWrite) error {
	h.mu.Unlock()
	t0 := monotonic()
	_, err := seg.f.WriteAt(buf, seg.size)
	t1 := monotonic()
	if err == nil {
		err = h.opts.syncFile(seg.f)
	}
	if err == nil {
		synced := h.opts.syncHook != nil || !h.opts.noSync
		for _, w := range writes {
			w.m.wrote(w.n, t0, t1, synced)
		}
	}
	h.mu.Lock()
	if err != nil {
		h.failed = fmt.Errorf("raft: writing the log: %w", err)
		return h.failed
	}
	seg.size += int64(len(buf))
	h.walBytes += int64(len(buf))
	return nil
}

// encode appends the records of req to buf, which will be written to seg
// at seg.size, and moves the group's in-memory state with them. A request
// that is refused gets its error and writes nothing.
func (h *HostStorage) encode(buf []byte, seg *segment, req *hostRequest) []byte {
	g := req.g
	if req.kind == recGroupRemoved {
		buf = appendHostRecord(buf, recGroupRemoved, g.id, nil)
		h.live -= g.live
		g.live, g.locs, g.hs, g.first, g.firstTerm = 0, nil, HardState{}, 1, 0
		g.hsSeq, g.compactSeq = 0, 0
		h.reclaimDue = true
		return buf
	}
	if g.removed {
		req.err = fmt.Errorf("%w: group %d was removed from the HostStorage", ErrClosed, g.id)
		return buf
	}
	base := uint64(seg.size)
	switch req.kind {
	case recCompact:
		if req.index < g.first {
			return buf
		}
		buf, start := beginHostRecord(buf, recCompact, g.id)
		buf = endHostRecord(appendCompactPayload(buf, req.index, req.term), start)
		g.compactTo(req.index, req.term)
		g.compactSeq = seg.seq
		h.setLive(g, sumLocs(g.locs))
		h.reclaimDue = true
		return buf
	}
	last := g.first + uint64(len(g.locs)) - 1
	if err := validateSave("HostStorage", req.entries, g.first, last); err != nil {
		req.err = err
		return buf
	}
	for i := range req.entries {
		if len(req.entries[i].Data) > maxRecordPayload-hostMaxEntryOverhead {
			req.err = fmt.Errorf("raft: HostStorage.Save: entry %d holds %d bytes, more than a record can", req.entries[i].Index, len(req.entries[i].Data))
			return buf
		}
	}
	// The entries go before the hard state, as the Storage contract orders
	// them (see FileStorage.flush).
	if len(req.entries) > 0 {
		at := req.entries[0].Index
		kept := g.locs[:at-g.first]
		live := g.live - sumLocs(g.locs[at-g.first:])
		for i := range req.entries {
			start := len(buf)
			buf = appendHostEntry(buf, g.id, &req.entries[i])
			n := uint32(len(buf) - start)
			kept = append(kept, entryLoc{seq: seg.seq, term: req.entries[i].Term, off: uint32(base) + uint32(start), len: n})
			live += int64(n)
		}
		g.locs = kept
		h.setLive(g, live)
	}
	if req.hs != g.hs {
		// The payload goes straight into buf: no allocation per Save.
		var start int
		buf, start = beginHostRecord(buf, recHardState, g.id)
		buf = endHostRecord(appendHardStatePayload(buf, req.hs, g.termAt), start)
		g.hs = req.hs
		g.hsSeq = seg.seq
	}
	return buf
}

func (h *HostStorage) setLive(g *storedGroup, live int64) {
	h.live += live - g.live
	g.live = live
}

func sumLocs(locs []entryLoc) int64 {
	var n int64
	for _, l := range locs {
		n += int64(l.len)
	}
	return n
}

// dropGroupFiles deletes a removed group's snapshot directory, after its
// removal record is durable, and forgets the group. A failure makes the
// storage unusable: the files of the removed group would otherwise come
// back as a new group's.
func (h *HostStorage) dropGroupFiles(g *storedGroup) error {
	if g.hasDir || dirExists(h.groupDir(g.id)) {
		if err := os.RemoveAll(h.groupDir(g.id)); err != nil {
			h.failed = fmt.Errorf("raft: removing group %d's snapshots: %w", g.id, err)
			return h.failed
		}
		if err := h.opts.syncDir(h.dir); err != nil {
			h.failed = err
			return err
		}
	}
	if h.groups[g.id] == g {
		delete(h.groups, g.id)
	}
	return nil
}

// rotateIfFull starts a new segment when the current one is full.
func (h *HostStorage) rotateIfFull() error {
	cur := h.segs[len(h.segs)-1]
	if cur.size < h.opts.segmentSize {
		return nil
	}
	if err := h.newSegment(cur.seq + 1); err != nil {
		h.failed = err
		return err
	}
	return nil
}

// newSegment creates segment seq, holding the magic only, and makes its
// directory entry durable.
func (h *HostStorage) newSegment(seq uint64) error {
	f, err := os.OpenFile(h.segPath(seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("raft: creating segment: %w", err)
	}
	if _, err := f.Write([]byte(hostWALMagic)); err != nil {
		f.Close()
		return fmt.Errorf("raft: writing segment header: %w", err)
	}
	if err := h.opts.syncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("raft: syncing a new segment: %w", err)
	}
	if err := h.opts.syncDir(h.dir); err != nil {
		f.Close()
		return err
	}
	h.segs = append(h.segs, &segment{seq: seq, f: f, size: int64(len(hostWALMagic))})
	h.walBytes += int64(len(hostWALMagic))
	return nil
}

// appendHostRecord appends a record of group to buf.
func appendHostRecord(buf []byte, typ byte, group uint64, payload []byte) []byte {
	buf, start := beginHostRecord(buf, typ, group)
	return endHostRecord(append(buf, payload...), start)
}

// appendHostEntry appends the record of entry e of group to buf.
func appendHostEntry(buf []byte, group uint64, e *Entry) []byte {
	buf, start := beginHostRecord(buf, recEntry, group)
	return endHostRecord(appendEntryPayload(buf, e), start)
}

func beginHostRecord(buf []byte, typ byte, group uint64) ([]byte, int) {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	return binary.LittleEndian.AppendUint64(buf, group), start
}

func endHostRecord(buf []byte, start int) []byte {
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(buf)-start-hostRecHeaderSize))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+8:], crcTable))
	return buf
}

// groupStorage is the Storage of one group of a HostStorage.
type groupStorage struct {
	h *HostStorage
	g *storedGroup
}

// instrument implements storageInstrumented: each group's Node records the
// writes its group took part in, and the fsyncs it waited for.
func (s *groupStorage) instrument(m *storageMetrics) { s.g.metrics.Store(m) }

// InitialState implements Storage.
func (s *groupStorage) InitialState() (HardState, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.g.hs, s.h.usableGroup(s.g)
}

// FirstIndex implements Storage.
func (s *groupStorage) FirstIndex() (uint64, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.g.first, s.h.usableGroup(s.g)
}

// LastIndex implements Storage.
func (s *groupStorage) LastIndex() (uint64, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.g.first + uint64(len(s.g.locs)) - 1, s.h.usableGroup(s.g)
}

// Term implements Storage.
func (s *groupStorage) Term(i uint64) (uint64, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if err := s.h.usableGroup(s.g); err != nil {
		return 0, err
	}
	t, ok := s.g.termAt(i)
	if !ok {
		return 0, fmt.Errorf("%w: group %d: Term(%d) outside [%d, %d]", ErrOutOfRange, s.g.id, i, s.g.first-1, s.g.first+uint64(len(s.g.locs))-1)
	}
	return t, nil
}

// Entries implements Storage. It reads the entries from the shared log
// with the group's in-memory index, and checks each record's checksum
// again.
func (s *groupStorage) Entries(lo, hi uint64) ([]Entry, error) {
	h, g := s.h, s.g
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.usableGroup(g); err != nil {
		return nil, err
	}
	last := g.first + uint64(len(g.locs)) - 1
	if lo < g.first || hi < lo || hi > last+1 {
		return nil, fmt.Errorf("%w: group %d: Entries(%d, %d) outside [%d, %d]", ErrOutOfRange, g.id, lo, hi, g.first, last+1)
	}
	out := make([]Entry, 0, hi-lo)
	for i := lo; i < hi; i++ {
		e, _, err := h.readEntry(g, g.locs[i-g.first], i, &h.readBuf)
		if err != nil {
			return nil, err
		}
		e.Data = slices.Clone(e.Data) // the read buffer is reused
		out = append(out, e)
	}
	return out, nil
}

// readEntry reads the record of entry i of g at loc into *buf, checks it
// and decodes it; it returns the record's bytes too. Both alias *buf.
func (h *HostStorage) readEntry(g *storedGroup, loc entryLoc, i uint64, buf *[]byte) (Entry, []byte, error) {
	if cap(*buf) < int(loc.len) {
		*buf = make([]byte, loc.len)
	}
	b := (*buf)[:loc.len]
	if _, err := h.segment(loc.seq).f.ReadAt(b, int64(loc.off)); err != nil {
		return Entry{}, nil, fmt.Errorf("raft: group %d: reading entry %d: %w", g.id, i, err)
	}
	typ, group, payload, _, ok := parseHostRecord(b)
	if !ok || typ != recEntry || group != g.id {
		return Entry{}, nil, fmt.Errorf("%w: group %d: entry %d fails its checksum on read", ErrCorrupt, g.id, i)
	}
	e, err := decodeEntryPayload(payload)
	if err != nil || e.Index != i {
		return Entry{}, nil, fmt.Errorf("%w: group %d: entry %d: bad record", ErrCorrupt, g.id, i)
	}
	return e, b, nil
}

// Save implements Storage: durably stores entries and hs. Saves of every
// group of the HostStorage that arrive together share one write and one
// fsync.
func (s *groupStorage) Save(hs HardState, entries []Entry) error {
	req := &hostRequest{g: s.g, kind: recEntry, hs: hs, entries: entries}
	s.h.submit(req)
	return req.err
}

// Compact implements Storage. The compaction record shares its write and
// fsync with the other groups' Saves; the segments that no group needs any
// more are deleted after it.
func (s *groupStorage) Compact(index, term uint64) error {
	req := &hostRequest{g: s.g, kind: recCompact, index: index, term: term}
	s.h.submit(req)
	return req.err
}

// SaveSnapshot implements Storage: the snapshot is a file in the group's
// directory, in FileStorage's snapshot format.
func (s *groupStorage) SaveSnapshot(meta SnapshotMeta, data io.Reader) error {
	if data == nil {
		return errNilSnapshotData
	}
	h, g := s.h, s.g
	h.mu.Lock()
	err := h.usableGroup(g)
	hasDir := g.hasDir
	h.mu.Unlock()
	if err != nil {
		return err
	}
	dir := h.groupDir(g.id)
	if !hasDir {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("raft: creating group %d's directory: %w", g.id, err)
		}
		if err := h.opts.syncDir(h.dir); err != nil {
			return err
		}
		h.mu.Lock()
		g.hasDir = true
		h.mu.Unlock()
	}
	sf, err := h.opts.installSnapshot(dir, meta, data)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if g.snap == nil || meta.Index >= g.snap.meta.Index {
		g.snap = sf
	}
	pruneSnapshots(dir, g.snap)
	return nil
}

// Snapshot implements Storage.
func (s *groupStorage) Snapshot() (SnapshotMeta, io.ReadCloser, error) {
	s.h.mu.Lock()
	sf := s.g.snap
	err := s.h.usableGroup(s.g)
	s.h.mu.Unlock()
	if err != nil {
		return SnapshotMeta{}, nil, err
	}
	return sf.open()
}

// pin returns the oldest segment holding a record g still needs, MaxUint64
// when it needs none.
func (g *storedGroup) pin() uint64 {
	p := uint64(math.MaxUint64)
	if g.hsSeq != 0 {
		p = g.hsSeq
	}
	if g.first > 1 && g.compactSeq != 0 && g.compactSeq < p {
		p = g.compactSeq
	}
	// Entries are written in index order, so the first one's segment is
	// the oldest of them.
	if len(g.locs) > 0 && g.locs[0].seq < p {
		p = g.locs[0].seq
	}
	return p
}

// reclaim deletes the segments that no group needs any more, oldest first,
// each unlink made durable before the next, so that a crash never leaves a
// gap between segments.
func (h *HostStorage) reclaim() error {
	h.reclaimDue = false
	head := h.segs[len(h.segs)-1].seq
	keep := head
	for _, g := range h.groups {
		keep = min(keep, g.pin())
	}
	removed := 0
	for _, old := range h.segs {
		if old.seq >= keep {
			break
		}
		old.f.Close()
		removed++
		h.walBytes -= old.size
		if err := os.Remove(old.f.Name()); err != nil {
			h.failed = fmt.Errorf("raft: deleting a segment no group needs: %w", err)
			break
		}
		if err := h.opts.syncDir(h.dir); err != nil {
			h.failed = err
			break
		}
	}
	h.segs = append([]*segment(nil), h.segs[removed:]...)
	return h.failed
}

// sortedGroups returns the groups ordered by ID, for deterministic order.
func (h *HostStorage) sortedGroups() []*storedGroup {
	gs := make([]*storedGroup, 0, len(h.groups))
	for _, g := range h.groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].id < gs[j].id })
	return gs
}
