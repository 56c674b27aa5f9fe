package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// FileStorage is the durable Storage: a segmented write-ahead log in one
// directory. Every Save is one write and one fsync; concurrent Saves are
// coalesced into one write and one fsync (group commit).
//
// # On-disk format
//
// The directory holds a LOCK file and segment files named
// wal-<sequence, 16 hex digits>.log. Each segment starts with the 8-byte
// magic "RKWAL01\n", whose "01" is the format version of every record in
// the segment, and then holds records:
//
//	length  uint32, little endian: the length N of payload
//	crc     uint32, little endian: CRC-32C (Castagnoli) of type and payload
//	type    1 byte: 1 = entry, 2 = hard state, 3 = compaction
//	payload N bytes
//
// An entry payload is uvarint index, uvarint term, one byte of EntryType,
// then the data. A hard-state payload is uvarint term, vote and commit, then
// (optional: logs written before it existed lack it) the uvarint term of
// the entry at the commit index, 0 when unknown, then (optional too, and
// only after the commit term) the uvarint cluster origin (HardState.Origin);
// readers ignore what follows the fields they know. A compaction payload is
// the uvarint index and term of the last discarded entry: the log now
// starts after it.
//
// Versions (docs/protocol.md, "Formats and versions"): a reader ignores
// bytes after the fields it knows in hard-state and compaction payloads, so
// a later version may append optional fields there. Anything else an older
// reader could not ignore (a new record type, a new field in an entry
// record) needs a new segment version. OpenFileStorage refuses, with
// ErrNewerVersion, a segment of a higher version and an intact record of a
// type it does not know, rather than cut it off as a torn write.
//
// Replaying the segments in sequence order rebuilds the state: the last
// hard-state record wins; an entry record with index i replaces every entry
// from i on (this is how a conflicting suffix is truncated, Raft §5.3), so
// i may be at most one past the last entry. Within a Save, the entries are
// written before the hard state, as the Storage contract orders them: a
// torn write keeps a prefix of the records, so a surviving hard state never
// names a commit index over entries the same Save was replacing. (Entries
// of a newer term may survive without the hard state that raised the term;
// the Node adopts that term on restart, see newCore.) A new segment starts,
// after the magic, with the current hard state and the compaction point, so
// old segments can be deleted once compacted.
//
// # Recovery
//
// A record that fails its checksum, or whose length runs past the end of
// the file, is a torn write if nothing valid follows it in the last
// segment: the file is truncated there and the log opens (such a write never
// returned, so nothing in it was acknowledged). Anywhere else it is
// corruption: OpenFileStorage fails with an error wrapping ErrCorrupt rather
// than drop entries that may have been acknowledged. If the commit index of
// the last hard state is not backed by the surviving log (the entry there is
// missing or has another term than the record says), recovery lowers it to
// the newest one that is: a commit index may lag, but it must never cover an
// entry that was not committed.
//
// # Failures
//
// A failed write or fsync makes the FileStorage refuse every later Save
// with the same error: after a failed fsync the kernel may have dropped the
// dirty pages, so retrying could report success for data that is lost.
type FileStorage struct {
	dir      string
	opts     fileOptions
	lockFile *os.File
	metrics  atomic.Pointer[storageMetrics] // set by the Node using it (metrics.go)

	mu sync.Mutex // guards everything below and the segments' files
	walLog
	snap    *snapFile  // the newest snapshot, nil if none
	segs    []*segment // ascending sequence; the last is written to
	failed  error      // sticky write/fsync error
	closed  bool
	buf     []byte
	readBuf []byte

	// Group commit: Saves queue here; one caller writes and syncs for all.
	queue    []*saveRequest
	flushing bool
	flushed  *sync.Cond
}

type fileOptions struct {
	segmentSize int64
	noSync      bool
	// syncHook, if set, replaces fsync of a segment: tests use it to inject
	// failures and to count syncs.
	syncHook func(f *os.File) error
}

// FileOption configures OpenFileStorage.
type FileOption func(*fileOptions)

// WithSegmentSize sets the size at which a segment is closed and a new one
// started. Default 64 MiB.
func WithSegmentSize(n int64) FileOption { return func(o *fileOptions) { o.segmentSize = n } }

// WithNoSync turns fsync off. UNSAFE: a machine crash (not a process
// crash) can lose or corrupt acknowledged writes. For tests and benchmarks
// only.
func WithNoSync() FileOption { return func(o *fileOptions) { o.noSync = true } }

const (
	walMagic          = "RKWAL01\n"
	recHeaderSize     = 9
	recEntry          = 1
	recHardState      = 2
	recCompact        = 3
	maxRecordPayload  = 256 << 20
	defaultSegmentMiB = 64
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	seq  uint64
	f    *os.File
	size int64
}

type entryLoc struct {
	seq  uint64 // the segment's sequence number
	term uint64
	off  uint32 // offset of the record
	len  uint32 // record length including header
}

type saveRequest struct {
	hs      HardState
	entries []Entry
	done    bool
	err     error
}

// walLog is the in-memory view of one Raft log kept in a write-ahead log,
// as replaying its records rebuilds it: the hard state, where the log
// starts, and where each entry's record lies. A FileStorage holds one; a
// HostStorage holds one per group.
type walLog struct {
	hs        HardState
	first     uint64     // index of the first entry
	firstTerm uint64     // term of the entry at first-1 (0 if never compacted)
	locs      []entryLoc // locs[i] locates entry first+i
	// startKnown is false while replay has met entries whose predecessors
	// were deleted but not yet the compaction record that explains it.
	startKnown bool
	// hsCommit checks hs.Commit against the log; lastBacked is the newest
	// commit that the log backed when its record was replayed.
	hsCommit   commitCheck
	lastBacked commitCheck
}

// openLogDir applies opts, creates dir if needed and locks it: what
// OpenFileStorage and OpenHostStorage both do first.
func openLogDir(dir string, opts []FileOption) (fileOptions, *os.File, error) {
	o := fileOptions{segmentSize: defaultSegmentMiB << 20}
	for _, opt := range opts {
		opt(&o)
	}
	if o.segmentSize < 4096 || o.segmentSize > 1<<30 {
		return o, nil, fmt.Errorf("%w: segment size %d is outside [4 KiB, 1 GiB]", ErrInvalidConfig, o.segmentSize)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return o, nil, fmt.Errorf("raft: creating %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	return o, lock, err
}

// OpenFileStorage opens (creating if needed) the log in dir, recovers its
// state, and locks dir against other users until Close. It fails with an
// error wrapping ErrCorrupt if the log is damaged anywhere but in a torn
// final write, and with one wrapping ErrNewerVersion if a newer version of
// the library wrote it in a format this build does not read.
func OpenFileStorage(dir string, opts ...FileOption) (*FileStorage, error) {
	o, lock, err := openLogDir(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &FileStorage{dir: dir, opts: o, lockFile: lock, walLog: walLog{first: 1, startKnown: true}}
	s.flushed = sync.NewCond(&s.mu)
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// segmentSeqs returns the sequence numbers of the segments <prefix>-*.log
// of a storage of kind kind in dir, in order. A directory holding another
// storage's segments (<other>-*.log, a storage of kind otherKind) is refused with
// ErrInvalidConfig, as is any file that merely looks like a segment with
// ErrCorrupt.
func segmentSeqs(dir, kind, prefix, otherKind, other string) ([]uint64, error) {
	if fs, _ := filepath.Glob(filepath.Join(dir, other+"-*.log")); len(fs) > 0 {
		return nil, fmt.Errorf("%w: %s holds a %s's log (%s-*.log), not a %s's", ErrInvalidConfig, dir, otherKind, other, kind)
	}
	names, err := filepath.Glob(filepath.Join(dir, prefix+"-*.log"))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, name := range names {
		var seq uint64
		base := filepath.Base(name)
		if _, err := fmt.Sscanf(base, prefix+"-%016x.log", &seq); err != nil || fmt.Sprintf(prefix+"-%016x.log", seq) != base {
			return nil, fmt.Errorf("%w: unexpected file %s in the log directory", ErrCorrupt, base)
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// recover replays every segment.
func (s *FileStorage) recover() error {
	seqs, err := segmentSeqs(s.dir, "FileStorage", "wal", "HostStorage", "hwal")
	if err != nil {
		return err
	}
	for i, seq := range seqs {
		if i > 0 && seq != seqs[i-1]+1 {
			return fmt.Errorf("%w: segment %d is missing", ErrCorrupt, seqs[i-1]+1)
		}
		last := i == len(seqs)-1
		f, err := os.OpenFile(s.segPath(seq), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("raft: opening segment: %w", err)
		}
		seg := &segment{seq: seq, f: f}
		s.segs = append(s.segs, seg)
		if err := s.replay(seg, last); err != nil {
			return err
		}
	}
	if !s.startKnown {
		return fmt.Errorf("%w: the log starts at %d but no compaction record says why", ErrCorrupt, s.first)
	}
	s.checkCommit()
	if err := s.loadSnapshots(); err != nil {
		return err
	}
	if len(s.segs) == 0 {
		return s.newSegment(1)
	}
	return nil
}

// replay reads one segment's records into the in-memory state.
func (s *FileStorage) replay(seg *segment, last bool) error {
	data, err := io.ReadAll(io.NewSectionReader(seg.f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("raft: reading %s: %w", seg.f.Name(), err)
	}
	name := filepath.Base(seg.f.Name())
	if len(data) < len(walMagic) || string(data[:len(walMagic)]) != walMagic {
		if v, newer := newerFormat(data, walMagic); newer {
			return fmt.Errorf("%w: %s: segment format %02d; this build reads up to %s", ErrNewerVersion, name, v, walMagic[5:7])
		}
		if last && isTornHeader(data, walMagic) {
			// Crashed while creating this segment: nothing in it was written.
			return s.truncateSegment(seg, 0, true)
		}
		return fmt.Errorf("%w: %s: bad segment header", ErrCorrupt, name)
	}
	off := len(walMagic)
	for off < len(data) {
		typ, payload, n, ok := parseRecord(data[off:])
		if !ok {
			if t, known := recordType(data[off:]); !known {
				// Intact but of a type this build does not know: cutting it
				// off as a torn write would lose what a newer build wrote.
				return fmt.Errorf("%w: %s: record at offset %d has type %d, which this build does not know", ErrNewerVersion, name, off, t)
			}
			if last && !validRecordAfter(data, off+1) {
				// A torn final write: cut it off.
				return s.truncateSegment(seg, int64(off), false)
			}
			return fmt.Errorf("%w: %s: bad record at offset %d", ErrCorrupt, name, off)
		}
		if err := s.applyRecord(typ, payload, entryLoc{seq: seg.seq, off: uint32(off), len: uint32(n)}); err != nil {
			return fmt.Errorf("%w: %s: record at offset %d: %v", ErrCorrupt, name, off, err)
		}
		off += n
	}
	seg.size = int64(len(data))
	return nil
}

// isTornHeader reports whether data can be what a crash left while the
// segment was being created: a prefix of the magic, then only zeros.
func isTornHeader(data []byte, magic string) bool {
	n := 0
	for n < len(data) && n < len(magic) && data[n] == magic[n] {
		n++
	}
	for _, b := range data[n:] {
		if b != 0 {
			return false
		}
	}
	return true
}

// parseRecord parses the record at the start of b. ok is false if it is
// truncated or fails its checksum.
func parseRecord(b []byte) (typ byte, payload []byte, n int, ok bool) {
	if len(b) < recHeaderSize {
		return 0, nil, 0, false
	}
	length := binary.LittleEndian.Uint32(b[0:4])
	if length > maxRecordPayload || int64(length) > int64(len(b)-recHeaderSize) {
		return 0, nil, 0, false
	}
	n = recHeaderSize + int(length)
	if crc32.Checksum(b[8:n], crcTable) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, nil, 0, false
	}
	typ = b[8]
	if typ != recEntry && typ != recHardState && typ != recCompact {
		return 0, nil, 0, false
	}
	return typ, b[recHeaderSize:n], n, true
}

// recordType returns the type of the record at the start of b if its
// length and checksum are intact, and whether this build knows that type;
// known is also true when the record is not intact.
func recordType(b []byte) (typ byte, known bool) {
	if len(b) < recHeaderSize {
		return 0, true
	}
	length := binary.LittleEndian.Uint32(b[0:4])
	if length > maxRecordPayload || int64(length) > int64(len(b)-recHeaderSize) {
		return 0, true
	}
	n := recHeaderSize + int(length)
	if crc32.Checksum(b[8:n], crcTable) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, true
	}
	typ = b[8]
	return typ, typ == recEntry || typ == recHardState || typ == recCompact
}

// newerFormat reports whether head starts with magic but for a higher
// version in magic's two version digits (the "01" of "RKWAL01\n"): a file
// of a newer format, not a damaged one.
func newerFormat(head []byte, magic string) (version int, newer bool) {
	i := strings.IndexAny(magic, "0123456789")
	if i < 0 || len(head) < len(magic) || string(head[:i]) != magic[:i] || string(head[i+2:len(magic)]) != magic[i+2:] {
		return 0, false
	}
	d := head[i : i+2]
	if d[0] < '0' || d[0] > '9' || d[1] < '0' || d[1] > '9' {
		return 0, false
	}
	v, _ := strconv.Atoi(string(d))
	current, _ := strconv.Atoi(magic[i : i+2])
	return v, v > current
}

// validRecordAfter reports whether any offset from `from` on starts a valid
// record: if one does, a bad record before it is not a torn tail.
func validRecordAfter(data []byte, from int) bool {
	for off := from; off+recHeaderSize <= len(data); off++ {
		if t := data[off+8]; t != recEntry && t != recHardState && t != recCompact {
			continue
		}
		if _, _, _, ok := parseRecord(data[off:]); ok {
			return true
		}
	}
	return false
}

func (s *FileStorage) applyRecord(typ byte, payload []byte, loc entryLoc) error {
	switch typ {
	case recHardState:
		return s.applyHardState(payload)
	case recEntry:
		e, err := decodeEntryPayload(payload)
		if err != nil {
			return err
		}
		// The first surviving segment may start after entries that
		// compaction deleted.
		return s.applyEntry(e, loc, len(s.segs) > 0 && s.segs[0].seq == loc.seq)
	case recCompact:
		index, term, err := decodeCompact(payload)
		if err != nil {
			return err
		}
		s.compactTo(index, term)
	}
	return nil
}

// applyHardState replays a hard-state record.
func (l *walLog) applyHardState(payload []byte) error {
	var v [3]uint64
	for i := range v {
		x, k := binary.Uvarint(payload)
		if k <= 0 {
			return errors.New("truncated hard state")
		}
		v[i], payload = x, payload[k:]
	}
	l.hs = HardState{Term: v[0], Vote: v[1], Commit: v[2]}
	l.hsCommit = commitCheck{index: v[2]}
	if len(payload) > 0 {
		t, k := binary.Uvarint(payload)
		if k <= 0 {
			return errors.New("truncated hard state")
		}
		// Every entry but index 0 has a term of at least 1: a 0
		// elsewhere fills the position before an origin (unknown).
		l.hsCommit.term, l.hsCommit.known = t, t != 0 || v[2] == 0
		payload = payload[k:]
	}
	if len(payload) > 0 {
		o, k := binary.Uvarint(payload)
		if k <= 0 {
			return errors.New("truncated hard state")
		}
		l.hs.Origin = o
	}
	if l.commitBacked(l.hsCommit) {
		l.lastBacked = l.hsCommit
	}
	return nil
}

// applyEntry replays an entry record found at loc. mayStartLater says
// that records before it may have been deleted by compaction, so that an
// empty log may start past its first index (a compaction record met later
// must then explain it).
func (l *walLog) applyEntry(e Entry, loc entryLoc, mayStartLater bool) error {
	if len(l.locs) == 0 && e.Index > l.first && l.startKnown && mayStartLater {
		// The log starts after entries that compaction deleted; a
		// compaction record later on must cover them.
		l.first, l.firstTerm, l.startKnown = e.Index, 0, false
	}
	last := l.first + uint64(len(l.locs)) - 1
	if e.Index < l.first {
		if !l.startKnown {
			// Before the compaction record that explains the start, an
			// earlier index is a truncation rewriting entries whose
			// older records were deleted: the log restarts there.
			l.first, l.locs = e.Index, l.locs[:0]
			loc.term = e.Term
			l.locs = append(l.locs, loc)
			return nil
		}
		return nil // compacted away; superseded by a later record
	}
	if e.Index > last+1 {
		return fmt.Errorf("entry %d does not follow the log [%d, %d]", e.Index, l.first, last)
	}
	loc.term = e.Term
	l.locs = append(l.locs[:e.Index-l.first], loc)
	return nil
}

// compactTo drops the in-memory index up to index.
func (l *walLog) compactTo(index, term uint64) {
	if index+1 < l.first {
		return // an older compaction point (from a segment header)
	}
	if index+1 == l.first {
		l.firstTerm, l.startKnown = term, true
		return
	}
	last := l.first + uint64(len(l.locs)) - 1
	if index >= last || l.locs[index-l.first].term != term {
		l.locs = nil // past the end, or diverging from the snapshot
	} else {
		l.locs = append([]entryLoc(nil), l.locs[index+1-l.first:]...)
	}
	l.first, l.firstTerm, l.startKnown = index+1, term, true
}

// commitCheck is what a hard-state record says about the log it was
// written after: the term of the entry at its commit index, when known
// (records written before that field existed lack it).
type commitCheck struct {
	index, term uint64
	known       bool
}

// termAt returns the term of the entry at index i in the in-memory view,
// including the compaction point first-1.
func (l *walLog) termAt(i uint64) (uint64, bool) {
	switch last := l.first + uint64(len(l.locs)) - 1; {
	case i == l.first-1:
		return l.firstTerm, true
	case i < l.first || i > last:
		return 0, false
	default:
		return l.locs[i-l.first].term, true
	}
}

// commitBacked reports whether the log holds the entries a hard state's
// commit index covered when it was written. A commit index at or before the
// compaction point is backed by the snapshot; one without a recorded term
// cannot be checked and is trusted.
func (l *walLog) commitBacked(c commitCheck) bool {
	if c.index < l.first {
		return true
	}
	t, ok := l.termAt(c.index)
	return ok && (!c.known || t == c.term)
}

// checkCommit runs after replay. Entries are written before the hard state
// of the same Save, so a torn write cannot leave a commit index over entries
// the write was replacing; a log damaged otherwise (written with another
// record order, or edited) could. The commit index is not needed for safety
// (Raft Figure 2 keeps it volatile), but applying entries it wrongly covers
// would apply entries that were never committed: fall back to the last
// commit index that the surviving log backs, or to the compaction point.
func (l *walLog) checkCommit() {
	if l.commitBacked(l.hsCommit) {
		return
	}
	commit := l.first - 1
	if l.lastBacked.index > commit && l.lastBacked.index < l.hs.Commit && l.commitBacked(l.lastBacked) {
		commit = l.lastBacked.index
	}
	l.hs.Commit = commit
	l.hsCommit = commitCheck{index: commit}
}

func decodeCompact(p []byte) (uint64, uint64, error) {
	index, k := binary.Uvarint(p)
	if k <= 0 {
		return 0, 0, errors.New("truncated compaction record")
	}
	term, k2 := binary.Uvarint(p[k:])
	if k2 <= 0 {
		return 0, 0, errors.New("truncated compaction record")
	}
	return index, term, nil
}

func appendCompact(buf []byte, index, term uint64) []byte {
	return appendRecord(buf, recCompact, func(b []byte) []byte { return appendCompactPayload(b, index, term) })
}

func appendCompactPayload(b []byte, index, term uint64) []byte {
	b = binary.AppendUvarint(b, index)
	return binary.AppendUvarint(b, term)
}

func decodeEntryPayload(p []byte) (Entry, error) {
	index, k := binary.Uvarint(p)
	if k <= 0 {
		return Entry{}, errors.New("truncated entry index")
	}
	p = p[k:]
	term, k := binary.Uvarint(p)
	if k <= 0 || len(p) < k+1 {
		return Entry{}, errors.New("truncated entry term")
	}
	p = p[k:]
	typ := EntryType(p[0])
	if typ >= entryTypeEnd {
		return Entry{}, fmt.Errorf("unknown entry type %d", typ)
	}
	e := Entry{Index: index, Term: term, Type: typ}
	if len(p) > 1 {
		e.Data = p[1:]
	}
	return e, nil
}

func appendRecord(buf []byte, typ byte, payload func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, recHeaderSize)...)
	buf[start+8] = typ
	buf = payload(buf)
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(buf)-start-recHeaderSize))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+8:], crcTable))
	return buf
}

// appendHardState encodes hs; termAt gives the term of the entry at
// hs.Commit in the log the record is written after, which recovery checks
// (see commitBacked). It is left out when unknown.
func appendHardState(buf []byte, hs HardState, termAt func(uint64) (uint64, bool)) []byte {
	return appendRecord(buf, recHardState, func(b []byte) []byte { return appendHardStatePayload(b, hs, termAt) })
}

func appendHardStatePayload(b []byte, hs HardState, termAt func(uint64) (uint64, bool)) []byte {
	b = binary.AppendUvarint(b, hs.Term)
	b = binary.AppendUvarint(b, hs.Vote)
	b = binary.AppendUvarint(b, hs.Commit)
	if t, ok := termAt(hs.Commit); ok || hs.Origin != 0 {
		b = binary.AppendUvarint(b, t) // 0 when unknown
	}
	if hs.Origin != 0 {
		b = binary.AppendUvarint(b, hs.Origin)
	}
	return b
}

func appendEntry(buf []byte, e *Entry) []byte {
	return appendRecord(buf, recEntry, func(b []byte) []byte { return appendEntryPayload(b, e) })
}

func appendEntryPayload(b []byte, e *Entry) []byte {
	b = binary.AppendUvarint(b, e.Index)
	b = binary.AppendUvarint(b, e.Term)
	b = append(b, byte(e.Type))
	return append(b, e.Data...)
}

// truncateSegment cuts a segment at off (a torn tail), durably.
func (s *FileStorage) truncateSegment(seg *segment, off int64, rewriteHeader bool) error {
	if err := seg.f.Truncate(off); err != nil {
		return fmt.Errorf("raft: truncating a torn write: %w", err)
	}
	seg.size = off
	if rewriteHeader {
		if _, err := seg.f.WriteAt([]byte(walMagic), 0); err != nil {
			return fmt.Errorf("raft: rewriting a segment header: %w", err)
		}
		seg.size = int64(len(walMagic))
	}
	if err := s.sync(seg.f); err != nil {
		return fmt.Errorf("raft: truncating a torn write: %w", err)
	}
	return nil
}

func (s *FileStorage) segPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("wal-%016x.log", seq))
}

// newSegment creates segment seq, starting with the magic and the current
// hard state, and makes its directory entry durable.
func (s *FileStorage) newSegment(seq uint64) error {
	f, err := os.OpenFile(s.segPath(seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("raft: creating segment: %w", err)
	}
	buf := appendHardState([]byte(walMagic), s.hs, s.termAt)
	if s.first > 1 {
		buf = appendCompact(buf, s.first-1, s.firstTerm)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("raft: writing segment header: %w", err)
	}
	if err := s.sync(f); err != nil {
		f.Close()
		return fmt.Errorf("raft: syncing a new segment: %w", err)
	}
	if err := s.syncDir(); err != nil {
		f.Close()
		return err
	}
	s.segs = append(s.segs, &segment{seq: seq, f: f, size: int64(len(buf))})
	return nil
}

func (s *FileStorage) sync(f *os.File) error { return s.opts.syncFile(f) }

func (s *FileStorage) syncDir() error { return s.opts.syncDir(s.dir) }

// syncFile makes f's contents durable, unless the options say otherwise.
func (o *fileOptions) syncFile(f *os.File) error {
	if o.syncHook != nil {
		return o.syncHook(f)
	}
	if o.noSync {
		return nil
	}
	return f.Sync()
}

// syncDir makes the entries of directory dir durable (a created, renamed
// or deleted file), unless the options say otherwise.
func (o *fileOptions) syncDir(dir string) error {
	if o.noSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raft: opening the log directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raft: syncing the log directory: %w", err)
	}
	return nil
}

// instrument makes s record to m (nil: nothing); the Node calls it.
func (s *FileStorage) instrument(m *storageMetrics) { s.metrics.Store(m) }

// InitialState implements Storage.
func (s *FileStorage) InitialState() (HardState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hs, s.usable()
}

// FirstIndex implements Storage.
func (s *FileStorage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.usable()
}

// LastIndex implements Storage.
func (s *FileStorage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first + uint64(len(s.locs)) - 1, s.usable()
}

// Entries implements Storage. It reads the entries from disk with the
// in-memory index, and checks each record's checksum again.
func (s *FileStorage) Entries(lo, hi uint64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	last := s.first + uint64(len(s.locs)) - 1
	if lo < s.first || hi < lo || hi > last+1 {
		return nil, fmt.Errorf("%w: FileStorage.Entries(%d, %d) outside [%d, %d]", ErrOutOfRange, lo, hi, s.first, last+1)
	}
	out := make([]Entry, 0, hi-lo)
	for i := lo; i < hi; i++ {
		loc := s.locs[i-s.first]
		if cap(s.readBuf) < int(loc.len) {
			s.readBuf = make([]byte, loc.len)
		}
		b := s.readBuf[:loc.len]
		if _, err := s.segment(loc.seq).f.ReadAt(b, int64(loc.off)); err != nil {
			return nil, fmt.Errorf("raft: reading entry %d: %w", i, err)
		}
		typ, payload, _, ok := parseRecord(b)
		if !ok || typ != recEntry {
			return nil, fmt.Errorf("%w: entry %d fails its checksum on read", ErrCorrupt, i)
		}
		e, err := decodeEntryPayload(payload)
		if err != nil || e.Index != i {
			return nil, fmt.Errorf("%w: entry %d: bad record", ErrCorrupt, i)
		}
		e.Data = slices.Clone(e.Data) // the read buffer is reused
		out = append(out, e)
	}
	return out, nil
}

// Save implements Storage: durably stores entries and hs. Saves from
// several goroutines at once share one write and one fsync.
func (s *FileStorage) Save(hs HardState, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := &saveRequest{hs: hs, entries: entries}
	s.queue = append(s.queue, req)
	for !req.done {
		if !s.flushing {
			s.flush()
			continue
		}
		s.flushed.Wait()
	}
	return req.err
}

// flush writes every queued request with one write and one fsync. It is
// called with mu held and releases it during the I/O.
func (s *FileStorage) flush() {
	batch := s.queue
	s.queue = nil
	s.flushing = true
	err := s.usable()
	var newLocs []entryLoc
	var firstNew uint64
	if err == nil {
		err = s.rotateIfFull()
	}
	if err == nil {
		// Validate and encode under the lock: the in-memory view must move
		// with the queue order.
		buf := s.buf[:0]
		seg := s.segs[len(s.segs)-1]
		last := s.first + uint64(len(s.locs)) - 1
		hs := s.hs
		// termAt looks an index up in the log as this batch leaves it.
		termAt := func(i uint64) (uint64, bool) {
			if firstNew != 0 && i >= firstNew {
				if i-firstNew < uint64(len(newLocs)) {
					return newLocs[i-firstNew].term, true
				}
				return 0, false
			}
			return s.termAt(i)
		}
		for _, req := range batch {
			if e := validateSave("FileStorage", req.entries, s.first, last); e != nil {
				req.err = e
				continue
			}
			// The entries go before the hard state, as the Storage contract
			// orders them: a torn write keeps a prefix of the records, so a
			// surviving hard state always finds the entries its commit index
			// covers (a commit over entries the write was replacing would
			// apply entries that were never committed).
			if len(req.entries) > 0 {
				at := req.entries[0].Index
				if firstNew == 0 || at < firstNew+uint64(len(newLocs)) {
					if firstNew != 0 && at >= firstNew {
						newLocs = newLocs[:at-firstNew]
					} else {
						firstNew, newLocs = at, nil
					}
				}
				for i := range req.entries {
					start := len(buf)
					buf = appendEntry(buf, &req.entries[i])
					newLocs = append(newLocs, entryLoc{seq: seg.seq, term: req.entries[i].Term, off: uint32(seg.size) + uint32(start), len: uint32(len(buf) - start)})
				}
				last = req.entries[len(req.entries)-1].Index
			}
			if req.hs != hs {
				buf = appendHardState(buf, req.hs, termAt)
				hs = req.hs
			}
		}
		s.buf = buf
		if len(buf) > 0 {
			s.mu.Unlock()
			m := s.metrics.Load()
			t0 := m.now()
			_, err = seg.f.WriteAt(buf, seg.size)
			if err == nil {
				t1 := m.now()
				err = s.sync(seg.f)
				if err == nil {
					m.wrote(len(buf), t0, t1, s.opts.syncHook != nil || !s.opts.noSync)
				}
			}
			s.mu.Lock()
			if err != nil {
				err = fmt.Errorf("raft: writing the log: %w", err)
				s.failed = err
			} else {
				seg.size += int64(len(buf))
				s.hs = hs
				if firstNew != 0 {
					s.locs = append(s.locs[:firstNew-s.first], newLocs...)
				}
			}
		}
	}
	for _, req := range batch {
		if req.err == nil {
			req.err = err
		}
		req.done = true
	}
	s.flushing = false
	s.flushed.Broadcast()
}

// validateSave checks that entries can follow a log [first, last]; who
// names the storage in the error.
func validateSave(who string, entries []Entry, first, last uint64) error {
	if len(entries) == 0 {
		return nil
	}
	at := entries[0].Index
	if at < first || at > last+1 {
		return fmt.Errorf("raft: %s.Save: entry %d does not follow the log [%d, %d]", who, at, first, last)
	}
	for i, e := range entries {
		if e.Index != at+uint64(i) {
			return fmt.Errorf("raft: %s.Save: entries are not consecutive at index %d", who, e.Index)
		}
	}
	return nil
}

// rotateIfFull starts a new segment when the current one is full.
func (s *FileStorage) rotateIfFull() error {
	cur := s.segs[len(s.segs)-1]
	if cur.size < s.opts.segmentSize {
		return nil
	}
	if err := s.newSegment(cur.seq + 1); err != nil {
		s.failed = err
		return err
	}
	return nil
}

// segment returns the open segment with sequence number seq.
func (s *FileStorage) segment(seq uint64) *segment { return s.segs[seq-s.segs[0].seq] }

// Term implements Storage.
func (s *FileStorage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	if t, ok := s.termAt(i); ok {
		return t, nil
	}
	return 0, fmt.Errorf("%w: FileStorage.Term(%d) outside [%d, %d]", ErrOutOfRange, i, s.first-1, s.first+uint64(len(s.locs))-1)
}

// Compact implements Storage: a compaction record makes the new start of
// the log durable first; then segments holding only discarded entries are
// deleted. A crash in between leaves segments that replay discards.
func (s *FileStorage) Compact(index, term uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.flushing {
		s.flushed.Wait()
	}
	if err := s.usable(); err != nil {
		return err
	}
	if index < s.first {
		return nil
	}
	if err := s.rotateIfFull(); err != nil {
		return err
	}
	seg := s.segs[len(s.segs)-1]
	buf := appendCompact(nil, index, term)
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		s.failed = fmt.Errorf("raft: writing the log: %w", err)
		return s.failed
	}
	if err := s.sync(seg.f); err != nil {
		s.failed = fmt.Errorf("raft: writing the log: %w", err)
		return s.failed
	}
	seg.size += int64(len(buf))
	s.compactTo(index, term)
	// Delete the segments before the first one still needed.
	keep := seg.seq
	if len(s.locs) > 0 {
		keep = s.locs[0].seq
	}
	// Oldest first, each unlink made durable before the next, so that a
	// crash never leaves a gap between segments.
	removed := 0
	for _, old := range s.segs {
		if old.seq >= keep {
			break
		}
		old.f.Close()
		removed++
		if err := os.Remove(old.f.Name()); err != nil {
			s.failed = fmt.Errorf("raft: deleting a compacted segment: %w", err)
			break
		}
		if err := s.syncDir(); err != nil {
			s.failed = err
			break
		}
	}
	s.segs = append([]*segment(nil), s.segs[removed:]...)
	return s.failed
}

// usable returns why the storage cannot be used, or nil.
func (s *FileStorage) usable() error {
	if s.closed {
		return fmt.Errorf("%w: FileStorage", ErrClosed)
	}
	return s.failed
}

// Close releases the files and the directory lock. It is idempotent.
func (s *FileStorage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	for s.flushing {
		s.flushed.Wait()
	}
	s.closed = true
	return s.closeFiles()
}

func (s *FileStorage) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	if s.lockFile != nil {
		errs = append(errs, unlockDir(s.lockFile))
		s.lockFile = nil
	}
	return errors.Join(errs...)
}
