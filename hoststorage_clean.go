package raft

import (
	"encoding/binary"
	"fmt"
)

// Cleaning of a HostStorage's log: a segment can be deleted only once no
// group needs a record in it, and a group that stops writing (an idle
// group, or one whose Node is stopped) would keep its old segments, and
// every segment after them, forever. So when the log has grown past
// hostCleanFloorSegs segments' worth of bytes and past twice the bytes of
// the groups' logs, each flush copies the groups that pin the oldest
// segment to the head of the log, in the same write and fsync as the Saves
// of that round, and the segments no group needs any more are deleted
// after it.
//
// A group is copied whole (its compaction point, every entry of its log,
// its hard state), behind a copy record that gives the copy's length in
// bytes: replaying an entry record replaces the log from its index on, so a
// partial copy would cut the group's log short. Recovery applies a copy
// only when all of it is intact, and otherwise cuts the torn write at the
// copy record. The records copied are the group's current ones, so
// replaying the copy over the older records that may still be there (a
// crash before the old segments were deleted) changes nothing.
//
// Each round copies groups until it has copied a quarter of a segment's
// worth of entries (at least one group), so a round's write, and the
// latency of the Saves it carries, stays bounded.

// cleaningDue reports whether the log should be cleaned: it holds more than
// hostCleanFloorSegs segments' worth of bytes and more than twice the bytes
// of the groups' logs.
func (h *HostStorage) cleaningDue() bool {
	if h.forceCleaning {
		return len(h.segs) > 1
	}
	return len(h.segs) > 1 && h.walBytes > hostCleanFloorSegs*h.opts.segmentSize && h.walBytes > 2*h.live
}

// copyForward appends to buf, which will be written to seg at seg.size,
// copies of the groups that pin the oldest segment, when the log is due for
// cleaning. An error (an old record that fails its checksum) makes the
// storage unusable: the groups already copied point at bytes that will not
// be written.
func (h *HostStorage) copyForward(buf []byte, seg *segment) ([]byte, error) {
	if !h.cleaningDue() {
		return buf, nil
	}
	oldest := h.segs[0].seq
	budget := h.opts.segmentSize / 4
	var copied int64
	for _, g := range h.sortedGroups() {
		if g.removed || g.pin() != oldest {
			continue
		}
		var err error
		if buf, err = h.copyGroup(buf, seg, g); err != nil {
			h.failed = err
			return buf, err
		}
		if copied += g.live; copied >= budget {
			break
		}
	}
	// The copies free the oldest segment, or nothing pinned it.
	h.reclaimDue = true
	return buf, nil
}

// copyGroup appends a copy of g to buf and points g's state at it.
func (h *HostStorage) copyGroup(buf []byte, seg *segment, g *storedGroup) ([]byte, error) {
	var body []byte
	if g.first > 1 {
		body = appendHostRecord(body, recCompact, g.id, appendCompactPayload(nil, g.first-1, g.firstTerm))
	}
	entriesAt := len(body)
	for i, loc := range g.locs {
		_, raw, err := h.readEntry(g, loc, g.first+uint64(i), &h.readBuf)
		if err != nil {
			return buf, fmt.Errorf("raft: cleaning the log: %w", err)
		}
		body = append(body, raw...)
	}
	if g.hs != (HardState{}) {
		body = appendHostRecord(body, recHardState, g.id, appendHardStatePayload(nil, g.hs, g.termAt))
	}
	buf = appendHostRecord(buf, recGroupCopy, g.id, binary.AppendUvarint(nil, uint64(len(body))))
	off := uint32(seg.size) + uint32(len(buf)+entriesAt)
	buf = append(buf, body...)
	locs := make([]entryLoc, len(g.locs))
	for i, loc := range g.locs {
		locs[i] = entryLoc{seq: seg.seq, term: loc.term, off: off, len: loc.len}
		off += loc.len
	}
	g.locs = locs
	if g.first > 1 {
		g.compactSeq = seg.seq
	}
	if g.hs != (HardState{}) {
		g.hsSeq = seg.seq
	}
	return buf, nil
}
