package raft

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// Snapshot files of a FileStorage, and of each group of a HostStorage:
// snap-<index>-<term>.snap (16 hex digits each) in the log directory (a
// HostStorage's group directory, see hoststorage.go):
//
//	magic     8 bytes "RKSNAP01"
//	metaLen   uint32, little endian
//	meta      uvarint index, uvarint term, then the members as in an
//	          EntryConfChange (see encodeMembers)
//	metaCRC   uint32: CRC-32C of meta
//	data      the StateMachine's snapshot, as written by Snapshot.WriteTo
//	dataLen   uint64, little endian
//	dataCRC   uint32: CRC-32C of data
//
// A snapshot is written to a .tmp file, fsynced, renamed into place and the
// directory fsynced, so a crash leaves either the old newest snapshot or the
// new one. The two newest are kept. The newest is verified in full when the
// storage opens; a damaged one is ErrCorrupt, and one whose magic names a
// higher version than "01" is ErrNewerVersion.

const snapMagic = "RKSNAP01"

type snapFile struct {
	meta    SnapshotMeta
	path    string
	dataOff int64
	dataLen int64
}

func snapName(index, term uint64) string {
	return fmt.Sprintf("snap-%016x-%016x.snap", index, term)
}

// loadSnapshots finds the snapshots, removes unfinished ones and verifies
// the newest.
func (s *FileStorage) loadSnapshots() error {
	sf, err := loadSnapshotDir(s.dir)
	if err != nil {
		return err
	}
	s.snap = sf
	return nil
}

// loadSnapshotDir removes the unfinished snapshots in dir and opens the
// newest one, verified in full; nil when there is none.
func loadSnapshotDir(dir string) (*snapFile, error) {
	tmps, _ := filepath.Glob(filepath.Join(dir, "snap-*.tmp"))
	for _, tmp := range tmps {
		if err := os.Remove(tmp); err != nil {
			return nil, fmt.Errorf("raft: removing an unfinished snapshot: %w", err)
		}
	}
	paths := snapshotPaths(dir)
	if len(paths) == 0 {
		return nil, nil
	}
	return openSnapFile(paths[len(paths)-1])
}

// snapshotPaths lists the snapshot files in dir, oldest first.
func snapshotPaths(dir string) []string {
	paths, _ := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	sort.Strings(paths) // fixed-width hex: lexical order is index order
	return paths
}

// openSnapFile reads a snapshot's header and checks both checksums.
func openSnapFile(path string) (*snapFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("raft: opening snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: snapshot %s: %s", ErrCorrupt, filepath.Base(path), what)
	}
	var head [12]byte
	if _, err := io.ReadFull(f, head[:]); err != nil || string(head[:8]) != snapMagic {
		if v, newer := newerFormat(head[:], snapMagic); newer && err == nil {
			return nil, fmt.Errorf("%w: snapshot %s: format %02d; this build reads up to %s",
				ErrNewerVersion, filepath.Base(path), v, snapMagic[6:])
		}
		return nil, bad("bad header")
	}
	metaLen := int64(binary.LittleEndian.Uint32(head[8:]))
	if metaLen > 1<<20 || 12+metaLen+4+12 > st.Size() {
		return nil, bad("bad metadata length")
	}
	metaBuf := make([]byte, metaLen+4)
	if _, err := io.ReadFull(f, metaBuf); err != nil {
		return nil, bad("truncated metadata")
	}
	if crc32.Checksum(metaBuf[:metaLen], crcTable) != binary.LittleEndian.Uint32(metaBuf[metaLen:]) {
		return nil, bad("metadata checksum mismatch")
	}
	meta, err := decodeSnapMeta(metaBuf[:metaLen])
	if err != nil {
		return nil, bad(err.Error())
	}
	dataOff := 12 + metaLen + 4
	dataLen := st.Size() - dataOff - 12
	var trailer [12]byte
	if _, err := f.ReadAt(trailer[:], st.Size()-12); err != nil {
		return nil, bad("truncated trailer")
	}
	if int64(binary.LittleEndian.Uint64(trailer[:8])) != dataLen {
		return nil, bad("data length mismatch (truncated?)")
	}
	h := crc32.New(crcTable)
	if _, err := io.Copy(h, io.NewSectionReader(f, dataOff, dataLen)); err != nil {
		return nil, bad("unreadable data")
	}
	if h.Sum32() != binary.LittleEndian.Uint32(trailer[8:]) {
		return nil, bad("data checksum mismatch")
	}
	return &snapFile{meta: meta, path: path, dataOff: dataOff, dataLen: dataLen}, nil
}

func encodeSnapMeta(meta SnapshotMeta) []byte {
	b := binary.AppendUvarint(nil, meta.Index)
	b = binary.AppendUvarint(b, meta.Term)
	return append(b, encodeConfig(meta.Members, meta.Outgoing)...)
}

func decodeSnapMeta(b []byte) (SnapshotMeta, error) {
	index, k := binary.Uvarint(b)
	if k <= 0 {
		return SnapshotMeta{}, errors.New("truncated index")
	}
	b = b[k:]
	term, k := binary.Uvarint(b)
	if k <= 0 {
		return SnapshotMeta{}, errors.New("truncated term")
	}
	members, outgoing, err := decodeConfig(b[k:])
	if err != nil {
		return SnapshotMeta{}, err
	}
	return SnapshotMeta{Index: index, Term: term, Members: members, Outgoing: outgoing}, nil
}

// SaveSnapshot implements Storage.
func (s *FileStorage) SaveSnapshot(meta SnapshotMeta, data io.Reader) error {
	if data == nil {
		return errNilSnapshotData
	}
	s.mu.Lock()
	err := s.usable()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	sf, err := s.opts.installSnapshot(s.dir, meta, data)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil || meta.Index >= s.snap.meta.Index {
		s.snap = sf
	}
	pruneSnapshots(s.dir, s.snap)
	return nil
}

// installSnapshot writes a snapshot file in dir: to a temporary name,
// fsynced, renamed into place, and the directory fsynced, so that a crash
// leaves either no trace of it or all of it.
func (o *fileOptions) installSnapshot(dir string, meta SnapshotMeta, data io.Reader) (*snapFile, error) {
	final := filepath.Join(dir, snapName(meta.Index, meta.Term))
	tmp := final + ".tmp"
	info, err := o.writeSnapFile(tmp, meta, data)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("raft: installing snapshot: %w", err)
	}
	// From here the snapshot is in place: an error below (the directory
	// fsync) is reported, but the snapshot may be the newest after a crash,
	// which is safe: it holds committed state.
	if err := o.syncDir(dir); err != nil {
		return nil, err
	}
	return &snapFile{meta: meta, path: final, dataOff: info.dataOff, dataLen: info.dataLen}, nil
}

// pruneSnapshots deletes the snapshot files in dir except the two newest
// and newest, the one in use.
func pruneSnapshots(dir string, newest *snapFile) {
	paths := snapshotPaths(dir)
	for i := 0; i+2 < len(paths); i++ {
		if paths[i] != newest.path {
			os.Remove(paths[i])
		}
	}
}

// writeSnapFile writes and fsyncs a snapshot file, returning where its
// data lies; the checksum is computed as the data streams through, so the
// file need not be read back.
func (o *fileOptions) writeSnapFile(path string, meta SnapshotMeta, data io.Reader) (snapFile, error) {
	var info snapFile
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return info, fmt.Errorf("raft: creating snapshot: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	metaBuf := encodeSnapMeta(meta)
	head := append([]byte(snapMagic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(head[8:], uint32(len(metaBuf)))
	head = append(head, metaBuf...)
	head = binary.LittleEndian.AppendUint32(head, crc32.Checksum(metaBuf, crcTable))
	if _, err := w.Write(head); err != nil {
		return info, fmt.Errorf("raft: writing snapshot: %w", err)
	}
	h := crc32.New(crcTable)
	n, err := io.Copy(io.MultiWriter(w, h), data)
	if err != nil {
		return info, fmt.Errorf("raft: writing snapshot: %w", err)
	}
	trailer := binary.LittleEndian.AppendUint64(nil, uint64(n))
	trailer = binary.LittleEndian.AppendUint32(trailer, h.Sum32())
	if _, err := w.Write(trailer); err != nil {
		return info, fmt.Errorf("raft: writing snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		return info, fmt.Errorf("raft: writing snapshot: %w", err)
	}
	if err := o.syncFile(f); err != nil {
		return info, fmt.Errorf("raft: syncing snapshot: %w", err)
	}
	info.dataOff, info.dataLen = int64(len(head)), n
	return info, nil
}

// Snapshot implements Storage.
func (s *FileStorage) Snapshot() (SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	sf := s.snap
	err := s.usable()
	s.mu.Unlock()
	if err != nil {
		return SnapshotMeta{}, nil, err
	}
	return sf.open()
}

// open opens the snapshot's data for reading; a nil sf is ErrNoSnapshot.
func (sf *snapFile) open() (SnapshotMeta, io.ReadCloser, error) {
	if sf == nil {
		return SnapshotMeta{}, nil, ErrNoSnapshot
	}
	f, err := os.Open(sf.path)
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("raft: opening snapshot: %w", err)
	}
	meta := sf.meta
	return meta, &snapReader{Reader: io.NewSectionReader(f, sf.dataOff, sf.dataLen), f: f}, nil
}

type snapReader struct {
	io.Reader
	f *os.File
}

func (r *snapReader) Close() error { return r.f.Close() }
