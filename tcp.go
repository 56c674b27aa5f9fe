package raft

// TCPTransport: the production Transport, carrying Messages between
// processes over TCP, optionally under TLS. docs/tcp.md is the user's guide;
// the top of tcp_wire.go is the reference for the bytes on the wire.
//
// The transport is in four files:
//
//	tcp.go           TCPConfig (defaults, validation), TCPStats, and
//	                 TCPTransport with its methods: NewTCPTransport, Attach,
//	                 Send (and reporting lost messages), SetPeers, Detach,
//	                 Close
//	tcp_wire.go      the wire format: connections and lanes, the handshake
//	                 (the hello and its reply) and frames; the hello's
//	                 encoding and decoding
//	tcp_outbound.go  the peers this node sends to: per peer and lane a queue
//	                 and a sender goroutine that dials with backoff (the
//	                 dialer's side of the handshake) and writes frames and
//	                 keepalives
//	tcp_inbound.go   accepting connections under MaxInboundConns, the
//	                 acceptor's side of the handshake, registering each
//	                 peer's connections, and reading frames and delivering
//	                 their messages to the node
//	tcp_identity.go  node IDs bound to TLS certificates: the default
//	                 scheme (a URI SAN raft://<ClusterID>/node/<ID>) and
//	                 the checks both sides of the handshake make with it

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
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
	// that. Clusters that share a ClusterID (or leave it empty) are still
	// told apart by their founding configurations (Status.Origin), message
	// by message.
	ClusterID string
	// TLS, when set, secures every connection: the listener serves TLS with
	// it (tls.Server) and the dialer uses it as a client (tls.Client). For
	// mutual TLS set Certificates, RootCAs, ClientCAs and ClientAuth:
	// tls.RequireAndVerifyClientCert; see docs/tcp.md. When ServerName is
	// empty, the host of the address dialed is used. The config must not be
	// modified after NewTCPTransport. With TLS, each node's certificate
	// must name its node ID (see CertificateNodeID), unless
	// InsecureSkipNodeIDCheck is set.
	TLS *tls.Config
	// CertificateNodeID returns the node ID that a peer's TLS certificate
	// (the leaf, already verified by TLS) entitles it to speak as: 0 if it
	// names no node, an error if it names one badly. With TLS, the
	// transport refuses a handshake whose node ID differs: the acceptor
	// checks that the dialer's client certificate names the node ID its
	// hello claims, and refuses a dialer without a certificate or whose
	// certificate names no node; the dialer checks that the server's
	// certificate, if it names a node, names the one it meant to dial. The
	// acceptor checks only when its TLS config asks for client certificates
	// (mutual TLS: ClientAuth other than tls.NoClientCert, or
	// GetConfigForClient set); with server-only TLS, as without TLS, the
	// node ID a dialer claims is not authenticated.
	//
	// Default (nil): NodeIDFromCertificate(cert, ClusterID), which reads a
	// URI SAN raft://<ClusterID>/node/<ID> (NodeIdentityURI builds it); the
	// ClusterID must then be letters, digits and "-._~" in dot-separated
	// labels, to fit in a URI. Set it for another scheme, such as a SPIFFE
	// ID or a common name. It is called during handshakes, from several
	// goroutines at once, and must not block; a panic in it refuses the
	// handshake.
	CertificateNodeID func(cert *x509.Certificate) (uint64, error)
	// InsecureSkipNodeIDCheck turns off the check of CertificateNodeID:
	// any peer that passes TLS may then claim any node ID, and so vote,
	// acknowledge entries or raise terms as any member. Set it only when
	// something else binds peers to node IDs (a VerifyConnection callback
	// in TLS, a network where only the right hosts can connect). Without
	// TLS there is nothing to check and it changes nothing.
	InsecureSkipNodeIDCheck bool

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
	// BulkThreshold is the encoded size above which a message other than an
	// append or a snapshot chunk (those always take the bulk lane) goes on
	// the bulk lane rather than the control lane. Default 64 KiB.
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
	return c.validateNodeIDBinding()
}

// validateNodeIDBinding checks the fields that bind node IDs to TLS
// certificates; see CertificateNodeID.
func (c TCPConfig) validateNodeIDBinding() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: TCPConfig.%s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.CertificateNodeID != nil && c.TLS == nil:
		return bad("CertificateNodeID is set but TLS is not: without TLS there is no certificate to read")
	case c.CertificateNodeID != nil && c.InsecureSkipNodeIDCheck:
		return bad("CertificateNodeID is set and InsecureSkipNodeIDCheck turns it off; set one of them")
	case !c.bindsNodeIDs():
		return nil
	case c.CertificateNodeID == nil && !validIdentityHost(c.ClusterID):
		return bad("ClusterID %q cannot be the host of the URI SAN raft://<ClusterID>/node/<ID> that names a node in "+
			"its certificate: use letters, digits and \"-._~\" in dot-separated labels, or set CertificateNodeID", c.ClusterID)
	}
	if auth := c.TLS.ClientAuth; (auth == tls.RequestClientCert || auth == tls.RequireAnyClientCert) &&
		c.TLS.VerifyPeerCertificate == nil && c.TLS.VerifyConnection == nil {
		return bad("TLS.ClientAuth is %v: client certificates are not verified, so the node IDs they name prove nothing; "+
			"use tls.RequireAndVerifyClientCert, verify them in VerifyPeerCertificate or VerifyConnection, "+
			"or set InsecureSkipNodeIDCheck", auth)
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
	HandshakesRefused  uint64 // inbound connections closed in the handshake: TLS failure, garbage, wrong magic, version, cluster or node, certificate identity, timeout
	IdentityRefused    uint64 // handshakes this node refused because a peer's certificate does not name the node ID it claims (inbound, also in HandshakesRefused) or was dialed as (outbound, also in DialFailures)
	ConnsAccepted      uint64 // inbound connections accepted under MaxInboundConns
	ConnsRefused       uint64 // inbound connections closed at once because MaxInboundConns were open
	Dials              uint64 // outbound connection attempts
	DialFailures       uint64 // attempts that failed, including handshakes the peer refused
	InboundConns       int    // inbound connections open now
	OutboundConns      int    // outbound connections open now
}

type tcpCounters struct {
	sent, droppedQueueFull, droppedUnreachable, droppedUnknownPeer, droppedTooLarge atomic.Uint64
	received, droppedMisrouted, badFrames, handshakesRefused, identityRefused       atomic.Uint64
	connsAccepted, connsRefused, dials, dialFailures                                atomic.Uint64
	outboundConns                                                                   atomic.Int64
}

// TCPTransport is a Transport over TCP connections; see TCPConfig for its
// settings, docs/tcp.md for a guide and the top of tcp_wire.go for the wire
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

	// host: the transport of a Host (host.go), in host mode: hellos of
	// version tcpHostVersion, frames that carry a group ID, node IDs that
	// are host IDs. Set before any goroutine starts.
	host bool

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
	nextWarn atomic.Int64                     // unix nanos before which connection-cap refusals are not logged
	metrics  atomic.Pointer[transportMetrics] // set by the Node (metrics.go); nil: none
}

type tcpAttachment struct {
	id uint64
	// deliver takes each inbound message and each loss report, with the
	// group it belongs to (0 outside host mode).
	deliver func(group uint64, m Message)
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
	return newTCPTransport(cfg, false)
}

// newTCPTransport is NewTCPTransport, in host mode when host is set (see
// TCPTransport.host).
func newTCPTransport(cfg TCPConfig, host bool) (*TCPTransport, error) {
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
		host:      host,
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
	switch {
	case cfg.TLS != nil && cfg.InsecureSkipNodeIDCheck:
		t.logger.Info("node IDs are not bound to TLS certificates (InsecureSkipNodeIDCheck): any peer that passes TLS may claim any node ID")
	case cfg.TLS != nil && !cfg.checksDialers():
		t.logger.Warn("TLS without client certificates: the node IDs that dialers claim are not authenticated; " +
			"set TLS.ClientCAs and ClientAuth: tls.RequireAndVerifyClientCert for mutual TLS")
	}
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
		IdentityRefused:    c.identityRefused.Load(),
		ConnsAccepted:      c.connsAccepted.Load(),
		ConnsRefused:       c.connsRefused.Load(),
		Dials:              c.dials.Load(),
		DialFailures:       c.dialFailures.Load(),
		InboundConns:       inbound,
		OutboundConns:      int(c.outboundConns.Load()),
	}
}

// version is the protocol version the transport speaks (tcp_wire.go).
func (t *TCPTransport) version() byte {
	if t.host {
		return tcpHostVersion
	}
	return tcpVersion
}

// Attach starts delivering inbound messages addressed to node id. A
// TCPTransport serves one node once: Attach fails after Detach or Close.
func (t *TCPTransport) Attach(id uint64, deliver func(Message)) error {
	if deliver == nil {
		return errors.New("raft: TCP transport: nil deliver function")
	}
	return t.attach(id, func(_ uint64, m Message) { deliver(m) })
}

// attach is Attach with a deliver function that also takes the group of
// each message (host mode).
func (t *TCPTransport) attach(id uint64, deliver func(group uint64, m Message)) error {
	if id == 0 {
		return errors.New("raft: TCP transport: cannot attach node ID 0")
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
func (t *TCPTransport) Send(msgs []Message) { t.sendGroup(0, msgs) }

// sendGroup is Send for the messages of one group: in host mode each frame
// carries group, and losses are reported to it.
func (t *TCPTransport) sendGroup(group uint64, msgs []Message) {
	prefix := 0 // the group ID's bytes in each frame body
	if t.host {
		prefix = uvarintLen(group)
	}
	peers := *t.peers.Load()
	tm := t.metrics.Load()
	var unknown, tooLarge, full uint64
	var reports lossReports
	for i := range msgs {
		m := &msgs[i]
		p := peers[m.To]
		if p == nil {
			if p = t.learnedPeer(m.To); p == nil {
				unknown++
				tm.droppedTo(m.To, dropUnknownPeer, 1, 0)
				t.reportIf(&reports, group, m)
				continue
			}
		}
		size := m.EncodedSize() + prefix
		if size > t.cfg.MaxFrameSize {
			tooLarge++
			tm.droppedTo(m.To, dropTooLarge, 1, size)
			t.logger.Error("message larger than MaxFrameSize dropped", zap.Uint64("to", m.To),
				zap.Stringer("type", m.Type), zap.Int("size", size), zap.Int("maxFrameSize", t.cfg.MaxFrameSize))
			continue
		}
		if !p.senders[t.laneFor(m, size)].push(group, m, size) {
			full++
			tm.droppedTo(m.To, dropQueueFull, 1, size)
			t.reportIf(&reports, group, m)
		}
	}
	addIf(&t.stats.droppedUnknownPeer, unknown)
	addIf(&t.stats.droppedTooLarge, tooLarge)
	addIf(&t.stats.droppedQueueFull, full)
}

// maxCommandSize is the largest command an append of this transport can
// carry alone: MaxFrameSize less the most an append with one entry can
// take besides the command (every number at its longest, and the group ID
// in host mode). The Node refuses larger commands at Propose (ErrTooLarge):
// an entry that no frame can carry would stop replication, and with it
// every later commit, for good.
func (t *TCPTransport) maxCommandSize() int {
	const most = math.MaxUint64
	probe := Message{Type: MsgAppend, From: most, To: most, Term: most, Index: most, LogTerm: most, Commit: most,
		HintIndex: most, HintTerm: most, Context: most, Origin: most, Entries: []Entry{{Index: most, Term: most}}}
	overhead := probe.EncodedSize() + binary.MaxVarintLen64 // the command's length, at its longest
	if t.host {
		overhead += binary.MaxVarintLen64
	}
	return t.cfg.MaxFrameSize - overhead
}

// laneFor picks the lane of a message whose encoding takes size bytes.
// Appends and snapshot chunks go on the bulk lane, so that they never delay
// heartbeats, votes and responses, and other messages larger than
// BulkThreshold join them. Every append to a peer takes the same lane,
// whatever its size: two connections do not keep order between them, and
// a small append that overtook a large one on the other lane would find a
// gap in the follower's log, be rejected and be sent again (with commands
// of a few KiB, a third of the entries went twice). Heartbeats may still
// overtake appends; they carry a commit index no higher than what the
// follower acknowledged (broadcastHeartbeat), so that is harmless. All the
// chunks of a snapshot take the same lane, the last (often short) one
// included.
func (t *TCPTransport) laneFor(m *Message, size int) tcpLane {
	if m.Type == MsgAppend || m.Type == MsgSnapshot || size > t.cfg.BulkThreshold {
		return tcpLaneBulk
	}
	return tcpLaneControl
}

// instrument makes t record to m (nil: nothing); the Node calls it.
func (t *TCPTransport) instrument(m *transportMetrics) { t.metrics.Store(m) }

// report tells the Node (of group, on a Host) that m was lost (see
// Unreachable).
func (t *TCPTransport) report(group uint64, m *Message) {
	self := t.node.Load()
	if self == nil || !t.gate.enter() {
		return
	}
	self.deliver(group, Unreachable(*m))
	t.gate.exit()
}

// reportIf reports m unless reports has one like it.
func (t *TCPTransport) reportIf(reports *lossReports, group uint64, m *Message) {
	if reports.wantsIn(group, m) {
		t.report(group, m)
	}
}

// reportLost reports the messages of a batch that was lost: its snapshot
// chunks, each of which the Node sends again, and its first message (per
// group), which tells that the peer is unreachable.
func (t *TCPTransport) reportLost(lost []tcpQueued) {
	var reports lossReports
	for i := range lost {
		t.reportIf(&reports, lost[i].group, &lost[i].msg)
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
		if old != nil && old.addr != m.Addr {
			// (A peer answered from its handshake that is now a member at
			// the same address is only restarted as a member: not news.)
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
