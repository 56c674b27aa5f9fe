package raft

// The outbound half of TCPTransport (tcp.go): a tcpPeer for each node this
// one sends to (a member from SetPeers, or a node learned from its
// handshake), with a tcpSender per lane. A sender queues what Send gives it;
// its goroutine dials the peer with backoff, runs the dialer's side of the
// handshake (tcp_wire.go), and writes what is queued as batches of frames on
// its tcpConn, with keepalives when there is nothing to write.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// tcpPeer holds the senders of one peer: one per lane, each with its own
// queue, goroutine and connection.
type tcpPeer struct {
	id      uint64
	addr    string
	learned bool // the address came from the peer's handshake, not from membership
	cancel  context.CancelFunc
	senders [tcpLanes]*tcpSender
}

// startPeer starts the senders of a new peer; the caller holds mu.
func (t *TCPTransport) startPeer(id uint64, addr string, learned bool) *tcpPeer {
	ctx, cancel := context.WithCancel(t.ctx)
	p := &tcpPeer{id: id, addr: addr, learned: learned, cancel: cancel}
	var tlsConfig *tls.Config
	if t.cfg.TLS != nil {
		tlsConfig = t.cfg.TLS.Clone()
		if tlsConfig.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				tlsConfig.ServerName = host
			}
		}
	}
	for lane := range tcpLanes {
		s := &tcpSender{t: t, peer: id, addr: addr, lane: lane, tls: tlsConfig, wake: make(chan struct{}, 1)}
		p.senders[lane] = s
		t.wg.Add(1)
		go s.run(ctx)
	}
	return p
}

// learnedPeer returns the peer for id if a handshake from id told its
// address, starting its senders on first use. This is how a node answers
// whoever sends to it although it is not in its configuration: a node being
// added answers the leader, which it does not know yet; any node answers
// one that was removed.
func (t *TCPTransport) learnedPeer(id uint64) *tcpPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.detached {
		return nil
	}
	current := *t.peers.Load()
	if p := current[id]; p != nil {
		return p
	}
	addr, ok := t.learned[id]
	if !ok {
		// A node that was a member when it connected (its address was not
		// learned then), and has been removed since, but is still
		// connected: answer it at the address its handshake advertised.
		addr = t.connectedAddr(id)
		if addr == "" || t.members[id] || len(t.learned) >= tcpMaxLearned {
			return nil
		}
		t.learned[id] = addr
	}
	p := t.startPeer(id, addr, true)
	next := maps.Clone(current)
	next[id] = p
	t.peers.Store(&next)
	t.logger.Info("answering a non-member at the address from its handshake", zap.Uint64("peer", id), zap.String("addr", addr))
	return p
}

// connectedAddr returns the address advertised by the newest inbound
// connection from id that is still open, or ""; the caller holds mu.
func (t *TCPTransport) connectedAddr(id uint64) string {
	for lane := range tcpLanes {
		if in := t.streams[tcpStreamKey{from: id, lane: lane}]; in != nil && in.addr != "" {
			return in.addr
		}
	}
	return ""
}

// learn records the advertised address of a node that is not a member; the
// caller holds mu.
func (t *TCPTransport) learn(id uint64, addr string) {
	if addr == "" || t.members[id] {
		return
	}
	old, known := t.learned[id]
	if known && old == addr {
		return
	}
	if !known && len(t.learned) >= tcpMaxLearned {
		return
	}
	t.learned[id] = addr
	current := *t.peers.Load()
	if p := current[id]; p != nil && p.learned {
		// It moved: the next Send starts a sender for the new address.
		p.cancel()
		next := maps.Clone(current)
		delete(next, id)
		t.peers.Store(&next)
	}
}

// tcpQueued is a message waiting in a lane's queue with the size of its
// frame body: its encoding, after its group ID in host mode.
type tcpQueued struct {
	msg   Message
	size  int
	group uint64 // the message's group on a Host; 0 otherwise
}

// tcpSender sends the messages of one lane to one peer. Send appends to
// queue; the sender's goroutine (run) takes everything queued at once,
// encodes it into one buffered write and flushes when the queue is empty.
type tcpSender struct {
	t    *TCPTransport
	peer uint64
	addr string
	lane tcpLane
	tls  *tls.Config // client side, ServerName set; nil without TLS

	mu    sync.Mutex
	queue []tcpQueued
	wake  chan struct{} // capacity 1: run has something to look at

	// lastChunk is the last snapshot chunk written to the connection (its
	// Data left out), reported lost if the connection breaks: the peer may
	// not have read it. Only run uses it.
	lastChunk *tcpQueued

	// connect asks run to dial even with nothing queued; retry asks it to
	// forget the backoff after failed dials. Both are consumed by run.
	connect atomic.Bool
	retry   atomic.Bool
}

// connectSoon makes the sender dial at once, although nothing is queued.
func (s *tcpSender) connectSoon() {
	s.connect.Store(true)
	s.signal()
}

// retryNow makes the sender dial at once if it is waiting out a backoff
// with messages queued; it does nothing to a working connection.
func (s *tcpSender) retryNow() {
	s.retry.Store(true)
	s.signal()
}

// push queues m unless the queue is full. It wakes the goroutine when the
// queue was empty; otherwise the goroutine has not taken the queue yet and
// will find m with the rest.
func (s *tcpSender) push(group uint64, m *Message, size int) bool {
	s.mu.Lock()
	n := len(s.queue)
	if n >= s.t.cfg.QueueSize {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, tcpQueued{msg: *m, size: size, group: group})
	s.mu.Unlock()
	if n == 0 {
		s.signal()
	}
	return true
}

func (s *tcpSender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued, replacing the queue with spare (empty).
func (s *tcpSender) take(spare []tcpQueued) []tcpQueued {
	s.mu.Lock()
	batch := s.queue
	s.queue = spare
	s.mu.Unlock()
	return batch
}

func (s *tcpSender) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) > 0
}

// discard drops everything queued, counts it as unreachable and returns
// how many messages it dropped; with report, it reports the loss to the
// Node.
func (s *tcpSender) discard(report bool) int {
	s.mu.Lock()
	n := len(s.queue)
	if report {
		s.t.reportLost(s.queue)
	}
	s.t.metrics.Load().droppedQueued(s.peer, s.queue)
	clear(s.queue)
	s.queue = s.queue[:0]
	s.mu.Unlock()
	addIf(&s.t.stats.droppedUnreachable, uint64(n))
	return n
}

// run is the sender's goroutine. It dials lazily, when there is something to
// send (or connectSoon asked it to), and again after the connection breaks;
// after a failed dial it drops what is queued and waits a backoff before the
// next attempt, keeping what is queued meanwhile for that attempt. retryNow
// cuts the wait short.
func (s *tcpSender) run(ctx context.Context) {
	t := s.t
	defer t.wg.Done()
	var (
		conn      *tcpConn
		failures  int
		retryAt   time.Time
		lastWrite time.Time
		warned    bool // the current streak of failed dials was logged as a warning
		spare     []tcpQueued
	)
	keepalive := t.cfg.IdleReadTimeout / 3
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer func() {
		timer.Stop()
		if conn != nil {
			conn.close(t)
		}
		s.discard(false)
	}()
	drop := func(reason string, err error) {
		conn.close(t)
		conn = nil
		timer.Stop()
		if s.lastChunk != nil {
			t.report(s.lastChunk.group, &s.lastChunk.msg)
			s.lastChunk = nil
		}
		if ctx.Err() == nil {
			t.logger.Debug("connection to peer closed", zap.Uint64("peer", s.peer), zap.Stringer("lane", s.lane), zap.String("reason", reason), zap.Error(err))
		}
		s.signal() // look at the queue again: pushes do not wake a non-empty queue
	}
	for {
		var dead <-chan struct{}
		if conn != nil {
			dead = conn.dead
		}
		timerFired := false
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-dead:
			drop("closed by the peer", nil)
			continue
		case <-timer.C:
			timerFired = true
		}

		retry := s.retry.Swap(false)
		if conn == nil {
			if retry && !retryAt.IsZero() {
				retryAt = time.Time{}
				timer.Stop()
			}
			if !s.connect.Load() && !s.pending() {
				continue
			}
			if wait := time.Until(retryAt); wait > 0 {
				timer.Reset(wait)
				continue
			}
			s.connect.Store(false)
			c, err := s.dial(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				t.stats.dialFailures.Add(1)
				dropped := s.discard(true)
				delay := tcpBackoff(failures, t.cfg.DialBackoff, t.cfg.MaxDialBackoff)
				retryAt = time.Now().Add(delay)
				// One warning per streak, at its first failure that cost
				// messages (a dial with nothing queued costs none) or
				// that a certificate or the peer's protocol version
				// caused: those will not heal by themselves.
				log := t.logger.Debug
				if !warned && (dropped > 0 || isIdentityFailure(err) || isVersionRefusal(err)) {
					log, warned = t.logger.Warn, true
				}
				log("cannot reach peer; dropping its queued messages", zap.Uint64("peer", s.peer), zap.String("addr", s.addr),
					zap.Stringer("lane", s.lane), zap.Int("failures", failures), zap.Duration("retryIn", delay), zap.Error(err))
				continue
			}
			if failures > 0 {
				t.logger.Info("connected to peer", zap.Uint64("peer", s.peer), zap.String("addr", s.addr), zap.Stringer("lane", s.lane), zap.Int("failedAttempts", failures))
			}
			failures, retryAt, warned = 0, time.Time{}, false
			conn = c
			lastWrite = time.Now()
			timer.Reset(keepalive)
		}

		wrote, err := s.writeQueued(conn, &spare)
		if err != nil {
			drop("write failed", err)
			continue
		}
		now := time.Now()
		if wrote {
			lastWrite = now
		}
		if timerFired {
			if now.Sub(lastWrite) >= keepalive {
				if err := conn.keepalive(t.cfg.WriteTimeout); err != nil {
					drop("keepalive failed", err)
					continue
				}
				lastWrite = now
			}
			timer.Reset(keepalive)
		}
	}
}

// isIdentityFailure reports whether a dial failed because a certificate
// does not name the right node, on either side of the handshake.
func isIdentityFailure(err error) bool {
	var refused *tcpRefusedError
	return errors.Is(err, errTCPIdentity) || errors.As(err, &refused) && refused.status == tcpRefusedIdentity
}

// isVersionRefusal reports whether a dial failed because the peer does not
// speak this node's protocol version.
func isVersionRefusal(err error) bool {
	var refused *tcpRefusedError
	return errors.As(err, &refused) && refused.status == tcpRefusedVersion
}

// tcpBackoff returns the wait after the given number of consecutive
// failures: base doubled per failure up to limit, with "equal jitter" (a
// random point in the upper half) so that peers do not dial in lockstep.
func tcpBackoff(failures int, base, limit time.Duration) time.Duration {
	d := min(base, limit)
	for i := 1; i < failures && d < limit; i++ {
		if d > limit/2 {
			d = limit
			break
		}
		d *= 2
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// writeQueued writes everything queued, batch after batch, into the
// connection's buffer and flushes once the queue is empty. It reports
// whether it wrote anything.
func (s *tcpSender) writeQueued(c *tcpConn, spare *[]tcpQueued) (bool, error) {
	t := s.t
	tm := t.metrics.Load()
	var written, invalid uint64
	writtenBytes := 0
	for {
		batch := s.take(*spare)
		if len(batch) == 0 {
			*spare = batch
			break
		}
		// The old queue's array is the spare from now on, also on failure:
		// the one passed to take is the queue now.
		*spare = batch[:0]
		if err := c.conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
			addIf(&t.stats.droppedUnreachable, written+uint64(len(batch)))
			tm.droppedTo(s.peer, dropUnreachable, int(written), writtenBytes)
			tm.droppedQueued(s.peer, batch)
			t.reportLost(batch)
			clear(batch)
			return false, err
		}
		for i := range batch {
			if err := c.writeFrame(&batch[i]); err != nil {
				if errors.Is(err, errInvalidMessage) {
					invalid++
					tm.droppedTo(s.peer, dropTooLarge, 1, batch[i].size)
					t.logger.Error("message cannot be encoded; dropped", zap.Uint64("peer", s.peer), zap.Error(err))
					continue
				}
				addIf(&t.stats.droppedUnreachable, written+uint64(len(batch)-i))
				addIf(&t.stats.droppedTooLarge, invalid)
				tm.droppedTo(s.peer, dropUnreachable, int(written), writtenBytes)
				tm.droppedQueued(s.peer, batch[i:])
				t.reportLost(batch[i:])
				clear(batch)
				return false, err
			}
			if q := &batch[i]; q.msg.Type == MsgSnapshot {
				chunk := *q
				chunk.msg.Data, chunk.msg.Entries = nil, nil
				s.lastChunk = &chunk
			}
			written++
			writtenBytes += batch[i].size
		}
		clear(batch) // do not pin the entries until the next batch
	}
	addIf(&t.stats.droppedTooLarge, invalid)
	if written == 0 {
		return false, nil
	}
	if err := c.w.Flush(); err != nil {
		addIf(&t.stats.droppedUnreachable, written)
		tm.droppedTo(s.peer, dropUnreachable, int(written), writtenBytes)
		return false, err
	}
	t.stats.sent.Add(written)
	tm.sentTo(s.peer, int(written), writtenBytes)
	if cap(c.scratch) > 1<<20 {
		c.scratch = nil // a burst of large messages is over: do not keep its buffer
	}
	return true, nil
}

// tcpConn is an outbound connection after a successful handshake.
type tcpConn struct {
	raw       net.Conn // the TCP connection; closing it unblocks everything
	conn      net.Conn // raw, or the TLS connection over it
	w         *bufio.Writer
	scratch   []byte        // encodes frames too large for w's free space
	groups    bool          // host mode: each frame body starts with its group ID
	dead      chan struct{} // closed when the peer closes the connection (or writes to it)
	stopWatch func() bool   // stops the context.AfterFunc that closes raw on cancel
}

// dial connects to the peer and completes the handshake.
func (s *tcpSender) dial(ctx context.Context) (*tcpConn, error) {
	t := s.t
	t.stats.dials.Add(1)
	self := t.node.Load()
	if self == nil {
		return nil, errTCPNotAttached
	}
	dialCtx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	var dialer net.Dialer
	raw, err := dialer.DialContext(dialCtx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	c := &tcpConn{raw: raw, conn: raw, dead: make(chan struct{})}
	c.stopWatch = context.AfterFunc(ctx, func() { raw.Close() })
	ok := false
	defer func() {
		if !ok {
			c.stopWatch()
			raw.Close()
		}
	}()
	if err := raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return nil, err
	}
	if s.tls != nil {
		tc := tls.Client(raw, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		if t.cfg.bindsNodeIDs() {
			state := tc.ConnectionState()
			if err := t.checkServer(&state, s.peer); err != nil {
				t.stats.identityRefused.Add(1)
				return nil, err
			}
		}
		c.conn = tc
	}
	hello := tcpHello{version: t.version(), lane: s.lane, from: self.id, to: s.peer, cluster: t.cfg.ClusterID, addr: t.advertise}
	if _, err := c.conn.Write(hello.appendTo(nil)); err != nil {
		return nil, fmt.Errorf("writing the hello: %w", err)
	}
	var reply [tcpReplySize]byte
	if _, err := io.ReadFull(c.conn, reply[:]); err != nil {
		return nil, fmt.Errorf("reading the handshake reply: %w", err)
	}
	if string(reply[:4]) != tcpMagic {
		return nil, errTCPBadMagic
	}
	if status := tcpStatus(reply[5]); status != tcpAccepted {
		return nil, &tcpRefusedError{status: status, version: reply[4], ours: t.version()}
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	c.w = bufio.NewWriterSize(c.conn, tcpWriteBuffer)
	c.groups = t.host
	ok = true
	t.stats.outboundConns.Add(1)
	t.wg.Add(1) // the sender's goroutine is counted, so this cannot race with Close's Wait
	go c.watch(t)
	return c, nil
}

// watch waits for the peer to close the connection. The peer never writes
// after the handshake, so any return from Read means the connection is done;
// closing dead lets the sender redial before it loses a batch to a dead
// connection.
func (c *tcpConn) watch(t *TCPTransport) {
	defer t.wg.Done()
	var b [1]byte
	_, _ = c.conn.Read(b[:])
	close(c.dead)
}

func (c *tcpConn) close(t *TCPTransport) {
	c.stopWatch()
	c.raw.Close()
	t.stats.outboundConns.Add(-1)
}

// writeFrame appends one frame to the buffer: in place when it fits in the
// buffer's free space, through scratch otherwise (bufio writes large slices
// straight to the connection).
func (c *tcpConn) writeFrame(q *tcpQueued) error {
	need := tcpFrameHeader + q.size
	var buf []byte
	if need <= c.w.Available() {
		buf = c.w.AvailableBuffer()
	} else {
		buf = c.scratch[:0]
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(q.size))
	if c.groups {
		buf = binary.AppendUvarint(buf, q.group)
	}
	buf, err := q.msg.AppendBinary(buf)
	if err != nil {
		return err
	}
	if need > c.w.Available() {
		c.scratch = buf
	}
	_, err = c.w.Write(buf)
	return err
}

func (c *tcpConn) keepalive(timeout time.Duration) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	var empty [tcpFrameHeader]byte
	if _, err := c.w.Write(empty[:]); err != nil {
		return err
	}
	return c.w.Flush()
}
