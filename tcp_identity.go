package raft

// Node identities in TLS certificates (TCPConfig.CertificateNodeID and
// InsecureSkipNodeIDCheck): the default scheme, a URI SAN
// raft://<ClusterID>/node/<ID>, and the checks that the two sides of the
// handshake make with it (tcp_inbound.go, tcp_outbound.go). docs/tcp.md
// shows how to issue such certificates.
//
// Why the check exists: the node ID in the hello becomes the From of every
// message read from the connection, and the core trusts From. TLS alone
// only proves that the peer holds some certificate of the cluster's CA; if
// that peer may say it is any node, one certificate lets its holder vote as
// every member, acknowledge entries that no majority stored (the commit
// rule counts a match index per ID, Figure 2), or send a huge term that
// every node adopts, stepping the leader down (§5.1). Binding the ID to the
// certificate limits each certificate to the one node it was issued for.
//
// Why a URI SAN by default: subject alternative names are where X.509
// puts the identities a certificate vouches for (RFC 5280 §4.2.1.6), and a
// URI is how workload identities are usually written there (SPIFFE IDs
// are URI SANs), so CAs and tools already issue them; the common name is
// free text that often holds a host or a person's name, and reading a node
// ID out of it would misread certificates issued for something else. The
// cluster ID in the URI keeps a certificate issued for node 2 of one
// cluster from speaking as node 2 of another cluster that shares the CA.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// nodeIdentityScheme is the URI scheme of the default node identity.
const nodeIdentityScheme = "raft"

// errTCPIdentity is wrapped by every handshake refused because a
// certificate does not name the node ID the peer claims or was dialed as.
var errTCPIdentity = errors.New("certificate does not identify the node")

// NodeIdentityURI returns the URI that names node id of the cluster
// clusterID under the default scheme of TCPConfig.CertificateNodeID:
// raft://<clusterID>/node/<id>, for example raft://orders-prod/node/2
// (raft:///node/2 when the cluster ID is empty). Put it in the URIs of a
// node's certificate (x509.Certificate.URIs) when issuing it; docs/tcp.md
// shows the same with openssl.
func NodeIdentityURI(clusterID string, id uint64) *url.URL {
	return &url.URL{Scheme: nodeIdentityScheme, Host: clusterID, Path: "/node/" + strconv.FormatUint(id, 10)}
}

// NodeIDFromCertificate returns the node ID that cert names for the
// cluster clusterID under the default scheme: a URI SAN
// raft://<clusterID>/node/<id> (see NodeIdentityURI), with id a non-zero
// decimal number without leading zeros. URIs of other schemes and of
// other clusters are ignored. It returns 0 and no error when the
// certificate names no node of this cluster, and an error when it names
// one in a malformed URI or names two different nodes. A hook set in
// TCPConfig.CertificateNodeID can call it to accept the default scheme
// besides its own.
func NodeIDFromCertificate(cert *x509.Certificate, clusterID string) (uint64, error) {
	if cert == nil {
		return 0, errors.New("no certificate")
	}
	var id uint64
	for _, u := range cert.URIs {
		if u.Scheme != nodeIdentityScheme || u.Host != clusterID {
			continue
		}
		named, err := nodeIDFromPath(u)
		if err != nil {
			return 0, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		if id != 0 && named != id {
			return 0, fmt.Errorf("the certificate names two nodes of cluster %q: %d and %d", clusterID, id, named)
		}
		id = named
	}
	return id, nil
}

// nodeIDFromPath reads the ID of a URI raft://<cluster>/node/<id>.
func nodeIDFromPath(u *url.URL) (uint64, error) {
	const want = "want raft://<cluster ID>/node/<node ID>"
	digits, ok := strings.CutPrefix(u.Path, "/node/")
	if !ok || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return 0, errors.New(want)
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != digits {
		return 0, fmt.Errorf("node ID %q is not a non-zero decimal number; %s", digits, want)
	}
	return id, nil
}

// validIdentityHost reports whether a cluster ID can be the host of a URI
// SAN that both url.Parse and crypto/x509 accept: letters, digits and
// "-._~", in labels that are separated by single dots. The empty cluster
// ID is valid (raft:///node/<id>).
func validIdentityHost(s string) bool {
	if s == "" {
		return true
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return false
		}
		for _, c := range []byte(label) {
			letterOrDigit := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
			if !letterOrDigit && c != '-' && c != '_' && c != '~' {
				return false
			}
		}
	}
	return true
}

// bindsNodeIDs reports whether node IDs are checked against certificates:
// with TLS, unless turned off.
func (c *TCPConfig) bindsNodeIDs() bool {
	return c.TLS != nil && !c.InsecureSkipNodeIDCheck
}

// checksDialers reports whether the acceptor checks the node ID of each
// dialer against its client certificate: when node IDs are bound and the
// listener asks for client certificates. With server-only TLS a dialer has
// no certificate to check.
func (c *TCPConfig) checksDialers() bool {
	return c.bindsNodeIDs() && (c.TLS.ClientAuth != tls.NoClientCert || c.TLS.GetConfigForClient != nil)
}

// certNodeID returns the node ID that cert names, through the configured
// hook or the default scheme. A panicking hook refuses the handshake
// rather than take the process down: it runs on certificates that peers
// present.
func (t *TCPTransport) certNodeID(cert *x509.Certificate) (id uint64, err error) {
	if t.cfg.CertificateNodeID == nil {
		return NodeIDFromCertificate(cert, t.cfg.ClusterID)
	}
	defer func() {
		if r := recover(); r != nil {
			id, err = 0, fmt.Errorf("CertificateNodeID panicked: %v", r)
		}
	}()
	return t.cfg.CertificateNodeID(cert)
}

// checkDialer checks, on the acceptor, that the client certificate of an
// inbound connection names the node its hello claims. A dialer without a
// certificate, or whose certificate names no node, is refused too: a
// certificate that names nobody could speak as anybody.
func (t *TCPTransport) checkDialer(state *tls.ConnectionState, claimed uint64) error {
	if state == nil || len(state.PeerCertificates) == 0 {
		return fmt.Errorf("%w: the dialer presented no client certificate", errTCPIdentity)
	}
	id, err := t.certNodeID(state.PeerCertificates[0])
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", errTCPIdentity, err)
	case id == 0:
		return fmt.Errorf("%w: the client certificate names no node ID", errTCPIdentity)
	case id != claimed:
		return fmt.Errorf("%w: the client certificate is node %d's, the hello claims node %d", errTCPIdentity, id, claimed)
	}
	return nil
}

// checkServer checks, on the dialer, that the server certificate of a
// connection to peer names that node, when it names a node at all, so that
// an address that leads to another node (a stale or wrong Member.Addr, a
// moved DNS name) gets none of peer's messages. A server certificate
// without a node identity is accepted: nothing the server sends reaches
// the node (an acceptor only answers the hello), so it cannot speak as
// anyone; its certificate still had to pass TLS.
func (t *TCPTransport) checkServer(state *tls.ConnectionState, peer uint64) error {
	if len(state.PeerCertificates) == 0 {
		return nil
	}
	id, err := t.certNodeID(state.PeerCertificates[0])
	switch {
	case err != nil:
		return fmt.Errorf("%w: server certificate: %w", errTCPIdentity, err)
	case id != 0 && id != peer:
		return fmt.Errorf("%w: the server's certificate is node %d's, not node %d's", errTCPIdentity, id, peer)
	}
	return nil
}

// certificateSummary describes a peer's certificate for a log line.
func certificateSummary(state *tls.ConnectionState) (subject string, uris []string) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return "", nil
	}
	leaf := state.PeerCertificates[0]
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	return leaf.Subject.String(), uris
}
