// Package server is the kvstore example's HTTP API over one raft.Node and
// its store.Store.
//
//	PUT    /kv/{key}   body: the value. Answers once the write is applied,
//	                   with {"revision": N} (N: the write's log index).
//	DELETE /kv/{key}   likewise.
//	                   Both take If-Match: <revision> for a compare-and-swap
//	                   (0: the key must not exist); 412 when it does not match,
//	                   with the key's current revision.
//	GET    /kv/{key}   the value as the body, its revision in X-Revision;
//	                   ?consistency=linearizable (default), lease or stale.
//	GET    /status     the node's raft.Status as JSON.
//	GET    /healthz    200 when the node knows a leader and is a member.
//
// Admin calls, served by the leader:
//
//	POST   /admin/members          {"id":4,"raft":"host:port","http":"host:port","learner":true}
//	POST   /admin/members/{id}/promote
//	DELETE /admin/members/{id}
//	POST   /admin/transfer?to={id} (to omitted: the most up-to-date voter)
//	POST   /admin/snapshot         (on any node: snapshot and compact its log)
//	GET    /admin/backup           (on any node: a back-up of the store, for
//	                               kvstore -restore; ?consistency=stale skips
//	                               the linearizable read that makes it hold
//	                               every write acknowledged before the call)
//
// A write or an admin call sent to a follower is answered with a 307
// redirect to the same path on the leader's HTTP address, which every node
// learns from the leader's member metadata (raft.Member.Meta["http"]): the
// client resends it there. With no leader known, the answer is 503 with
// Retry-After. Status codes tell a client what it may retry: 503 means the
// write was not made (retry it); 504 means its outcome is unknown (it was
// handed to Raft and may still commit: read before retrying).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// MetaHTTP is the member metadata key that holds a node's HTTP address
// (host:port), where clients and redirects reach it.
const MetaHTTP = "http"

// DefaultTimeout bounds how long a request waits for Raft (a commit, a
// ReadIndex round) when the client sets no shorter deadline.
const DefaultTimeout = 10 * time.Second

// Server serves the HTTP API of one node.
type Server struct {
	node  *raft.Node
	store *store.Store
	mux   *http.ServeMux
}

// New returns the API of node, whose state machine is st.
func New(node *raft.Node, st *store.Store) *Server {
	s := &Server{node: node, store: st, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /status", s.status)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("POST /admin/members", s.addMember)
	s.mux.HandleFunc("POST /admin/members/{id}/promote", s.promote)
	s.mux.HandleFunc("DELETE /admin/members/{id}", s.removeMember)
	s.mux.HandleFunc("POST /admin/transfer", s.transfer)
	s.mux.HandleFunc("POST /admin/snapshot", s.snapshot)
	s.mux.HandleFunc("GET /admin/backup", s.backup)
	s.mux.HandleFunc("/", notFound)
	return s
}

// Handle adds a route to the API, as http.ServeMux.Handle does: for the
// calls a node serves besides the API's own, such as GET /metrics.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The key-value calls, nearly every request, are routed here rather
	// than by the mux, whose pattern matching showed in the profiles of
	// every request. The key is checked first in any case: the mux
	// would answer a path with "//", "." or ".." segments with a redirect
	// to a cleaned one, which a client following it would write under
	// another key.
	if k, ok := strings.CutPrefix(r.URL.Path, "/kv/"); ok {
		if err := store.ValidKey(k); err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		// The wait for Raft is bounded by DefaultTimeout alone, not by the
		// client's connection: a write handed to Raft goes on whether or
		// not anyone waits for it, and a read is short. (A context derived
		// from the request's would register with it and unregister, a
		// cost that showed in profiles of every request.)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), DefaultTimeout)
		defer cancel()
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.get(ctx, w, r, k)
		case http.MethodPut:
			s.put(ctx, w, r, k)
		case http.MethodDelete:
			s.write(ctx, w, r, store.Command{Op: store.OpDelete, Key: k})
		default:
			notFound(w, r)
		}
		return
	}
	if r.URL.Path == "/admin/backup" {
		// A back-up of a large store takes as long as its copy takes: it
		// ends when it is done or when the client goes away.
		s.mux.ServeHTTP(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), DefaultTimeout)
	defer cancel()
	s.mux.ServeHTTP(w, r.WithContext(ctx))
}

// writeResult is the body of a successful write, and of a failed
// compare-and-swap (with the key's current revision).
type writeResult struct {
	Revision uint64 `json:"revision"`
	Error    string `json:"error,omitempty"`
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error string `json:"error"`
	// Outcome is "unknown" when a write was handed to Raft and its fate is
	// not known (504), "not-applied" when it certainly did not happen.
	Outcome string `json:"outcome,omitempty"`
	Leader  uint64 `json:"leader,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

// ifMatch parses the If-Match header: a revision, bare or quoted as an
// entity tag. nil when absent.
func ifMatch(r *http.Request) (*uint64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return nil, nil
	}
	v := h
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	rev, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("If-Match must be a revision (a decimal number, bare or in double quotes; 0: the key must not exist), not %q", h)
	}
	return &rev, nil
}

func (s *Server) put(ctx context.Context, w http.ResponseWriter, r *http.Request, k string) {
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, store.MaxValueSize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			fail(w, http.StatusRequestEntityTooLarge, "value longer than the limit of %d bytes", store.MaxValueSize)
			return
		}
		fail(w, http.StatusBadRequest, "reading the value: %v", err)
		return
	}
	s.write(ctx, w, r, store.Command{Op: store.OpPut, Key: k, Value: value})
}

// write proposes c and answers once it is applied on this node (the leader).
func (s *Server) write(ctx context.Context, w http.ResponseWriter, r *http.Request, c store.Command) {
	rev, err := ifMatch(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	c.IfRevision = rev
	if err := c.Validate(); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	// ProposeAsync and Wait rather than Propose, because their errors mean
	// different things: an error from ProposeAsync means nothing was
	// appended (the client may retry), while once the entry is in the
	// leader's log any failure leaves its outcome unknown: it may still
	// commit (a new leader may commit it; a timed-out one may yet).
	p, err := s.node.ProposeAsync(c.Encode())
	if err != nil {
		s.notServed(w, r, err)
		return
	}
	out, err := p.Wait(ctx)
	if err != nil {
		writeJSON(w, http.StatusGatewayTimeout, errorBody{
			Error:   fmt.Sprintf("the write's outcome is unknown: %v", err),
			Outcome: "unknown",
		})
		return
	}
	res := out.(store.Result)
	switch {
	case res.Err != nil:
		fail(w, http.StatusInternalServerError, "%v", res.Err)
	case res.Conflict:
		writeJSON(w, http.StatusPreconditionFailed, writeResult{Revision: res.Revision,
			Error: fmt.Sprintf("revision mismatch: the key's revision is %d, not %d", res.Revision, *c.IfRevision)})
	default:
		writeRevision(w, res.Revision)
	}
}

// writeRevision answers a write that was applied: {"revision":N}, as
// writeJSON would write it, without encoding/json's reflection (every
// write is answered with it).
func writeRevision(w http.ResponseWriter, rev uint64) {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(http.StatusOK)
	var buf [40]byte
	b := append(buf[:0], `{"revision":`...)
	b = strconv.AppendUint(b, rev, 10)
	w.Write(append(b, "}\n"...)) //nolint:errcheck // the client went away
}

// notFound answers what no route serves, in JSON like every other error.
func notFound(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/kv/") {
		w.Header().Set("Allow", "GET, PUT, DELETE")
		fail(w, http.StatusMethodNotAllowed, "%s is not a method of /kv/{key}: use GET, PUT or DELETE", r.Method)
		return
	}
	fail(w, http.StatusNotFound, "no endpoint %s %s (the API: examples/kvstore/README.md)", r.Method, r.URL.Path)
}

// notServed answers a call the node refused without doing anything: a 307
// to the leader if this node is not it, else 503 (retry later) or the error.
func (s *Server) notServed(w http.ResponseWriter, r *http.Request, err error) {
	var nle *raft.NotLeaderError
	switch {
	case errors.As(err, &nle) && nle.Member.Meta[MetaHTTP] != "":
		scheme := "http"
		if r.TLS != nil {
			scheme = "https" // every node serves the API the same way
		}
		// RawPath keeps a key's escaped slashes (%2F) escaped.
		target := url.URL{Scheme: scheme, Host: nle.Member.Meta[MetaHTTP], Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, target.String(), http.StatusTemporaryRedirect)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrBusy), errors.Is(err, raft.ErrTransferInProgress),
		errors.Is(err, raft.ErrLeadershipLost):
		// No leader known (an election), or one without an HTTP address;
		// too much in flight; a leadership hand-off; a ReadIndex round
		// that lost its leader: all pass within an election timeout or so.
		w.Header().Set("Retry-After", "1")
		var leader uint64
		if nle != nil {
			leader = nle.Leader
		}
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error(), Outcome: "not-applied", Leader: leader})
	case errors.Is(err, raft.ErrInvalidConfig):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error(), Outcome: "not-applied"})
	case errors.Is(err, raft.ErrMembershipChange):
		// Another change is under way: this one was not made, and can be
		// once that one commits.
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error(), Outcome: "not-applied"})
	default: // closed, removed, stopped
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error(), Outcome: "not-applied"})
	}
}

func (s *Server) get(ctx context.Context, w http.ResponseWriter, r *http.Request, k string) {
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
		// ReadIndex (dissertation §6.4): once it returns, this node's store
		// holds every write acknowledged before the request arrived, on a
		// follower as on the leader.
		if err := s.node.LinearizableRead(ctx); err != nil {
			s.readNotServed(w, err)
			return
		}
	case "lease":
		// Linearizable under a bounded clock drift (Config.LeaseReads on
		// every voter): the leader answers from its read lease without a
		// round of heartbeats; without leases it is ReadIndex.
		if err := s.node.LeaseRead(ctx); err != nil {
			s.readNotServed(w, err)
			return
		}
	case "stale":
		// This node's store as it is: fast, and possibly behind the leader.
	default:
		fail(w, http.StatusBadRequest, "unsupported consistency %q: use linearizable, lease or stale", c)
		return
	}
	value, rev, found := s.store.Get(k)
	if !found {
		fail(w, http.StatusNotFound, "key %q not found", k)
		return
	}
	// The header names are canonical already: set them without
	// Header.Set's canonicalization (every read is answered with them).
	revText := strconv.FormatUint(rev, 10)
	h := w.Header()
	h["X-Revision"] = []string{revText}
	h["Etag"] = []string{`"` + revText + `"`}
	h["Content-Type"] = []string{"application/octet-stream"}
	w.Write(value) //nolint:errcheck // the client went away
}

// readNotServed answers a failed LinearizableRead: reads change nothing, so
// each failure is worth a retry, here or elsewhere.
func (s *Server) readNotServed(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	fail(w, http.StatusServiceUnavailable, "read: %v", err)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.node.Status())
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	st := s.node.Status()
	switch {
	case st.Err != nil:
		fail(w, http.StatusServiceUnavailable, "stopped: %v", st.Err)
	case st.Removed:
		fail(w, http.StatusServiceUnavailable, "removed from the cluster")
	case st.Leader == 0:
		fail(w, http.StatusServiceUnavailable, "no leader known")
	default:
		writeJSON(w, http.StatusOK, map[string]any{"leader": st.Leader, "term": st.Term})
	}
}

// NewMember is the body of POST /admin/members.
type NewMember struct {
	ID   uint64 `json:"id"`
	Raft string `json:"raft"` // the address its peers dial
	HTTP string `json:"http"` // the address its clients use
	// Learner adds it as a learner, which receives the log but does not
	// vote until promoted once it has caught up. Omitted: true; false adds
	// a voter at once, which the quorum may have to wait for.
	Learner *bool `json:"learner,omitempty"`
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) {
	var m NewMember
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		fail(w, http.StatusBadRequest, "bad member JSON: %v", err)
		return
	}
	if m.ID == 0 || m.Raft == "" || m.HTTP == "" {
		fail(w, http.StatusBadRequest, `a member needs "id" (non-zero), "raft" and "http" addresses`)
		return
	}
	learner := m.Learner == nil || *m.Learner
	// Adding an ID that is a member would change that member: another
	// process given a taken -id would take its place and its vote. Only
	// the same call again (a joiner restarted) goes through.
	if cur, ok := s.member(m.ID); ok {
		if cur.Addr != m.Raft || cur.Meta[MetaHTTP] != m.HTTP || cur.Learner != learner {
			writeJSON(w, http.StatusConflict, errorBody{Outcome: "not-applied", Error: fmt.Sprintf(
				"member %d already exists (raft %s, http %s): give the new node an unused ID, or remove member %d first",
				m.ID, cur.Addr, cur.Meta[MetaHTTP], m.ID)})
			return
		}
	}
	member := raft.Member{ID: m.ID, Addr: m.Raft, Learner: learner, Meta: map[string]string{MetaHTTP: m.HTTP}}
	s.admin(w, r, s.node.AddMember(r.Context(), member))
}

// memberID parses the {id} of the path, or answers 400.
func memberID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		fail(w, http.StatusBadRequest, "member ID must be a non-zero number, not %q", r.PathValue("id"))
		return 0, false
	}
	return id, true
}

// member returns member id of the configuration this node knows.
func (s *Server) member(id uint64) (raft.Member, bool) {
	for _, m := range s.node.Status().Members {
		if m.ID == id {
			return m, true
		}
	}
	return raft.Member{}, false
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	if id, ok := memberID(w, r); ok {
		if _, ok := s.member(id); !ok {
			fail(w, http.StatusNotFound, "%d is not a member: add it first (POST /admin/members)", id)
			return
		}
		s.admin(w, r, s.node.AddVoter(r.Context(), id, ""))
	}
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	if id, ok := memberID(w, r); ok {
		if _, ok := s.member(id); !ok {
			fail(w, http.StatusNotFound, "%d is not a member", id)
			return
		}
		s.admin(w, r, s.node.RemoveMember(r.Context(), id))
	}
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	var to uint64
	if v := r.URL.Query().Get("to"); v != "" {
		var err error
		if to, err = strconv.ParseUint(v, 10, 64); err != nil {
			fail(w, http.StatusBadRequest, "to must be a member ID, not %q", v)
			return
		}
	}
	s.admin(w, r, s.node.TransferLeadership(r.Context(), to))
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	if err := s.node.Snapshot(r.Context()); err != nil {
		fail(w, http.StatusInternalServerError, "snapshot: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"snapshotIndex": s.node.Status().SnapshotIndex})
}

// backup streams a back-up of the store (raft.Node.Backup), for kvstore
// -restore to found a new cluster from. It works on any member, follower
// included. First, unless ?consistency=stale, a linearizable read makes
// the back-up hold every write acknowledged before the call; without a
// quorum that fails with 503.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
		ctx, cancel := context.WithTimeout(r.Context(), DefaultTimeout)
		err := s.node.LinearizableRead(ctx)
		cancel()
		if err != nil {
			w.Header().Set("Retry-After", "1")
			fail(w, http.StatusServiceUnavailable, "backup: the linearizable read before it failed (no quorum? ?consistency=stale backs up what this node has applied): %v", err)
			return
		}
	case "stale":
	default:
		fail(w, http.StatusBadRequest, "unsupported consistency %q for a backup: linearizable (default) or stale", c)
		return
	}
	bw := &backupWriter{w: w}
	_, err := s.node.Backup(r.Context(), bw)
	switch {
	case err == nil:
		if !bw.started { // an empty store still has a header and checksums
			bw.start()
		}
	case !bw.started:
		code := http.StatusInternalServerError
		if errors.Is(err, raft.ErrNoSnapshot) {
			code = http.StatusServiceUnavailable // a joiner that has applied nothing yet
		}
		fail(w, code, "backup: %v", err)
	default:
		// Part of it went out with a 200: cut the connection, so that the
		// client sees a failed transfer. What it got lacks the back-up's
		// final checksum, which every restore checks.
		panic(http.ErrAbortHandler)
	}
}

// backupWriter sends the answer's header at the first byte of the back-up,
// so that an error before it can still be answered with a status.
type backupWriter struct {
	w       http.ResponseWriter
	started bool
}

func (b *backupWriter) start() {
	b.started = true
	b.w.Header().Set("Content-Type", "application/octet-stream")
	b.w.Header().Set("Content-Disposition", `attachment; filename="kvstore.backup"`)
	b.w.WriteHeader(http.StatusOK)
}

func (b *backupWriter) Write(p []byte) (int, error) {
	if !b.started {
		b.start()
	}
	return b.w.Write(p)
}

// admin answers a membership or leadership call.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, s.node.Status().Members)
	case r.Context().Err() != nil, errors.Is(err, raft.ErrLeadershipLost):
		// The change may have been appended: it may still commit.
		writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: err.Error(), Outcome: "unknown"})
	case errors.Is(err, raft.ErrTransferFailed):
		fail(w, http.StatusServiceUnavailable, "%v", err)
	default:
		s.notServed(w, r, err)
	}
}
