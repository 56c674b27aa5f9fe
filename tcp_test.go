package raft

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
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

// Tests of TCPTransport, and the helpers its tests share: configuration,
// backoff, and pairs of transports on loopback for sending both ways,
// queues and their accounting, unreachable, unknown and slow peers,
// reconnection, a handshake held until Attach, a peer's connection ending
// the dial backoff, SetPeers, the two lanes, Detach and Close. The other TCP
// tests: tcp_wire_test.go (raw sockets: the wire format and bad input),
// tcp_tls_test.go (TLS), tcp_cluster_test.go (clusters of Nodes),
// tcp_restart_test.go (restarts).

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

	// Each lane keeps order: the heartbeat and the vote took the control
	// lane, the append and the snapshot chunk the bulk lane.
	var control, bulk []Message
	for _, m := range inB.all() {
		if m.Type == MsgAppend || m.Type == MsgSnapshot {
			bulk = append(bulk, m)
		} else {
			control = append(control, m)
		}
	}
	assert.Equal(t, []Message{sent[0], sent[2]}, control)
	assert.Equal(t, []Message{sent[1], sent[3]}, bulk)
	assert.Equal(t, MsgAppendResp, inA.all()[0].Type)
	require.Eventually(t, func() bool { return a.Stats().Sent == uint64(len(sent)) }, 5*time.Second, time.Millisecond)
	sa, sb := a.Stats(), b.Stats()
	assert.Equal(t, uint64(len(sent)), sb.Received)
	assert.Equal(t, uint64(2), sa.Dials, "one connection per lane")
	assert.Equal(t, 2, sa.OutboundConns)
	assert.Equal(t, 2, sb.InboundConns)
	assert.Zero(t, sa.DialFailures+sb.BadFrames+sb.HandshakesRefused+sb.DroppedMisrouted)
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
	// The second heartbeat arrives. (The first was dropped with the failed
	// dial, unless that dial came from SetPeers before it was queued: then
	// it waited for the next dial too, and arrives first.)
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(inB.all(), func(m Message) bool { return m.Context == 2 })
	}, 5*time.Second, time.Millisecond)
	assert.Less(t, time.Since(start), time.Second, "node 1 waited out its backoff")
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

func TestTCPAppendsToAPeerKeepTheirOrder(t *testing.T) {
	// Node 2 holds the first (large) append in deliver until released. A
	// small append sent after it must not overtake it on the other lane:
	// the follower would find a gap, reject it, and the leader would send
	// it again. A heartbeat sent after both still gets through meanwhile.
	cfg := TCPConfig{WriteTimeout: time.Minute}
	a := newTestTCP(t, "a", cfg)
	b := newTestTCP(t, "b", cfg)
	attachInbox(t, a, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the transports close: Close waits for deliver
	var mu sync.Mutex
	var order []uint64
	var hearts atomic.Int64
	require.NoError(t, b.Attach(2, func(m Message) {
		switch m.Type {
		case MsgAppend:
			if m.Entries[0].Index == 1 {
				<-release
			}
			mu.Lock()
			order = append(order, m.Entries[0].Index)
			mu.Unlock()
		case MsgHeartbeat:
			hearts.Add(1)
		}
	}))
	a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})

	a.Send([]Message{bigAppend(1, 2, 1, 1<<20)})
	a.Send([]Message{bigAppend(1, 2, 2, 100), heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return hearts.Load() == 1 }, 10*time.Second, time.Millisecond)
	releaseAll()
	got := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(order)
	}
	require.Eventually(t, func() bool { return len(got()) == 2 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, []uint64{1, 2}, got(), "appends delivered out of the order they were sent in")
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
