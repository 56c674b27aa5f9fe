package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/shard"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// Group is one group of a sharded node: its ID, this process's replica of
// it and the replica's store.
type Group struct {
	ID    uint64
	Node  *raft.Node
	Store *store.Store
}

// Sharded serves the HTTP API of a node that runs several groups: each
// key-value request is served by the Server of the key's group
// (shard.GroupOf), exactly as
// a single group's node serves it, so a write sent to a node that does not
// lead the key's group is redirected (307) to the HTTP address of the node
// that does, and clients are unchanged. Calls on the whole node (status,
// health) cover every group; admin calls name their group.
type Sharded struct {
	groups  []Group
	servers []*Server // servers[i] serves groups[i], group ID i+1
	mux     *http.ServeMux
}

// NewSharded returns the API of a node whose groups are groups, with IDs 1
// to len(groups) in order.
func NewSharded(groups []Group) (*Sharded, error) {
	s := &Sharded{groups: groups, mux: http.NewServeMux()}
	for i, g := range groups {
		if g.ID != uint64(i+1) {
			return nil, fmt.Errorf("sharded API: group %d at position %d: the groups must be 1 to %d, in order", g.ID, i, len(groups))
		}
		s.servers = append(s.servers, New(g.Node, g.Store))
	}
	s.mux.HandleFunc("GET /status", s.status)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("POST /admin/transfer", s.perGroup)
	s.mux.HandleFunc("POST /admin/snapshot", s.snapshot)
	s.mux.HandleFunc("/admin/", s.unsupported)
	s.mux.HandleFunc("/", notFound)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Sharded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if k, ok := strings.CutPrefix(r.URL.Path, "/kv/"); ok {
		// The group's Server checks the key, serves or redirects.
		s.servers[shard.GroupOf(k, len(s.groups))-1].ServeHTTP(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), DefaultTimeout)
	defer cancel()
	s.mux.ServeHTTP(w, r.WithContext(ctx))
}

// GroupStatus is one group's entry in GET /status: the group, the hashes
// of its keys (16 hex digits each, both included), the group's leader
// (its node ID; 0 while none is known) and this replica's raft.Status.
type GroupStatus struct {
	Group    uint64      `json:"group"`
	HashFrom string      `json:"hashFrom"`
	HashTo   string      `json:"hashTo"`
	Leader   uint64      `json:"leader"`
	Status   raft.Status `json:"status"`
}

// ShardedStatus is the body of GET /status on a sharded node.
type ShardedStatus struct {
	ID     uint64        `json:"id"`   // this node's ID, its host's
	Hash   string        `json:"hash"` // "fmix64(fnv1a64)": see package shard
	Groups []GroupStatus `json:"groups"`
}

func (s *Sharded) status(w http.ResponseWriter, r *http.Request) {
	out := ShardedStatus{Hash: "fmix64(fnv1a64)", Groups: make([]GroupStatus, 0, len(s.groups))}
	for _, g := range s.groups {
		st := g.Node.Status()
		out.ID = st.ID
		first, last := shard.HashRange(g.ID, len(s.groups))
		out.Groups = append(out.Groups, GroupStatus{Group: g.ID, HashFrom: fmt.Sprintf("%016x", first), HashTo: fmt.Sprintf("%016x", last), Leader: st.Leader, Status: st})
	}
	writeJSON(w, http.StatusOK, out)
}

// healthz answers 200 when every group knows its leader, with each
// group's leader.
func (s *Sharded) healthz(w http.ResponseWriter, r *http.Request) {
	leaders := map[string]uint64{}
	for _, g := range s.groups {
		st := g.Node.Status()
		switch {
		case st.Err != nil:
			fail(w, http.StatusServiceUnavailable, "group %d stopped: %v", g.ID, st.Err)
			return
		case st.Removed:
			fail(w, http.StatusServiceUnavailable, "removed from group %d", g.ID)
			return
		case st.Leader == 0:
			fail(w, http.StatusServiceUnavailable, "group %d: no leader known", g.ID)
			return
		}
		leaders[strconv.FormatUint(g.ID, 10)] = st.Leader
	}
	writeJSON(w, http.StatusOK, map[string]any{"leaders": leaders})
}

// metrics writes each group's leader, term and indexes in the Prometheus
// text format, labelled by group. (The groups' raft metrics are not
// recorded in the sharded variant: every group's replica on a host has the
// host's node ID, so the library's metrics would not tell them apart.)
func (s *Sharded) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	var b strings.Builder
	gauges := []struct {
		name, help string
		value      func(raft.Status) uint64
	}{
		{"kvstore_group_leader", "The node ID of the group's leader as this node knows it, 0 if none.", func(st raft.Status) uint64 { return st.Leader }},
		{"kvstore_group_term", "The group's current term on this node.", func(st raft.Status) uint64 { return st.Term }},
		{"kvstore_group_commit_index", "The group's commit index on this node.", func(st raft.Status) uint64 { return st.CommitIndex }},
		{"kvstore_group_applied_index", "The group's last applied index on this node.", func(st raft.Status) uint64 { return st.AppliedIndex }},
		{"kvstore_group_snapshot_index", "The index of the group's latest snapshot on this node.", func(st raft.Status) uint64 { return st.SnapshotIndex }},
	}
	statuses := make([]raft.Status, len(s.groups))
	for i, g := range s.groups {
		statuses[i] = g.Node.Status()
	}
	for _, gauge := range gauges {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", gauge.name, gauge.help, gauge.name)
		for i, g := range s.groups {
			fmt.Fprintf(&b, "%s{group=\"%d\"} %d\n", gauge.name, g.ID, gauge.value(statuses[i]))
		}
	}
	w.Write([]byte(b.String())) //nolint:errcheck // the client went away
}

// group parses ?group=, required when there is more than one group.
func (s *Sharded) group(w http.ResponseWriter, r *http.Request) (*Server, bool) {
	v := r.URL.Query().Get("group")
	if v == "" && len(s.groups) == 1 {
		return s.servers[0], true
	}
	g, err := strconv.ParseUint(v, 10, 64)
	if err != nil || g == 0 || g > uint64(len(s.groups)) {
		fail(w, http.StatusBadRequest, "this node runs groups 1 to %d: name one with ?group=, not %q", len(s.groups), v)
		return nil, false
	}
	return s.servers[g-1], true
}

// perGroup serves an admin call of one group (?group=) as that group's
// Server does, redirecting it to the group's leader when needed.
func (s *Sharded) perGroup(w http.ResponseWriter, r *http.Request) {
	if srv, ok := s.group(w, r); ok {
		srv.ServeHTTP(w, r)
	}
}

// snapshot snapshots one group (?group=) or, without it, every group.
func (s *Sharded) snapshot(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("group") != "" {
		s.perGroup(w, r)
		return
	}
	out := map[string]uint64{}
	for _, g := range s.groups {
		if err := g.Node.Snapshot(r.Context()); err != nil {
			fail(w, http.StatusInternalServerError, "group %d: snapshot: %v", g.ID, err)
			return
		}
		out[strconv.FormatUint(g.ID, 10)] = g.Node.Status().SnapshotIndex
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshotIndex": out})
}

func (s *Sharded) unsupported(w http.ResponseWriter, r *http.Request) {
	fail(w, http.StatusNotImplemented, "%s %s is not served by a node with -groups %d: membership changes and back-ups "+
		"are per group, and the sharded example does not do them (run with -groups 1 for them)", r.Method, r.URL.Path, len(s.groups))
}
