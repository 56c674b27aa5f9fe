package raft

import "go.uber.org/zap"

// The core's part of snapshots (Raft §7, dissertation chapter 5): taking
// one compacts the log behind it; a leader whose follower needs compacted
// entries has the runtime stream it the snapshot (see progress.go's
// snapshot state and node_snapshot.go), follows the transfer through the
// follower's reports, and resumes appends after it; a follower installs a
// snapshot that its log does not already cover.

// answerCoveredSnapshot answers a snapshot of (index, term) that our commit
// index covers: it acknowledges the snapshot's last entry once it has
// checked it against our log, as handleAppendBelowCommit does for entries.
func (c *core) answerCoveredSnapshot(index, term, from uint64) {
	if c.checkCommitted(index, term, from) {
		c.send(Message{Type: MsgAppendResp, To: from, Index: index, Commit: c.log.committed})
	}
}

// snapshotFailed is the runtime's report that streaming the snapshot to id
// failed (the follower stopped answering, or storage failed): replication
// to it starts over from probing, which asks for the snapshot again if it
// still needs it.
func (c *core) snapshotFailed(id uint64) {
	if pr := c.progress[id]; c.role == Leader && pr != nil && pr.state == snapshotState {
		pr.becomeProbe(pr.match + 1)
	}
}

// snapshotTransfer is a follower's part in an InstallSnapshot: the
// snapshot (by index) it receives or installs from leader from, and the
// bytes of its data stored so far. The zero value means none.
type snapshotTransfer struct {
	from, index, bytes uint64
}

// snapshotReceiving records the runtime's report of the transfer this
// follower takes part in (index 0: none), for its heartbeat responses.
func (c *core) snapshotReceiving(t snapshotTransfer) { c.receiving = t }

// status adds the transfer's state to a heartbeat response: Done says that
// the response carries one, and a transfer from another leader counts as
// none for this one.
func (t snapshotTransfer) status(resp Message) Message {
	resp.Done = true
	if t.from == resp.To {
		resp.Index, resp.HintIndex = t.index, t.bytes
	}
	return resp
}

// snapshotSucceeded is the runtime's report that follower id installed the
// snapshot at index (its final acknowledgment): it holds everything up to
// there, so replication resumes after it.
func (c *core) snapshotSucceeded(id, index uint64) {
	pr := c.progress[id]
	if c.role != Leader || pr == nil || pr.state != snapshotState || index < pr.pendingSnapshot {
		return
	}
	pr.match = max(pr.match, index)
	pr.becomeProbe(index + 1)
	c.sendAppend(id, false)
}

// snapshotTaken records a snapshot the runtime has made durable, and
// compacts the log behind it, keeping trailing entries for slow followers:
// at most trailing of them, and only the newest that hold at most
// c.trailingBytes of data (when set), since the whole log stays in memory.
// It returns the new start of the log for the runtime to compact storage
// to, or ok=false if nothing is compacted.
func (c *core) snapshotTaken(meta SnapshotMeta, trailing uint64) (index, term uint64, ok bool) {
	if meta.Index > c.snap.Index {
		c.snap = meta
	}
	var to uint64
	if c.snap.Index > trailing {
		to = c.snap.Index - trailing
	}
	if c.trailingBytes > 0 {
		to = max(to, c.log.trailingStart(c.snap.Index, c.trailingBytes))
	}
	to = min(to, c.log.applying) // both bounds above are at most c.snap.Index
	if to <= c.log.offset {
		return 0, 0, false
	}
	c.log.compact(to)
	return c.log.offset, c.log.offsetTerm, true
}

// installSnapshot takes a snapshot the runtime received from the leader,
// stored, and restored into the state machine: the log now starts after it
// (see raftLog.restore), and the leader hears that we hold everything up to
// its index. It returns false if the snapshot is older than what we have.
func (c *core) installSnapshot(meta SnapshotMeta, from uint64) bool {
	if meta.Index <= c.log.committed {
		c.answerCoveredSnapshot(meta.Index, meta.Term, from)
		return false
	}
	c.log.restore(meta.Index, meta.Term)
	if meta.Index > c.snap.Index {
		c.snap = meta
	}
	if err := c.reloadConfig(); err != nil {
		c.logger.Error("bad configuration entry after a snapshot", zap.Error(err))
	}
	c.logger.Info("installed snapshot", zap.Uint64("index", meta.Index), zap.Uint64("term", meta.Term), zap.Uint64("from", from))
	c.send(Message{Type: MsgAppendResp, To: from, Index: meta.Index})
	return true
}
