package raft

// TCPTransport: the production Transport, carrying Messages between
// processes over TCP, optionally under TLS. docs/tcp.md is the user's guide;
// this comment is the reference for the bytes on the wire, precise enough to
// write a compatible peer in another language.
//
// Connections. Every node listens on one address. To send, a node dials the
// receiver and keeps the connection open; it only writes to it. A node
// therefore holds, for each peer, its own outbound connections (on which it
// writes) and the peer's inbound connections (from which it reads). Each
// direction has up to two connections, one per lane:
//
//	lane 0, control: every message whose encoding is at most
//	                 TCPConfig.BulkThreshold bytes (heartbeats, votes,
//	                 responses, ordinary appends)
//	lane 1, bulk:    snapshot chunks (MsgSnapshot) and larger messages (big
//	                 appends), so that they never queue in front of heartbeats
//
// The control connection to a member is dialed as soon as the member is
// known (so that a node that starts makes itself known to its peers), and
// again whenever there is something to send on it; the bulk connection is
// dialed the first time a large message is sent. An inbound connection from
// a peer whose dials were failing makes the node retry its own dial to the
// peer at once, without waiting for the backoff.
//
// Handshake. Right after the TCP connection (and the TLS handshake, when TLS
// is configured) the dialer sends a hello; integers are big-endian:
//
//	magic        4 bytes   "RKTP" (0x52 0x4B 0x54 0x50)
//	version      1 byte    1
//	lane         1 byte    0 (control) or 1 (bulk)
//	from         8 bytes   the dialer's node ID, non-zero
//	to           8 bytes   the node ID the dialer means to reach, non-zero
//	cluster len  1 byte    0 to 255
//	cluster      that many bytes: TCPConfig.ClusterID
//	addr len     1 byte    0 to 255
//	addr         that many bytes: the dialer's advertised listen address
//
// The acceptor answers with a reply of 6 bytes:
//
//	magic        4 bytes   "RKTP"
//	version      1 byte    the acceptor's version (1)
//	status       1 byte    0 accepted; 1 unsupported version; 2 other
//	                       cluster; 3 "to" is not the acceptor's node ID;
//	                       4 the acceptor is not attached to a node (it is
//	                       stopping, or did not finish starting within half
//	                       of its HandshakeTimeout); 5 bad "from" (0 or the
//	                       acceptor's own ID)
//
// An acceptor that is starting (listening, not yet attached to its node)
// holds the reply until it is attached rather than answer 4 at once. It
// closes the connection after any status but 0. Input that does not
// start with the magic gets no reply: the connection is closed. The hello
// must arrive, and the TLS handshake complete, within
// TCPConfig.HandshakeTimeout of the connection being accepted. After the
// reply the acceptor never writes again; the dialer never reads again except
// to notice that the acceptor closed the connection.
//
// Frames. After the handshake the dialer sends frames:
//
//	length       4 bytes   big-endian unsigned L
//	body         L bytes   one Message in the binary encoding of codec.go
//
// L == 0 is a keepalive that carries no message; a dialer sends one when it
// has written nothing for a third of TCPConfig.IdleReadTimeout. A frame
// with L > TCPConfig.MaxFrameSize, a body that does not decode, a
// connection that ends inside a frame, and a frame whose bytes stop coming
// for IdleReadTimeout all close the connection. A message whose From is not
// the hello's "from", or whose To is not the acceptor's node ID, is dropped
// (the connection stays open).

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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults for the zero values of TCPConfig.
const (
	DefaultTCPDialTimeout      = 2 * time.Second
	DefaultTCPHandshakeTimeout = 5 * time.Second
	DefaultTCPIdleReadTimeout  = 15 * time.Second
	DefaultTCPWriteTimeout     = 10 * time.Second
	DefaultTCPDialBackoff      = 50 * time.Millisecond
	DefaultTCPMaxDialBackoff   = 2 * time.Second
	DefaultTCPMaxFrameSize     = 16 << 20
	DefaultTCPBulkThreshold    = 64 << 10
	DefaultTCPQueueSize        = 4096
	DefaultTCPMaxInboundConns  = 128
)

// Limits of TCPConfig values.
const (
	tcpMinFrameSize = 1 << 10
	tcpMaxFrameSize = 1 << 30
	tcpMaxString    = 255 // longest ClusterID and AdvertiseAddr: one length byte
)

// TCPConfig configures a TCPTransport. The zero value of every field but
// ListenAddr means the documented default. Give every node of a cluster the
// same ClusterID, timeouts and limits.
type TCPConfig struct {
	// ListenAddr is the address to listen on, e.g. "10.0.0.1:7000", or
	// "127.0.0.1:0" for a port chosen by the system (Addr reports it).
	// Required.
	ListenAddr string
	// AdvertiseAddr is the address other nodes can dial to reach this one,
	// sent in the handshake so that a node that does not know this one yet
	// (a node being added to the cluster) can answer it. Default: the
	// bound address, Addr(), unless that is a wildcard address such as
	// "[::]:7000", in which case nothing is advertised: set it when
	// listening on ":7000". At most 255 bytes.
	AdvertiseAddr string
	// ClusterID names the cluster. A connection from a node with another
	// ClusterID is refused during the handshake, so that a node of another
	// cluster pointed at this address by mistake never reaches the core. At
	// most 255 bytes. It identifies, it does not authenticate: use TLS for
	// that.
	ClusterID string
	// TLS, when set, secures every connection: the listener serves TLS with
	// it (tls.Server) and the dialer uses it as a client (tls.Client). For
	// mutual TLS set Certificates, RootCAs, ClientCAs and ClientAuth:
	// tls.RequireAndVerifyClientCert; see docs/tcp.md. When ServerName is
	// empty, the host of the address dialed is used. The config must not be
	// modified after NewTCPTransport.
	TLS *tls.Config

	// DialTimeout bounds connecting to a peer. Default 2s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake plus the hello and its
	// reply, in both directions: an inbound connection that has not
	// completed them in time is closed. Default 5s.
	HandshakeTimeout time.Duration
	// IdleReadTimeout closes an inbound connection on which nothing (no
	// frame, no keepalive) arrived for that long, or whose current frame
	// stopped arriving for that long. Dialers send a keepalive after a third
	// of it without traffic. Default 15s.
	IdleReadTimeout time.Duration
	// WriteTimeout bounds writing one batch of frames to a peer; when it
	// expires the connection is closed and the batch is dropped. Default 10s.
	WriteTimeout time.Duration
	// DialBackoff and MaxDialBackoff bound the wait between failed dials to
	// one peer: it doubles from DialBackoff with each failure up to
	// MaxDialBackoff, and each wait is drawn at random from [d/2, d).
	// Defaults 50ms and 2s.
	DialBackoff    time.Duration
	MaxDialBackoff time.Duration

	// MaxFrameSize bounds the encoded size of one message, in both
	// directions: larger messages are not sent (counted in DroppedTooLarge),
	// and a frame header announcing more closes the connection before
	// anything is allocated for it. It must exceed the largest entry your
	// application proposes plus a little (Config.MaxAppendBytes bounds the
	// entries of one append, but a single larger entry is sent alone).
	// From 1 KiB to 1 GiB; default 16 MiB.
	MaxFrameSize int
	// BulkThreshold is the encoded size above which a message goes on the
	// bulk lane rather than the control lane. Default 64 KiB.
	BulkThreshold int
	// QueueSize bounds the messages queued for one peer on each lane. When
	// the queue is full, as when the peer is slow or unreachable, further
	// messages to it are dropped (Raft retransmits). Default 4096.
	QueueSize int
	// MaxInboundConns bounds the inbound connections open at once, counting
	// those still in their handshake; beyond it a new connection is closed
	// as soon as it is accepted. A cluster of n nodes needs up to 2(n-1).
	// Default 128.
	MaxInboundConns int

	// Logger receives the transport's logs: refused connections, bad
	// frames, unreachable peers. Default zap.NewNop().
	Logger *zap.Logger
}

// Validate returns an error naming the first invalid field, or nil. Zero
// values are valid and mean the defaults. Every error wraps ErrInvalidConfig.
func (c TCPConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: TCPConfig.%s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.ListenAddr == "" {
		return bad("ListenAddr is required")
	}
	if len(c.ClusterID) > tcpMaxString {
		return bad("ClusterID is %d bytes long; at most %d", len(c.ClusterID), tcpMaxString)
	}
	if len(c.AdvertiseAddr) > tcpMaxString {
		return bad("AdvertiseAddr is %d bytes long; at most %d", len(c.AdvertiseAddr), tcpMaxString)
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"HandshakeTimeout", c.HandshakeTimeout},
		{"IdleReadTimeout", c.IdleReadTimeout}, {"WriteTimeout", c.WriteTimeout},
		{"DialBackoff", c.DialBackoff}, {"MaxDialBackoff", c.MaxDialBackoff},
	} {
		if d.value < 0 {
			return bad("%s %v is negative", d.name, d.value)
		}
	}
	for _, n := range []struct {
		name  string
		value int
	}{
		{"MaxFrameSize", c.MaxFrameSize}, {"BulkThreshold", c.BulkThreshold},
		{"QueueSize", c.QueueSize}, {"MaxInboundConns", c.MaxInboundConns},
	} {
		if n.value < 0 {
			return bad("%s %d is negative", n.name, n.value)
		}
	}
	d := c.withDefaults()
	if d.MaxFrameSize < tcpMinFrameSize || d.MaxFrameSize > tcpMaxFrameSize {
		return bad("MaxFrameSize %d is outside [%d, %d]", d.MaxFrameSize, tcpMinFrameSize, tcpMaxFrameSize)
	}
	if d.BulkThreshold > d.MaxFrameSize {
		return bad("BulkThreshold %d exceeds MaxFrameSize %d", d.BulkThreshold, d.MaxFrameSize)
	}
	if d.DialBackoff > d.MaxDialBackoff {
		return bad("DialBackoff %v exceeds MaxDialBackoff %v", d.DialBackoff, d.MaxDialBackoff)
	}
	if t := c.TLS; t != nil && len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
		return bad("TLS has no certificate for the listener (set Certificates or GetCertificate)")
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c TCPConfig) withDefaults() TCPConfig {
	setDuration := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDuration(&c.DialTimeout, DefaultTCPDialTimeout)
	setDuration(&c.HandshakeTimeout, DefaultTCPHandshakeTimeout)
	setDuration(&c.IdleReadTimeout, DefaultTCPIdleReadTimeout)
	setDuration(&c.WriteTimeout, DefaultTCPWriteTimeout)
	setDuration(&c.DialBackoff, DefaultTCPDialBackoff)
	setDuration(&c.MaxDialBackoff, max(DefaultTCPMaxDialBackoff, c.DialBackoff))
	setInt(&c.MaxFrameSize, DefaultTCPMaxFrameSize)
	setInt(&c.BulkThreshold, min(DefaultTCPBulkThreshold, c.MaxFrameSize))
	setInt(&c.QueueSize, DefaultTCPQueueSize)
	setInt(&c.MaxInboundConns, DefaultTCPMaxInboundConns)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// TCPStats counts what a TCPTransport did. Every message given to Send ends
// up in exactly one of Sent, DroppedQueueFull, DroppedUnreachable,
// DroppedUnknownPeer and DroppedTooLarge (messages still queued are in none
// yet).
type TCPStats struct {
	Sent               uint64 // messages written to a connection and flushed (TCP may still lose them if the connection breaks right after)
	DroppedQueueFull   uint64 // messages refused by Send because the peer's lane queue was full
	DroppedUnreachable uint64 // messages discarded because a dial failed, a connection broke, or the peer was removed or the transport closed
	DroppedUnknownPeer uint64 // messages to an ID with no known address (not a member, or a member without Addr)
	DroppedTooLarge    uint64 // messages longer than MaxFrameSize once encoded, or that could not be encoded
	Received           uint64 // inbound messages handed to the node
	DroppedMisrouted   uint64 // inbound messages whose From is not the handshake's node or whose To is not this node
	BadFrames          uint64 // inbound connections closed for an oversized, undecodable, truncated or stalled frame
	HandshakesRefused  uint64 // inbound connections closed in the handshake: TLS failure, garbage, wrong magic, version, cluster or node, timeout
	ConnsAccepted      uint64 // inbound connections accepted under MaxInboundConns
	ConnsRefused       uint64 // inbound connections closed at once because MaxInboundConns were open
	Dials              uint64 // outbound connection attempts
	DialFailures       uint64 // attempts that failed, including handshakes the peer refused
	InboundConns       int    // inbound connections open now
	OutboundConns      int    // outbound connections open now
}

type tcpCounters struct {
	sent, droppedQueueFull, droppedUnreachable, droppedUnknownPeer, droppedTooLarge atomic.Uint64
	received, droppedMisrouted, badFrames, handshakesRefused                        atomic.Uint64
	connsAccepted, connsRefused, dials, dialFailures                                atomic.Uint64
	outboundConns                                                                   atomic.Int64
}

// Wire constants; see the top of this file.
const (
	tcpMagic          = "RKTP"
	tcpVersion        = 1
	tcpHelloFixedSize = 4 + 1 + 1 + 8 + 8 + 1 // magic, version, lane, from, to, cluster len
	tcpReplySize      = 4 + 1 + 1
	tcpFrameHeader    = 4
	tcpWriteBuffer    = 64 << 10
	tcpReadBuffer     = 64 << 10
	tcpMaxLearned     = 16 // addresses learned from handshakes of non-members
)

// tcpLane is the connection a message travels on.
type tcpLane uint8

const (
	tcpLaneControl tcpLane = iota
	tcpLaneBulk
	tcpLanes // number of lanes
)

func (l tcpLane) String() string {
	if l == tcpLaneBulk {
		return "bulk"
	}
	return "control"
}

// tcpStatus is the status byte of the handshake reply.
type tcpStatus uint8

const (
	tcpAccepted tcpStatus = iota
	tcpRefusedVersion
	tcpRefusedCluster
	tcpRefusedNode
	tcpRefusedNotReady
	tcpRefusedSender
)

func (s tcpStatus) String() string {
	switch s {
	case tcpAccepted:
		return "accepted"
	case tcpRefusedVersion:
		return "unsupported protocol version"
	case tcpRefusedCluster:
		return "different cluster ID"
	case tcpRefusedNode:
		return "the address belongs to another node ID"
	case tcpRefusedNotReady:
		return "peer not attached to a node (starting or stopping)"
	case tcpRefusedSender:
		return "invalid sender ID"
	}
	return fmt.Sprintf("unknown status %d", uint8(s))
}

var (
	errTCPClosed      = errors.New("raft: TCP transport closed")
	errTCPBadMagic    = errors.New("not a raftkit TCP transport (wrong magic)")
	errTCPNotAttached = errors.New("transport not attached to a node")
)

// tcpRefusedError is a handshake refused by the peer.
type tcpRefusedError struct{ status tcpStatus }

func (e *tcpRefusedError) Error() string {
	return "handshake refused by the peer: " + e.status.String()
}

// TCPTransport is a Transport over TCP connections; see TCPConfig for its
// settings, docs/tcp.md for a guide and the top of tcp.go for the wire
// format. Send never blocks: each peer has a bounded queue per lane and a
// goroutine that dials the peer (with backoff), batches what is queued into
// one write, and drops what cannot be delivered. All methods are safe for
// concurrent use. Close it after the Node that uses it is closed.
type TCPTransport struct {
	cfg       TCPConfig // with defaults
	logger    *zap.Logger
	listener  net.Listener
	addr      string
	advertise string

	ctx    context.Context // cancelled by Close: stops every goroutine and dial
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the transport

	node     atomic.Pointer[tcpAttachment] // set by Attach
	attached chan struct{}                 // closed by Attach: handshakes held while starting may go on
	gate     inmemGate                     // lets Detach stop deliveries and wait for those under way

	// peers maps node IDs to their senders. The map is never modified once
	// published: writers (holding mu) publish a new one, Send reads it
	// without locking.
	peers atomic.Pointer[map[uint64]*tcpPeer]

	mu       sync.Mutex
	closed   bool
	detached bool
	members  map[uint64]bool              // the IDs of the last SetPeers
	learned  map[uint64]string            // addresses from handshakes of nodes that are not members
	inbound  map[*tcpInbound]struct{}     // open inbound connections
	streams  map[tcpStreamKey]*tcpInbound // the newest inbound connection of each peer and lane
	closing  sync.Once
	stats    tcpCounters
	nextWarn atomic.Int64 // unix nanos before which connection-cap refusals are not logged
}

type tcpAttachment struct {
	id      uint64
	deliver func(Message)
}

type tcpStreamKey struct {
	from uint64
	lane tcpLane
}

var _ Transport = (*TCPTransport)(nil)

// NewTCPTransport validates cfg and starts listening on cfg.ListenAddr. The
// transport accepts connections at once and holds their handshakes until a
// Node attaches (for at most half of HandshakeTimeout; then it refuses
// them), so that peers reach a node that is starting as soon as it is up;
// hand it to NewNode, and Close it after closing the Node.
func NewTCPTransport(cfg TCPConfig) (*TCPTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	listener, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("raft: TCP transport: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCPTransport{
		cfg:       cfg,
		listener:  listener,
		addr:      listener.Addr().String(),
		advertise: cfg.AdvertiseAddr,
		ctx:       ctx,
		cancel:    cancel,
		attached:  make(chan struct{}),
		gate:      inmemGate{drained: make(chan struct{}, 1)},
		members:   map[uint64]bool{},
		learned:   map[uint64]string{},
		inbound:   map[*tcpInbound]struct{}{},
		streams:   map[tcpStreamKey]*tcpInbound{},
	}
	if t.advertise == "" {
		// A wildcard address ("[::]:7000") tells a peer nothing: advertise
		// none rather than a wrong one.
		if tcp, ok := listener.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
			t.advertise = t.addr
		}
	}
	t.logger = cfg.Logger.With(zap.String("transport", "tcp"), zap.String("listen", t.addr))
	empty := map[uint64]*tcpPeer{}
	t.peers.Store(&empty)
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr returns the address the transport listens on, with the port the
// system chose when ListenAddr had port 0.
func (t *TCPTransport) Addr() string { return t.addr }

// Stats returns the transport's counters; see TCPStats.
func (t *TCPTransport) Stats() TCPStats {
	c := &t.stats
	t.mu.Lock()
	inbound := len(t.inbound)
	t.mu.Unlock()
	return TCPStats{
		Sent:               c.sent.Load(),
		DroppedQueueFull:   c.droppedQueueFull.Load(),
		DroppedUnreachable: c.droppedUnreachable.Load(),
		DroppedUnknownPeer: c.droppedUnknownPeer.Load(),
		DroppedTooLarge:    c.droppedTooLarge.Load(),
		Received:           c.received.Load(),
		DroppedMisrouted:   c.droppedMisrouted.Load(),
		BadFrames:          c.badFrames.Load(),
		HandshakesRefused:  c.handshakesRefused.Load(),
		ConnsAccepted:      c.connsAccepted.Load(),
		ConnsRefused:       c.connsRefused.Load(),
		Dials:              c.dials.Load(),
		DialFailures:       c.dialFailures.Load(),
		InboundConns:       inbound,
		OutboundConns:      int(c.outboundConns.Load()),
	}
}

// Attach starts delivering inbound messages addressed to node id. A
// TCPTransport serves one node once: Attach fails after Detach or Close.
func (t *TCPTransport) Attach(id uint64, deliver func(Message)) error {
	if id == 0 {
		return errors.New("raft: TCP transport: cannot attach node ID 0")
	}
	if deliver == nil {
		return errors.New("raft: TCP transport: nil deliver function")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return errTCPClosed
	case t.detached:
		return errors.New("raft: TCP transport already detached; create a new one to restart a node")
	case t.node.Load() != nil:
		return fmt.Errorf("raft: TCP transport already attached to node %d", t.node.Load().id)
	}
	t.node.Store(&tcpAttachment{id: id, deliver: deliver})
	close(t.attached)
	return nil
}

// Send queues each message on its peer's lane and returns at once. A message
// is dropped, and counted, when its peer has no known address, when it is
// longer than MaxFrameSize, or when the lane's queue is full.
func (t *TCPTransport) Send(msgs []Message) {
	peers := *t.peers.Load()
	var unknown, tooLarge, full uint64
	var reports lossReports
	for i := range msgs {
		m := &msgs[i]
		p := peers[m.To]
		if p == nil {
			if p = t.learnedPeer(m.To); p == nil {
				unknown++
				t.reportIf(&reports, m)
				continue
			}
		}
		size := m.EncodedSize()
		if size > t.cfg.MaxFrameSize {
			tooLarge++
			t.logger.Error("message larger than MaxFrameSize dropped", zap.Uint64("to", m.To),
				zap.Stringer("type", m.Type), zap.Int("size", size), zap.Int("maxFrameSize", t.cfg.MaxFrameSize))
			continue
		}
		if !p.senders[t.laneFor(m, size)].push(m, size) {
			full++
			t.reportIf(&reports, m)
		}
	}
	addIf(&t.stats.droppedUnknownPeer, unknown)
	addIf(&t.stats.droppedTooLarge, tooLarge)
	addIf(&t.stats.droppedQueueFull, full)
}

// laneFor picks the lane of a message whose encoding takes size bytes:
// snapshot chunks and other large messages go on the bulk lane, so that they
// never delay heartbeats, votes and small appends. All the chunks of a
// snapshot take the same lane, the last (often short) one included.
func (t *TCPTransport) laneFor(m *Message, size int) tcpLane {
	if m.Type == MsgSnapshot || size > t.cfg.BulkThreshold {
		return tcpLaneBulk
	}
	return tcpLaneControl
}

// report tells the Node that m was lost (see Unreachable).
func (t *TCPTransport) report(m *Message) {
	self := t.node.Load()
	if self == nil || !t.gate.enter() {
		return
	}
	self.deliver(Unreachable(*m))
	t.gate.exit()
}

// reportIf reports m unless reports has one like it.
func (t *TCPTransport) reportIf(reports *lossReports, m *Message) {
	if reports.wants(m) {
		t.report(m)
	}
}

// reportLost reports the messages of a batch that was lost: its snapshot
// chunks, each of which the Node sends again, and its first message, which
// tells that the peer is unreachable.
func (t *TCPTransport) reportLost(lost []tcpQueued) {
	var reports lossReports
	for i := range lost {
		t.reportIf(&reports, &lost[i].msg)
	}
}

func addIf(c *atomic.Uint64, n uint64) {
	if n != 0 {
		c.Add(n)
	}
}

// SetPeers records the members' addresses. A new member, or a member whose
// Addr changed, gets a new sender (the old connection is closed) whose
// control lane connects at once: a node that starts thereby announces itself,
// and each peer it reaches retries its own dials to it without waiting for
// its backoff. Removed members' senders are stopped and what they had
// queued is dropped; a removed node that still sends to this one is answered
// at the address its handshake advertised, as any sender is. The Node keeps
// a member whose removal has not committed in the set it passes (see
// Transport.SetPeers), so the lanes to a leaving node stay up until then.
func (t *TCPTransport) SetPeers(members []Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.detached {
		return
	}
	var local uint64
	if a := t.node.Load(); a != nil {
		local = a.id
	}
	current := *t.peers.Load()
	next := make(map[uint64]*tcpPeer, len(members))
	t.members = make(map[uint64]bool, len(members))
	for _, m := range members {
		if m.ID == 0 || m.ID == local {
			continue
		}
		t.members[m.ID] = true
		delete(t.learned, m.ID) // membership knows better
		old := current[m.ID]
		if old != nil && !old.learned && old.addr == m.Addr {
			next[m.ID] = old
			continue
		}
		if m.Addr == "" {
			t.logger.Warn("member has no address; messages to it are dropped", zap.Uint64("peer", m.ID))
			continue
		}
		if old != nil {
			t.logger.Info("peer address changed", zap.Uint64("peer", m.ID), zap.String("from", old.addr), zap.String("to", m.Addr))
		}
		next[m.ID] = t.startPeer(m.ID, m.Addr, false)
		next[m.ID].senders[tcpLaneControl].connectSoon()
	}
	for id, old := range current {
		if next[id] == old {
			continue
		}
		if old.learned && !t.members[id] {
			next[id] = old // still not a member: keep answering it
			continue
		}
		old.cancel()
	}
	t.peers.Store(&next)
}

// Detach stops delivery and waits for deliveries under way; it also stops
// dialing and closes every connection. The listener stays open, refusing
// handshakes, until Close. It must not be called from a deliver callback.
func (t *TCPTransport) Detach() {
	t.mu.Lock()
	if t.detached {
		t.mu.Unlock()
		return
	}
	t.detached = true
	for _, p := range *t.peers.Load() {
		p.cancel()
	}
	empty := map[uint64]*tcpPeer{}
	t.peers.Store(&empty)
	for in := range t.inbound {
		in.close()
	}
	t.mu.Unlock()
	t.gate.close()
}

// Close stops the listener, closes every connection, drops what is queued
// and waits for all of the transport's goroutines to end. It is idempotent.
func (t *TCPTransport) Close() error {
	t.closing.Do(func() {
		t.mu.Lock()
		t.closed = true
		empty := map[uint64]*tcpPeer{}
		t.peers.Store(&empty) // later Sends count their messages as to unknown peers
		for in := range t.inbound {
			in.close()
		}
		t.mu.Unlock()
		t.cancel()
		_ = t.listener.Close()
		t.wg.Wait()
		t.logger.Debug("closed")
	})
	return nil
}

// ---- Outbound: peers, their lanes' queues and senders ----

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

// tcpQueued is a message waiting in a lane's queue with its encoded size.
type tcpQueued struct {
	msg  Message
	size int
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
	lastChunk *Message

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
func (s *tcpSender) push(m *Message, size int) bool {
	s.mu.Lock()
	n := len(s.queue)
	if n >= s.t.cfg.QueueSize {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, tcpQueued{msg: *m, size: size})
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
			t.report(s.lastChunk)
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
				// messages (a dial with nothing queued costs none).
				log := t.logger.Debug
				if !warned && dropped > 0 {
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
	var written, invalid uint64
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
			t.reportLost(batch)
			clear(batch)
			return false, err
		}
		for i := range batch {
			if err := c.writeFrame(&batch[i]); err != nil {
				if errors.Is(err, errInvalidMessage) {
					invalid++
					t.logger.Error("message cannot be encoded; dropped", zap.Uint64("peer", s.peer), zap.Error(err))
					continue
				}
				addIf(&t.stats.droppedUnreachable, written+uint64(len(batch)-i))
				addIf(&t.stats.droppedTooLarge, invalid)
				t.reportLost(batch[i:])
				clear(batch)
				return false, err
			}
			if m := &batch[i].msg; m.Type == MsgSnapshot {
				chunk := *m
				chunk.Data, chunk.Entries = nil, nil
				s.lastChunk = &chunk
			}
			written++
		}
		clear(batch) // do not pin the entries until the next batch
	}
	addIf(&t.stats.droppedTooLarge, invalid)
	if written == 0 {
		return false, nil
	}
	if err := c.w.Flush(); err != nil {
		addIf(&t.stats.droppedUnreachable, written)
		return false, err
	}
	t.stats.sent.Add(written)
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
		c.conn = tc
	}
	hello := tcpHello{lane: s.lane, from: self.id, to: s.peer, cluster: t.cfg.ClusterID, addr: t.advertise}
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
		return nil, &tcpRefusedError{status: status}
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	c.w = bufio.NewWriterSize(c.conn, tcpWriteBuffer)
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

// ---- The handshake ----

// tcpHello is the handshake a dialer sends; see the top of this file.
type tcpHello struct {
	lane     tcpLane
	from, to uint64
	cluster  string
	addr     string
}

func (h *tcpHello) appendTo(buf []byte) []byte {
	buf = append(buf, tcpMagic...)
	buf = append(buf, tcpVersion, byte(h.lane))
	buf = binary.BigEndian.AppendUint64(buf, h.from)
	buf = binary.BigEndian.AppendUint64(buf, h.to)
	buf = append(buf, byte(len(h.cluster)))
	buf = append(buf, h.cluster...)
	buf = append(buf, byte(len(h.addr)))
	return append(buf, h.addr...)
}

// tcpVersionError is a hello of another protocol version.
type tcpVersionError struct{ version byte }

func (e *tcpVersionError) Error() string {
	return fmt.Sprintf("unsupported protocol version %d (this node speaks %d)", e.version, tcpVersion)
}

// readTCPHello reads a hello from r, which the caller bounds with a
// deadline. It reads exactly the hello's bytes and allocates at most the
// two strings of at most 255 bytes each.
func readTCPHello(r io.Reader) (tcpHello, error) {
	var h tcpHello
	var fixed [tcpHelloFixedSize]byte
	// Magic and version first: a stray client is turned away without
	// waiting for bytes it will never send.
	if _, err := io.ReadFull(r, fixed[:5]); err != nil {
		return h, err
	}
	if string(fixed[:4]) != tcpMagic {
		return h, errTCPBadMagic
	}
	if fixed[4] != tcpVersion {
		return h, &tcpVersionError{version: fixed[4]}
	}
	if _, err := io.ReadFull(r, fixed[5:]); err != nil {
		return h, err
	}
	h.lane = tcpLane(fixed[5])
	if h.lane >= tcpLanes {
		return h, fmt.Errorf("unknown lane %d", h.lane)
	}
	h.from = binary.BigEndian.Uint64(fixed[6:])
	h.to = binary.BigEndian.Uint64(fixed[14:])
	var strs [2 * (tcpMaxString + 1)]byte
	n := int(fixed[22])
	if _, err := io.ReadFull(r, strs[:n+1]); err != nil { // the cluster ID and the address length
		return h, err
	}
	h.cluster = string(strs[:n])
	m := int(strs[n])
	if _, err := io.ReadFull(r, strs[n+1:n+1+m]); err != nil {
		return h, err
	}
	h.addr = string(strs[n+1 : n+1+m])
	return h, nil
}

func tcpReply(status tcpStatus) []byte {
	return append([]byte(tcpMagic), tcpVersion, byte(status))
}

// ---- Inbound: accepting, the handshake, reading frames ----

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
	if t.cfg.TLS != nil {
		tc := tls.Server(in.raw, t.cfg.TLS)
		if err := tc.HandshakeContext(t.ctx); err != nil {
			t.refuse(in, "TLS handshake failed", err)
			return
		}
		conn = tc
	}
	hello, err := readTCPHello(conn)
	if err != nil {
		var version *tcpVersionError
		if errors.As(err, &version) {
			_, _ = conn.Write(tcpReply(tcpRefusedVersion))
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
	if _, err := conn.Write(tcpReply(status)); err != nil || status != tcpAccepted {
		if status != tcpAccepted {
			t.refuse(in, "handshake refused: "+status.String(), nil, zap.Uint64("from", hello.from),
				zap.Uint64("to", hello.to), zap.String("cluster", hello.cluster))
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
		self.deliver(m)
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
// goes into a new slice that grows as bytes arrive, so a header that
// announces a large frame costs only as much memory as the peer actually
// sends. deadline(n) arms the read deadline before a read that needs n
// bytes the buffer does not hold: a frame whose bytes stop coming for
// IdleReadTimeout ends the connection.
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
	body = make([]byte, 0, 4*tcpReadBuffer)
	for len(body) < size {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(size, 2*cap(body))-len(body))
		}
		if err := deadline(1); err != nil {
			return nil, true, err
		}
		n, err := br.Read(body[len(body):min(cap(body), size)])
		body = body[:len(body)+n]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, true, err
		}
	}
	return body, true, nil
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
