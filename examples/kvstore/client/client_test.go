package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/raftkit/raft/examples/kvstore/shard"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeNode is an HTTP server whose answers the test scripts; it counts the
// requests it got.
type fakeNode struct {
	*httptest.Server
	hits atomic.Int32
}

func newFake(t *testing.T, h func(n int, w http.ResponseWriter, r *http.Request)) *fakeNode {
	t.Helper()
	f := &fakeNode{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(int(f.hits.Add(1)), w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func answer(w http.ResponseWriter, code int, body string) {
	w.WriteHeader(code)
	w.Write([]byte(body))
}

func newClient(t *testing.T, endpoints ...string) *Client {
	c := New(endpoints...)
	t.Cleanup(c.Close)
	return c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestClient_FollowsTheRedirectToTheLeaderAndRemembersIt(t *testing.T) {
	leader := newFake(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, `{"revision":5}`)
	})
	follower := newFake(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, leader.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	c := newClient(t, follower.URL)
	for range 3 {
		rev, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
		require.NoError(t, err)
		assert.Equal(t, uint64(5), rev)
	}
	assert.Equal(t, int32(1), follower.hits.Load(), "after the first redirect, writes go to the leader")
	assert.Equal(t, int32(3), leader.hits.Load())
}

func TestClient_RetriesAWriteThatWasNotApplied(t *testing.T) {
	// 503: an election, no leader yet; nothing was written.
	node := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			answer(w, http.StatusServiceUnavailable, `{"error":"no leader","outcome":"not-applied"}`)
			return
		}
		answer(w, http.StatusOK, `{"revision":9}`)
	})
	// A node that is down: nothing reached it.
	down, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downAddr := down.Addr().String()
	down.Close()

	rev, err := newClient(t, downAddr, node.URL).Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err)
	assert.Equal(t, uint64(9), rev)
	assert.Equal(t, int32(3), node.hits.Load())
}

func TestClient_ReportsAWriteOfUnknownOutcomeAndDoesNotRetryIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(n int, w http.ResponseWriter, r *http.Request)
	}{
		{"server says unknown", func(_ int, w http.ResponseWriter, r *http.Request) {
			answer(w, http.StatusGatewayTimeout, `{"error":"leadership lost","outcome":"unknown"}`)
		}},
		{"no answer in time", func(_ int, w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
			<-r.Context().Done()        // the write is in flight when the client gives up
		}},
		{"connection broken after sending", func(_ int, w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := newFake(t, tc.handler)
			c := newClient(t, node.URL)
			c.AttemptTimeout = 200 * time.Millisecond
			_, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
			require.ErrorIs(t, err, ErrUnknownOutcome)
			var unknown *UnknownOutcomeError
			require.ErrorAs(t, err, &unknown)
			assert.Equal(t, "k", unknown.Key)
			assert.Equal(t, int32(1), node.hits.Load(), "a write of unknown outcome is not sent again")
		})
	}
}

func TestClient_AWriteThatNeverGotThroughFailsWithTheDeadline(t *testing.T) {
	node := newFake(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusServiceUnavailable, `{"error":"no leader","outcome":"not-applied"}`)
	})
	_, err := newClient(t, node.URL).Put(ctxFor(t, 300*time.Millisecond), "k", []byte("v"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrUnknownOutcome, "every attempt was refused: the write certainly did not happen")
	assert.Contains(t, err.Error(), "no leader", "the last refusal says why")
}

func TestClient_RetriesReadsOnAnyFailure(t *testing.T) {
	node := newFake(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		assert.Equal(t, "linearizable", r.URL.Query().Get("consistency"))
		w.Header().Set("X-Revision", "4")
		answer(w, http.StatusOK, "value")
	})
	v, rev, err := newClient(t, node.URL).Get(ctxFor(t, 5*time.Second), "k", Linearizable)
	require.NoError(t, err)
	assert.Equal(t, "value", string(v))
	assert.Equal(t, uint64(4), rev)
}

func TestClient_ReportsConflictsNotFoundAndBadInput(t *testing.T) {
	node := newFake(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.Header.Get("If-Match") == "3":
			answer(w, http.StatusPreconditionFailed, `{"revision":7,"error":"revision mismatch"}`)
		case r.Method == http.MethodPut:
			answer(w, http.StatusRequestEntityTooLarge, `{"error":"value longer than the limit"}`)
		default:
			answer(w, http.StatusNotFound, `{"error":"key not found"}`)
		}
	})
	c := newClient(t, node.URL)
	_, err := c.PutIf(ctxFor(t, 5*time.Second), "k", []byte("v"), 3)
	var conflict *ConflictError
	require.ErrorAs(t, err, &conflict)
	assert.Equal(t, uint64(7), conflict.Revision)
	assert.ErrorIs(t, err, ErrConflict)

	_, err = c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	var status *StatusError
	require.ErrorAs(t, err, &status)
	assert.Equal(t, http.StatusRequestEntityTooLarge, status.Code)
	assert.Contains(t, status.Message, "limit")

	_, _, err = c.Get(ctxFor(t, 5*time.Second), "k", Stale)
	assert.True(t, errors.Is(err, ErrNotFound), "%v", err)
}

func TestClient_NewTLSTalksHTTPSAndAnUntrustedServerIsNotAnUnknownOutcome(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, `{"revision":7}`)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c := NewTLS(&tls.Config{RootCAs: roots}, host) // no scheme: https
	t.Cleanup(c.Close)
	rev, err := c.Put(ctxFor(t, 5*time.Second), "k", []byte("v"))
	require.NoError(t, err)
	require.Equal(t, uint64(7), rev)

	// A client that does not trust the server's certificate never sends
	// the write: it is not applied, so it must not be reported as an
	// unknown outcome (which tells the caller to read before retrying).
	untrusting := NewTLS(&tls.Config{RootCAs: x509.NewCertPool()}, host)
	t.Cleanup(untrusting.Close)
	_, err = untrusting.Put(ctxFor(t, 300*time.Millisecond), "k", []byte("v"))
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrUnknownOutcome)
	require.ErrorIs(t, err, context.DeadlineExceeded, "retried until the deadline, as a write that was not sent")
}

func TestClient_WithoutEndpointsSaysSo(t *testing.T) {
	c := New()
	_, err := c.Put(ctxFor(t, time.Second), "k", []byte("v"))
	require.ErrorContains(t, err, "no endpoints")
	_, _, err = c.Get(ctxFor(t, time.Second), "k", Linearizable)
	require.ErrorContains(t, err, "no endpoints")
}

// With Groups, the client remembers each group's leader: writes to keys of
// groups led by different nodes go straight to their leaders after one
// redirect per group; without it, they are redirected whenever the key's
// group is led by another node than the last write's.
func TestClient_GroupsRemembersTheLeaderOfEachGroup(t *testing.T) {
	// "b" is in group 1 of 2, "a" in group 2 (shard.GroupOf); node A leads
	// group 1, node B group 2, and each redirects the other's keys.
	require.Equal(t, uint64(1), shard.GroupOf("b", 2))
	require.Equal(t, uint64(2), shard.GroupOf("a", 2))
	var nodes [3]*fakeNode // by the group each leads
	serve := func(group uint64) func(int, http.ResponseWriter, *http.Request) {
		return func(_ int, w http.ResponseWriter, r *http.Request) {
			if g := shard.GroupOf(strings.TrimPrefix(r.URL.Path, "/kv/"), 2); g != group {
				http.Redirect(w, r, nodes[g].URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			answer(w, http.StatusOK, `{"revision":1}`)
		}
	}
	for _, tc := range []struct {
		groups         int
		wantRedirected int32
	}{
		{groups: 2, wantRedirected: 1},  // "a" once, at the start
		{groups: 0, wantRedirected: 12}, // every write: its key's group is led by the other node than the last write's
	} {
		nodes[1], nodes[2] = newFake(t, serve(1)), newFake(t, serve(2))
		c := newClient(t, nodes[1].URL)
		c.Groups = tc.groups
		for range 6 {
			for _, k := range []string{"a", "b"} {
				_, err := c.Put(ctxFor(t, 5*time.Second), k, []byte("v"))
				require.NoError(t, err)
			}
		}
		// 12 writes served, plus one request per redirect.
		assert.Equal(t, 12+tc.wantRedirected, nodes[1].hits.Load()+nodes[2].hits.Load(), "Groups %d", tc.groups)
	}
}
