package raft

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// recover replays every segment of a HostStorage, then finds the groups'
// snapshot directories.
func (h *HostStorage) recover() error {
	seqs, err := segmentSeqs(h.dir, "HostStorage", "hwal", "FileStorage", "wal")
	if err != nil {
		return err
	}
	rs := &hostReplay{removed: map[uint64]bool{}, gaps: map[uint64]compactPoint{}}
	for i, seq := range seqs {
		if i > 0 && seq != seqs[i-1]+1 {
			return fmt.Errorf("%w: segment %d is missing", ErrCorrupt, seqs[i-1]+1)
		}
		f, err := os.OpenFile(h.segPath(seq), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("raft: opening segment: %w", err)
		}
		seg := &segment{seq: seq, f: f}
		h.segs = append(h.segs, seg)
		if err := h.replay(seg, i == len(seqs)-1, rs); err != nil {
			return err
		}
		h.walBytes += seg.size
	}
	for _, g := range h.groups {
		if !g.startKnown {
			return fmt.Errorf("%w: group %d: the log starts at %d but no compaction record says why", ErrCorrupt, g.id, g.first)
		}
		g.checkCommit()
		g.live = sumLocs(g.locs)
		h.live += g.live
	}
	if err := h.findGroupDirs(rs.removed); err != nil {
		return err
	}
	// A crash may have come between a compaction and the deletion of the
	// segments it freed.
	h.reclaimDue = true
	if len(h.segs) == 0 {
		return h.newSegment(1)
	}
	return nil
}

// replay reads one segment's records into the groups' in-memory state.
func (h *HostStorage) replay(seg *segment, last bool, rs *hostReplay) error {
	data, err := io.ReadAll(io.NewSectionReader(seg.f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("raft: reading %s: %w", seg.f.Name(), err)
	}
	name := filepath.Base(seg.f.Name())
	if len(data) < len(hostWALMagic) || string(data[:len(hostWALMagic)]) != hostWALMagic {
		if v, newer := newerFormat(data, hostWALMagic); newer {
			return fmt.Errorf("%w: %s: segment format %02d; this build reads up to %s", ErrNewerVersion, name, v, hostWALMagic[6:])
		}
		if last && isTornHeader(data, hostWALMagic) {
			// Crashed while creating this segment: nothing in it was written.
			return h.truncateSegment(seg, 0, true)
		}
		return fmt.Errorf("%w: %s: bad segment header", ErrCorrupt, name)
	}
	off := len(hostWALMagic)
	for off < len(data) {
		typ, group, payload, n, ok := parseHostRecord(data[off:])
		if !ok {
			return h.badRecord(seg, data, off, off, last)
		}
		if typ == recGroupCopy {
			bad, err := checkCopy(data, off, n, payload, group)
			if err != nil {
				return fmt.Errorf("%w: %s: record at offset %d: %v", ErrCorrupt, name, off, err)
			}
			if bad >= 0 {
				// Applying part of a copy would cut the group's log short.
				return h.badRecord(seg, data, bad, off, last)
			}
			// The copied records follow: replay them as any other, over
			// an empty group, since they hold all of its state. Older
			// records of the group may lie anywhere before, with gaps where
			// segments it no longer needed were deleted.
			rs.reset(h, group)
			off += n
			continue
		}
		loc := entryLoc{seq: seg.seq, off: uint32(off), len: uint32(n)}
		if err := rs.apply(h, typ, group, payload, loc); err != nil {
			return fmt.Errorf("%w: %s: record at offset %d (group %d): %v", ErrCorrupt, name, off, group, err)
		}
		off += n
	}
	seg.size = int64(len(data))
	return nil
}

// badRecord handles a record at offset at that is not intact: a torn
// final write, cut at offset cut, or corruption. A record of a type this
// build does not know is not damage: a newer version wrote it.
func (h *HostStorage) badRecord(seg *segment, data []byte, at, cut int, last bool) error {
	name := filepath.Base(seg.f.Name())
	if t, known := hostRecordType(data[min(at, len(data)):]); !known {
		return fmt.Errorf("%w: %s: record at offset %d has type %d, which this build does not know", ErrNewerVersion, name, at, t)
	}
	if last && !validHostRecordAfter(data, at+1) {
		return h.truncateSegment(seg, int64(cut), false)
	}
	return fmt.Errorf("%w: %s: bad record at offset %d", ErrCorrupt, name, at)
}

// checkCopy checks the records of the copy whose copy record, of group
// and n bytes, starts at off: it returns the offset of the first one that
// is not intact (or that runs past the end of data), -1 if all are. An
// intact record that cannot belong to the copy is an error.
func checkCopy(data []byte, off, n int, payload []byte, group uint64) (int, error) {
	length, k := binary.Uvarint(payload)
	if k <= 0 {
		return 0, fmt.Errorf("truncated copy record")
	}
	p := off + n
	if length > uint64(len(data)) {
		return len(data), nil
	}
	end := p + int(length)
	for p < end {
		if p >= len(data) {
			return p, nil
		}
		typ, g, _, m, ok := parseHostRecord(data[p:])
		if !ok {
			return p, nil
		}
		if g != group || (typ != recEntry && typ != recHardState && typ != recCompact) || p+m > end {
			return 0, fmt.Errorf("the copy of group %d holds a record of type %d of group %d", group, typ, g)
		}
		p += m
	}
	return -1, nil
}

// hostReplay is what replay knows beyond the groups' state.
//
// The surviving segments start at the oldest one that some group still
// needs, so a group's first surviving records may continue history whose
// start was deleted: an entry whose predecessors are gone, a compaction
// point with the entries after it gone. Those records were superseded (the
// group no longer needed them), and later records, which all survive, say
// what the group holds: a compaction record gives where its log starts, and
// entry records fill it from there. So replay keeps the run of entries it
// holds (walLog's first and locs), restarts it at an entry that does not
// follow it, and counts the start as known (startKnown) only once the run
// begins right after the last compaction point it met, or at index 1 with
// no compaction at all. A group whose start is still unknown at the end
// lost records it needed: ErrCorrupt.
type hostReplay struct {
	// removed holds the groups whose last record removed them.
	removed map[uint64]bool
	// gaps holds, for a group whose run of entries starts after its last
	// compaction point with entries missing in between, that point: a
	// later entry record right after it closes the gap.
	gaps map[uint64]compactPoint
}

type compactPoint struct{ index, term uint64 }

// reset starts group over, empty, at a copy of it: the copy holds the
// group's whole state.
func (rs *hostReplay) reset(h *HostStorage, group uint64) {
	delete(rs.removed, group)
	delete(rs.gaps, group)
	h.groups[group] = newHostGroup(group)
}

// apply replays one record.
func (rs *hostReplay) apply(h *HostStorage, typ byte, group uint64, payload []byte, loc entryLoc) error {
	if typ == recGroupRemoved {
		delete(h.groups, group)
		delete(rs.gaps, group)
		rs.removed[group] = true
		return nil
	}
	delete(rs.removed, group)
	g := h.groups[group]
	if g == nil {
		g = newHostGroup(group)
		h.groups[group] = g
	}
	switch typ {
	case recHardState:
		if err := g.applyHardState(payload); err != nil {
			return err
		}
		g.hsSeq = loc.seq
	case recEntry:
		e, err := decodeEntryPayload(payload)
		if err != nil {
			return err
		}
		loc.term = e.Term
		rs.entry(g, e.Index, loc)
	case recCompact:
		index, term, err := decodeCompact(payload)
		if err != nil {
			return err
		}
		rs.compact(g, index, term, loc.seq)
	}
	return nil
}

// entry replays the record, at loc, of entry i of g.
func (rs *hostReplay) entry(g *storedGroup, i uint64, loc entryLoc) {
	last := g.first + uint64(len(g.locs)) - 1
	if p, ok := rs.gaps[g.id]; ok {
		switch {
		case i <= p.index:
			return // compacted away; superseded by a later record
		case i == p.index+1:
			delete(rs.gaps, g.id)
			g.first, g.firstTerm, g.startKnown = i, p.term, true
			g.locs = append(g.locs[:0], loc)
			return
		}
	} else if g.startKnown && i > last+1 {
		rs.gaps[g.id] = compactPoint{g.first - 1, g.firstTerm}
	}
	switch {
	case g.startKnown && i < g.first:
		// Compacted away; superseded by a later record.
	case i > last+1, i < g.first:
		// A run of entries whose predecessors were deleted.
		g.first, g.firstTerm, g.startKnown = i, 0, false
		g.locs = append(g.locs[:0], loc)
	default:
		g.locs = append(g.locs[:i-g.first], loc)
	}
}

// compact replays a compaction record of g, found in segment seq.
func (rs *hostReplay) compact(g *storedGroup, index, term, seq uint64) {
	p, gap := rs.gaps[g.id]
	switch {
	case gap && index < p.index, g.startKnown && index+1 < g.first:
		return // an older compaction point
	case !g.startKnown && index+1 < g.first:
		// The run of entries starts after entries missing since this
		// compaction point.
		rs.gaps[g.id] = compactPoint{index, term}
	default:
		delete(rs.gaps, g.id)
		g.compactTo(index, term)
	}
	g.compactSeq = seq
}

// findGroupDirs registers the groups that have a snapshot directory, and
// finishes the removal of the groups whose last record removed them (a
// crash came before their directory was deleted).
func (h *HostStorage) findGroupDirs(removed map[uint64]bool) error {
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return fmt.Errorf("raft: reading %s: %w", h.dir, err)
	}
	for _, de := range entries {
		name := de.Name()
		if !strings.HasPrefix(name, "group-") {
			continue
		}
		var id uint64
		if _, err := fmt.Sscanf(name, "group-%016x", &id); err != nil || fmt.Sprintf("group-%016x", id) != name || !de.IsDir() {
			return fmt.Errorf("%w: unexpected file %s in the log directory", ErrCorrupt, name)
		}
		if removed[id] {
			if err := os.RemoveAll(h.groupDir(id)); err != nil {
				return fmt.Errorf("raft: removing group %d's snapshots: %w", id, err)
			}
			if err := h.opts.syncDir(h.dir); err != nil {
				return err
			}
			continue
		}
		g := h.groups[id]
		if g == nil {
			// A group with a snapshot and nothing in the log yet (a crash
			// between SaveSnapshot and the Compact after it).
			g = newHostGroup(id)
			h.groups[id] = g
		}
		g.hasDir, g.snapLoaded = true, false
	}
	return nil
}

// truncateSegment cuts a segment at off (a torn tail), durably.
func (h *HostStorage) truncateSegment(seg *segment, off int64, rewriteHeader bool) error {
	if err := seg.f.Truncate(off); err != nil {
		return fmt.Errorf("raft: truncating a torn write: %w", err)
	}
	seg.size = off
	if rewriteHeader {
		if _, err := seg.f.WriteAt([]byte(hostWALMagic), 0); err != nil {
			return fmt.Errorf("raft: rewriting a segment header: %w", err)
		}
		seg.size = int64(len(hostWALMagic))
	}
	if err := h.opts.syncFile(seg.f); err != nil {
		return fmt.Errorf("raft: truncating a torn write: %w", err)
	}
	return nil
}

func knownHostRecordType(t byte) bool { return t >= recEntry && t <= recGroupCopy }

// parseHostRecord parses the HostStorage record at the start of b. ok is
// false if it is truncated, fails its checksum, or has a type this build
// does not know.
func parseHostRecord(b []byte) (typ byte, group uint64, payload []byte, n int, ok bool) {
	if len(b) < hostRecHeaderSize {
		return 0, 0, nil, 0, false
	}
	length := binary.LittleEndian.Uint32(b[0:4])
	if length > maxRecordPayload || int64(length) > int64(len(b)-hostRecHeaderSize) {
		return 0, 0, nil, 0, false
	}
	n = hostRecHeaderSize + int(length)
	if crc32.Checksum(b[8:n], crcTable) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, 0, nil, 0, false
	}
	typ = b[8]
	if !knownHostRecordType(typ) {
		return 0, 0, nil, 0, false
	}
	return typ, binary.LittleEndian.Uint64(b[9:17]), b[hostRecHeaderSize:n], n, true
}

// hostRecordType returns the type of the record at the start of b if its
// length and checksum are intact, and whether this build knows that type;
// known is also true when the record is not intact.
func hostRecordType(b []byte) (typ byte, known bool) {
	if len(b) < hostRecHeaderSize {
		return 0, true
	}
	length := binary.LittleEndian.Uint32(b[0:4])
	if length > maxRecordPayload || int64(length) > int64(len(b)-hostRecHeaderSize) {
		return 0, true
	}
	n := hostRecHeaderSize + int(length)
	if crc32.Checksum(b[8:n], crcTable) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, true
	}
	return b[8], knownHostRecordType(b[8])
}

// validHostRecordAfter reports whether any offset from `from` on starts a
// valid record: if one does, a bad record before it is not a torn tail.
func validHostRecordAfter(data []byte, from int) bool {
	for off := from; off+hostRecHeaderSize <= len(data); off++ {
		if !knownHostRecordType(data[off+8]) {
			continue
		}
		if _, _, _, _, ok := parseHostRecord(data[off:]); ok {
			return true
		}
	}
	return false
}
