package raft

// The wire format of TCPTransport (tcp.go). docs/tcp.md is the user's guide;
// this comment is the reference for the bytes on the wire, precise enough to
// write a compatible peer in another language. This file holds the format's
// constants and the encoding of the hello and its reply; tcp_outbound.go
// dials and writes frames, tcp_inbound.go accepts and reads them.
//
// Connections. Every node listens on one address. To send, a node dials the
// receiver and keeps the connection open; it only writes to it. A node
// therefore holds, for each peer, its own outbound connections (on which it
// writes) and the peer's inbound connections (from which it reads). Each
// direction has up to two connections, one per lane:
//
//	lane 0, control: heartbeats, votes, responses and every other message
//	                 whose encoding is at most TCPConfig.BulkThreshold bytes
//	lane 1, bulk:    appends (MsgAppend, of any size, so that they arrive
//	                 in the order they were sent), snapshot chunks
//	                 (MsgSnapshot) and other messages larger than
//	                 BulkThreshold, so that they never queue in front of
//	                 heartbeats
//
// A receiver accepts any message on either lane; the lane only decides what
// may overtake what. (Releases before the appends moved sent appends up to
// BulkThreshold on the control lane; peers of either kind work together.)
//
// The control connection to a member is dialed as soon as the member is
// known (so that a node that starts makes itself known to its peers), and
// again whenever there is something to send on it; the bulk connection is
// dialed the first time an append, a snapshot chunk or a large message is
// sent. An inbound connection from
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
//	                       acceptor's own ID); 6 the dialer's TLS client
//	                       certificate does not name the node ID "from"
//	                       (tcp_identity.go)
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
//
// Host mode (version 2). A Host (host.go) runs many Raft groups and carries
// the messages of all of them over the same connections; a group's members
// are hosts, so "from" and "to" are host IDs. Its hello is the one above
// with version 2, and every frame body starts with the group's ID:
//
//	length       4 bytes   big-endian unsigned L, counting the group ID
//	group        uvarint   the group's ID, non-zero, minimal (as in codec.go)
//	message      the rest: one Message in the binary encoding of codec.go
//
// A Host sends only version-2 hellos and accepts only those; a single-node
// TCPTransport sends only version 1 and accepts only version 1, so each
// refuses the other with status 1 (unsupported version), as a transport
// of an earlier release, which knows only version 1, refuses a Host.
// Frames and rules are otherwise those of version 1: a frame whose group
// ID does not decode, is 0 or is not minimal closes the connection; a
// message for a group the host does not run is dropped (counted) and the
// connection stays open.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire constants; see the top of this file.
const (
	tcpMagic          = "RKTP"
	tcpVersion        = 1
	tcpHelloFixedSize = 4 + 1 + 1 + 8 + 8 + 1 // magic, version, lane, from, to, cluster len
	tcpReplySize      = 4 + 1 + 1
	tcpFrameHeader    = 4
	tcpWriteBuffer    = 64 << 10
	tcpReadBuffer     = 64 << 10
	tcpEagerFrame     = 2 << 20 // frames up to this size get their whole buffer at once (readFrameBody)
	tcpMaxLearned     = 16      // addresses learned from handshakes of non-members
)

// tcpHostVersion is the protocol version of host mode, whose frames carry a
// group ID (see the top of this file); tcpVersion is a single node's.
const tcpHostVersion = 2

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
	tcpRefusedIdentity
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
	case tcpRefusedIdentity:
		return "the dialer's certificate does not name the node ID it claims"
	}
	return fmt.Sprintf("unknown status %d", uint8(s))
}

var (
	errTCPClosed      = errors.New("raft: TCP transport closed")
	errTCPBadMagic    = errors.New("not a raftkit TCP transport (wrong magic)")
	errTCPNotAttached = errors.New("transport not attached to a node")
)

// tcpRefusedError is a handshake refused by the peer, whose reply named
// its protocol version.
type tcpRefusedError struct {
	status  tcpStatus
	version byte // the peer's
	ours    byte // the version this side sent; 0 means tcpVersion
}

func (e *tcpRefusedError) Error() string {
	if e.status == tcpRefusedVersion {
		ours := cmp.Or(e.ours, tcpVersion)
		return fmt.Sprintf("handshake refused by the peer: %v (this node speaks %d, the peer %d)", e.status, ours, e.version) +
			hostModeHint(ours, e.version, "the peer")
	}
	return "handshake refused by the peer: " + e.status.String()
}

// hostModeHint explains a version mismatch between a Host and a single
// node's transport, which otherwise reads like two releases that cannot
// talk; other is who speaks version theirs ("the peer", "the dialer").
func hostModeHint(ours, theirs byte, other string) string {
	switch {
	case ours == tcpHostVersion && theirs == tcpVersion:
		return "; " + other + " is a single node's TCPTransport (or a release without hosts), and a Host connects only to Hosts"
	case ours == tcpVersion && theirs == tcpHostVersion:
		return "; " + other + " is a Host, which multiplexes Raft groups and connects only to Hosts, not to a single node's TCPTransport"
	}
	return ""
}

// ---- The handshake ----

// tcpHello is the handshake a dialer sends; see the top of this file.
type tcpHello struct {
	version  byte // written; 0 means tcpVersion (a reader leaves it 0: it knows which it read)
	lane     tcpLane
	from, to uint64
	cluster  string
	addr     string
}

func (h *tcpHello) appendTo(buf []byte) []byte {
	buf = append(buf, tcpMagic...)
	buf = append(buf, cmp.Or(h.version, tcpVersion), byte(h.lane))
	buf = binary.BigEndian.AppendUint64(buf, h.from)
	buf = binary.BigEndian.AppendUint64(buf, h.to)
	buf = append(buf, byte(len(h.cluster)))
	buf = append(buf, h.cluster...)
	buf = append(buf, byte(len(h.addr)))
	return append(buf, h.addr...)
}

// tcpVersionError is a hello of another protocol version.
type tcpVersionError struct {
	version byte // the hello's
	ours    byte // the version the acceptor speaks; 0 means tcpVersion
}

func (e *tcpVersionError) Error() string {
	ours := cmp.Or(e.ours, tcpVersion)
	return fmt.Sprintf("unsupported protocol version %d (this node speaks %d)", e.version, ours) +
		hostModeHint(ours, e.version, "the dialer")
}

// readTCPHello reads a version-1 hello (a single node's) from r; see
// readTCPHelloOf.
func readTCPHello(r io.Reader) (tcpHello, error) { return readTCPHelloOf(r, tcpVersion) }

// readTCPHelloOf reads a hello of the given version from r, which the
// caller bounds with a deadline; a hello of another version is a
// *tcpVersionError. It reads exactly the hello's bytes and allocates at
// most the two strings of at most 255 bytes each.
func readTCPHelloOf(r io.Reader, version byte) (tcpHello, error) {
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
	if fixed[4] != version {
		return h, &tcpVersionError{version: fixed[4], ours: version}
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

// tcpReply is a single node's reply (version 1).
func tcpReply(status tcpStatus) []byte { return tcpReplyOf(tcpVersion, status) }

// tcpReplyOf is the reply of an acceptor that speaks version.
func tcpReplyOf(version byte, status tcpStatus) []byte {
	return append([]byte(tcpMagic), version, byte(status))
}
