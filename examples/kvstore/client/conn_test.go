package client

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// connTracker counts the connections a test server accepted.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (c *connTracker) track(conn net.Conn, state http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		c.conns = map[net.Conn]bool{}
	}
	if state == http.StateNew {
		c.conns[conn] = true
	}
}

func (c *connTracker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

func TestClient_ReusesItsConnection(t *testing.T) {
	var conns connTracker
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, `{"revision":1}`)
	}))
	srv.Config.ConnState = conns.track
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	for range 5 {
		_, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
		require.NoError(t, err)
	}
	assert.Equal(t, 1, conns.count(), "one caller at a time: one connection, kept")
}

// oneShotServer answers one request per connection, then, once closeIdle
// is closed, closes it as a node closes an idle connection (over TLS with
// a close_notify alert first); it counts the connections it accepted.
func oneShotServer(t *testing.T, tlsConfig *tls.Config, closeIdle <-chan struct{}) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				io.Copy(io.Discard, req.Body)
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"revision\":1}")
			}
			<-closeIdle // later than the answer: the client has read it whole
			conn.Close()
		}
	}()
	return ln.Addr().String(), accepted
}

// A node closes a connection that stayed idle (its IdleTimeout), or it
// restarted: the client must see it before it sends a write on it, which
// would be lost with an unknown outcome. Over TLS the node's close_notify
// alert arrives first.
func TestClient_DoesNotSendAWriteOnAConnectionTheNodeClosed(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[useTLS], func(t *testing.T) {
			var serverTLS *tls.Config
			var c *Client
			closeIdle := make(chan struct{})
			if useTLS {
				// httptest's certificate, for 127.0.0.1.
				ts := httptest.NewTLSServer(http.NotFoundHandler())
				serverTLS = ts.TLS.Clone()
				roots := x509.NewCertPool()
				roots.AddCert(ts.Certificate())
				ts.Close()
				addr, accepted := oneShotServer(t, serverTLS, closeIdle)
				c = NewTLS(&tls.Config{RootCAs: roots}, addr)
				testClosedIdleConnection(t, c, "https://"+addr, accepted, closeIdle)
				return
			}
			addr, accepted := oneShotServer(t, nil, closeIdle)
			c = New(addr)
			testClosedIdleConnection(t, c, "http://"+addr, accepted, closeIdle)
		})
	}
}

func testClosedIdleConnection(t *testing.T, c *Client, base string, accepted *atomic.Int32, closeIdle chan struct{}) {
	t.Cleanup(c.Close)
	_, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err)
	close(closeIdle)
	c.conns.mu.Lock()
	require.Len(t, c.conns.idle[base], 1, "the answer did not say Connection: close: the client keeps it")
	idle := c.conns.idle[base][0]
	c.conns.mu.Unlock()
	require.Eventually(t, func() bool { return !idle.alive() }, 5*time.Second, time.Millisecond,
		"the connection the node closed is seen as closed")

	_, err = c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err, "the write goes out on a new connection")
	assert.Equal(t, int32(2), accepted.Load())
}

func TestClient_SpeaksHTTP1WithAnyAnswerShape(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*inlineBody+5) // sent in two writes
	var conns connTracker
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if !assert.NoError(t, err) {
			return
		}
		switch r.URL.Path {
		case "/kv/big":
			assert.Equal(t, big, body)
			answer(w, http.StatusOK, `{"revision":2}`)
		case "/kv/chunked":
			// Flushing before the end makes the answer chunked.
			w.Header().Set("X-Revision", "3")
			w.Write([]byte("part1-"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/kv/close":
			w.Header().Set("Connection", "close")
			w.Header().Set("X-Revision", "4")
			w.Write([]byte("last"))
		}
	}))
	srv.Config.ConnState = conns.track
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)

	rev, err := c.Put(ctxFor(t, 5*time.Second), "big", big)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), rev)

	v, rev, err := c.Get(ctxFor(t, 5*time.Second), "chunked", Stale)
	require.NoError(t, err)
	assert.Equal(t, "part1-part2", string(v))
	assert.Equal(t, uint64(3), rev)

	v, rev, err = c.Get(ctxFor(t, 5*time.Second), "close", Stale)
	require.NoError(t, err)
	assert.Equal(t, "last", string(v))
	assert.Equal(t, uint64(4), rev)
	assert.Equal(t, 1, conns.count())

	_, _, err = c.Get(ctxFor(t, 5*time.Second), "chunked", Stale)
	require.NoError(t, err)
	assert.Equal(t, 2, conns.count(), "an answer with Connection: close ends the connection")
}

func TestReadResponse_ParsesWhatHTTP1Allows(t *testing.T) {
	for _, tc := range []struct {
		name, raw           string
		code                int
		body, revision, loc string
		reuse               bool
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Revision: 7\r\ncontent-type: x\r\n\r\nhello", 200, "hello", "7", "", true},
		{"lower-case names, spaces", "HTTP/1.1 307 Temporary Redirect\r\nlocation:  http://b/kv/k \r\ncontent-length:0\r\n\r\n", 307, "", "", "http://b/kv/k", true},
		{"chunked with trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n", 200, "abcde", "", "", true},
		{"interim answer first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", "", "", true},
		{"connection close", "HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n{}", 503, "{}", "", "", false},
		{"to the end of the connection", "HTTP/1.0 200 OK\r\n\r\nall of it", 200, "all of it", "", "", false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", "", "", true},
		{"LF only", "HTTP/1.1 404 Not Found\nContent-Length: 2\n\n{}", 404, "{}", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, reuse, err := readResponse(bufio.NewReader(strings.NewReader(tc.raw)))
			require.NoError(t, err)
			assert.Equal(t, tc.code, resp.code)
			assert.Equal(t, tc.body, string(resp.body))
			assert.Equal(t, tc.revision, resp.revision)
			assert.Equal(t, tc.loc, resp.location)
			assert.Equal(t, tc.reuse, reuse)
		})
	}
}

func TestReadResponse_RefusesWhatItCannotRead(t *testing.T) {
	for name, raw := range map[string]string{
		"empty":                "",
		"not HTTP":             "SSH-2.0-OpenSSH\r\n\r\n",
		"bad code":             "HTTP/1.1 2x0 OK\r\n\r\n",
		"bad length":           "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"two lengths":          "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"unknown coding":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"folded header":        "HTTP/1.1 200 OK\r\nX-Revision: 1\r\n 2\r\n\r\n",
		"truncated body":       "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"truncated headers":    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
		"truncated chunks":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
		"answer too large":     "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n",
		"header line too long": "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("x", 5000) + "\r\n\r\n",
	} {
		_, _, err := readResponse(bufio.NewReader(strings.NewReader(raw)))
		assert.Error(t, err, name)
	}
}

func TestClient_RefusesAnEndpointThatWouldBreakTheRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var accepted atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	addr := ln.Addr().String()
	for _, ep := range []string{addr + "/x\r\nX-Injected: 1", addr + "/a b", "ftp://" + addr, "http://"} {
		_, err := New(ep).Put(ctxFor(t, 200*time.Millisecond), "k", []byte("v"))
		require.Error(t, err, ep)
		assert.NotErrorIs(t, err, ErrUnknownOutcome, "%q: nothing was sent", ep)
		assert.Regexp(t, "bad URL|unsupported URL", err.Error(), ep)
	}
	assert.Zero(t, accepted.Load(), "no request went out")
}
