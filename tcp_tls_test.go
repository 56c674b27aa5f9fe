package raft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of TCPTransport under TLS and mutual TLS, with a throwaway
// certificate authority.

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
