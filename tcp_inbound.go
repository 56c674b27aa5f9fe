package raft

// The inbound half of TCPTransport (tcp.go): the accept loop and the
// MaxInboundConns cap, the acceptor's side of the handshake (tcp_wire.go),
// held until Attach while the node starts, the record of each peer's newest
// connection per lane, and the frame reader, which delivers the messages to
// the node.

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// tcpInbound is one accepted connection.
type tcpInbound struct {
	raw    net.Conn
	byUs   atomic.Bool // we closed it (Detach, Close, a newer connection): not the peer's fault
	remote string
	addr   string // the address the peer advertised in its hello; set before register publishes it
}

func (in *tcpInbound) close() {
	in.byUs.Store(true)
	in.raw.Close()
}

func (t *TCPTransport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		raw, err := t.listener.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or the like: wait, do not spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Error("accept failed", zap.Error(err), zap.Duration("retryIn", delay))
			select {
			case <-time.After(delay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		t.admit(raw)
	}
}

// admit starts serving raw, or closes it at once when MaxInboundConns
// connections are open.
func (t *TCPTransport) admit(raw net.Conn) {
	in := &tcpInbound{raw: raw, remote: raw.RemoteAddr().String()}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		raw.Close()
		return
	}
	if len(t.inbound) >= t.cfg.MaxInboundConns {
		t.mu.Unlock()
		if tc, ok := raw.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset: keep no TIME_WAIT state for a flood
		}
		raw.Close()
		t.stats.connsRefused.Add(1)
		// One line a second at most: a flood must not flood the log too.
		now := time.Now().UnixNano()
		if next := t.nextWarn.Load(); now >= next && t.nextWarn.CompareAndSwap(next, now+int64(time.Second)) {
			t.logger.Warn("too many inbound connections; closing new ones", zap.String("remote", in.remote),
				zap.Int("maxInboundConns", t.cfg.MaxInboundConns), zap.Uint64("refusedSoFar", t.stats.connsRefused.Load()))
		}
		return
	}
	t.inbound[in] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	t.stats.connsAccepted.Add(1)
	go func() {
		defer t.wg.Done()
		t.serveConn(in)
		t.mu.Lock()
		delete(t.inbound, in)
		t.mu.Unlock()
	}()
}

// serveConn runs the handshake on an inbound connection and then reads its
// frames until the connection ends; it closes the connection.
func (t *TCPTransport) serveConn(in *tcpInbound) {
	defer in.raw.Close()
	accepted := time.Now()
	if err := in.raw.SetDeadline(accepted.Add(t.cfg.HandshakeTimeout)); err != nil {
		return
	}
	conn := in.raw
	var tlsState *tls.ConnectionState
	if t.cfg.TLS != nil {
		tc := tls.Server(in.raw, t.cfg.TLS)
		if err := tc.HandshakeContext(t.ctx); err != nil {
			t.refuse(in, "TLS handshake failed", err)
			return
		}
		conn = tc
		state := tc.ConnectionState()
		tlsState = &state
	}
	hello, err := readTCPHelloOf(conn, t.version())
	if err != nil {
		var version *tcpVersionError
		if errors.As(err, &version) {
			_, _ = conn.Write(tcpReplyOf(t.version(), tcpRefusedVersion))
		}
		t.refuse(in, "bad hello", err)
		return
	}
	self := t.node.Load()
	if self == nil && hello.cluster == t.cfg.ClusterID {
		self = t.awaitAttach(accepted.Add(t.cfg.HandshakeTimeout / 2))
	}
	status := tcpAccepted
	switch {
	case hello.cluster != t.cfg.ClusterID:
		status = tcpRefusedCluster
	case self == nil || t.isDetached():
		status = tcpRefusedNotReady
	case hello.to != self.id:
		status = tcpRefusedNode
	case hello.from == 0 || hello.from == self.id:
		status = tcpRefusedSender
	}
	var identityErr error
	if status == tcpAccepted && t.cfg.checksDialers() {
		// The node ID in the hello is the From of everything read from
		// this connection: it must be the one the certificate names.
		if identityErr = t.checkDialer(tlsState, hello.from); identityErr != nil {
			status = tcpRefusedIdentity
		}
	}
	if _, err := conn.Write(tcpReplyOf(t.version(), status)); err != nil || status != tcpAccepted {
		if status != tcpAccepted {
			fields := []zap.Field{zap.Uint64("from", hello.from), zap.Uint64("to", hello.to), zap.String("cluster", hello.cluster)}
			if status == tcpRefusedIdentity && !in.byUs.Load() {
				t.stats.identityRefused.Add(1)
				subject, uris := certificateSummary(tlsState)
				fields = append(fields, zap.String("certificateSubject", subject), zap.Strings("certificateURIs", uris))
			}
			t.refuse(in, "handshake refused: "+status.String(), identityErr, fields...)
		} else {
			t.refuse(in, "writing the handshake reply failed", err)
		}
		return
	}
	if !t.register(in, &hello) {
		return
	}
	defer t.unregister(in, &hello)
	t.logger.Debug("inbound connection", zap.Uint64("peer", hello.from), zap.Stringer("lane", hello.lane), zap.String("remote", in.remote))
	t.readFrames(in, conn, hello.from, self)
}

// awaitAttach holds the handshake of a peer that reached this node while it
// starts (the transport listens before NewNode attaches it), until Attach or
// the deadline: refusing would make the peer wait out a dial backoff of up
// to MaxDialBackoff. The deadline leaves the dialer, whose own handshake
// deadline started a little earlier, time to read the reply.
func (t *TCPTransport) awaitAttach(deadline time.Time) *tcpAttachment {
	wait := time.NewTimer(time.Until(deadline))
	defer wait.Stop()
	select {
	case <-t.attached:
	case <-wait.C:
	case <-t.ctx.Done():
	}
	return t.node.Load()
}

func (t *TCPTransport) isDetached() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.detached || t.closed
}

func (t *TCPTransport) refuse(in *tcpInbound, why string, err error, fields ...zap.Field) {
	if in.byUs.Load() {
		return
	}
	t.stats.handshakesRefused.Add(1)
	t.logger.Warn("inbound connection refused: "+why, append(fields, zap.String("remote", in.remote), zap.Error(err))...)
}

// register records a connection that passed the handshake. A newer
// connection from the same node and lane replaces the older one, whose
// dialer has given up on it (it restarted, or the connection is half-open).
// The advertised address of a node that is not a member is learned.
func (t *TCPTransport) register(in *tcpInbound, h *tcpHello) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.detached {
		return false
	}
	key := tcpStreamKey{from: h.from, lane: h.lane}
	if old := t.streams[key]; old != nil {
		old.close()
	}
	in.addr = h.addr
	t.streams[key] = in
	t.learn(h.from, h.addr)
	// The peer is up: if our dials to it were failing (it was down or
	// restarting), retry now rather than when the backoff expires, which
	// can be MaxDialBackoff away.
	if p := (*t.peers.Load())[h.from]; p != nil {
		for _, s := range p.senders {
			s.retryNow()
		}
	}
	return true
}

func (t *TCPTransport) unregister(in *tcpInbound, h *tcpHello) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := tcpStreamKey{from: h.from, lane: h.lane}
	if t.streams[key] == in {
		delete(t.streams, key)
	}
}

// readFrames reads frames from an inbound connection whose handshake named
// node from, and delivers their messages to self.
func (t *TCPTransport) readFrames(in *tcpInbound, conn net.Conn, from uint64, self *tcpAttachment) {
	idle := t.cfg.IdleReadTimeout
	br := bufio.NewReaderSize(conn, tcpReadBuffer)
	// Only reads that may wait for the network set a deadline: a burst of
	// frames already buffered costs no clock reads.
	deadline := func(need int) error {
		if br.Buffered() >= need {
			return nil
		}
		return conn.SetReadDeadline(time.Now().Add(idle))
	}
	var header [tcpFrameHeader]byte
	var small []byte // reused for frames up to tcpReadBuffer bytes
	for {
		if err := deadline(len(header)); err != nil {
			return
		}
		if n, err := io.ReadFull(br, header[:]); err != nil {
			if n > 0 {
				t.badFrame(in, from, "connection ended or stalled inside a frame header", err)
			} else if !in.byUs.Load() {
				t.logger.Debug("inbound connection ended", zap.Uint64("peer", from), zap.String("remote", in.remote), zap.Error(err))
			}
			return
		}
		size := binary.BigEndian.Uint32(header[:])
		if size == 0 {
			continue // keepalive
		}
		if uint64(size) > uint64(t.cfg.MaxFrameSize) {
			t.badFrame(in, from, fmt.Sprintf("frame of %d bytes exceeds MaxFrameSize %d", size, t.cfg.MaxFrameSize), nil)
			return
		}
		body, fresh, err := readFrameBody(br, int(size), &small, deadline)
		if err != nil {
			t.badFrame(in, from, fmt.Sprintf("connection ended or stalled inside a frame of %d bytes", size), err)
			return
		}
		var group uint64 // host mode: the frame's group
		if t.host {
			g, n := binary.Uvarint(body)
			if n <= 0 || g == 0 || n != uvarintLen(g) {
				t.badFrame(in, from, "frame does not begin with a valid group ID (a non-zero, minimal uvarint)", nil)
				return
			}
			group, body = g, body[n:]
		}
		var m Message
		if err := m.UnmarshalBinary(body); err != nil {
			t.badFrame(in, from, "frame does not hold a valid message", err)
			return
		}
		if !fresh {
			ownData(&m) // body is reused for the next frame
		}
		if m.From != from || m.To != self.id {
			t.stats.droppedMisrouted.Add(1)
			t.logger.Warn("dropping a message with an unexpected sender or receiver", zap.Uint64("connectionFrom", from),
				zap.Uint64("from", m.From), zap.Uint64("to", m.To), zap.Stringer("type", m.Type))
			continue
		}
		if !t.gate.enter() {
			return // detached
		}
		self.deliver(group, m)
		t.gate.exit()
		t.stats.received.Add(1)
	}
}

func (t *TCPTransport) badFrame(in *tcpInbound, from uint64, why string, err error) {
	if in.byUs.Load() {
		return
	}
	t.stats.badFrames.Add(1)
	t.logger.Warn("closing inbound connection: "+why, zap.Uint64("peer", from), zap.String("remote", in.remote), zap.Error(err))
}

// readFrameBody reads a frame body of size bytes. A body of up to
// tcpReadBuffer bytes is read into *small, which is reused for the next
// frame (fresh is false: the caller must copy what it keeps). A larger one
// goes into a new slice of exactly size bytes: the entries decoded from it
// alias it and keep it alive while they stay in the log, so it must not be
// larger than the frame (growing it by doubling left up to twice as much
// memory behind each entry, and copied the frame once more on the way).
// Up to tcpEagerFrame bytes that slice is allocated at once; beyond, the
// body is read into chunks that double in size and joined once complete,
// so that a header announcing a large frame costs only about as much memory
// as the peer actually sends. deadline(n) arms the read deadline before a
// read that needs n bytes the buffer does not hold: a frame whose bytes
// stop coming for IdleReadTimeout ends the connection.
func readFrameBody(br *bufio.Reader, size int, small *[]byte, deadline func(need int) error) (body []byte, fresh bool, err error) {
	if size <= tcpReadBuffer {
		if cap(*small) < size {
			*small = make([]byte, size)
		}
		body = (*small)[:size]
		if err := deadline(size); err != nil {
			return nil, false, err
		}
		_, err := io.ReadFull(br, body)
		return body, false, err
	}
	if size <= tcpEagerFrame {
		body = make([]byte, size)
		if err := readFrameBytes(br, body, deadline); err != nil {
			return nil, true, err
		}
		return body, true, nil
	}
	var chunks [][]byte
	for got, next := 0, 4*tcpReadBuffer; got < size; next *= 2 {
		chunk := make([]byte, min(next, size-got))
		if err := readFrameBytes(br, chunk, deadline); err != nil {
			return nil, true, err
		}
		chunks = append(chunks, chunk)
		got += len(chunk)
	}
	body = make([]byte, 0, size)
	for _, c := range chunks {
		body = append(body, c...)
	}
	return body, true, nil
}

// readFrameBytes fills p from br, arming the read deadline before every
// read that may wait for the network.
func readFrameBytes(br *bufio.Reader, p []byte, deadline func(need int) error) error {
	for len(p) > 0 {
		if err := deadline(1); err != nil {
			return err
		}
		n, err := br.Read(p)
		p = p[n:]
		if err != nil && len(p) > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// ownData copies the message's byte slices (entries' data, snapshot chunk),
// which UnmarshalBinary left aliasing the frame buffer, into one new
// allocation.
func ownData(m *Message) {
	total := len(m.Data)
	for i := range m.Entries {
		total += len(m.Entries[i].Data)
	}
	if total == 0 {
		return
	}
	owned := make([]byte, 0, total)
	own := func(b []byte) []byte {
		if len(b) == 0 {
			return b
		}
		start := len(owned)
		owned = append(owned, b...)
		return owned[start:len(owned):len(owned)]
	}
	for i := range m.Entries {
		m.Entries[i].Data = own(m.Entries[i].Data)
	}
	m.Data = own(m.Data)
}
