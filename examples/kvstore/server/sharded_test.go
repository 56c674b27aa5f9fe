package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// The mapping of keys to groups is part of the data's format: a change
// would look for existing keys in the wrong groups. These values were
// computed apart from this code (fmix64 of FNV-1a 64, in Python).
func TestGroupOf_Pinned(t *testing.T) {
	for _, tc := range []struct {
		key              string
		hash             uint64
		of4, of7, of1000 uint64
	}{
		{"", 0xefd01f60ba992926, 4, 7, 937},
		{"a", 0x82a2a958a9bece5b, 3, 4, 511},
		{"b", 0x6e673288764ad2d0, 2, 4, 432},
		{"hello", 0xe9c562c0fdb23244, 4, 7, 914},
		{"key-0", 0x18137ad031db6589, 1, 1, 95},
		{"key-1", 0xa002e14b20bb64ec, 3, 5, 626},
		{"user/42", 0xab51e013121d86fd, 3, 5, 670},
	} {
		assert.Equal(t, tc.hash, Hash(tc.key), "%q", tc.key)
		assert.Equal(t, tc.of4, GroupOf(tc.key, 4), "%q among 4", tc.key)
		assert.Equal(t, tc.of7, GroupOf(tc.key, 7), "%q among 7", tc.key)
		assert.Equal(t, tc.of1000, GroupOf(tc.key, 1000), "%q among 1000", tc.key)
		assert.Equal(t, uint64(1), GroupOf(tc.key, 1), "one group holds every key")
	}
}

// HashRange splits [0, 2^64) into n ranges that follow each other, of equal
// sizes (to one), and GroupOf puts a hash in the group whose range holds it.
func TestHashRange_SplitsTheHashSpaceEqually(t *testing.T) {
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	for _, n := range []int{1, 2, 3, 4, 7, 16, 1000, 1024} {
		var next uint64
		for g := uint64(1); g <= uint64(n); g++ {
			first, last := HashRange(g, n)
			require.Equal(t, next, first, "n %d: group %d starts where group %d ends", n, g, g-1)
			size := new(big.Int).Sub(new(big.Int).SetUint64(last), new(big.Int).SetUint64(first))
			size.Add(size, big.NewInt(1))
			ideal := new(big.Int).Div(two64, big.NewInt(int64(n)))
			diff := new(big.Int).Sub(size, ideal)
			assert.True(t, diff.IsInt64() && diff.Int64() >= 0 && diff.Int64() <= 1, "n %d: group %d holds %v hashes, not 2^64/n", n, g, size)
			for _, h := range []uint64{first, last, first + (last-first)/2} {
				hi, _ := mulHi(h, n)
				assert.Equal(t, g, hi+1, "n %d: hash %x is in group %d's range", n, h, g)
			}
			next = last + 1
		}
		_, last := HashRange(uint64(n), n)
		assert.Equal(t, uint64(math.MaxUint64), last, "n %d: the last group ends the hash space", n)
	}
}

func mulHi(h uint64, n int) (uint64, uint64) {
	p := new(big.Int).Mul(new(big.Int).SetUint64(h), big.NewInt(int64(n)))
	return new(big.Int).Rsh(p, 64).Uint64(), 0
}

// Keys that differ in their last characters spread over the groups: the
// reason for fmix64 after FNV-1a (sharded.go).
func TestGroupOf_SpreadsSimilarKeys(t *testing.T) {
	for _, format := range []string{"k%d", "user-%05d", "%d"} {
		count := map[uint64]int{}
		for i := range 1000 {
			count[GroupOf(fmt.Sprintf(format, i), 4)]++
		}
		for g := uint64(1); g <= 4; g++ {
			assert.InDelta(t, 250, count[g], 50, "%s: group %d holds %d of 1000 keys", format, g, count[g])
		}
	}
}

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
		g := GroupOf(key, n)
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
		first, last := HashRange(g.Group, n)
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
