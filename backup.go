package raft

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
)

// Back-up and restore of a cluster's replicated state.
//
// A back-up is a snapshot in the format of a FileStorage snapshot file
// (filesnapshot.go): the magic "RKSNAP01", the metadata (index, term and
// configuration) with its CRC-32C, the state machine's data, then the
// data's length and CRC-32C. So it describes itself, a reader checks every
// byte of it, and the newest snap-*.snap file of a stopped node's data
// directory is a back-up too (of the state at that snapshot's index).
//
// Node.Backup writes one from a running node; RestoreBackup and
// RestoreBackupDir create the storage of a node of a new cluster from one.

// backupTrailerLen is the size of the data's length and CRC-32C that end a
// back-up.
const backupTrailerLen = 12

// backupCopyChunk is how much of the data Backup copies between two checks
// of its context.
const backupCopyChunk = 256 << 10

// Backup writes a back-up of the replicated state to w: a snapshot of the
// state machine at this node's applied index, with its metadata (the index
// and term of the last entry it covers, and the configuration at that
// index), checksummed. It returns that metadata. RestoreBackupDir creates
// the nodes of a new cluster from it (docs/operations.md, "Back-up and
// restore").
//
// Backup works on any member, follower and learner included, and needs no
// quorum: it backs up what this node has applied. For a back-up that holds
// every write acknowledged before the call, call LinearizableRead on the
// node first (that needs a quorum).
//
// It takes a snapshot as Node.Snapshot does (which also compacts the log
// behind it), unless the newest one already covers the applied index, then
// copies the newest stored snapshot to w on the caller's goroutine: the
// event loop and the state machine go on meanwhile. ctx bounds the wait for
// the snapshot and is checked between chunks of the copy, but a Write to w
// that blocks blocks Backup.
//
// The stored snapshot's data is checked against the checksum stored with
// it while it is copied (FileStorage): a stored snapshot that was damaged
// on disk fails with an error wrapping ErrCorrupt, and what was written to
// w then lacks its final checksum, so that no restore accepts it. A node
// that applied nothing yet (a joiner no leader has reached) has no state to
// back up: the error wraps ErrNoSnapshot. On any error, discard what was
// written to w.
func (n *Node) Backup(ctx context.Context, w io.Writer) (SnapshotMeta, error) {
	if err := ctx.Err(); err != nil {
		return SnapshotMeta{}, err
	}
	if err := n.Snapshot(ctx); err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: Backup: taking a snapshot: %w", err)
	}
	// The storage may be read beside the event loop: the snapshot senders
	// do the same.
	meta, rc, err := n.storage.Snapshot()
	if errors.Is(err, ErrNoSnapshot) {
		return SnapshotMeta{}, fmt.Errorf("raft: Backup: this node has applied nothing yet, so there is no state to back up: %w", err)
	}
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: Backup: opening the snapshot: %w", err)
	}
	defer rc.Close()
	if err := writeBackup(ctx, w, meta, rc); err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: Backup of snapshot %d: %w", meta.Index, err)
	}
	return meta, nil
}

// writeBackup writes meta and the snapshot data that data holds to w in
// the snapshot file format. When data is a FileStorage snapshot, the data
// is checked against the length and checksum the file stores, before the
// trailer is written.
func writeBackup(ctx context.Context, w io.Writer, meta SnapshotMeta, data io.Reader) error {
	metaBuf := encodeSnapMeta(meta)
	head := binary.LittleEndian.AppendUint32([]byte(snapMagic), uint32(len(metaBuf)))
	head = append(head, metaBuf...)
	head = binary.LittleEndian.AppendUint32(head, crc32.Checksum(metaBuf, crcTable))
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	h := crc32.New(crcTable)
	buf := make([]byte, backupCopyChunk)
	var size int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(data, buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return fmt.Errorf("writing: %w", err)
			}
			size += int64(k)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading the snapshot: %w", rerr)
		}
	}
	// A cancelled back-up gets no trailer, so that no restore accepts it.
	if err := ctx.Err(); err != nil {
		return err
	}
	if sr, ok := data.(*snapReader); ok {
		if err := sr.verify(size, h.Sum32()); err != nil {
			return err
		}
	}
	trailer := binary.LittleEndian.AppendUint64(nil, uint64(size))
	trailer = binary.LittleEndian.AppendUint32(trailer, h.Sum32())
	if _, err := w.Write(trailer); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	return nil
}

// verify checks that size bytes of data with checksum crc are what the
// snapshot file's trailer says it holds. The file was checked when the
// storage opened, but it may have been damaged on disk since: a back-up
// must not give damaged data a valid checksum.
func (r *snapReader) verify(size int64, crc uint32) error {
	st, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("reading the snapshot: %w", err)
	}
	var trailer [backupTrailerLen]byte
	if _, err := r.f.ReadAt(trailer[:], st.Size()-backupTrailerLen); err != nil {
		return fmt.Errorf("reading the snapshot: %w", err)
	}
	if int64(binary.LittleEndian.Uint64(trailer[:8])) != size || binary.LittleEndian.Uint32(trailer[8:]) != crc {
		return fmt.Errorf("%w: snapshot %s: data checksum mismatch (the file was damaged after it was written)",
			ErrCorrupt, filepath.Base(r.f.Name()))
	}
	return nil
}

// readBackup reads and checks a back-up's header. The data follows in the
// returned reader, which checks the data's length and checksum when it
// reaches the end of backup and fails there, instead of returning io.EOF,
// with an error wrapping ErrCorrupt: a consumer that stops at the first
// error (Storage.SaveSnapshot) never takes a damaged or truncated back-up
// as complete.
func readBackup(backup io.Reader) (SnapshotMeta, io.Reader, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: back-up: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	br := bufio.NewReaderSize(backup, 64<<10)
	var head [12]byte
	if k, err := io.ReadFull(br, head[:]); err != nil {
		if k == 0 && err == io.EOF {
			return SnapshotMeta{}, nil, bad("empty")
		}
		if err != io.ErrUnexpectedEOF {
			return SnapshotMeta{}, nil, fmt.Errorf("raft: reading the back-up: %w", err)
		}
		return SnapshotMeta{}, nil, bad("truncated header (%d bytes)", k)
	}
	if string(head[:8]) != snapMagic {
		if v, newer := newerFormat(head[:], snapMagic); newer {
			return SnapshotMeta{}, nil, fmt.Errorf("%w: back-up: format %02d; this build reads up to %s", ErrNewerVersion, v, snapMagic[6:])
		}
		return SnapshotMeta{}, nil, bad("not a raftkit back-up or snapshot file (it starts with %q, not %q)", head[:8], snapMagic)
	}
	metaLen := int(binary.LittleEndian.Uint32(head[8:]))
	if metaLen > 1<<20 {
		return SnapshotMeta{}, nil, bad("metadata length %d is impossible", metaLen)
	}
	metaBuf := make([]byte, metaLen+4)
	if _, err := io.ReadFull(br, metaBuf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return SnapshotMeta{}, nil, bad("truncated metadata")
		}
		return SnapshotMeta{}, nil, fmt.Errorf("raft: reading the back-up: %w", err)
	}
	if crc32.Checksum(metaBuf[:metaLen], crcTable) != binary.LittleEndian.Uint32(metaBuf[metaLen:]) {
		return SnapshotMeta{}, nil, bad("metadata checksum mismatch")
	}
	meta, err := decodeSnapMeta(metaBuf[:metaLen])
	if err != nil {
		return SnapshotMeta{}, nil, bad("metadata: %v", err)
	}
	if meta.Index == 0 || meta.Term == 0 {
		return SnapshotMeta{}, nil, bad("snapshot at index %d, term %d: no snapshot is taken before the first entry", meta.Index, meta.Term)
	}
	return meta, &backupData{br: br, crc: crc32.New(crcTable)}, nil
}

// backupData reads a back-up's data, holding back the trailer (the last
// backupTrailerLen bytes) and checking it at the end.
type backupData struct {
	br   *bufio.Reader
	crc  hash.Hash32
	size int64
	err  error // sticky: io.EOF once the trailer checked out
}

func (d *backupData) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Peek at most a buffer's worth: the trailer must fit beside the data.
	p = p[:min(len(p), d.br.Size()-backupTrailerLen)]
	b, err := d.br.Peek(len(p) + backupTrailerLen)
	if len(b) > backupTrailerLen {
		// At least these bytes come before the trailer.
		k := copy(p, b[:len(b)-backupTrailerLen])
		d.br.Discard(k)
		d.crc.Write(p[:k])
		d.size += int64(k)
		return k, nil
	}
	// b is all that is left: the trailer, if the back-up is whole.
	switch {
	case err != io.EOF:
		d.err = fmt.Errorf("raft: reading the back-up: %w", err)
	case len(b) < backupTrailerLen:
		d.err = fmt.Errorf("%w: back-up: truncated (it ends before the data's checksum)", ErrCorrupt)
	case int64(binary.LittleEndian.Uint64(b[:8])) != d.size:
		d.err = fmt.Errorf("%w: back-up: the data is %d bytes long, its trailer says %d (truncated or extended?)",
			ErrCorrupt, d.size, binary.LittleEndian.Uint64(b[:8]))
	case binary.LittleEndian.Uint32(b[8:]) != d.crc.Sum32():
		d.err = fmt.Errorf("%w: back-up: data checksum mismatch", ErrCorrupt)
	default:
		d.err = io.EOF
	}
	return 0, d.err
}

// RestoreBackup makes storage, which must be empty, the storage of a node
// of a NEW cluster whose state is the back-up's (made by Node.Backup) and
// whose configuration is members. It returns the restored snapshot's
// metadata. For a FileStorage use RestoreBackupDir.
//
// Procedure (docs/operations.md, "Back-up and restore"):
//
//  1. For every node of the new cluster, restore the SAME back-up, with
//     the SAME members, into its own empty storage (list each node with
//     the address its peers dial).
//  2. Start each node with a Config.ID from members (Config.InitialMembers
//     is ignored: the storage holds state). Over TCP, give the new cluster
//     a TCPConfig.ClusterID of its own.
//
// The nodes restore their state machines from the back-up and elect a
// leader, which then takes writes. Every node holds a snapshot at the
// back-up's index and no log, so each starts with exactly the backed-up
// state.
//
// The restored cluster is a new history that shares the old one's up to
// the back-up's index only: its nodes must never talk to the old cluster's
// nodes (a ClusterID of its own, fresh directories, and never a node of
// the old cluster restarted in it or the other way round), and a back-up
// is no way to repair one node of a running cluster (for that, remove the
// node, wipe it and add it again). So that neither history is ever taken
// for a continuation of the other if they are mixed by mistake, the
// restored history moves to terms of its own, as RecoverCluster does: the
// restored snapshot's term, and the nodes' term, is the next multiple of
// 2^32 above the back-up's term, plus 2^32. No entry of the old cluster
// has that term at that index, so the two logs never match after it (the
// consistency check of Raft §5.3 fails where they part); the restored
// nodes' logs are more up to date than any old node's (§5.4.1), so an old
// node never leads them; the old cluster's messages carry terms far below
// (reaching them takes 2^32 elections) and are refused as stale; and a
// node that finds an entry it counts as committed contradicted stops with
// ErrCorrupt. Had the restored nodes kept the back-up's term, an old node
// with later writes would win their election and hand them its history as
// if it followed the back-up. StateMachine.Restore sees the restored term
// in SnapshotMetaOf; the index is the back-up's.
//
// It fails with an error wrapping ErrInvalidConfig when members is
// invalid (empty, an ID 0 or twice, no voter, some members with an
// address and others without) or storage is not empty, wrapping
// ErrCorrupt when the back-up is damaged or truncated, and wrapping
// ErrNewerVersion when a newer version of the library wrote it in a format
// this build does not read: then storage was left empty. An error while writing to storage may leave storage partly
// written; start again on empty storage.
func RestoreBackup(storage Storage, backup io.Reader, members []Member) (SnapshotMeta, error) {
	if err := validateRecoveryMembers("RestoreBackup", members); err != nil {
		return SnapshotMeta{}, err
	}
	if err := requireEmptyStorage(storage); err != nil {
		return SnapshotMeta{}, err
	}
	meta, data, err := readBackup(backup)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackup: %w", err)
	}
	return restoreInto(storage, meta, data, members)
}

// RestoreBackupDir runs RestoreBackup on a FileStorage in dir, opened with
// opts, and closes it. dir must be empty or not exist (it is created). On
// an error, it leaves dir as it found it: it removes what it wrote, and dir
// itself if it created it.
func RestoreBackupDir(dir string, backup io.Reader, members []Member, opts ...FileOption) (meta SnapshotMeta, err error) {
	if err := validateRecoveryMembers("RestoreBackupDir", members); err != nil {
		return SnapshotMeta{}, err
	}
	entries, err := os.ReadDir(dir)
	existed := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackupDir: reading %s: %w", dir, err)
	case len(entries) > 0:
		return SnapshotMeta{}, fmt.Errorf("%w: RestoreBackupDir: directory %s is not empty (it holds %s): a restored node starts "+
			"on a directory of its own, empty or new", ErrInvalidConfig, dir, entries[0].Name())
	}
	// Check the header before creating anything.
	header, data, err := readBackup(backup)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackupDir: %w", err)
	}
	defer func() {
		if err != nil {
			removeRestored(dir, existed)
		}
	}()
	s, err := OpenFileStorage(dir, opts...)
	if err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackupDir: %w", err)
	}
	meta, err = restoreInto(s, header, data, members)
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("raft: RestoreBackupDir: closing the storage: %w", cerr)
	}
	return meta, err
}

// removeRestored undoes a failed RestoreBackupDir: dir was empty, or did
// not exist, before it ran.
func removeRestored(dir string, existed bool) {
	if !existed {
		os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// requireEmptyStorage refuses storage that holds anything: a restore would
// mix the back-up with it.
func requireEmptyStorage(storage Storage) error {
	wrap := func(err error) error { return fmt.Errorf("raft: RestoreBackup: reading storage: %w", err) }
	hs, err := storage.InitialState()
	if err != nil {
		return wrap(err)
	}
	first, err := storage.FirstIndex()
	if err != nil {
		return wrap(err)
	}
	last, err := storage.LastIndex()
	if err != nil {
		return wrap(err)
	}
	_, rc, err := storage.Snapshot()
	switch {
	case err == nil:
		rc.Close()
	case !errors.Is(err, ErrNoSnapshot):
		return wrap(err)
	}
	if err == nil || hs != (HardState{}) || first != 1 || last != 0 {
		return fmt.Errorf("%w: RestoreBackup: the storage is not empty (term %d, log up to %d, snapshot: %t): "+
			"a restored node starts on storage of its own, empty", ErrInvalidConfig, hs.Term, last, err == nil)
	}
	return nil
}

// restoreInto writes the restored state into empty storage: the snapshot
// (of the back-up's index and data, the restored term and members), then
// the log starting after it, then the term. Storage is empty until the
// snapshot is complete and checked.
func restoreInto(storage Storage, backup SnapshotMeta, data io.Reader, members []Member) (SnapshotMeta, error) {
	if backup.Term >= math.MaxUint64-3*recoveryTermStep {
		return SnapshotMeta{}, fmt.Errorf("%w: back-up: term %d leaves no room for the restored cluster's terms", ErrCorrupt, backup.Term)
	}
	// A multiple of the step more than a step above the back-up's term:
	// the same on every node restored from the back-up, and above any term
	// the old cluster reaches (see RestoreBackup).
	term := (backup.Term/recoveryTermStep + 2) * recoveryTermStep
	meta := SnapshotMeta{Index: backup.Index, Term: term, Members: canonicalMembers(members)}
	if err := storage.SaveSnapshot(meta, data); err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackup: storing the snapshot: %w", err)
	}
	if err := storage.Compact(meta.Index, meta.Term); err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackup: starting the log after the snapshot: %w", err)
	}
	// The snapshot's index is committed: every restored node holds it.
	// A cluster origin of its own: the restored cluster refuses the old
	// cluster's nodes, and they it (origin.go).
	if err := storage.Save(HardState{Term: term, Commit: meta.Index, Origin: restoredOrigin(meta)}, nil); err != nil {
		return SnapshotMeta{}, fmt.Errorf("raft: RestoreBackup: writing the term: %w", err)
	}
	return meta, nil
}
