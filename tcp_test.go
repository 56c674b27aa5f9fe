package raft

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Tests of TCPTransport: unit tests against raw sockets for the wire format
// and bad input, pairs of transports for queues, lanes, reconnection and
// TLS, and clusters of Nodes over loopback.

const tcpTestCluster = "test-cluster"

// newTestTCP starts a transport on a free loopback port with short timeouts,
// closed when the test ends. Fields set in cfg override the defaults.
func newTestTCP(t testing.TB, name string, cfg TCPConfig) *TCPTransport {
	t.Helper()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = tcpTestCluster
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name)
	}
	tr, err := NewTCPTransport(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	return tr
}

// tcpInbox records what a transport delivers.
type tcpInbox struct {
	mu   sync.Mutex
	msgs []Message
}

func (b *tcpInbox) deliver(m Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *tcpInbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func (b *tcpInbox) all() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.msgs...)
}

func (b *tcpInbox) waitCount(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.count() >= n }, 10*time.Second, time.Millisecond,
		"delivered %d of %d messages", b.count(), n)
}

func attachInbox(t *testing.T, tr *TCPTransport, id uint64) *tcpInbox {
	t.Helper()
	inbox := &tcpInbox{}
	require.NoError(t, tr.Attach(id, inbox.deliver))
	return inbox
}

// tcpPair starts node 1's and node 2's transports, attached and knowing
// each other.
func tcpPair(t *testing.T, cfgA, cfgB TCPConfig) (a, b *TCPTransport, inA, inB *tcpInbox) {
	t.Helper()
	a, b = newTestTCP(t, "a", cfgA), newTestTCP(t, "b", cfgB)
	inA, inB = attachInbox(t, a, 1), attachInbox(t, b, 2)
	members := []Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: b.Addr()}}
	a.SetPeers(members)
	b.SetPeers(members)
	return a, b, inA, inB
}

func heartbeat(from, to, context uint64) Message {
	return Message{Type: MsgHeartbeat, From: from, To: to, Term: 3, Commit: 7, Context: context}
}

// bigAppend is a MsgAppend carrying one entry of size bytes.
func bigAppend(from, to, index uint64, size int) Message {
	data := bytes.Repeat([]byte{byte(index)}, size)
	return Message{Type: MsgAppend, From: from, To: to, Term: 3, Index: index - 1, LogTerm: 3,
		Entries: []Entry{{Index: index, Term: 3, Data: data}}}
}

// frame is m as a frame on the wire.
func frame(t testing.TB, m Message) []byte {
	t.Helper()
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func helloBytes(from, to uint64, cluster string) []byte {
	h := tcpHello{from: from, to: to, cluster: cluster}
	return h.appendTo(nil)
}

// dialRaw opens a plain connection to addr, closed when the test ends.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readReply reads a handshake reply and returns its status byte.
func readReply(t *testing.T, conn net.Conn) tcpStatus {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var reply [tcpReplySize]byte
	_, err := io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	require.Equal(t, tcpMagic, string(reply[:4]))
	require.Equal(t, byte(tcpVersion), reply[4])
	return tcpStatus(reply[5])
}

// closedByPeer waits up to within for the other end to close conn, and
// reports whether it did (false: the read timed out).
func closedByPeer(t *testing.T, conn net.Conn, within time.Duration) bool {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(within)))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue // a reply; keep reading until the end
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// handshaken opens a raw connection to tr as node from and completes the
// handshake.
func handshaken(t *testing.T, tr *TCPTransport, from, to uint64) net.Conn {
	t.Helper()
	conn := dialRaw(t, tr.Addr())
	_, err := conn.Write(helloBytes(from, to, tcpTestCluster))
	require.NoError(t, err)
	require.Equal(t, tcpAccepted, readReply(t, conn))
	return conn
}

func TestTCPConfigValidate(t *testing.T) {
	ok := TCPConfig{ListenAddr: "127.0.0.1:0"}
	require.NoError(t, ok.Validate())
	long := string(bytes.Repeat([]byte("x"), 256))
	for name, edit := range map[string]func(*TCPConfig){
		"ListenAddr":              func(c *TCPConfig) { c.ListenAddr = "" },
		"ClusterID":               func(c *TCPConfig) { c.ClusterID = long },
		"AdvertiseAddr":           func(c *TCPConfig) { c.AdvertiseAddr = long },
		"DialTimeout":             func(c *TCPConfig) { c.DialTimeout = -1 },
		"HandshakeTimeout":        func(c *TCPConfig) { c.HandshakeTimeout = -time.Second },
		"IdleReadTimeout":         func(c *TCPConfig) { c.IdleReadTimeout = -1 },
		"WriteTimeout":            func(c *TCPConfig) { c.WriteTimeout = -1 },
		"MaxFrameSize below":      func(c *TCPConfig) { c.MaxFrameSize = 100 },
		"MaxFrameSize above":      func(c *TCPConfig) { c.MaxFrameSize = 2 << 30 },
		"QueueSize":               func(c *TCPConfig) { c.QueueSize = -1 },
		"MaxInboundConns":         func(c *TCPConfig) { c.MaxInboundConns = -5 },
		"BulkThreshold":           func(c *TCPConfig) { c.MaxFrameSize, c.BulkThreshold = 4096, 8192 },
		"DialBackoff":             func(c *TCPConfig) { c.DialBackoff, c.MaxDialBackoff = time.Second, time.Millisecond },
		"TLS without certificate": func(c *TCPConfig) { c.TLS = &tls.Config{} },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			edit(&c)
			err := c.Validate()
			require.ErrorIs(t, err, ErrInvalidConfig)
			field, _, _ := strings.Cut(name, " ")
			assert.Contains(t, err.Error(), "TCPConfig."+field)
			_, err = NewTCPTransport(c)
			assert.ErrorIs(t, err, ErrInvalidConfig, "NewTCPTransport validates")
		})
	}
}

func TestTCPBackoffGrowsWithJitterUpToLimit(t *testing.T) {
	base, limit := 50*time.Millisecond, 2*time.Second
	for failures := 1; failures <= 64; failures++ {
		want := limit
		if failures <= 6 {
			want = base << (failures - 1)
		}
		for range 20 {
			d := tcpBackoff(failures, base, limit)
			require.GreaterOrEqual(t, d, want/2, "failure %d", failures)
			require.LessOrEqual(t, d, want, "failure %d", failures)
		}
	}
}

func TestTCPBackoffDoesNotOverflow(t *testing.T) {
	for _, limit := range []time.Duration{time.Hour, 1 << 62, 1<<63 - 1} {
		for _, failures := range []int{1, 2, 40, 1000} {
			d := tcpBackoff(failures, time.Hour, limit)
			require.Positive(t, d)
			require.LessOrEqual(t, d, limit)
		}
	}
}

func TestTCPAdvertisedAddress(t *testing.T) {
	loopback := newTestTCP(t, "loopback", TCPConfig{})
	assert.Equal(t, loopback.Addr(), loopback.advertise)
	wildcard := newTestTCP(t, "wildcard", TCPConfig{ListenAddr: ":0"})
	assert.Empty(t, wildcard.advertise, "a wildcard address tells peers nothing")
	explicit := newTestTCP(t, "explicit", TCPConfig{ListenAddr: ":0", AdvertiseAddr: "node1.example:7000"})
	assert.Equal(t, "node1.example:7000", explicit.advertise)
}

func TestTCPSendAndReceiveBothWays(t *testing.T) {
	a, b, inA, inB := tcpPair(t, TCPConfig{}, TCPConfig{})
	sent := []Message{
		heartbeat(1, 2, 1),
		{Type: MsgAppend, From: 1, To: 2, Term: 3, Index: 4, LogTerm: 2, Commit: 4, Entries: []Entry{
			{Index: 5, Term: 3, Data: []byte("five")}, {Index: 6, Term: 3, Type: EntryNoop}, {Index: 7, Term: 3, Data: []byte("seven")}}},
		{Type: MsgVote, From: 1, To: 2, Term: 4, Index: 7, LogTerm: 3},
		{Type: MsgSnapshot, From: 1, To: 2, Term: 4, Index: 7, LogTerm: 3, Data: []byte("chunk"), Done: true, HintIndex: 99},
	}
	a.Send(sent)
	b.Send([]Message{{Type: MsgAppendResp, From: 2, To: 1, Term: 3, Index: 7}})
	inB.waitCount(t, len(sent))
	inA.waitCount(t, 1)

	// One lane keeps order; the snapshot chunk took the bulk lane.
	var control []Message
	var chunk Message
	for _, m := range inB.all() {
		if m.Type == MsgSnapshot {
			chunk = m
		} else {
			control = append(control, m)
		}
	}
	assert.Equal(t, sent[:3], control)
	assert.Equal(t, sent[3], chunk)
	assert.Equal(t, MsgAppendResp, inA.all()[0].Type)
	require.Eventually(t, func() bool { return a.Stats().Sent == uint64(len(sent)) }, 5*time.Second, time.Millisecond)
	sa, sb := a.Stats(), b.Stats()
	assert.Equal(t, uint64(len(sent)), sb.Received)
	assert.Equal(t, uint64(2), sa.Dials, "one connection per lane")
	assert.Equal(t, 2, sa.OutboundConns)
	assert.Equal(t, 2, sb.InboundConns)
	assert.Zero(t, sa.DialFailures+sb.BadFrames+sb.HandshakesRefused+sb.DroppedMisrouted)
}

func TestTCPHandshakeWireFormat(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{ClusterID: "abc"})
	inB := attachInbox(t, b, 2)
	conn := dialRaw(t, b.Addr())
	// The hello exactly as docs/tcp.md describes it, written out by hand.
	hello := []byte{'R', 'K', 'T', 'P', 1, 0,
		0, 0, 0, 0, 0, 0, 0, 7, // from 7
		0, 0, 0, 0, 0, 0, 0, 2, // to 2
		3, 'a', 'b', 'c', // cluster
		0, // no advertised address
	}
	_, err := conn.Write(hello)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var reply [6]byte
	_, err = io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	assert.Equal(t, []byte{'R', 'K', 'T', 'P', 1, 0}, reply[:])

	m := heartbeat(7, 2, 42)
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{1, 7, 7, 2, 3, 0, 0, 7, 0, 0, 42, 0, 0}, body, "the example in docs/tcp.md")
	wire := []byte{0, 0, 0, 0} // a keepalive
	wire = append(wire, byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	_, err = conn.Write(append(wire, body...))
	require.NoError(t, err)
	inB.waitCount(t, 1)
	assert.Equal(t, m, inB.all()[0])
}

func TestTCPHandshakeRefusals(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{})
	inB := attachInbox(t, b, 2)
	withVersion := func(v byte) []byte {
		h := helloBytes(1, 2, tcpTestCluster)
		h[4] = v
		return h
	}
	withMagic := helloBytes(1, 2, tcpTestCluster)
	copy(withMagic, "RAFT")
	for _, tc := range []struct {
		name   string
		hello  []byte
		status tcpStatus
		reply  bool // a status is sent back; otherwise the connection is just closed
	}{
		{"other cluster", helloBytes(1, 2, "another-cluster"), tcpRefusedCluster, true},
		{"empty cluster", helloBytes(1, 2, ""), tcpRefusedCluster, true},
		{"other node", helloBytes(1, 3, tcpTestCluster), tcpRefusedNode, true},
		{"sender 0", helloBytes(0, 2, tcpTestCluster), tcpRefusedSender, true},
		{"sender is the receiver", helloBytes(2, 2, tcpTestCluster), tcpRefusedSender, true},
		{"unknown version", withVersion(2), tcpRefusedVersion, true},
		{"wrong magic", withMagic, 0, false},
		{"an HTTP client", []byte("GET / HTTP/1.1\r\nHost: raft\r\n\r\n"), 0, false},
		{"garbage", bytes.Repeat([]byte{0xff}, 100), 0, false},
		{"unknown lane", append([]byte("RKTP\x01\x07"), make([]byte, 18)...), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().HandshakesRefused
			conn := dialRaw(t, b.Addr())
			_, err := conn.Write(tc.hello)
			require.NoError(t, err)
			if tc.reply {
				assert.Equal(t, tc.status, readReply(t, conn))
			}
			assert.True(t, closedByPeer(t, conn, 5*time.Second), "the connection is closed")
			require.Eventually(t, func() bool { return b.Stats().HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
		})
	}

	t.Run("not attached in time", func(t *testing.T) {
		// A starting transport holds the handshake for half its
		// HandshakeTimeout, then refuses it.
		c := newTestTCP(t, "c", TCPConfig{HandshakeTimeout: 200 * time.Millisecond})
		conn := dialRaw(t, c.Addr())
		_, err := conn.Write(helloBytes(1, 3, tcpTestCluster))
		require.NoError(t, err)
		assert.Equal(t, tcpRefusedNotReady, readReply(t, conn))
		assert.True(t, closedByPeer(t, conn, 5*time.Second))
	})
	assert.Zero(t, inB.count(), "nothing reached the node")
	assert.Zero(t, b.Stats().Received)
}

func TestTCPDialerReportsRefusal(t *testing.T) {
	// A node of another cluster is refused, and its dialer says why.
	a := newTestTCP(t, "a", TCPConfig{ClusterID: "other"})
	b := newTestTCP(t, "b", TCPConfig{})
	attachInbox(t, a, 1)
	inB := attachInbox(t, b, 2)
	a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return a.Stats().DialFailures >= 1 && a.Stats().DroppedUnreachable >= 1 }, 5*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, b.Stats().HandshakesRefused, uint64(1))
	assert.Zero(t, inB.count())

	// The dialer sees the status.
	h := tcpHello{from: 1, to: 2, cluster: "other"}
	conn := dialRaw(t, b.Addr())
	_, err := conn.Write(h.appendTo(nil))
	require.NoError(t, err)
	assert.Equal(t, tcpRefusedCluster, readReply(t, conn))
}

func TestTCPMisroutedMessagesDropped(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{})
	inB := attachInbox(t, b, 2)
	conn := handshaken(t, b, 1, 2)
	var wire []byte
	wire = append(wire, frame(t, heartbeat(3, 2, 1))...) // From is not the handshake's node
	wire = append(wire, frame(t, heartbeat(1, 9, 2))...) // To is not this node
	wire = append(wire, frame(t, heartbeat(1, 2, 3))...) // fine
	_, err := conn.Write(wire)
	require.NoError(t, err)
	inB.waitCount(t, 1)
	assert.Equal(t, uint64(3), inB.all()[0].Context)
	assert.Equal(t, uint64(2), b.Stats().DroppedMisrouted)
	assert.False(t, closedByPeer(t, conn, 100*time.Millisecond), "dropping a message keeps the connection")
}

func TestTCPBadFramesCloseTheConnection(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{MaxFrameSize: 1 << 20})
	inB := attachInbox(t, b, 2)
	valid := frame(t, heartbeat(1, 2, 1))
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"oversized", binary.BigEndian.AppendUint32(nil, 1<<20+1)},
		{"undecodable body", append(binary.BigEndian.AppendUint32(nil, 5), 1, 99, 0, 0, 0)},
		{"trailing garbage inside the frame", append(binary.BigEndian.AppendUint32(nil, uint32(len(valid)-4+1)), append(valid[4:], 0)...)},
		{"truncated body", valid[:len(valid)-2]},
		{"truncated header", valid[:2]},
		{"truncated large body", append(binary.BigEndian.AppendUint32(nil, 512<<10), make([]byte, 1000)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().BadFrames
			conn := handshaken(t, b, 1, 2)
			_, err := conn.Write(tc.wire)
			require.NoError(t, err)
			if strings.HasPrefix(tc.name, "truncated") {
				require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // the peer's end of stream
			}
			assert.True(t, closedByPeer(t, conn, 5*time.Second), "the connection is closed")
			require.Eventually(t, func() bool { return b.Stats().BadFrames == before+1 }, 5*time.Second, time.Millisecond)
		})
	}
	assert.Zero(t, inB.count())

	// The node keeps working.
	conn := handshaken(t, b, 1, 2)
	_, err := conn.Write(valid)
	require.NoError(t, err)
	inB.waitCount(t, 1)
}

func TestTCPOversizedFrameClosedBeforeAllocating(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{}) // MaxFrameSize 16 MiB
	attachInbox(t, b, 2)
	for _, tc := range []struct {
		name   string
		header uint32
		body   int
	}{
		{"1 GiB announced, beyond MaxFrameSize", 1 << 30, 0},
		{"4 GiB-1 announced", 1<<32 - 1, 0},
		{"16 MiB announced (allowed), 1 KiB sent", 16 << 20, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := handshaken(t, b, 1, 2)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			wire := append(binary.BigEndian.AppendUint32(nil, tc.header), make([]byte, tc.body)...)
			_, err := conn.Write(wire)
			require.NoError(t, err)
			if tc.body > 0 {
				require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			}
			require.True(t, closedByPeer(t, conn, 5*time.Second))
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			assert.Less(t, allocated, uint64(4<<20), "allocated %d bytes for a frame that never came", allocated)
		})
	}
	assert.Equal(t, uint64(3), b.Stats().BadFrames)
}

func TestTCPSlowloris(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{HandshakeTimeout: 300 * time.Millisecond, IdleReadTimeout: 300 * time.Millisecond})
	inB := attachInbox(t, b, 2)

	t.Run("silent connection closed after HandshakeTimeout", func(t *testing.T) {
		before := b.Stats().HandshakesRefused
		start := time.Now() // before the dial: the server's timer starts after it
		conn := dialRaw(t, b.Addr())
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "not before the timeout")
		require.Eventually(t, func() bool { return b.Stats().HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
	})
	t.Run("half a hello", func(t *testing.T) {
		conn := dialRaw(t, b.Addr())
		_, err := conn.Write(helloBytes(1, 2, tcpTestCluster)[:10])
		require.NoError(t, err)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
	})
	t.Run("half a frame then a stall", func(t *testing.T) {
		before := b.Stats().BadFrames
		start := time.Now() // before the handshake: the server's read deadline is set after it
		conn := handshaken(t, b, 1, 2)
		f := frame(t, heartbeat(1, 2, 1))
		_, err := conn.Write(f[:len(f)/2])
		require.NoError(t, err)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
		require.Eventually(t, func() bool { return b.Stats().BadFrames == before+1 }, 5*time.Second, time.Millisecond)
	})
	t.Run("idle without keepalives", func(t *testing.T) {
		before := b.Stats()
		conn := handshaken(t, b, 1, 2)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.Equal(t, before.BadFrames, b.Stats().BadFrames, "an idle connection is not a bad frame")
	})
	assert.Zero(t, inB.count())
}

func TestTCPKeepaliveHoldsIdleConnection(t *testing.T) {
	cfg := TCPConfig{IdleReadTimeout: 600 * time.Millisecond}
	a, b, _, inB := tcpPair(t, cfg, cfg)
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	// Idle for several read timeouts: keepalives hold the connection.
	require.Never(t, func() bool { return b.Stats().InboundConns != 1 || a.Stats().Dials != 1 }, 2*time.Second, 10*time.Millisecond)
	a.Send([]Message{heartbeat(1, 2, 2)})
	inB.waitCount(t, 2)
	assert.Equal(t, uint64(1), a.Stats().Dials)
	assert.Zero(t, a.Stats().DroppedUnreachable)
}

func TestTCPConnectionFlood(t *testing.T) {
	const maxConns = 8
	a, b, _, inB := tcpPair(t, TCPConfig{}, TCPConfig{MaxInboundConns: maxConns, HandshakeTimeout: time.Minute})
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	require.Equal(t, 1, b.Stats().InboundConns)

	// Fill the remaining slots with connections that never say hello, then
	// ten more: those are closed at once.
	// The transport resets them; the reset may even reach a client before
	// its connect returns, which then fails.
	const excess = 10
	var flood []net.Conn
	closed := 0
	for range maxConns - 1 + excess {
		conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
		if err != nil {
			closed++
			continue
		}
		t.Cleanup(func() { conn.Close() })
		flood = append(flood, conn)
	}
	require.Eventually(t, func() bool { return b.Stats().ConnsRefused == excess }, 10*time.Second, time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, conn := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByPeer(t, conn, time.Second) {
				mu.Lock()
				closed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, excess, closed, "exactly the excess connections were closed")
	assert.Equal(t, maxConns, b.Stats().InboundConns)

	// The established peer still gets through.
	a.Send([]Message{heartbeat(1, 2, 2), heartbeat(1, 2, 3)})
	inB.waitCount(t, 3)

	// Once the flood is gone, new peers get in again.
	for _, conn := range flood {
		conn.Close()
	}
	require.Eventually(t, func() bool { return b.Stats().InboundConns == 1 }, 10*time.Second, time.Millisecond)
	c := newTestTCP(t, "c", TCPConfig{})
	attachInbox(t, c, 3)
	c.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
	c.Send([]Message{heartbeat(3, 2, 4)})
	inB.waitCount(t, 4)
}

// blackhole is a listener that never accepts: dials to it connect (the
// kernel completes them) but the handshake never gets a reply.
func blackhole(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func TestTCPQueueOverflowDropsAndCounts(t *testing.T) {
	const queue = 16
	a := newTestTCP(t, "a", TCPConfig{QueueSize: queue, HandshakeTimeout: time.Minute})
	attachInbox(t, a, 1)
	hole := blackhole(t)
	a.SetPeers([]Member{{ID: 2, Addr: hole.Addr().String()}})

	a.Send([]Message{heartbeat(1, 2, 0)})
	// The sender is stuck in the handshake; that message waits in the queue.
	require.Eventually(t, func() bool { return a.Stats().Dials == 1 }, 5*time.Second, time.Millisecond)
	burst := make([]Message, 100)
	for i := range burst {
		burst[i] = heartbeat(1, 2, uint64(i+1))
	}
	start := time.Now()
	a.Send(burst)
	assert.Less(t, time.Since(start), time.Second, "Send does not block on an unreachable peer")
	assert.Equal(t, uint64(100-(queue-1)), a.Stats().DroppedQueueFull)

	// When the dial fails, what is queued is dropped too.
	hole.Close()
	require.Eventually(t, func() bool { return a.Stats().DroppedUnreachable == queue }, 10*time.Second, time.Millisecond)
	s := a.Stats()
	assert.Equal(t, uint64(1), s.DialFailures)
	assert.Zero(t, s.Sent)
	assert.Equal(t, uint64(101), s.DroppedQueueFull+s.DroppedUnreachable, "every message is accounted for")
}

func TestTCPUnreachablePeerAndUnknownPeer(t *testing.T) {
	a := newTestTCP(t, "a", TCPConfig{DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 40 * time.Millisecond})
	attachInbox(t, a, 1)
	gone := newTestTCP(t, "gone", TCPConfig{})
	addr := gone.Addr()
	require.NoError(t, gone.Close()) // nothing listens there now
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: addr}, {ID: 3}})

	start := time.Now()
	for i := range 1000 {
		a.Send([]Message{heartbeat(1, 2, uint64(i)), heartbeat(1, 3, uint64(i)), heartbeat(1, 4, uint64(i))})
	}
	assert.Less(t, time.Since(start), 2*time.Second, "Send never waits for the network")
	require.Eventually(t, func() bool {
		s := a.Stats()
		return s.DroppedUnreachable+s.DroppedQueueFull == 1000
	}, 10*time.Second, time.Millisecond)
	s := a.Stats()
	assert.GreaterOrEqual(t, s.DialFailures, uint64(1))
	assert.Equal(t, uint64(2000), s.DroppedUnknownPeer, "node 3 has no address, node 4 is no member")
}

func TestTCPSlowPeerDoesNotDelayOthers(t *testing.T) {
	a := newTestTCP(t, "a", TCPConfig{HandshakeTimeout: time.Minute})
	attachInbox(t, a, 1)
	c := newTestTCP(t, "c", TCPConfig{})
	inC := attachInbox(t, c, 3)
	hole := blackhole(t)
	a.SetPeers([]Member{{ID: 2, Addr: hole.Addr().String()}, {ID: 3, Addr: c.Addr()}})
	for i := range 100 {
		a.Send([]Message{heartbeat(1, 2, uint64(i)), heartbeat(1, 3, uint64(i))})
	}
	inC.waitCount(t, 100)
	assert.Zero(t, a.Stats().DialFailures, "node 2's dial is still hanging")
}

func TestTCPReconnectsAfterPeerRestart(t *testing.T) {
	cfg := TCPConfig{DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 100 * time.Millisecond}
	a, b, _, inB := tcpPair(t, cfg, cfg)
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	addr := b.Addr()
	require.NoError(t, b.Close())

	// While node 2 is down, messages are dropped. (The first ones may still
	// be written to the old connection before node 1 notices it closed.)
	require.Eventually(t, func() bool {
		a.Send([]Message{heartbeat(1, 2, 2)})
		return a.Stats().DroppedUnreachable >= 1
	}, 10*time.Second, 5*time.Millisecond)

	cfg.ListenAddr = addr
	b2 := newTestTCP(t, "b2", cfg)
	inB2 := attachInbox(t, b2, 2)
	var next atomic.Uint64
	require.Eventually(t, func() bool {
		a.Send([]Message{heartbeat(1, 2, 100+next.Add(1))})
		return inB2.count() > 0
	}, 10*time.Second, 5*time.Millisecond)
	assert.GreaterOrEqual(t, a.Stats().Dials, uint64(2))
}

func TestTCPHandshakeHeldUntilAttach(t *testing.T) {
	// A peer that dials a node while it starts (listening, not yet
	// attached) is held, not refused: it would otherwise wait out its dial
	// backoff, up to MaxDialBackoff, before trying again.
	a := newTestTCP(t, "a", TCPConfig{DialBackoff: 5 * time.Second, MaxDialBackoff: 10 * time.Second})
	attachInbox(t, a, 1)
	b := newTestTCP(t, "b", TCPConfig{})
	a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return b.Stats().ConnsAccepted >= 1 }, 5*time.Second, time.Millisecond)
	inB := attachInbox(t, b, 2)
	inB.waitCount(t, 1)
	assert.Zero(t, a.Stats().DialFailures)
	assert.Zero(t, b.Stats().HandshakesRefused)
}

func TestTCPPeerThatConnectsEndsTheDialBackoff(t *testing.T) {
	// Node 2 is down and node 1's dials to it fail, so node 1 waits a
	// backoff of 2.5 to 5 s before the next one. When node 2 comes up and
	// is given its peers, it connects to node 1 at once, and node 1 dials
	// it again at once: what node 1 queued arrives in well under the
	// backoff.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := hole.Addr().String()
	require.NoError(t, hole.Close()) // nothing listens there: dials are refused

	a := newTestTCP(t, "a", TCPConfig{DialBackoff: 5 * time.Second, MaxDialBackoff: 10 * time.Second})
	attachInbox(t, a, 1)
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: addr}})
	a.Send([]Message{heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return a.Stats().DialFailures >= 1 }, 5*time.Second, time.Millisecond)
	a.Send([]Message{heartbeat(1, 2, 2)}) // waits for the next dial

	b := newTestTCP(t, "b", TCPConfig{ListenAddr: addr})
	inB := attachInbox(t, b, 2)
	start := time.Now()
	b.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: addr}})
	inB.waitCount(t, 1)
	assert.Less(t, time.Since(start), time.Second, "node 1 waited out its backoff")
	assert.Equal(t, uint64(2), inB.all()[0].Context)
	assert.Equal(t, uint64(1), a.Stats().DialFailures)
}

func TestTCPSetPeersAddressChangeAndRemoval(t *testing.T) {
	a, b, _, inB := tcpPair(t, TCPConfig{}, TCPConfig{})
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)

	// Node 2 moved to another address.
	moved := newTestTCP(t, "moved", TCPConfig{})
	inMoved := attachInbox(t, moved, 2)
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: moved.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 2)})
	inMoved.waitCount(t, 1)
	require.Eventually(t, func() bool { return b.Stats().InboundConns == 0 }, 5*time.Second, time.Millisecond, "the old connection is closed")
	assert.Equal(t, 1, inB.count())

	// The same list again changes nothing.
	dials := a.Stats().Dials
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: moved.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 3)})
	inMoved.waitCount(t, 2)
	assert.Equal(t, dials, a.Stats().Dials)

	// Node 2 removed: a closes its connections to the member's address.
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}})
	require.Eventually(t, func() bool { return a.Stats().OutboundConns == 0 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return moved.Stats().InboundConns == 0 }, 5*time.Second, time.Millisecond)
	// A message to node 2 now reaches the node 2 that is connected to a,
	// at the address it advertised (b dialed a when given its peers), as
	// an answer to a removed node would; moved never connected to a.
	a.Send([]Message{heartbeat(1, 2, 4)})
	inB.waitCount(t, 2)
	assert.Equal(t, 2, inMoved.count())
	assert.Zero(t, a.Stats().DroppedUnknownPeer)
}

func TestTCPRemovedPeerWithoutConnectionIsUnknown(t *testing.T) {
	a := newTestTCP(t, "a", TCPConfig{})
	attachInbox(t, a, 1)
	b := newTestTCP(t, "b", TCPConfig{})
	inB := attachInbox(t, b, 2)
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: b.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	// b never dialed a (it was given no peers): once removed, node 2 has no
	// known address.
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 2)})
	assert.Equal(t, uint64(1), a.Stats().DroppedUnknownPeer)
}

func TestTCPLargeMessagesDoNotDelaySmallOnes(t *testing.T) {
	// Node 2 stops reading the bulk lane: it blocks in deliver on the first
	// large message until released, so the bulk connection backs up from its
	// socket buffers to node 1's bulk writer. A heartbeat sent after a burst
	// of large messages must still arrive. With one connection per peer it
	// would wait behind the burst and this test would time out.
	const big = 1 << 20
	cfg := TCPConfig{WriteTimeout: time.Minute}
	a := newTestTCP(t, "a", cfg)
	b := newTestTCP(t, "b", cfg)
	attachInbox(t, a, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the transports close: Close waits for deliver
	var bigs, smalls atomic.Int64
	require.NoError(t, b.Attach(2, func(m Message) {
		if m.Type == MsgAppend {
			bigs.Add(1)
			<-release
			return
		}
		smalls.Add(1)
	}))
	a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})

	a.Send([]Message{bigAppend(1, 2, 1, big)})
	require.Eventually(t, func() bool { return bigs.Load() == 1 }, 10*time.Second, time.Millisecond)
	const burst = 32
	for i := range burst {
		a.Send([]Message{bigAppend(1, 2, uint64(i+2), big)})
	}
	start := time.Now()
	a.Send([]Message{heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return smalls.Load() == 1 }, 10*time.Second, time.Millisecond)
	t.Logf("heartbeat delivered %v after a burst of %d MiB", time.Since(start), burst)
	assert.Equal(t, int64(1), bigs.Load(), "the bulk lane is still blocked")

	releaseAll()
	require.Eventually(t, func() bool { return bigs.Load() == burst+1 }, 30*time.Second, time.Millisecond)
	assert.Zero(t, a.Stats().DroppedUnreachable+a.Stats().DroppedQueueFull)
}

func TestTCPMessageLargerThanMaxFrameSizeDropped(t *testing.T) {
	a, _, _, inB := tcpPair(t, TCPConfig{MaxFrameSize: 64 << 10}, TCPConfig{})
	a.Send([]Message{bigAppend(1, 2, 1, 64<<10), heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	assert.Equal(t, MsgHeartbeat, inB.all()[0].Type)
	assert.Equal(t, uint64(1), a.Stats().DroppedTooLarge)
}

func TestTCPDetachStopsDelivery(t *testing.T) {
	a, b, _, inB := tcpPair(t, TCPConfig{}, TCPConfig{})
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	b.Detach()
	b.Detach() // idempotent
	require.Eventually(t, func() bool { return b.Stats().InboundConns == 0 }, 5*time.Second, time.Millisecond)
	a.Send([]Message{heartbeat(1, 2, 2)})
	conn := dialRaw(t, b.Addr())
	_, err := conn.Write(helloBytes(1, 2, tcpTestCluster))
	require.NoError(t, err)
	assert.Equal(t, tcpRefusedNotReady, readReply(t, conn), "a detached transport refuses handshakes")
	assert.Equal(t, 1, inB.count())
	assert.Error(t, b.Attach(2, inB.deliver), "a transport serves one node once")
}

func TestTCPCloseIsIdempotentAndLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	newTransport := func(name string) *TCPTransport {
		tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: tcpTestCluster,
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name)})
		require.NoError(t, err)
		return tr
	}
	a, b := newTransport("a"), newTransport("b")
	inB := &tcpInbox{}
	require.NoError(t, a.Attach(1, func(Message) {}))
	require.NoError(t, b.Attach(2, inB.deliver))
	members := []Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: b.Addr()}}
	a.SetPeers(members)
	b.SetPeers(members)
	a.Send([]Message{heartbeat(1, 2, 1), bigAppend(1, 2, 1, 100<<10)})
	inB.waitCount(t, 2)
	// A connection in its handshake and one to a peer that never answers.
	hole := blackhole(t)
	a.SetPeers(append(members, Member{ID: 3, Addr: hole.Addr().String()}))
	a.Send([]Message{heartbeat(1, 3, 1)})
	dialRaw(t, b.Addr())
	require.Eventually(t, func() bool { return a.Stats().Dials == 3 }, 5*time.Second, time.Millisecond)

	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	require.NoError(t, a.Close(), "idempotent")
	a.Send([]Message{heartbeat(1, 2, 2)}) // dropped, no panic
	a.SetPeers(members)
	a.Detach()
	assert.ErrorIs(t, b.Attach(9, func(Message) {}), errTCPClosed)
	_, err := net.DialTimeout("tcp", b.Addr(), time.Second)
	assert.Error(t, err, "the listener is closed")
}

// ---- TLS ----

// testPKI is a throwaway certificate authority.
type testPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testPKI{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate for 127.0.0.1 usable by servers and clients.
func (p *testPKI) leaf(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLS is the configuration docs/tcp.md recommends: one config per
// node, for both its listener and its dialer.
func (p *testPKI) mutualTLS(t *testing.T, name string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.leaf(t, name)},
		RootCAs:      p.pool,
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestTCPTLS(t *testing.T) {
	pki := newTestPKI(t, "test CA")
	t.Run("server authentication only", func(t *testing.T) {
		server := &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "b")}, RootCAs: pki.pool, MinVersion: tls.VersionTLS13}
		a, _, inA, inB := tcpPair(t, TCPConfig{TLS: server.Clone()}, TCPConfig{TLS: server.Clone()})
		a.Send([]Message{heartbeat(1, 2, 1), bigAppend(1, 2, 1, 200<<10)})
		inB.waitCount(t, 2)
		assert.Zero(t, inA.count())
	})
	t.Run("mutual TLS", func(t *testing.T) {
		a, b, inA, inB := tcpPair(t, TCPConfig{TLS: pki.mutualTLS(t, "a")}, TCPConfig{TLS: pki.mutualTLS(t, "b")})
		a.Send([]Message{heartbeat(1, 2, 1), bigAppend(1, 2, 1, 200<<10)})
		b.Send([]Message{heartbeat(2, 1, 1)})
		inB.waitCount(t, 2)
		inA.waitCount(t, 1)
		for _, m := range inB.all() {
			if m.Type == MsgAppend {
				assert.Equal(t, bytes.Repeat([]byte{1}, 200<<10), m.Entries[0].Data)
			}
		}
	})
}

func TestTCPMutualTLSRefusesStrangers(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	b := newTestTCP(t, "b", TCPConfig{TLS: pki.mutualTLS(t, "b")})
	inB := attachInbox(t, b, 2)

	t.Run("client without a certificate", func(t *testing.T) {
		before := b.Stats().HandshakesRefused
		conn, err := tls.Dial("tcp", b.Addr(), &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS13})
		if err == nil { // TLS 1.3: the client may finish before the server checks it
			defer conn.Close()
			_, _ = conn.Write(helloBytes(1, 2, tcpTestCluster))
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = io.ReadFull(conn, make([]byte, tcpReplySize))
		}
		assert.Error(t, err, "no handshake reply without a client certificate")
		require.Eventually(t, func() bool { return b.Stats().HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		rogue := newTestPKI(t, "rogue CA")
		cfg := rogue.mutualTLS(t, "c")
		cfg.RootCAs = pki.pool // it trusts the server, the server does not trust it
		c := newTestTCP(t, "c", TCPConfig{TLS: cfg})
		attachInbox(t, c, 3)
		c.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
		c.Send([]Message{heartbeat(3, 2, 1)})
		require.Eventually(t, func() bool { return c.Stats().DialFailures >= 1 }, 10*time.Second, time.Millisecond)
	})
	t.Run("plain TCP client", func(t *testing.T) {
		conn := dialRaw(t, b.Addr())
		_, err := conn.Write(helloBytes(1, 2, tcpTestCluster))
		require.NoError(t, err)
		assert.True(t, closedByPeer(t, conn, 5*time.Second))
	})
	assert.Zero(t, inB.count())
}

// ---- Clusters of Nodes over TCP ----

// tcpCluster runs Nodes over TCPTransports on loopback. It reuses
// testCluster's nodes, storages, state machines and helpers (waitLeader,
// propose, waitApplied, checkSameHistory); only starting and stopping
// differ.
type tcpCluster struct {
	*testCluster
	transports map[uint64]*TCPTransport
	addrs      map[uint64]string
	// newSM, when set, makes the state machines instead of recordingSMs
	// (checkSameHistory then has nothing to check).
	newSM func(id uint64) StateMachine
}

func newTCPCluster(t *testing.T, n int) *tcpCluster {
	return newTCPClusterWith(t, n, nil, nil)
}

// newTCPClusterWith starts n nodes whose configs tune adjusts and whose
// state machines newSM makes (both may be nil).
func newTCPClusterWith(t *testing.T, n int, tune func(*Config), newSM func(id uint64) StateMachine) *tcpCluster {
	t.Helper()
	c := &tcpCluster{
		testCluster: &testCluster{t: t, nodes: map[uint64]*Node{}, storages: map[uint64]*MemoryStorage{}, sms: map[uint64]*recordingSM{}},
		transports:  map[uint64]*TCPTransport{},
		addrs:       map[uint64]string{},
		newSM:       newSM,
	}
	t.Cleanup(c.closeAll)
	var members []Member
	for i := 1; i <= n; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.listen(id, "127.0.0.1:0")
		members = append(members, Member{ID: id, Addr: c.addrs[id]})
	}
	c.cfg = func(id uint64) Config {
		cfg := fastConfig(t, id, members)
		if tune != nil {
			tune(&cfg)
		}
		return cfg
	}
	for _, id := range c.ids {
		c.storages[id] = NewMemoryStorage()
		c.startNode(id)
	}
	return c
}

// listen starts node id's transport on addr. Right after a restart the
// port may still be held for a moment, so binding is retried.
func (c *tcpCluster) listen(id uint64, addr string) {
	c.t.Helper()
	cfg := TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 200 * time.Millisecond,
		Logger: zaptest.NewLogger(c.t, zaptest.Level(zap.InfoLevel)).Named(fmt.Sprint("tcp", id))}
	var tr *TCPTransport
	require.Eventually(c.t, func() bool {
		var err error
		tr, err = NewTCPTransport(cfg)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	c.transports[id] = tr
	c.addrs[id] = tr.Addr()
}

func (c *tcpCluster) startNode(id uint64) {
	c.t.Helper()
	var sm StateMachine
	if c.newSM != nil {
		sm = c.newSM(id)
	} else {
		c.sms[id] = &recordingSM{}
		sm = c.sms[id]
	}
	n, err := NewNode(c.cfg(id), sm, c.storages[id], c.transports[id])
	require.NoError(c.t, err)
	c.nodes[id] = n
}

// stopNode closes node id and its transport, as a process that exits.
func (c *tcpCluster) stopNode(id uint64) {
	c.t.Helper()
	require.NoError(c.t, c.nodes[id].Close())
	delete(c.nodes, id)
	require.NoError(c.t, c.transports[id].Close())
	delete(c.transports, id)
}

// restartNode starts node id again on its storage, with a new transport on
// its old address.
func (c *tcpCluster) restartNode(id uint64) {
	c.t.Helper()
	c.listen(id, c.addrs[id])
	c.startNode(id)
}

func (c *tcpCluster) closeAll() {
	for id, n := range c.nodes {
		assert.NoError(c.t, n.Close())
		delete(c.nodes, id)
	}
	for id, tr := range c.transports {
		assert.NoError(c.t, tr.Close())
		delete(c.transports, id)
	}
}

func (c *tcpCluster) proposeMany(prefix string, n int) uint64 {
	c.t.Helper()
	var last uint64
	for i := range n {
		last = c.propose(fmt.Sprint(prefix, i))
	}
	return last
}

func TestTCPClusterElectsReplicatesAndSurvivesRestarts(t *testing.T) {
	c := newTCPCluster(t, 3)
	leader := c.waitLeader()
	last := c.proposeMany("first", 20)
	for _, id := range c.ids {
		c.waitApplied(id, last)
	}

	// The leader's process goes away (node and transport); the others elect
	// a new leader and go on; it comes back on the same address.
	c.stopNode(leader)
	newLeader := c.waitLeader()
	require.NotEqual(t, leader, newLeader)
	last = c.proposeMany("second", 20)
	c.restartNode(leader)
	for _, id := range c.ids {
		c.waitApplied(id, last)
	}

	// A follower misses entries while down and catches up after a restart.
	var follower uint64
	for _, id := range c.ids {
		if id != c.waitLeader() {
			follower = id
			break
		}
	}
	c.stopNode(follower)
	last = c.proposeMany("third", 50)
	c.restartNode(follower)
	for _, id := range c.ids {
		c.waitApplied(id, last)
	}
	c.checkSameHistory()
	for _, id := range c.ids {
		assert.Len(t, c.sms[id].entries(), 90, "node %d applied every command once", id)
	}
}

func TestTCPClusterInstallsSnapshotOnRestartedFollower(t *testing.T) {
	// The follower comes back after the leader compacted the entries it
	// misses: it gets them as a snapshot, several MsgSnapshot chunks on the
	// bulk lane, while heartbeats go on beside them.
	lists := map[uint64]*listSM{}
	var mu sync.Mutex
	c := newTCPClusterWith(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 50
		cfg.TrailingEntries = 10
		cfg.SnapshotChunkSize = 64 << 10
	}, func(id uint64) StateMachine {
		mu.Lock()
		defer mu.Unlock()
		lists[id] = &listSM{}
		return lists[id]
	})
	list := func(id uint64) *listSM {
		mu.Lock()
		defer mu.Unlock()
		return lists[id]
	}
	leader := c.waitLeader()
	lagging := c.ids[0]
	if lagging == leader {
		lagging = c.ids[1]
	}
	c.stopNode(lagging)
	payload := bytes.Repeat([]byte("x"), 1<<10)
	var last uint64
	for i := range 300 {
		last = c.propose(fmt.Sprint(i, string(payload)))
	}
	leader = c.waitLeader()
	require.Eventually(t, func() bool { return c.nodes[leader].Status().SnapshotIndex >= 200 }, 10*time.Second, time.Millisecond)
	first, err := c.storages[leader].FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(100), "the leader compacted past what the lagging node has")

	dialsBefore := c.transports[leader].Stats().Dials
	c.restartNode(lagging)
	c.waitApplied(lagging, last)
	want := list(leader).list()
	require.Eventually(t, func() bool { return slices.Equal(list(lagging).list(), want) }, 10*time.Second, time.Millisecond)
	assert.Positive(t, list(lagging).restored, "the lagging node caught up through a snapshot")
	assert.Len(t, want, 300)
	assert.Greater(t, c.transports[leader].Stats().Dials, dialsBefore, "the leader dialed the restarted node")
	assert.Zero(t, c.transports[lagging].Stats().BadFrames)
}

func TestTCPClusterAddVoterLearnsTheLeadersAddress(t *testing.T) {
	// A new node starts with no members, so it knows no addresses: it
	// answers the leader at the address the leader's handshake advertised.
	c := newTCPCluster(t, 3)
	leader := c.waitLeader()
	c.proposeMany("before", 5)
	c.listen(4, "127.0.0.1:0")
	c.storages[4] = NewMemoryStorage()
	c.sms[4] = &recordingSM{}
	n, err := NewNode(fastConfig(t, 4, nil), c.sms[4], c.storages[4], c.transports[4])
	require.NoError(t, err)
	c.nodes[4] = n
	c.ids = append(c.ids, 4)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, c.addrs[4]))
	last := c.propose("after")
	c.waitApplied(4, last)
	c.checkSameHistory()
	assert.Len(t, c.nodes[4].Status().Members, 4)
}

// ---- Fuzzing ----

// FuzzTCPFrameReader feeds arbitrary bytes to the inbound connection
// handler, after a valid hello or in its place: it must never panic, hang,
// or deliver a message that is not from the node the hello named and to
// this node.
// MaxFrameSize is 1 MiB, so no input makes it allocate more than that for
// a frame.
func FuzzTCPFrameReader(f *testing.F) {
	tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "fuzz", MaxFrameSize: 1 << 20,
		HandshakeTimeout: time.Second, IdleReadTimeout: time.Second})
	require.NoError(f, err)
	f.Cleanup(func() { tr.Close() })
	var wantFrom atomic.Uint64 // the sender the current input's hello names
	require.NoError(f, tr.Attach(2, func(m Message) {
		if m.From != wantFrom.Load() || m.To != 2 {
			panic(fmt.Sprintf("delivered a message from %d to %d; the hello named %d", m.From, m.To, wantFrom.Load()))
		}
	}))
	hello := tcpHello{from: 1, to: 2, cluster: "fuzz"}
	helloWire := hello.appendTo(nil)
	for _, seed := range fuzzTCPSeeds(f) {
		f.Add(seed.withHello, seed.data)
	}
	f.Fuzz(func(t *testing.T, withHello bool, data []byte) {
		wantFrom.Store(1)
		if !withHello {
			h, _ := readTCPHello(bytes.NewReader(data))
			wantFrom.Store(h.from)
		}
		server, client := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the handshake reply
			defer wg.Done()
			_, _ = io.Copy(io.Discard, client)
		}()
		go func() {
			defer wg.Done()
			defer client.Close()
			if withHello {
				if _, err := client.Write(helloWire); err != nil {
					return
				}
			}
			_, _ = client.Write(data)
		}()
		tr.serveConn(&tcpInbound{raw: server, remote: "fuzz"})
		wg.Wait()
	})
}

type fuzzTCPSeed struct {
	name      string
	withHello bool
	data      []byte
}

func fuzzTCPSeeds(t testing.TB) []fuzzTCPSeed {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hb := frame(t, heartbeat(1, 2, 1))
	app := frame(t, Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 1,
		Entries: []Entry{{Index: 4, Term: 2, Data: []byte("x")}, {Index: 5, Term: 2, Type: EntryNoop}}})
	chunk := frame(t, Message{Type: MsgSnapshot, From: 1, To: 2, Term: 2, Index: 9, LogTerm: 2, Data: []byte("snapshot"), Done: true})
	h := tcpHello{from: 1, to: 2, cluster: "fuzz", addr: "127.0.0.1:7000"}
	return []fuzzTCPSeed{
		{"heartbeat", true, hb},
		{"append_and_keepalive", true, cat(app, []byte{0, 0, 0, 0}, hb)},
		{"snapshot_chunk", true, chunk},
		{"misrouted", true, frame(t, heartbeat(3, 2, 1))},
		{"oversized_header", true, binary.BigEndian.AppendUint32(nil, 1<<30)},
		{"truncated", true, app[:len(app)-3]},
		{"hello_and_frames", false, cat(h.appendTo(nil), hb, app)},
		{"http", false, []byte("GET / HTTP/1.1\r\n\r\n")},
	}
}

// TestTCPFuzzSeedCorpus checks that the committed seed corpus is the one
// fuzzTCPSeeds describes; RAFT_WRITE_CORPUS=1 rewrites it.
func TestTCPFuzzSeedCorpus(t *testing.T) {
	dir := "testdata/fuzz/FuzzTCPFrameReader"
	for _, seed := range fuzzTCPSeeds(t) {
		want := fmt.Sprintf("go test fuzz v1\nbool(%v)\n[]byte(%q)\n", seed.withHello, seed.data)
		path := dir + "/" + seed.name
		if os.Getenv("RAFT_WRITE_CORPUS") != "" {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, want, string(got), path)
	}
}

// ---- Benchmark ----

// BenchmarkTCPCluster_64Proposers is the workload of BenchmarkCluster_*
// (bench_test.go) over TCPTransports on loopback, every node on its own
// FileStorage with fsync on. docs/tcp.md has the figures; run with
//
//	go test -run '^$' -bench BenchmarkTCPCluster -benchtime 30000x -count 5 .
func BenchmarkTCPCluster_64Proposers(b *testing.B) {
	leader, stop := benchTCPCluster(b, fileStorage(b))
	defer stop()
	benchProposeFrom(b, leader, 64)
}

// BenchmarkTCPClusterMem_64Proposers is the same over MemoryStorage (no
// fsync): what the transport itself costs, next to BenchmarkCluster_64Proposers.
func BenchmarkTCPClusterMem_64Proposers(b *testing.B) {
	leader, stop := benchTCPCluster(b, memStorage)
	defer stop()
	benchProposeFrom(b, leader, 64)
}

// benchTCPCluster is benchCluster over TCP: three nodes in this process,
// each with its own transport on 127.0.0.1.
func benchTCPCluster(b *testing.B, newStorage func(id uint64) Storage) (*Node, func()) {
	b.Helper()
	var transports []*TCPTransport
	var members []Member
	for id := uint64(1); id <= 3; id++ {
		tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		transports = append(transports, tr)
		members = append(members, Member{ID: id, Addr: tr.Addr()})
	}
	var nodes []*Node
	var stores []Storage
	stop := func() {
		for _, n := range nodes {
			n.Close()
		}
		for _, tr := range transports {
			tr.Close()
		}
		for _, st := range stores {
			if c, ok := st.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}
	for i, m := range members {
		st := newStorage(m.ID)
		stores = append(stores, st)
		n, err := NewNode(Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)},
			discardSM{}, st, transports[i])
		if err != nil {
			stop()
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	leader := waitBenchLeader(nodes)
	if leader == nil {
		stop()
		b.Fatal("no leader")
	}
	return leader, stop
}

// TestTCPRemovedFollowerLearnsItsRemoval: over TCP, the append that carries
// the commit of a follower's removal used to be dropped with the lane to
// it, which the transport closed as soon as the removal committed; the
// follower then never learned that it was removed. Several clusters, since
// the loss depended on timing.
func TestTCPRemovedFollowerLearnsItsRemoval(t *testing.T) {
	for round := 0; round < 4; round++ {
		c := newTCPCluster(t, 3)
		leader := c.waitLeader()
		c.proposeMany("x", 5)
		removed := leader%3 + 1
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, c.nodes[leader].RemoveMember(ctx, removed))
		cancel()
		require.Eventually(t, func() bool { return c.nodes[removed].Status().Removed }, 5*time.Second, time.Millisecond,
			"round %d: node %d never learned that it was removed: %+v", round, removed, c.nodes[removed].Status())
		_, err := c.nodes[removed].Propose(context.Background(), []byte("y"))
		assert.ErrorIs(t, err, ErrRemoved)
		c.closeAll()
	}
}
