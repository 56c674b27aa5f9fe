package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/shard"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// newShardedCluster starts three hosts over an in-memory network, each
// with a replica of groups 1..n and a Sharded API; host i's HTTP address
// in the members' metadata is nodei.example.
func newShardedCluster(t *testing.T, n int) map[uint64]*Sharded {
	t.Helper()
	network := raft.NewInmemNetwork()
	t.Cleanup(func() { network.Close() })
	var members []raft.Member
	for id := uint64(1); id <= 3; id++ {
		members = append(members, raft.Member{ID: id, Meta: map[string]string{MetaHTTP: fmt.Sprintf("node%d.example", id)}})
	}
	apis := map[uint64]*Sharded{}
	for id := uint64(1); id <= 3; id++ {
		host, err := raft.NewHost(raft.HostConfig{ID: id, Network: network})
		require.NoError(t, err)
		t.Cleanup(func() { host.Close() })
		var groups []Group
		for g := uint64(1); g <= uint64(n); g++ {
			st := store.New()
			node, err := host.StartGroup(g, raft.Config{InitialMembers: members, ElectionTimeout: 100 * time.Millisecond}, st, raft.NewMemoryStorage())
			require.NoError(t, err)
			groups = append(groups, Group{ID: g, Node: node, Store: st})
		}
		apis[id], err = NewSharded(groups)
		require.NoError(t, err)
	}
	return apis
}

// A key's request is served by its group's replica: a write on a node that
// does not lead the key's group is redirected to the node that does, the
// write lands in that group's store only, and every node reads it.
func TestSharded_RoutesEachKeyToItsGroup(t *testing.T) {
	const n = 4
	apis := newShardedCluster(t, n)
	require.Eventually(t, func() bool {
		return call(apis[1], http.MethodGet, "/healthz", "").Code == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond, "every group elects a leader")
	// Node 1 may lead every group: hand group 1 to node 2, so that some
	// writes on node 1 are redirected.
	if g1 := apis[1].groups[0].Node; g1.Status().Leader == 1 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g1.TransferLeadership(ctx, 2))
	}
	redirected := 0
	for i := range 16 {
		key := fmt.Sprintf("key-%d", i)
		g := shard.GroupOf(key, n)
		value := "v" + key
		rec := httptest.NewRecorder()
		require.Eventually(t, func() bool {
			rec = call(apis[1], http.MethodPut, "/kv/"+key, value)
			if rec.Code == http.StatusTemporaryRedirect {
				leader := apis[1].groups[g-1].Node.Status().Leader
				require.Equal(t, fmt.Sprintf("http://node%d.example/kv/%s", leader, key), rec.Header().Get("Location"),
					"%s (group %d) is redirected to its group's leader", key, g)
				redirected++
				rec = call(apis[leader], http.MethodPut, "/kv/"+key, value)
			}
			return rec.Code == http.StatusOK
		}, 10*time.Second, 5*time.Millisecond, "%s was not written", key)
		for id, api := range apis {
			got := call(api, http.MethodGet, "/kv/"+key, "")
			require.Equal(t, http.StatusOK, got.Code, "%s on node %d: %s", key, id, got.Body.String())
			assert.Equal(t, value, got.Body.String())
			for _, other := range api.groups {
				_, _, found := other.Store.Get(key)
				assert.Equal(t, other.ID == g, found, "%s is in group %d's store only (node %d, group %d)", key, g, id, other.ID)
			}
		}
	}
	assert.Positive(t, redirected, "some keys' groups are led by other nodes")

	rec := call(apis[2], http.MethodGet, "/status", "")
	require.Equal(t, http.StatusOK, rec.Code)
	var st ShardedStatus
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	assert.Equal(t, uint64(2), st.ID)
	require.Len(t, st.Groups, n)
	for i, g := range st.Groups {
		assert.Equal(t, uint64(i+1), g.Group)
		first, last := shard.HashRange(g.Group, n)
		assert.Equal(t, fmt.Sprintf("%016x", first), g.HashFrom)
		assert.Equal(t, fmt.Sprintf("%016x", last), g.HashTo)
		assert.NotZero(t, g.Leader)
	}
}

func TestNewSharded_GroupsInOrder(t *testing.T) {
	_, err := NewSharded([]Group{{ID: 2}, {ID: 1}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the groups must be 1 to 2, in order")
}
