package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNode is one in-process node and its API.
type testNode struct {
	node *raft.Node
	api  *Server
}

// newCluster starts nodes 1..n over an in-memory network, each with the
// HTTP address nodeN.example in its metadata; with n == 0, one node that
// is not a member of any cluster (it never knows a leader).
func newCluster(t *testing.T, n int) map[uint64]*testNode {
	t.Helper()
	network := raft.NewInmemNetwork()
	t.Cleanup(func() { network.Close() })
	var members []raft.Member
	for id := uint64(1); id <= uint64(n); id++ {
		members = append(members, raft.Member{ID: id, Meta: map[string]string{MetaHTTP: fmt.Sprintf("node%d.example", id)}})
	}
	nodes := map[uint64]*testNode{}
	for id := uint64(1); id <= uint64(max(n, 1)); id++ {
		st := store.New()
		node, err := raft.NewNode(raft.Config{ID: id, InitialMembers: members, ElectionTimeout: 100 * time.Millisecond},
			st, raft.NewMemoryStorage(), network.Transport(id))
		require.NoError(t, err)
		t.Cleanup(func() { node.Close() })
		nodes[id] = &testNode{node: node, api: New(node, st)}
	}
	return nodes
}

// leaderOf waits until node 1 knows the leader and returns it.
func leaderOf(t *testing.T, nodes map[uint64]*testNode) *testNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := nodes[1].node.WaitLeader(ctx)
	require.NoError(t, err)
	return nodes[m.ID]
}

func call(api http.Handler, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	return rec
}

func revisionOf(t *testing.T, rec *httptest.ResponseRecorder) uint64 {
	t.Helper()
	var res struct{ Revision uint64 }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res), rec.Body.String())
	return res.Revision
}

func TestServer_WritesAnswerOnceAppliedWithTheirRevision(t *testing.T) {
	nodes := newCluster(t, 1)
	api := leaderOf(t, nodes).api

	put := call(api, http.MethodPut, "/kv/greeting", "hello")
	require.Equal(t, http.StatusOK, put.Code, put.Body.String())
	rev := revisionOf(t, put)
	require.NotZero(t, rev)
	assert.Equal(t, fmt.Sprintf("{\"revision\":%d}\n", rev), put.Body.String())
	assert.Equal(t, "application/json", put.Header().Get("Content-Type"))

	// Applied before the answer: even a stale (local) read sees it.
	get := call(api, http.MethodGet, "/kv/greeting?consistency=stale", "")
	require.Equal(t, http.StatusOK, get.Code)
	assert.Equal(t, "hello", get.Body.String())
	assert.Equal(t, fmt.Sprint(rev), get.Header().Get("X-Revision"))
	assert.Equal(t, fmt.Sprintf("%q", fmt.Sprint(rev)), get.Header().Get("ETag"))

	get = call(api, http.MethodGet, "/kv/greeting", "")
	require.Equal(t, http.StatusOK, get.Code, "linearizable by default")
	head := call(api, http.MethodHead, "/kv/greeting", "")
	require.Equal(t, http.StatusOK, head.Code, "HEAD as GET")
	assert.Equal(t, fmt.Sprint(rev), head.Header().Get("X-Revision"))
	assert.Equal(t, "hello", get.Body.String())
	get = call(api, http.MethodGet, "/kv/greeting?consistency=lease", "")
	require.Equal(t, http.StatusOK, get.Code, get.Body.String())
	assert.Equal(t, "hello", get.Body.String())

	// Compare-and-swap on the revision.
	stale := call(api, http.MethodPut, "/kv/greeting", "bye", "If-Match", fmt.Sprint(rev-1))
	require.Equal(t, http.StatusPreconditionFailed, stale.Code)
	assert.Equal(t, rev, revisionOf(t, stale), "a failed CAS reports the current revision")
	create := call(api, http.MethodPut, "/kv/greeting", "bye", "If-Match", "0")
	require.Equal(t, http.StatusPreconditionFailed, create.Code, "revision 0: the key must not exist")
	swap := call(api, http.MethodPut, "/kv/greeting", "bye", "If-Match", fmt.Sprintf("%q", fmt.Sprint(rev)))
	require.Equal(t, http.StatusOK, swap.Code, "an entity tag as in ETag works too")
	rev2 := revisionOf(t, swap)
	assert.Greater(t, rev2, rev)

	del := call(api, http.MethodDelete, "/kv/greeting", "", "If-Match", fmt.Sprint(rev2))
	require.Equal(t, http.StatusOK, del.Code, del.Body.String())
	assert.Equal(t, http.StatusNotFound, call(api, http.MethodGet, "/kv/greeting", "").Code)

	nested := call(api, http.MethodPut, "/kv/a/b/c", "slashes")
	require.Equal(t, http.StatusOK, nested.Code)
	assert.Equal(t, "slashes", call(api, http.MethodGet, "/kv/a/b/c", "").Body.String())

	snap := call(api, http.MethodPost, "/admin/snapshot", "")
	require.Equal(t, http.StatusOK, snap.Code, snap.Body.String())
	assert.Equal(t, http.StatusOK, call(api, http.MethodGet, "/healthz", "").Code)
	status := call(api, http.MethodGet, "/status", "")
	require.Equal(t, http.StatusOK, status.Code)
	var st raft.Status
	require.NoError(t, json.Unmarshal(status.Body.Bytes(), &st))
	assert.Equal(t, raft.Leader, st.Role)
	assert.NotZero(t, st.SnapshotIndex)
}

func TestServer_BadInputGetsA4xxThatSaysWhy(t *testing.T) {
	nodes := newCluster(t, 1)
	api := leaderOf(t, nodes).api
	longKey := strings.Repeat("k", store.MaxKeySize+1)
	for _, tc := range []struct {
		name, method, path, body string
		header                   []string
		code                     int
		says                     string
	}{
		{"key too long", http.MethodPut, "/kv/" + longKey, "v", nil, http.StatusBadRequest, "longer than the limit"},
		{"key too long on read", http.MethodGet, "/kv/" + longKey, "", nil, http.StatusBadRequest, "longer than the limit"},
		{"value too long", http.MethodPut, "/kv/k", strings.Repeat("v", store.MaxValueSize+1), nil, http.StatusRequestEntityTooLarge, "limit"},
		{"empty key", http.MethodPut, "/kv/", "v", nil, http.StatusBadRequest, "empty key"},
		{"bad If-Match", http.MethodPut, "/kv/k", "v", []string{"If-Match", "yesterday"}, http.StatusBadRequest, "If-Match must be a revision"},
		{"unknown consistency", http.MethodGet, "/kv/k?consistency=eventual", "", nil, http.StatusBadRequest, "unsupported consistency"},
		{"missing key", http.MethodGet, "/kv/nope", "", nil, http.StatusNotFound, "not found"},
		{"bad member JSON", http.MethodPost, "/admin/members", "{", nil, http.StatusBadRequest, "bad member JSON"},
		{"unknown member field", http.MethodPost, "/admin/members", `{"id":4,"addr":"x"}`, nil, http.StatusBadRequest, "bad member JSON"},
		{"member without addresses", http.MethodPost, "/admin/members", `{"id":4}`, nil, http.StatusBadRequest, "addresses"},
		{"bad member ID", http.MethodPost, "/admin/members/x/promote", "", nil, http.StatusBadRequest, "non-zero number"},
		{"bad transfer target", http.MethodPost, "/admin/transfer?to=me", "", nil, http.StatusBadRequest, "member ID"},
		{"unknown path", http.MethodGet, "/nope", "", nil, http.StatusNotFound, `{"error":"no endpoint GET /nope`},
		{"wrong method", http.MethodPost, "/kv/k", "", nil, http.StatusMethodNotAllowed, `{"error":"POST is not a method`},
		{"If-Match with one quote", http.MethodPut, "/kv/k", "v", []string{"If-Match", `3"`}, http.StatusBadRequest, "If-Match must be a revision"},
		{"weak If-Match", http.MethodPut, "/kv/k", "v", []string{"If-Match", `W/"3"`}, http.StatusBadRequest, "If-Match must be a revision"},
		// JSON would turn these bytes into U+FFFD: two keys would be one.
		{"key not UTF-8", http.MethodPut, "/kv/%FF", "v", nil, http.StatusBadRequest, "not valid UTF-8"},
		{"key not UTF-8 on read", http.MethodGet, "/kv/%FE", "", nil, http.StatusBadRequest, "not valid UTF-8"},
		// A mux would clean these paths and redirect to another key.
		{"empty key segment", http.MethodPut, "/kv/a//b", "v", nil, http.StatusBadRequest, "segment"},
		{"escaped empty key segment", http.MethodPut, "/kv/%2Fx", "v", nil, http.StatusBadRequest, "segment"},
		{"dot-dot key segment", http.MethodPut, "/kv/a/../b", "v", nil, http.StatusBadRequest, "segment"},
		{"dot key", http.MethodGet, "/kv/.", "", nil, http.StatusBadRequest, "segment"},
		{"promote a non-member", http.MethodPost, "/admin/members/99/promote", "", nil, http.StatusNotFound, "99 is not a member"},
		{"remove a non-member", http.MethodDelete, "/admin/members/99", "", nil, http.StatusNotFound, "99 is not a member"},
		{"add a taken ID", http.MethodPost, "/admin/members", `{"id":1,"raft":"10.0.0.9:7000","http":"impostor.example"}`, nil,
			http.StatusConflict, "member 1 already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := call(api, tc.method, tc.path, tc.body, tc.header...)
			assert.Equal(t, tc.code, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), tc.says)
		})
	}
}

func TestServer_FollowerRedirectsWritesAndServesReads(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	want := fmt.Sprintf("http://node%d.example/kv/k", leader.node.Status().ID)
	for _, method := range []string{http.MethodPut, http.MethodDelete} {
		rec := call(follower.api, method, "/kv/k", "v")
		require.Equal(t, http.StatusTemporaryRedirect, rec.Code, "%s: %s", method, rec.Body.String())
		assert.Equal(t, want, rec.Header().Get("Location"), method)
	}
	// A key's escaped slash stays escaped: "a/b" and "a%2Fb" are the
	// same key, but the redirect must not turn %2F%2F into "//".
	rec := call(follower.api, http.MethodPut, "/kv/a%2Fb%2Fc?x=1", "v")
	require.Equal(t, http.StatusTemporaryRedirect, rec.Code, rec.Body.String())
	assert.Equal(t, fmt.Sprintf("http://node%d.example/kv/a%%2Fb%%2Fc?x=1", leader.node.Status().ID), rec.Header().Get("Location"))
	rec = call(follower.api, http.MethodPost, "/admin/members/2/promote", "")
	assert.Equal(t, http.StatusTemporaryRedirect, rec.Code, "admin calls go to the leader too")

	require.Equal(t, http.StatusOK, call(leader.api, http.MethodPut, "/kv/k", "v").Code)
	get := call(follower.api, http.MethodGet, "/kv/k", "")
	require.Equal(t, http.StatusOK, get.Code, "a linearizable read on a follower")
	assert.Equal(t, "v", get.Body.String())
}

func TestServer_WithoutALeaderAnswers503(t *testing.T) {
	api := newCluster(t, 0)[1].api // not a member of any cluster: no leader, ever
	health := call(api, http.MethodGet, "/healthz", "")
	assert.Equal(t, http.StatusServiceUnavailable, health.Code)
	assert.Contains(t, health.Body.String(), "no leader")

	put := call(api, http.MethodPut, "/kv/k", "v")
	assert.Equal(t, http.StatusServiceUnavailable, put.Code, put.Body.String())
	assert.Contains(t, put.Body.String(), `"outcome":"not-applied"`)
	assert.NotEmpty(t, put.Header().Get("Retry-After"))

	get := call(api, http.MethodGet, "/kv/k", "")
	assert.Equal(t, http.StatusServiceUnavailable, get.Code, get.Body.String())
	assert.Equal(t, http.StatusNotFound, call(api, http.MethodGet, "/kv/k?consistency=stale", "").Code,
		"a stale read needs no leader (and finds no key here)")
}

func TestServer_AdminTransfersLeadershipAndChangesMembers(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	from := leader.node.Status().ID
	to := from%3 + 1
	rec := call(leader.api, http.MethodPost, fmt.Sprintf("/admin/transfer?to=%d", to), "")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Eventually(t, func() bool { return nodes[to].node.Status().Role == raft.Leader }, 10*time.Second, 10*time.Millisecond)

	api := nodes[to].api
	// "learner" omitted: a learner, as the safe default.
	rec = call(api, http.MethodPost, "/admin/members", `{"id":4,"raft":"10.0.0.4:7000","http":"node4.example"}`)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var members []raft.Member
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &members))
	require.Len(t, members, 4)
	assert.True(t, members[3].Learner)
	assert.Equal(t, "node4.example", members[3].Meta[MetaHTTP])

	// The same call again (a joiner that restarted) is fine; another
	// address or role under that ID is refused, and changes nothing.
	rec = call(api, http.MethodPost, "/admin/members", `{"id":4,"raft":"10.0.0.4:7000","http":"node4.example","learner":true}`)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	for _, body := range []string{
		`{"id":4,"raft":"10.0.0.5:7000","http":"node4.example"}`,
		`{"id":4,"raft":"10.0.0.4:7000","http":"node5.example"}`,
		`{"id":4,"raft":"10.0.0.4:7000","http":"node4.example","learner":false}`,
	} {
		rec = call(api, http.MethodPost, "/admin/members", body)
		require.Equal(t, http.StatusConflict, rec.Code, "%s: %s", body, rec.Body.String())
	}
	st := nodes[to].node.Status()
	require.Len(t, st.Members, 4)
	assert.Equal(t, "10.0.0.4:7000", st.Members[3].Addr)
	assert.True(t, st.Members[3].Learner)

	rec = call(api, http.MethodDelete, "/admin/members/4", "")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &members))
	assert.Len(t, members, 3)
}
