package raft

// raftLog is the core's view of the replicated log: every entry after the
// compaction point (the newest snapshot, less the trailing entries kept
// behind it) is held in memory, and stable marks how far the runtime has
// made them durable. Entries beyond stable are "unstable": they may still be
// lost in a crash, so they are not counted for this node's vote in quorums
// (see core.persisted).
//
// Invariant: offset <= committed <= lastIndex(), applying <= committed,
// offset <= stable <= handedOff <= lastIndex(), and entries[i].Index == offset+1+i.
type raftLog struct {
	offset     uint64  // index of the entry just before entries[0] (0, or the last compacted one)
	offsetTerm uint64  // term of the entry at offset
	entries    []Entry // the log after offset
	stable     uint64  // entries up to here are durable
	handedOff  uint64  // entries up to here were given to the runtime to persist (>= stable)
	committed  uint64  // highest index known to be committed
	applying   uint64  // highest index handed to the state machine
}

func (l *raftLog) lastIndex() uint64 { return l.offset + uint64(len(l.entries)) }

func (l *raftLog) lastTerm() uint64 {
	if n := len(l.entries); n > 0 {
		return l.entries[n-1].Term
	}
	return l.offsetTerm
}

// term returns the term of the entry at index i; ok is false when i is not
// in the log (beyond its end, or compacted away).
func (l *raftLog) term(i uint64) (t uint64, ok bool) {
	switch {
	case i == l.offset:
		return l.offsetTerm, true
	case i < l.offset || i > l.lastIndex():
		return 0, false
	}
	return l.entries[i-l.offset-1].Term, true
}

// matchTerm reports whether the log holds an entry at index i with term t
// (the AppendEntries consistency check, Raft §5.3).
func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, ok := l.term(i)
	return ok && lt == t
}

// entry returns the entry at index i, which must be in (offset, lastIndex].
func (l *raftLog) entry(i uint64) *Entry { return &l.entries[i-l.offset-1] }

// slice returns the entries with indexes in [lo, hi), at most maxBytes of
// data but always at least one entry when lo < hi. The result shares the
// log's backing array, which is safe because appending after a truncation
// always reallocates (see truncateAndAppend).
func (l *raftLog) slice(lo, hi, maxBytes uint64) []Entry {
	if lo > hi || lo <= l.offset || hi > l.lastIndex()+1 {
		return nil
	}
	ents := l.entries[lo-l.offset-1 : hi-l.offset-1]
	var size uint64
	for i := range ents {
		size += uint64(len(ents[i].Data))
		if size > maxBytes && i > 0 {
			return ents[:i:i]
		}
	}
	return ents[:len(ents):len(ents)]
}

// isUpToDate reports whether a log ending at (index, term) is at least as
// up-to-date as this one: a later last term wins, and for equal last terms
// the longer log wins (Raft §5.4.1).
func (l *raftLog) isUpToDate(index, term uint64) bool {
	lt := l.lastTerm()
	return term > lt || (term == lt && index >= l.lastIndex())
}

// appendEntries appends ents, which must follow the log's last entry.
func (l *raftLog) appendEntries(ents ...Entry) {
	l.entries = append(l.entries, ents...)
}

// truncateAndAppend replaces the log from ents[0].Index on with ents. The
// caller guarantees ents[0].Index > committed: a committed entry is never
// overwritten (Raft §5.4, Log Matching).
func (l *raftLog) truncateAndAppend(ents []Entry) {
	at := ents[0].Index
	if at <= l.lastIndex() {
		kept := at - l.offset - 1
		// The three-index slice makes append copy: messages and storage may
		// still hold slices of the old array, which must not change under them.
		l.entries = append(l.entries[:kept:kept], ents...)
		l.stable = min(l.stable, at-1)
		l.handedOff = min(l.handedOff, at-1)
		return
	}
	l.entries = append(l.entries, ents...)
}

// findConflictByTerm returns the largest index <= index whose term is <=
// term, with that term. Both sides of an AppendEntries rejection use it: the
// follower to hint where its log may match the leader's, the leader to skip
// a whole term of mismatching entries at once (Raft §5.3, last paragraphs).
func (l *raftLog) findConflictByTerm(index, term uint64) (uint64, uint64) {
	if index > l.lastIndex() {
		index = l.lastIndex()
	}
	for ; index > l.offset; index-- {
		if t := l.entry(index).Term; t <= term {
			return index, t
		}
	}
	return l.offset, l.offsetTerm
}

// trailingStart returns the smallest index lo >= offset such that the
// entries in (lo, hi] hold at most maxBytes of data: compacting the log to
// lo keeps the newest entries up to hi that fit in maxBytes (none if the
// entry at hi alone is larger).
func (l *raftLog) trailingStart(hi, maxBytes uint64) uint64 {
	hi = min(hi, l.lastIndex())
	if hi <= l.offset {
		return l.offset
	}
	var n uint64
	for i := hi; i > l.offset; i-- {
		n += uint64(len(l.entry(i).Data))
		if n > maxBytes {
			return i
		}
	}
	return l.offset
}

// commitTo raises the commit index; it never lowers it.
func (l *raftLog) commitTo(i uint64) {
	l.committed = max(l.committed, min(i, l.lastIndex()))
}

// takeUnstable returns the entries not yet given to the runtime to persist
// and counts them as given. With a runtime that writes asynchronously they
// stay unstable (not counted for quorum, not applied) until persisted says so.
func (l *raftLog) takeUnstable() []Entry {
	from := max(l.stable, l.handedOff)
	l.handedOff = l.lastIndex()
	if from >= l.lastIndex() {
		return nil
	}
	return l.entries[from-l.offset:]
}

// toApply returns the committed entries not yet handed to the state
// machine. Only durable entries are applied, so that a node never applies an
// entry its own log could lose in a crash.
func (l *raftLog) toApply() []Entry {
	hi := l.committed
	if l.stable < hi {
		hi = l.stable
	}
	if hi <= l.applying {
		return nil
	}
	return l.entries[l.applying-l.offset : hi-l.offset]
}

// compact drops the entries up to and including i, which must be in
// (offset, applying]: only applied entries, already in a snapshot, go.
func (l *raftLog) compact(i uint64) {
	t, _ := l.term(i)
	l.entries = append([]Entry(nil), l.entries[i-l.offset:]...)
	l.offset, l.offsetTerm = i, t
}

// restore makes the log start after a snapshot of (index, term) that a
// follower installed: entries after it are kept if the log holds the
// snapshot's last entry (Raft §7: "If existing log entry has same index and
// term as snapshot's last included entry, retain log entries following it"),
// otherwise the whole log is discarded.
func (l *raftLog) restore(index, term uint64) {
	switch {
	case !l.matchTerm(index, term):
		l.entries, l.offset, l.offsetTerm = nil, index, term
		l.stable, l.handedOff = index, index
	case index > l.offset:
		l.compact(index)
	}
	l.committed = max(l.committed, index)
	l.applying = max(l.applying, index)
	l.stable = max(l.stable, index)
	l.handedOff = max(l.handedOff, index)
}
