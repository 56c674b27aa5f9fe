// Package client is a Go client for the kvstore example's HTTP API.
//
// It finds the leader by itself: a write sent to a follower is redirected
// to the leader (307), and the client remembers where it was sent (for a
// cluster of several groups, kvstore -groups N, set Client.Groups: it then
// remembers each group's leader). During
// an election, or while a node is down, it retries within the caller's
// context, so a caller sees an error only when the deadline passes or the
// answer is final.
//
// Retries follow what the server's answer says about a write:
//
//   - a connection refused, a 307 or a 503 mean the write was not made: the
//     client retries it, elsewhere if need be;
//   - once a write was sent and no answer came back (a timeout, a connection
//     reset, a 504), it may or may not have been applied. The client does not
//     retry it, since sending it again could apply it twice (a CAS would fail
//     against its own first attempt): it returns an *UnknownOutcomeError, and
//     the caller decides (read the key, compare, write again).
//
// Reads change nothing, so they are retried on any failure.
//
// The client speaks HTTP/1.1 itself, on connections it keeps to each node
// (conn.go), rather than through net/http's Transport, which costs about
// twice the CPU per request; it does not go through HTTP proxies.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raftkit/raft/examples/kvstore/shard"
)

// Consistency is the consistency level of a read.
type Consistency string

const (
	// Linearizable reads reflect every write acknowledged before the read
	// began (ReadIndex), on any node: the default.
	Linearizable Consistency = "linearizable"
	// Lease reads are linearizable if clocks drift within the bound the
	// nodes are configured with (-lease-reads): the leader answers from its
	// read lease, without a round of heartbeats.
	Lease Consistency = "lease"
	// Stale reads return the node's local state at once: possibly behind.
	Stale Consistency = "stale"
)

// Errors, for errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("kvstore: key not found")
	// ErrConflict: a compare-and-swap's revision did not match (a
	// *ConflictError carries the key's revision).
	ErrConflict = errors.New("kvstore: revision mismatch")
	// ErrUnknownOutcome: a write was sent but its outcome is unknown (an
	// *UnknownOutcomeError says why).
	ErrUnknownOutcome = errors.New("kvstore: the write's outcome is unknown")
)

// ConflictError is a failed compare-and-swap: nothing was written.
type ConflictError struct {
	Revision uint64 // the key's revision when the write was applied; 0: absent
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("kvstore: revision mismatch: the key's revision is %d", e.Revision)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// UnknownOutcomeError is a write that was sent and may or may not have been
// applied: the connection broke or the deadline passed before the answer,
// or the server itself could not tell (its leader was deposed with the
// write in flight). The write may still be applied later.
type UnknownOutcomeError struct {
	Method, Key string
	Err         error // why the outcome is unknown
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("kvstore: %s %q: outcome unknown: %v", e.Method, e.Key, e.Err)
}

// Is makes errors.Is(err, ErrUnknownOutcome) true.
func (e *UnknownOutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }

// Unwrap returns the cause, such as context.DeadlineExceeded.
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// StatusError is an answer the client does not retry: bad input (4xx) or a
// server error, with the server's message.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("kvstore: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Client talks to a kvstore cluster. It is safe for concurrent use.
type Client struct {
	endpoints []string
	conns     *pool // connections to the nodes (conn.go)
	// AttemptTimeout bounds one HTTP attempt, so that a node that hangs
	// (paused, partitioned) does not hold a call until its deadline: a read
	// then tries another node; a write fails with an *UnknownOutcomeError.
	// Default 5s; set it before the first call.
	AttemptTimeout time.Duration
	// Groups is the cluster's number of groups (kvstore -groups N). With N
	// > 1, the client remembers the leader of each group, the group of a
	// key being shard.GroupOf(key, N), rather than one leader for all: a
	// write then goes to its key's group's leader without a redirect once
	// that leader is known. 0 or 1: one leader. Set it before the first
	// call. A wrong N costs redirects, never a wrong answer: the nodes
	// route every request by its key.
	Groups int

	mu      sync.Mutex
	leaders map[uint64]string // by group (0 without Groups): the base URL that last served a write
	next    int               // the endpoint to try when no leader is known
}

// New returns a client of the cluster whose nodes' HTTP addresses
// (host:port or http://host:port) are given; one is enough, the others are
// tried when it does not answer.
func New(endpoints ...string) *Client {
	return build(nil, "http://", endpoints)
}

// NewTLS returns a client of a cluster that serves its API over HTTPS
// (kvstore -http-tls-cert): endpoints without a scheme are https://.
// tlsConfig says which CAs to trust (RootCAs; nil: the system's) and, for
// a cluster that requires client certificates (-http-tls-ca), holds the
// client's certificate.
func NewTLS(tlsConfig *tls.Config, endpoints ...string) *Client {
	return build(tlsConfig, "https://", endpoints)
}

func build(tlsConfig *tls.Config, scheme string, endpoints []string) *Client {
	c := &Client{AttemptTimeout: 5 * time.Second, conns: newPool(tlsConfig), leaders: map[uint64]string{}}
	for _, e := range endpoints {
		if !strings.Contains(e, "://") {
			e = scheme + e
		}
		c.endpoints = append(c.endpoints, strings.TrimRight(e, "/"))
	}
	return c
}

// Close closes the client's idle connections. The client remains usable.
func (c *Client) Close() { c.conns.closeIdle() }

// Put sets key to value and returns the write's revision once it is applied.
func (c *Client) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return c.write(ctx, http.MethodPut, key, value, nil)
}

// PutIf sets key to value only if the key's revision is revision (0: only if
// the key does not exist); otherwise it fails with a *ConflictError.
func (c *Client) PutIf(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	return c.write(ctx, http.MethodPut, key, value, &revision)
}

// Delete deletes key (a missing key is not an error) and returns the
// write's revision.
func (c *Client) Delete(ctx context.Context, key string) (uint64, error) {
	return c.write(ctx, http.MethodDelete, key, nil, nil)
}

// DeleteIf deletes key only if its revision is revision; otherwise it fails
// with a *ConflictError.
func (c *Client) DeleteIf(ctx context.Context, key string, revision uint64) (uint64, error) {
	return c.write(ctx, http.MethodDelete, key, nil, &revision)
}

// Get returns key's value and revision, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key string, consistency Consistency) (value []byte, revision uint64, err error) {
	path := "/kv/" + url.PathEscape(key)
	if consistency != "" {
		path += "?consistency=" + url.QueryEscape(string(consistency))
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: path, group: c.groupOf(key)})
	if err != nil {
		return nil, 0, err
	}
	switch resp.code {
	case http.StatusOK:
		rev, err := strconv.ParseUint(resp.revision, 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("kvstore: bad X-Revision %q", resp.revision)
		}
		return resp.body, rev, nil
	case http.StatusNotFound:
		return nil, 0, ErrNotFound
	}
	return nil, 0, resp.statusError()
}

func (c *Client) write(ctx context.Context, method, key string, value []byte, ifRevision *uint64) (uint64, error) {
	req := request{method: method, path: "/kv/" + url.PathEscape(key), body: value, write: true, key: key, group: c.groupOf(key)}
	if ifRevision != nil {
		req.ifMatch = strconv.FormatUint(*ifRevision, 10)
	}
	resp, err := c.do(ctx, req)
	if err != nil {
		return 0, err
	}
	var res struct {
		Revision uint64 `json:"revision"`
	}
	switch resp.code {
	case http.StatusOK, http.StatusPreconditionFailed:
		if err := json.Unmarshal(resp.body, &res); err != nil {
			return 0, fmt.Errorf("kvstore: bad answer %q: %w", resp.body, err)
		}
		if resp.code == http.StatusPreconditionFailed {
			return 0, &ConflictError{Revision: res.Revision}
		}
		return res.Revision, nil
	}
	return 0, resp.statusError()
}

// AddLearner asks the cluster to add node id as a learner, with its Raft
// address and the HTTP address its clients use.
func (c *Client) AddLearner(ctx context.Context, id uint64, raftAddr, httpAddr string) error {
	body, _ := json.Marshal(map[string]any{"id": id, "raft": raftAddr, "http": httpAddr, "learner": true})
	return c.admin(ctx, http.MethodPost, "/admin/members", body)
}

// Promote makes the learner id a voter.
func (c *Client) Promote(ctx context.Context, id uint64) error {
	return c.admin(ctx, http.MethodPost, fmt.Sprintf("/admin/members/%d/promote", id), nil)
}

// RemoveMember removes node id from the cluster.
func (c *Client) RemoveMember(ctx context.Context, id uint64) error {
	return c.admin(ctx, http.MethodDelete, fmt.Sprintf("/admin/members/%d", id), nil)
}

func (c *Client) admin(ctx context.Context, method, path string, body []byte) error {
	resp, err := c.do(ctx, request{method: method, path: path, body: body, write: true})
	if err != nil {
		return err
	}
	if resp.code != http.StatusOK {
		return resp.statusError()
	}
	return nil
}

type request struct {
	method, path string
	body         []byte
	ifMatch      string
	write        bool
	key          string // for errors
	group        uint64 // the key's group with Groups > 1, else 0
}

// groupOf returns the group whose leader a request for key goes to: 0 for
// all keys without Groups.
func (c *Client) groupOf(key string) uint64 {
	if c.Groups <= 1 {
		return 0
	}
	return shard.GroupOf(key, c.Groups)
}

type response struct {
	code int
	// The headers the client reads.
	revision string // X-Revision
	location string // Location
	body     []byte
}

func (r *response) statusError() error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(r.body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(r.body))
	}
	return &StatusError{Code: r.code, Message: e.Error}
}

// do sends req until it gets an answer it does not retry, or ctx ends.
func (c *Client) do(ctx context.Context, req request) (*response, error) {
	if len(c.endpoints) == 0 {
		return nil, errors.New("kvstore: the client has no endpoints: give New at least one node's address")
	}
	backoff := 20 * time.Millisecond
	target := "" // a redirect's Location
	redirects := 0
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("kvstore: %s %s: %w (last error: %v)", req.method, req.path, err, lastErr)
			}
			return nil, err
		}
		base := c.pick(req.group)
		u := base + req.path
		if target != "" {
			u, target = target, ""
		}
		resp, sent, err := c.attempt(ctx, req, u)
		switch {
		case err != nil && !sent:
			// Nothing reached the server: try another node.
			lastErr = err
			c.failed(req.group, base)
		case err != nil && req.write:
			return nil, &UnknownOutcomeError{Method: req.method, Key: req.key, Err: err}
		case err != nil:
			lastErr = err
			c.failed(req.group, base)
		case resp.code == http.StatusTemporaryRedirect:
			loc, perr := url.Parse(resp.location)
			if perr != nil || loc.Host == "" {
				return nil, fmt.Errorf("kvstore: bad redirect %q", resp.location)
			}
			c.setLeader(req.group, loc.Scheme+"://"+loc.Host)
			target = loc.String()
			if redirects++; redirects <= 3 {
				continue // a redirect is an answer: no need to wait
			}
			// Nodes that disagree on the leader (one has not heard of the
			// election yet) redirect to each other: wait for them to agree.
			redirects = 0
			lastErr = errors.New("redirected in a loop")
		case resp.code == http.StatusServiceUnavailable:
			// Not applied: no leader (an election), a hand-off, too busy.
			lastErr = resp.statusError()
			c.failed(req.group, base)
		case resp.code == http.StatusGatewayTimeout && req.write:
			return nil, &UnknownOutcomeError{Method: req.method, Key: req.key, Err: resp.statusError()}
		case resp.code == http.StatusGatewayTimeout:
			lastErr = resp.statusError()
		default:
			if req.write {
				c.setLeader(req.group, base)
			}
			return resp, nil
		}
		if !sleep(ctx, backoff) {
			continue // reports ctx's error above
		}
		backoff = min(2*backoff, time.Second)
	}
}

// attempt sends req once to u. sent reports whether the request may have
// reached the server: false only when none of it was written out (no
// connection, a failed TLS handshake, the deadline before either).
func (c *Client) attempt(ctx context.Context, req request, u string) (resp *response, sent bool, err error) {
	deadline := time.Now().Add(c.AttemptTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	resp, err = c.conns.roundTrip(ctx, deadline, req, u)
	if err != nil {
		var ns errNotSent
		return nil, !errors.As(err, &ns), fmt.Errorf("%s %s: %w", req.method, u, err)
	}
	return resp, true, nil
}

// pick returns the base URL to send a request of group to: its leader if
// known, otherwise the endpoints in turn.
func (c *Client) pick(group uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if leader := c.leaders[group]; leader != "" {
		return leader
	}
	return c.endpoints[c.next%len(c.endpoints)]
}

func (c *Client) setLeader(group uint64, base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders[group] = base
}

// failed notes that base did not serve a request of group: forget it as the
// group's leader and move on to the next endpoint.
func (c *Client) failed(group uint64, base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaders[group] == base {
		delete(c.leaders, group)
	}
	c.next++
}

// sleep waits about d (jittered, so that clients spread out), or until ctx
// ends; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
