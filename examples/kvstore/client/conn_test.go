package client

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
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

// A node closes a connection that stayed idle (its IdleTimeout), or it
// restarted: the client must see it before it sends a write on it, which
// would be lost with an unknown outcome.
func TestClient_DoesNotSendAWriteOnAConnectionTheNodeClosed(t *testing.T) {
	var conns connTracker
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, `{"revision":1}`)
	}))
	srv.Config.ConnState = conns.track
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	_, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err)

	srv.CloseClientConnections() // as a node does with idle ones
	base := "http://" + srv.Listener.Addr().String()
	c.conns.mu.Lock()
	require.Len(t, c.conns.idle[base], 1)
	idle := c.conns.idle[base][0]
	c.conns.mu.Unlock()
	require.Eventually(t, func() bool { return !idle.alive() }, 5*time.Second, time.Millisecond,
		"the connection the node closed is seen as closed")

	_, err = c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err, "the write goes out on a new connection")
	assert.Equal(t, 2, conns.count())
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
