package raft

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"go.uber.org/zap"
)

// Snapshots in the runtime (Raft §7).
//
// Taking one: after applying a batch, the apply goroutine checks whether
// SnapshotThreshold entries, or SnapshotThresholdBytes of commands, were
// applied since the last snapshot (or Node.Snapshot asked for one): the
// log since the last compaction is held in memory, so both bound it. It
// calls StateMachine.Snapshot there, so the
// snapshot is exactly the state at the applied index, and hands it to a
// writer goroutine that streams Snapshot.WriteTo into Storage.SaveSnapshot
// while applying goes on. Once it is durable, the event loop compacts the
// log behind it, keeping TrailingEntries for slow followers.
//
// Sending one: when a follower needs entries that were compacted away, the
// core asks for the snapshot to be sent; a sender goroutine reads it from
// Storage in chunks of SnapshotChunkSize and sends one chunk at a time,
// waiting for each acknowledgment (so a large snapshot never sits in memory
// and heartbeats keep flowing beside it). The last chunk carries the data's
// CRC-32C. A silent follower, a leadership change or a rejection ends the
// transfer; replication then starts over and asks again if needed.
//
// Receiving one: the event loop pipes chunks into Storage.SaveSnapshot on a
// writer goroutine, checks the CRC before the last byte goes in (a mismatch
// fails the save, which changes nothing), then has the apply goroutine call
// StateMachine.Restore, then discards the log the snapshot replaces, and
// only then acknowledges. A transfer that stops (leader change, silence)
// is abandoned and the partial file removed by the storage.

// restoreRequest asks the apply goroutine to restore a received snapshot.
type restoreRequest struct {
	meta SnapshotMeta
	from uint64
	size uint64 // bytes received, for the final acknowledgment
}

// snapSender streams the snapshot to one follower.
type snapSender struct {
	to     uint64
	term   uint64
	index  uint64       // the snapshot being sent, once opened
	acks   chan Message // acknowledgments, statuses and reports of lost chunks
	cancel chan struct{}
}

// snapReceiver is a snapshot arriving from the leader.
type snapReceiver struct {
	meta   SnapshotMeta
	from   uint64
	offset uint64
	crc    hash.Hash32
	pw     *io.PipeWriter
	saved  chan error
	ticks  int
	start  time.Time
}

// Snapshot takes a snapshot of the state machine at its applied index and
// compacts the log behind it now, without waiting for SnapshotThreshold.
// It returns once the snapshot is durable, or the error that stopped it.
func (n *Node) Snapshot(ctx context.Context) error {
	if err := n.usable(); err != nil {
		return err
	}
	done := make(chan error, 1)
	n.snapMu.Lock()
	n.snapWaiters = append(n.snapWaiters, done)
	n.snapMu.Unlock()
	n.kickApplier()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return n.stopErr()
	}
}

// postEvent runs f on the event loop.
func (n *Node) postEvent(f func()) {
	n.inboxMu.Lock()
	n.inEvents = append(n.inEvents, f)
	n.inboxMu.Unlock()
	n.wake()
}

// maybeSnapshot runs on the apply goroutine after each batch.
func (n *Node) maybeSnapshot() {
	if n.snapshotting.Load() {
		return
	}
	n.snapMu.Lock()
	waiters := n.snapWaiters
	n.snapWaiters = nil
	n.snapMu.Unlock()
	applied := n.applied.Load()
	due := applied >= max(n.lastSnapIndex.Load()+n.cfg.SnapshotThreshold, n.snapRetryAt) ||
		n.snapBytes >= n.cfg.SnapshotThresholdBytes
	if !due && len(waiters) == 0 {
		return
	}
	if applied <= n.lastSnapIndex.Load() {
		for _, w := range waiters {
			w <- nil // nothing applied since the last snapshot
		}
		return
	}
	n.snapBytes = 0 // after a failure too: try again after another threshold's worth
	snap, err := n.sm.Snapshot()
	if err != nil {
		err = fmt.Errorf("raft: StateMachine.Snapshot at %d: %w", applied, err)
		n.logger.Error("taking a snapshot failed", zap.Error(err))
		// Try again only after another threshold's worth of entries.
		n.snapRetryAt = applied + n.cfg.SnapshotThreshold
		for _, w := range waiters {
			w <- err
		}
		return
	}
	meta := SnapshotMeta{Index: applied, Term: n.appliedTerm, Members: n.appliedMembers, Outgoing: n.appliedOutgoing}
	n.snapshotting.Store(true)
	n.bgWG.Add(1)
	go n.writeSnapshot(meta, snap, waiters)
}

// writeSnapshot streams a snapshot into storage, off the apply goroutine.
func (n *Node) writeSnapshot(meta SnapshotMeta, snap Snapshot, waiters []chan error) {
	defer n.bgWG.Done()
	start := time.Now()
	pr, pw := io.Pipe()
	size := make(chan int64, 1)
	go func() {
		written, err := snap.WriteTo(pw)
		size <- written
		pw.CloseWithError(err)
	}()
	err := n.storage.SaveSnapshot(meta, pr)
	pr.CloseWithError(errors.New("raft: snapshot write abandoned"))
	written := <-size
	snap.Release()
	if err == nil {
		n.metrics.snapshotTaken(time.Since(start), written)
	}
	n.postEvent(func() {
		n.snapshotting.Store(false)
		if err == nil {
			err = n.snapshotWritten(meta, written, time.Since(start))
		} else {
			err = fmt.Errorf("raft: saving snapshot %d: %w", meta.Index, err)
			n.logger.Error("saving a snapshot failed", zap.Error(err))
		}
		n.updateStatus() // so that a caller of Node.Snapshot sees it in Status
		for _, w := range waiters {
			w <- err
		}
		n.kickApplier() // maybe another is due already
	})
}

// snapshotWritten compacts the log behind a durable snapshot (event loop).
func (n *Node) snapshotWritten(meta SnapshotMeta, size int64, took time.Duration) error {
	n.lastSnapIndex.Store(max(n.lastSnapIndex.Load(), meta.Index))
	index, term, ok := n.core.snapshotTaken(meta, n.cfg.trailingEntries())
	n.logger.Info("snapshot taken", zap.Uint64("index", meta.Index), zap.Uint64("term", meta.Term),
		zap.Int64("bytes", size), zap.Duration("took", took), zap.Uint64("compactedTo", index))
	if !ok {
		return nil
	}
	if err := n.writer.compact(index, term); err != nil {
		err = fmt.Errorf("raft: compacting the log to %d: %w", index, err)
		n.fatalErr = err
		return err
	}
	return nil
}

// handleSnapshotOutput starts senders and routes chunks and acks (event loop).
// The core's progress is the truth about who needs a snapshot: checkSenders
// starts and stops senders to match it after every loop iteration, so
// sendTo only says that one may be needed now.
func (n *Node) handleSnapshotOutput(sendTo []uint64, msgs []Message) error {
	if len(sendTo) > 0 {
		n.checkSenders()
	}
	for _, m := range msgs {
		switch m.Type {
		case MsgSnapshotResp, MsgHeartbeatResp, MsgUnreachable:
			// Acknowledgments, the follower's statuses, lost chunks.
			if s := n.senders[m.From]; s != nil {
				select {
				case s.acks <- m:
				default: // the sender is behind; it will time out and retry
				}
			}
		case MsgSnapshot:
			if err := n.receiveChunk(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkSenders stops senders whose transfer the core no longer wants, and
// starts one for every follower that needs the snapshot and has none (after
// a failure, not before an election timeout has passed).
func (n *Node) checkSenders() {
	st := n.core.status()
	for id, s := range n.senders {
		if st.term != s.term || !n.core.needsSnapshot(id) {
			close(s.cancel)
			delete(n.senders, id)
		}
	}
	if st.role != Leader {
		return
	}
	// Every node the leader replicates to: while the configuration is
	// joint, the voters of the outgoing half count for commitment too, and
	// a removed member that is behind learns of its removal this way.
	for _, id := range n.core.replicaIDs() {
		if !n.core.needsSnapshot(id) || n.senders[id] != nil || time.Now().Before(n.senderRetry[id]) {
			continue
		}
		s := &snapSender{to: id, term: st.term, acks: make(chan Message, 16), cancel: make(chan struct{})}
		n.senders[id] = s
		n.bgWG.Add(1)
		go n.streamSnapshot(s)
	}
}

// sendOut sends messages from a goroutine other than the event loop, which
// is the only one that calls Transport.Send.
func (n *Node) sendOut(m Message) {
	n.inboxMu.Lock()
	n.inOut = append(n.inOut, m)
	n.inboxMu.Unlock()
	n.wake()
}

// streamSnapshot sends the newest snapshot to one follower, one chunk at a
// time, each acknowledged before the next. When the follower's heartbeat
// responses show that it has no transfer under way (the first chunk or the
// final acknowledgment was lost, it restarted, or it gave up), the
// snapshot is sent again from where the follower is, at once.
func (n *Node) streamSnapshot(s *snapSender) {
	defer n.bgWG.Done()
	start := time.Now()
	var sent uint64
	var err error
	var resume transferLost
	for {
		sent, err = n.sendSnapshotChunks(s, resume)
		if !errors.As(err, &resume) {
			break
		}
		n.logger.Info("the follower has no transfer of the snapshot under way; sending it again",
			zap.Uint64("to", s.to), zap.Uint64("index", s.index), zap.Uint64("from", resume.have))
	}
	if err == errSenderCancelled {
		return
	}
	n.postEvent(func() {
		if n.senders[s.to] == s {
			delete(n.senders, s.to)
		}
		if err != nil {
			n.logger.Warn("sending the snapshot failed", zap.Uint64("to", s.to), zap.Error(err))
			n.senderRetry[s.to] = time.Now().Add(n.cfg.ElectionTimeout)
			n.core.snapshotFailed(s.to)
			return
		}
		n.logger.Info("snapshot sent", zap.Uint64("to", s.to), zap.Uint64("bytes", sent), zap.Duration("took", time.Since(start)))
		n.metrics.snapshotSent(s.to, time.Since(start), int64(sent))
		// The final acknowledgment means installed: replication resumes
		// after the snapshot even if the follower's append answer is lost.
		n.core.snapshotSucceeded(s.to, s.index)
	})
}

var errSenderCancelled = errors.New("raft: snapshot transfer cancelled")

// transferLost ends a pass over the snapshot whose transfer the follower
// does not have (any more): the next pass starts over, skipping the first
// have bytes of snapshot index, which the follower holds.
type transferLost struct{ index, have uint64 }

func (e transferLost) Error() string {
	return fmt.Sprintf("raft: the follower holds %d bytes of the transfer of snapshot %d", e.have, e.index)
}

// snapStream is one pass of a sender over the snapshot.
type snapStream struct {
	n       *Node
	s       *snapSender
	meta    SnapshotMeta
	offset  uint64        // bytes read from storage (and added to the checksum)
	have    uint64        // bytes the follower said it holds
	slowest time.Duration // the longest a chunk of this pass took to be acknowledged
}

// sendSnapshotChunks makes one pass over the newest snapshot, starting
// where resume says the follower is if it names that snapshot.
func (n *Node) sendSnapshotChunks(s *snapSender, resume transferLost) (uint64, error) {
	meta, rc, err := n.storage.Snapshot()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	s.index = meta.Index
	st := &snapStream{n: n, s: s, meta: meta}
	if resume.index == meta.Index {
		st.have = resume.have
	}
	buf := make([]byte, n.cfg.SnapshotChunkSize)
	crc := crc32.New(crcTable)
	for {
		if st.have > st.offset {
			// Skip what the follower holds; it still counts in the checksum.
			k, err := io.CopyN(crc, rc, int64(st.have-st.offset))
			st.offset += uint64(k)
			if err != nil && err != io.EOF {
				return st.offset, fmt.Errorf("reading the snapshot: %w", err)
			}
		}
		k, rerr := io.ReadFull(rc, buf)
		done := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !done {
			return st.offset, fmt.Errorf("reading the snapshot: %w", rerr)
		}
		crc.Write(buf[:k])
		m := Message{Type: MsgSnapshot, From: n.cfg.ID, To: s.to, Term: s.term, Index: meta.Index, LogTerm: meta.Term,
			Context: st.offset, Data: append([]byte(nil), buf[:k]...), Done: done}
		if st.offset == 0 {
			m.Entries = []Entry{{Index: meta.Index, Term: meta.Term, Type: EntryConfChange, Data: encodeConfig(meta.Members, meta.Outgoing)}}
		}
		if done {
			m.HintIndex = uint64(crc.Sum32())
		}
		want := st.offset + uint64(k)
		if err := st.deliverChunk(m, want); err != nil {
			return st.offset, err
		}
		st.offset = want
		st.have = max(st.have, want)
		if done {
			return st.offset, nil
		}
	}
}

// deliverChunk sends m, the chunk that ends at byte want, until the
// follower acknowledges it. It sends the chunk again when
//   - the transport reports it lost: at the follower's next status, or a
//     heartbeat interval after the last send if that comes first (not at
//     once, in case the peer is still unreachable);
//   - a heartbeat response shows that the follower lacks it, once it had
//     time to arrive: half an election timeout, or twice the slowest chunk;
//   - nothing at all is heard for two election timeouts (a follower of an
//     earlier version sends no status), giving up after three tries.
//
// The last chunk is acknowledged only once the follower has restored the
// snapshot, which may take long: while the follower says it is installing,
// the sender waits.
func (st *snapStream) deliverChunk(m Message, want uint64) error {
	n := st.n
	wait := 2 * n.cfg.ElectionTimeout
	if m.Done {
		wait *= 10
	}
	resendAfter := max(n.cfg.ElectionTimeout/2, 2*st.slowest)
	now := time.Now()
	sentAt, deadline, tries := now, now.Add(wait), 1
	var resendAt time.Time // a resend after a reported loss; zero: none due
	lost := false          // the transport reported the last send lost
	resend := func(now time.Time) {
		n.sendOut(m)
		sentAt, resendAt, lost = now, time.Time{}, false
	}
	n.sendOut(m)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case r := <-st.s.acks:
			now := time.Now()
			switch r.Type {
			case MsgSnapshotResp:
				switch {
				case r.Index != st.meta.Index:
				case r.Reject:
					return fmt.Errorf("the follower restarted the transfer at %d", r.Context)
				case r.Context >= want:
					if !m.Done {
						st.slowest = max(st.slowest, now.Sub(sentAt))
					}
					st.have = max(st.have, r.Context)
					return nil
				}
			case MsgHeartbeatResp:
				switch {
				case r.Index == st.meta.Index && r.HintIndex >= want:
					if !m.Done {
						st.have = max(st.have, r.HintIndex)
						return nil // its acknowledgment was lost
					}
					deadline, tries = now.Add(wait), 1 // being installed
				case !lost && now.Sub(sentAt) < resendAfter:
					// The chunk may be on its way still.
				case r.Index == st.meta.Index && r.HintIndex == m.Context, m.Context == 0:
					resend(now) // lost
				default:
					have := uint64(0)
					if r.Index == st.meta.Index {
						have = r.HintIndex
					}
					return transferLost{index: st.meta.Index, have: have}
				}
			case MsgUnreachable:
				if r.Index == st.meta.Index && r.Context == m.Context && resendAt.IsZero() {
					// Resend once the peer answers again, or after a
					// heartbeat interval, not at once: it may still be
					// unreachable.
					resendAt, lost = sentAt.Add(n.cfg.HeartbeatInterval), true
				}
			}
		case <-timer.C:
		case <-st.s.cancel:
			return errSenderCancelled
		case <-n.done:
			return errSenderCancelled
		}
		now := time.Now()
		if !resendAt.IsZero() && !now.Before(resendAt) {
			resend(now)
		}
		if !now.Before(deadline) {
			if tries == 3 {
				return fmt.Errorf("no acknowledgment of the chunk at %d after %v", m.Context, 3*wait)
			}
			tries++
			resend(now)
			deadline = now.Add(wait)
		}
		next := deadline
		if !resendAt.IsZero() && resendAt.Before(next) {
			next = resendAt
		}
		timer.Reset(time.Until(next))
	}
}

// receiveChunk takes one chunk of a snapshot from the leader (event loop).
// Chunks may come duplicated, late or reordered: a chunk that is not the
// next one is acknowledged (if we have it) or ignored (if it is ahead), and
// only a transfer we know nothing of is refused, so that the leader starts
// it again.
func (n *Node) receiveChunk(m Message) error {
	r := n.receiver
	st := n.core.status()
	ack := Message{Type: MsgSnapshotResp, From: n.cfg.ID, To: m.From, Term: st.term, Index: m.Index, Origin: st.origin}
	defer n.noteTransfer()
	if m.Index <= n.installing.index {
		// This snapshot (or an older one) is being restored; the final
		// acknowledgment follows the restore.
		return nil
	}
	sameTransfer := r != nil && r.meta.Index == m.Index && r.from == m.From
	if m.Context == 0 && !sameTransfer {
		n.abortReceiver("a new transfer began")
		if len(m.Entries) != 1 || m.Entries[0].Type != EntryConfChange {
			return nil // malformed: ignore
		}
		members, outgoing, err := decodeConfig(m.Entries[0].Data)
		if err != nil {
			n.logger.Warn("bad configuration in a snapshot", zap.Error(err))
			return nil
		}
		r = &snapReceiver{meta: SnapshotMeta{Index: m.Index, Term: m.LogTerm, Members: members, Outgoing: outgoing}, from: m.From,
			crc: crc32.New(crcTable), saved: make(chan error, 1), start: time.Now()}
		pr, pw := io.Pipe()
		r.pw = pw
		n.bgWG.Add(1)
		go func(meta SnapshotMeta) {
			defer n.bgWG.Done()
			err := n.storage.SaveSnapshot(meta, pr)
			pr.CloseWithError(errors.New("raft: snapshot receive abandoned"))
			r.saved <- err
		}(r.meta)
		n.receiver, sameTransfer = r, true
	}
	switch {
	case !sameTransfer:
		// A transfer we know nothing of (we restarted, or abandoned it):
		// ask for it from the start.
		ack.Reject, ack.Context = true, 0
		n.sendBehindWrites(ack)
		return nil
	case m.Context < r.offset:
		// A retransmission or duplicate of a chunk we have.
		ack.Context = r.offset
		n.sendBehindWrites(ack)
		return nil
	case m.Context > r.offset:
		return nil // ahead of what we have: a reordered message; the leader resends
	}
	r.ticks = 0
	r.crc.Write(m.Data)
	if m.Done && uint64(r.crc.Sum32()) != m.HintIndex {
		n.abortReceiver("checksum mismatch")
		ack.Reject, ack.Context = true, 0
		n.sendBehindWrites(ack)
		return nil
	}
	if _, err := r.pw.Write(m.Data); err != nil {
		n.abortReceiver("storage failed")
		return nil
	}
	r.offset += uint64(len(m.Data))
	if !m.Done {
		ack.Context = r.offset
		n.sendBehindWrites(ack)
		return nil
	}
	// The last chunk: finish storing off the event loop (fsync, rename),
	// then restore on the apply goroutine; the final acknowledgment goes
	// out only once the state machine holds the snapshot and the log it
	// replaces is discarded.
	r.pw.Close()
	n.receiver = nil
	n.installing = snapshotTransfer{from: r.from, index: r.meta.Index, bytes: r.offset}
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		err := <-r.saved
		n.postEvent(func() {
			if err != nil {
				n.installDone(r.meta.Index)
				n.logger.Error("storing a received snapshot failed", zap.Uint64("index", r.meta.Index), zap.Error(err))
				return
			}
			n.logger.Info("snapshot received", zap.Uint64("index", r.meta.Index), zap.Uint64("bytes", r.offset), zap.Duration("took", time.Since(r.start)))
			n.enqueueApply(applyBatch{restore: &restoreRequest{meta: r.meta, from: r.from, size: r.offset}})
		})
	}()
	return nil
}

// abortReceiver abandons a transfer in progress; the storage discards what
// it had written.
func (n *Node) abortReceiver(why string) {
	if r := n.receiver; r != nil {
		n.logger.Info("snapshot transfer abandoned", zap.Uint64("index", r.meta.Index), zap.String("why", why))
		r.pw.CloseWithError(errors.New("raft: snapshot transfer abandoned: " + why))
		<-r.saved
		n.receiver = nil
		n.noteTransfer()
	}
}

// installDone ends the installation of the snapshot at index, unless a
// later one has begun since.
func (n *Node) installDone(index uint64) {
	if n.installing.index == index {
		n.installing = snapshotTransfer{}
		n.noteTransfer()
	}
}

// noteTransfer tells the core how far this node got with the snapshot it
// receives or installs, for its heartbeat responses to the leader.
func (n *Node) noteTransfer() {
	t := n.installing
	if r := n.receiver; r != nil {
		t = snapshotTransfer{from: r.from, index: r.meta.Index, bytes: r.offset}
	}
	n.core.snapshotReceiving(t)
}

// tickReceiver abandons a transfer the leader stopped feeding.
func (n *Node) tickReceiver() {
	if r := n.receiver; r != nil {
		if r.ticks++; r.ticks > 2*n.electionTick {
			n.abortReceiver("the leader went silent")
		}
	}
}

// restoreFromSnapshot replaces the state machine's state with a received
// snapshot (apply goroutine). A Restore error stops the node: running on
// with half a state is worse than stopping.
func (n *Node) restoreFromSnapshot(req *restoreRequest) {
	start := time.Now()
	meta, rc, err := n.storage.Snapshot()
	if err == nil && meta.Index < req.meta.Index {
		rc.Close()
		err = fmt.Errorf("storage holds snapshot %d/%d, older than the received %d/%d", meta.Term, meta.Index, req.meta.Term, req.meta.Index)
	}
	if err == nil && meta.Index <= n.applied.Load() {
		// Stale: the state machine is already past it (entries arrived
		// meanwhile). Restoring would roll it back.
		rc.Close()
		n.postEvent(func() { n.installDone(req.meta.Index) })
		return
	}
	var size int64
	if err == nil {
		// A newer snapshot stored meanwhile replaces the received one.
		sr := &snapshotReader{r: rc, meta: meta}
		err = n.sm.Restore(sr)
		rc.Close()
		size = sr.read
	}
	if err == nil {
		n.metrics.snapshotRestored(time.Since(start), size)
		n.applied.Store(meta.Index)
		n.appliedConfig(meta.Members, meta.Outgoing, meta.Index)
		n.appliedTerm = meta.Term
		n.lastSnapIndex.Store(meta.Index)
		n.snapBytes = 0
	}
	n.postEvent(func() {
		n.installDone(req.meta.Index)
		if err != nil {
			n.fatalErr = fmt.Errorf("raft: restoring the state machine from snapshot %d: %w", req.meta.Index, err)
			return
		}
		// The snapshot replaces the log up to its index: discard it durably
		// before the leader hears that we have it.
		if cerr := n.writer.compact(meta.Index, meta.Term); cerr != nil {
			n.fatalErr = fmt.Errorf("raft: discarding the log behind snapshot %d: %w", meta.Index, cerr)
			return
		}
		if n.core.installSnapshot(meta, req.from) {
			st := n.core.status()
			n.sendBehindWrites(Message{Type: MsgSnapshotResp, From: n.cfg.ID, To: req.from, Term: st.term, Index: req.meta.Index, Context: req.size, Origin: st.origin})
		}
		n.logger.Info("snapshot restored", zap.Uint64("index", meta.Index), zap.Duration("took", time.Since(start)))
	})
}

// SnapshotMetaOf returns the metadata of the snapshot whose data r holds,
// when r is the reader the Node passed to StateMachine.Restore: the index
// and term of the last entry the snapshot covers, and the configuration at
// that index. ok is false for any other reader, such as one the state
// machine wrapped around it, or one a test made.
func SnapshotMetaOf(r io.Reader) (meta SnapshotMeta, ok bool) {
	if sr, is := r.(*snapshotReader); is {
		return sr.meta, true
	}
	return SnapshotMeta{}, false
}

// snapshotReader is the reader StateMachine.Restore gets: the snapshot's
// data from storage, with its metadata for SnapshotMetaOf.
type snapshotReader struct {
	r    io.Reader
	meta SnapshotMeta
	read int64 // bytes the state machine read (raft.snapshot.restore.size)
}

func (s *snapshotReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read += int64(n)
	return n, err
}

// WriteTo keeps the fast paths of the storage's reader (a file's, for
// one) for a Restore that copies the data with io.Copy.
func (s *snapshotReader) WriteTo(w io.Writer) (n int64, err error) {
	if wt, ok := s.r.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.Copy(w, struct{ io.Reader }{s.r})
	}
	s.read += n
	return n, err
}
