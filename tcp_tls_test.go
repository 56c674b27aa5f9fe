package raft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
)

// Tests of TCPTransport under TLS and mutual TLS, with a throwaway
// certificate authority: strangers refused, and node IDs bound to
// certificates (tcp_identity.go): impostors refused on both sides of the
// handshake, the default URI SAN scheme, the CertificateNodeID hook, and
// InsecureSkipNodeIDCheck.

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

// leaf issues a certificate for 127.0.0.1 usable by servers and clients,
// with uris (node identities) among its SANs.
func (p *testPKI) leaf(t *testing.T, name string, uris ...*url.URL) tls.Certificate {
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
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// nodeCert issues node id's certificate for the test cluster, naming the
// node in a URI SAN raft://test-cluster/node/<id>.
func (p *testPKI) nodeCert(t *testing.T, id uint64) tls.Certificate {
	t.Helper()
	return p.leaf(t, fmt.Sprint("node ", id), NodeIdentityURI(tcpTestCluster, id))
}

// mutualTLS is the configuration docs/tcp.md recommends: one config per
// node, for both its listener and its dialer, with the node's certificate.
func (p *testPKI) mutualTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
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
		a, b, inA, inB := tcpPair(t, TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 1))}, TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 2))})
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
	b := newTestTCP(t, "b", TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 2))})
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
		cfg := rogue.mutualTLS(rogue.nodeCert(t, 3))
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

// ---- Node IDs bound to certificates ----

// tlsHandshake dials addr over TLS presenting cert, sends the hello of node
// from to node to, and returns the connection and the reply's status.
func (p *testPKI) tlsHandshake(t *testing.T, addr string, cert tls.Certificate, from, to uint64) (net.Conn, tcpStatus) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: p.pool, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write(helloBytes(from, to, tcpTestCluster))
	require.NoError(t, err)
	return conn, readReply(t, conn)
}

func TestTCPMutualTLSCertificateMustNameTheClaimedNode(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	logger, logs := observedLogger()
	b := newTestTCP(t, "b", TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 2)), Logger: logger})
	inB := attachInbox(t, b, 2)
	// Every certificate below is valid (the cluster's CA issued it); each
	// claims to be node 1 and is not.
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		reason string // in the log line
	}{
		{"node 4's certificate", pki.nodeCert(t, 4), "the client certificate is node 4's, the hello claims node 1"},
		{"a certificate without a node identity", pki.leaf(t, "no identity"), "names no node ID"},
		{"node 1 of another cluster", pki.leaf(t, "elsewhere", NodeIdentityURI("other-cluster", 1)), "names no node ID"},
		{"two node identities", pki.leaf(t, "two", NodeIdentityURI(tcpTestCluster, 1), NodeIdentityURI(tcpTestCluster, 3)), "names two nodes"},
		{"a malformed node identity", pki.leaf(t, "zero-padded", &url.URL{Scheme: "raft", Host: tcpTestCluster, Path: "/node/01"}), "not a non-zero decimal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats()
			logs.TakeAll() // forget earlier lines
			conn, status := pki.tlsHandshake(t, b.Addr(), tc.cert, 1, 2)
			assert.Equal(t, tcpRefusedIdentity, status)
			_, _ = conn.Write(frame(t, heartbeat(1, 2, 1))) // the connection is closed: this may fail
			require.True(t, closedByPeer(t, conn, 5*time.Second))
			after := b.Stats()
			assert.Equal(t, before.IdentityRefused+1, after.IdentityRefused)
			assert.Equal(t, before.HandshakesRefused+1, after.HandshakesRefused)
			// One Warn line, with the reason.
			logged := logs.FilterLevelExact(zapcore.WarnLevel).All()
			require.Len(t, logged, 1)
			assert.Contains(t, logged[0].Message, "certificate does not name the node ID")
			assert.Contains(t, logged[0].ContextMap()["error"], tc.reason)
		})
	}
	// Node 1's own certificate speaks as node 1.
	conn, status := pki.tlsHandshake(t, b.Addr(), pki.nodeCert(t, 1), 1, 2)
	require.Equal(t, tcpAccepted, status)
	_, err := conn.Write(frame(t, heartbeat(1, 2, 7)))
	require.NoError(t, err)
	inB.waitCount(t, 1)
	assert.Equal(t, []Message{heartbeat(1, 2, 7)}, inB.all(), "nothing delivered from the refused connections")

	// A listener that verifies client certificates only when given: a
	// dialer without one cannot speak.
	optional := pki.mutualTLS(pki.nodeCert(t, 2))
	optional.ClientAuth = tls.VerifyClientCertIfGiven
	c := newTestTCP(t, "c", TCPConfig{TLS: optional})
	inC := attachInbox(t, c, 2)
	anonymous, err := tls.Dial("tcp", c.Addr(), &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	defer anonymous.Close()
	_, err = anonymous.Write(helloBytes(1, 2, tcpTestCluster))
	require.NoError(t, err)
	assert.Equal(t, tcpRefusedIdentity, readReply(t, anonymous))
	assert.True(t, closedByPeer(t, anonymous, 5*time.Second))
	assert.Equal(t, uint64(1), c.Stats().IdentityRefused)
	assert.Zero(t, inC.count())
}

// TestTCPClusterOverMutualTLSRefusesImpostors is the attack of a peer
// holding a valid certificate: as node 2, with a term of 2^40, it moved
// every node's term before node IDs were bound to certificates.
func TestTCPClusterOverMutualTLSRefusesImpostors(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	c := newTCPClusterTuned(t, 3, nil, nil, func(id uint64, cfg *TCPConfig) {
		cfg.TLS = pki.mutualTLS(pki.nodeCert(t, id))
	})
	// Each node's own certificate works: the cluster elects and replicates.
	c.waitLeader()
	last := c.proposeMany("before", 10)
	c.waitAllApplied(last)

	const hugeTerm = 1 << 40
	victims := []uint64{1, 3}
	for _, impostor := range []struct {
		name string
		cert tls.Certificate
	}{
		{"node 4's certificate", pki.nodeCert(t, 4)},
		{"a certificate without a node identity", pki.leaf(t, "no identity")},
	} {
		t.Run(impostor.name, func(t *testing.T) {
			tr := newTestTCP(t, "impostor", TCPConfig{TLS: pki.mutualTLS(impostor.cert),
				DialBackoff: 5 * time.Millisecond, MaxDialBackoff: 20 * time.Millisecond})
			attachInbox(t, tr, 2)
			tr.SetPeers([]Member{{ID: 1, Addr: c.addrs[1]}, {ID: 3, Addr: c.addrs[3]}})
			refusedBefore := map[uint64]uint64{}
			for _, v := range victims {
				refusedBefore[v] = c.transports[v].Stats().IdentityRefused
			}
			everyVictimRefused := func() bool {
				for _, v := range victims {
					if c.transports[v].Stats().IdentityRefused == refusedBefore[v] {
						return false
					}
				}
				return true
			}
			require.Eventually(t, func() bool {
				var msgs []Message
				for _, v := range victims {
					msgs = append(msgs, Message{Type: MsgHeartbeat, From: 2, To: v, Term: hugeTerm},
						Message{Type: MsgVote, From: 2, To: v, Term: hugeTerm, Index: hugeTerm, LogTerm: hugeTerm})
				}
				tr.Send(msgs)
				st := tr.Stats()
				return st.Sent > 0 || everyVictimRefused() && st.DialFailures > 0
			}, 10*time.Second, 5*time.Millisecond)
			assert.Zero(t, tr.Stats().Sent, "the impostor got past the handshake")
			assert.True(t, everyVictimRefused())
		})
	}
	for _, id := range c.ids {
		assert.Less(t, c.nodes[id].Status().Term, uint64(hugeTerm), "node %d's term moved", id)
	}
	// The cluster goes on.
	last = c.proposeMany("after", 10)
	c.waitAllApplied(last)
	c.checkSameHistory()
}

func TestTCPDialerChecksTheServersNodeIdentity(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	// a (node 1) knows b's address as node 2's; b does not know a, so
	// that only a dials.
	pair := func(t *testing.T, serverCert tls.Certificate, cfgA TCPConfig) (a *TCPTransport, inB *tcpInbox) {
		cfgA.TLS = pki.mutualTLS(pki.nodeCert(t, 1))
		a, b := newTestTCP(t, "a", cfgA), newTestTCP(t, "b", TCPConfig{TLS: pki.mutualTLS(serverCert)})
		attachInbox(t, a, 1)
		inB = attachInbox(t, b, 2)
		a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
		return a, inB
	}
	t.Run("the server's certificate names another node", func(t *testing.T) {
		// Node 2's address leads to the holder of node 3's certificate (a
		// stale address, say): node 2's messages must not go there.
		logger, logs := observedLogger()
		a, inB := pair(t, pki.nodeCert(t, 3), TCPConfig{Logger: logger, DialBackoff: time.Millisecond, MaxDialBackoff: 5 * time.Millisecond})
		require.Eventually(t, func() bool {
			a.Send([]Message{heartbeat(1, 2, 1)})
			return a.Stats().DialFailures >= 3 || inB.count() > 0
		}, 10*time.Second, time.Millisecond)
		assert.Zero(t, inB.count())
		assert.Zero(t, a.Stats().Sent)
		// Counted before the failure: every failed dial was a refusal.
		assert.GreaterOrEqual(t, a.Stats().IdentityRefused, uint64(3))
		// One Warn line for the streak of refused dials, with the reason.
		warned := logs.FilterLevelExact(zapcore.WarnLevel).All()
		require.Len(t, warned, 1)
		assert.Contains(t, warned[0].ContextMap()["error"], "the server's certificate is node 3's, not node 2's")
	})
	t.Run("the server's certificate names no node", func(t *testing.T) {
		a, inB := pair(t, pki.leaf(t, "shared"), TCPConfig{})
		a.Send([]Message{heartbeat(1, 2, 1)})
		inB.waitCount(t, 1)
		assert.Zero(t, a.Stats().IdentityRefused)
	})
	t.Run("binding off", func(t *testing.T) {
		a, inB := pair(t, pki.nodeCert(t, 3), TCPConfig{InsecureSkipNodeIDCheck: true})
		a.Send([]Message{heartbeat(1, 2, 1)})
		inB.waitCount(t, 1)
		assert.Zero(t, a.Stats().IdentityRefused)
	})
}

func TestTCPCertificateNodeIDHook(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	// The application's own scheme: the common name "node-<ID>".
	var calls atomic.Int64
	byCommonName := func(cert *x509.Certificate) (uint64, error) {
		calls.Add(1)
		digits, ok := strings.CutPrefix(cert.Subject.CommonName, "node-")
		if !ok {
			return 0, nil
		}
		return strconv.ParseUint(digits, 10, 64)
	}
	withHook := func(name string) TCPConfig {
		return TCPConfig{TLS: pki.mutualTLS(pki.leaf(t, name)), CertificateNodeID: byCommonName}
	}
	a, b, inA, inB := tcpPair(t, withHook("node-1"), withHook("node-2"))
	a.Send([]Message{heartbeat(1, 2, 1)})
	b.Send([]Message{heartbeat(2, 1, 1)})
	inB.waitCount(t, 1)
	inA.waitCount(t, 1)
	assert.GreaterOrEqual(t, calls.Load(), int64(4), "both sides of both connections asked the hook")

	// The hook replaces the default scheme: a URI SAN naming node 1 does
	// not make node 4 node 1.
	_, status := pki.tlsHandshake(t, b.Addr(), pki.leaf(t, "node-4", NodeIdentityURI(tcpTestCluster, 1)), 1, 2)
	assert.Equal(t, tcpRefusedIdentity, status)
	assert.Equal(t, 1, inB.count())

	t.Run("a hook that fails or panics refuses the handshake", func(t *testing.T) {
		for name, hook := range map[string]func(*x509.Certificate) (uint64, error){
			"error": func(*x509.Certificate) (uint64, error) { return 0, errors.New("revoked") },
			"panic": func(*x509.Certificate) (uint64, error) { panic("bug in the hook") },
		} {
			c := newTestTCP(t, name, TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 3)), CertificateNodeID: hook})
			inC := attachInbox(t, c, 3)
			for range 2 { // and the transport goes on refusing
				_, status := pki.tlsHandshake(t, c.Addr(), pki.nodeCert(t, 1), 1, 3)
				assert.Equal(t, tcpRefusedIdentity, status, name)
			}
			assert.Zero(t, inC.count(), name)
		}
	})
}

func TestTCPInsecureSkipNodeIDCheckAcceptsAnyClaim(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	b := newTestTCP(t, "b", TCPConfig{TLS: pki.mutualTLS(pki.nodeCert(t, 2)), InsecureSkipNodeIDCheck: true})
	inB := attachInbox(t, b, 2)
	for i, cert := range []tls.Certificate{pki.nodeCert(t, 4), pki.leaf(t, "no identity")} {
		conn, status := pki.tlsHandshake(t, b.Addr(), cert, 1, 2)
		require.Equal(t, tcpAccepted, status)
		_, err := conn.Write(frame(t, heartbeat(1, 2, uint64(i))))
		require.NoError(t, err)
		inB.waitCount(t, i+1)
	}
	assert.Zero(t, b.Stats().IdentityRefused)
	// A stranger is still refused: turning the binding off keeps TLS.
	rogue := newTestPKI(t, "rogue CA")
	conn, err := tls.Dial("tcp", b.Addr(), &tls.Config{Certificates: []tls.Certificate{rogue.nodeCert(t, 1)}, RootCAs: pki.pool, MinVersion: tls.VersionTLS13})
	if err == nil {
		defer conn.Close()
		_, _ = conn.Write(helloBytes(1, 2, tcpTestCluster))
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = io.ReadFull(conn, make([]byte, tcpReplySize))
	}
	assert.Error(t, err)
	assert.Equal(t, 2, inB.count())
}

func TestTCPConfigValidateNodeIDBinding(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	mutual := pki.mutualTLS(pki.nodeCert(t, 1))
	unverified := mutual.Clone()
	unverified.ClientAuth = tls.RequireAnyClientCert
	verifiedByApp := unverified.Clone()
	verifiedByApp.VerifyConnection = func(tls.ConnectionState) error { return nil }
	hook := func(*x509.Certificate) (uint64, error) { return 1, nil }
	for _, tc := range []struct {
		name    string
		cfg     TCPConfig
		wantErr string // empty: valid
	}{
		{"default scheme", TCPConfig{ClusterID: "orders-prod.eu_1~a", TLS: mutual}, ""},
		{"default scheme, empty cluster ID", TCPConfig{TLS: mutual}, ""},
		{"cluster ID that cannot be a URI host", TCPConfig{ClusterID: "orders prod", TLS: mutual}, "ClusterID"},
		{"cluster ID with an empty label", TCPConfig{ClusterID: "orders..prod", TLS: mutual}, "ClusterID"},
		{"such a cluster ID with a hook", TCPConfig{ClusterID: "orders prod", TLS: mutual, CertificateNodeID: hook}, ""},
		{"such a cluster ID, binding off", TCPConfig{ClusterID: "orders prod", TLS: mutual, InsecureSkipNodeIDCheck: true}, ""},
		{"such a cluster ID without TLS", TCPConfig{ClusterID: "orders prod"}, ""},
		{"hook without TLS", TCPConfig{CertificateNodeID: hook}, "CertificateNodeID"},
		{"hook with binding off", TCPConfig{TLS: mutual, CertificateNodeID: hook, InsecureSkipNodeIDCheck: true}, "InsecureSkipNodeIDCheck"},
		{"client certificates not verified", TCPConfig{TLS: unverified}, "ClientAuth"},
		{"client certificates verified by the application", TCPConfig{TLS: verifiedByApp}, ""},
		{"client certificates not verified, binding off", TCPConfig{TLS: unverified, InsecureSkipNodeIDCheck: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ListenAddr = "127.0.0.1:0"
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestNodeIDFromCertificate(t *testing.T) {
	pki := newTestPKI(t, "cluster CA")
	// NodeIdentityURI survives issuing and parsing a certificate for every
	// cluster ID that Validate accepts.
	for _, cluster := range []string{"", "orders-prod", "orders.eu-1_a~b", "UPPER"} {
		cert := pki.leaf(t, "node", NodeIdentityURI(cluster, 1<<63))
		parsed, err := x509.ParseCertificate(cert.Certificate[0])
		require.NoError(t, err, cluster)
		id, err := NodeIDFromCertificate(parsed, cluster)
		require.NoError(t, err, cluster)
		assert.Equal(t, uint64(1<<63), id, cluster)
	}
	assert.Equal(t, "raft://orders-prod/node/2", NodeIdentityURI("orders-prod", 2).String())
	assert.Equal(t, "raft:///node/2", NodeIdentityURI("", 2).String())

	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		require.NoError(t, err)
		return u
	}
	for _, tc := range []struct {
		name    string
		uris    []string
		want    uint64
		wantErr bool
	}{
		{"no URI", nil, 0, false},
		{"one node", []string{"raft://c/node/2"}, 2, false},
		{"largest ID", []string{"raft://c/node/18446744073709551615"}, 1<<64 - 1, false},
		{"the same node twice", []string{"raft://c/node/2", "RAFT://c/node/2"}, 2, false},
		{"other schemes and clusters are ignored", []string{"spiffe://c/node/3", "raft://d/node/4", "raft://c/node/2"}, 2, false},
		{"only another cluster", []string{"raft://d/node/2"}, 0, false},
		{"two nodes", []string{"raft://c/node/2", "raft://c/node/3"}, 0, true},
		{"node 0", []string{"raft://c/node/0"}, 0, true},
		{"leading zero", []string{"raft://c/node/02"}, 0, true},
		{"sign", []string{"raft://c/node/+2"}, 0, true},
		{"not a number", []string{"raft://c/node/two"}, 0, true},
		{"too large", []string{"raft://c/node/18446744073709551616"}, 0, true},
		{"more path", []string{"raft://c/node/2/x"}, 0, true},
		{"other path", []string{"raft://c/nodes/2"}, 0, true},
		{"query", []string{"raft://c/node/2?x=1"}, 0, true},
		{"fragment", []string{"raft://c/node/2#x"}, 0, true},
		{"user", []string{"raft://u@c/node/2"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := &x509.Certificate{}
			for _, s := range tc.uris {
				cert.URIs = append(cert.URIs, uri(s))
			}
			id, err := NodeIDFromCertificate(cert, "c")
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, id)
		})
	}
	_, err := NodeIDFromCertificate(nil, "c")
	assert.Error(t, err)
}
