package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft/examples/kvstore/client"
	"github.com/raftkit/raft/examples/kvstore/server"
	"github.com/raftkit/raft/examples/kvstore/shard"
)

// The sharded variant, black-box: three kvstore processes with -groups 4
// (one raft.Host and one HostStorage each) behind the same Raft proxies as
// the single group's tests. Writes to many keys land in the groups their
// hashes name, every group's leader is reported by /status, and the
// process that leads the most groups is killed (SIGKILL) under load and
// restarted: the other two elect leaders for its groups, the restarted one
// recovers every group from its one log and its snapshots, nothing
// acknowledged is lost, and porcupine checks the history of the load
// (clients unchanged: redirects to each key's group's leader).
func TestBlackBox_ShardedGroupsSurviveALeaderKill(t *testing.T) {
	const groups = 4
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KVSTORE_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "KVSTORE_SEED")
		seed = s
	}
	t.Logf("seed %d (replay the clients' choices with KVSTORE_SEED=%d)", seed, seed)
	c := newTestCluster(t, 3)
	for _, nd := range c.nodes {
		nd.args = append(nd.args, "-groups", strconv.Itoa(groups))
	}
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)

	// Writes to many keys land in the groups their hashes name: each
	// group's log grows by at least its keys' writes (and by no more than
	// those plus a few elections' entries).
	keys := make([]string, 40)
	want := map[uint64]uint64{}
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		want[shard.GroupOf(keys[i], groups)]++
	}
	require.Len(t, want, groups, "the keys span every group")
	before := c.nodes[1].shardedStatus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := client.New(c.httpAddrs()...)
	defer cl.Close()
	for _, k := range keys {
		_, err := cl.Put(ctx, k, []byte("first "+k))
		require.NoError(t, err, k)
	}
	// Node 1 may follow a group, and learn of the last commit with the
	// next message from its leader.
	var after server.ShardedStatus
	require.Eventually(t, func() bool {
		after = c.nodes[1].shardedStatus(t)
		for i, g := range after.Groups {
			if g.Status.CommitIndex-before.Groups[i].Status.CommitIndex < want[g.Group] {
				return false
			}
		}
		return len(after.Groups) == groups
	}, 10*time.Second, 10*time.Millisecond, "a group committed fewer entries than its keys' writes")
	var total uint64
	for i, g := range after.Groups {
		assert.Equal(t, uint64(i+1), g.Group)
		grew := g.Status.CommitIndex - before.Groups[i].Status.CommitIndex
		assert.GreaterOrEqual(t, grew, want[g.Group], "group %d committed fewer entries than its keys' writes", g.Group)
		total += grew
		first, last := shard.HashRange(g.Group, groups)
		assert.Equal(t, fmt.Sprintf("%016x", first), g.HashFrom)
		assert.Equal(t, fmt.Sprintf("%016x", last), g.HashTo)
		assert.NotZero(t, g.Leader, "group %d reports its leader", g.Group)
		assert.Equal(t, g.Status.Leader, g.Leader)
	}
	assert.LessOrEqual(t, total, uint64(len(keys))+2*groups, "no write landed in more than one group")

	// /metrics has each group's leader; admin calls name their group, and
	// those the sharded example does not serve say so.
	resp, err := http.Get("http://" + c.nodes[2].http + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	for g := 1; g <= groups; g++ {
		assert.Regexp(t, fmt.Sprintf(`(?m)^kvstore_group_leader\{group="%d"\} [1-3]$`, g), string(body))
	}
	for _, tc := range []struct {
		method, path string
		code         int
		says         string
	}{
		{http.MethodPost, "/admin/transfer", http.StatusBadRequest, "this node runs groups 1 to 4: name one with ?group="},
		{http.MethodPost, "/admin/transfer?group=5", http.StatusBadRequest, "this node runs groups 1 to 4"},
		{http.MethodPost, "/admin/members", http.StatusNotImplemented, "is not served by a node with -groups 4"},
		{http.MethodGet, "/admin/backup", http.StatusNotImplemented, "is not served by a node with -groups 4"},
	} {
		req, err := http.NewRequest(tc.method, "http://"+c.nodes[1].http+tc.path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, tc.code, resp.StatusCode, "%s %s", tc.method, tc.path)
		assert.Contains(t, string(body), tc.says, "%s %s", tc.method, tc.path)
	}

	// The process that leads the most groups snapshots them (so that it
	// restarts from snapshots and the log after them), then is killed
	// under load and restarted.
	leads := map[uint64]int{}
	for _, g := range c.nodes[1].shardedStatus(t).Groups {
		leads[g.Leader]++
	}
	victim := uint64(1)
	for id, n := range leads {
		if id != 0 && (n > leads[victim] || (n == leads[victim] && id < victim)) {
			victim = id
		}
	}
	require.NotZero(t, leads[victim])
	resp, err = http.Post("http://"+c.nodes[victim].http+"/admin/snapshot", "", nil)
	require.NoError(t, err)
	var snapped struct {
		SnapshotIndex map[string]uint64 `json:"snapshotIndex"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&snapped))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, snapped.SnapshotIndex, groups, "every group snapshots")

	h := &history{start: time.Now()}
	loadKeys := []string{"a", "b", "c", "d", "e", "f", "g", "h"} // spread over the groups, checked below
	spread := map[uint64]bool{}
	for _, k := range loadKeys {
		spread[shard.GroupOf(k, groups)] = true
	}
	require.Len(t, spread, groups, "the load's keys span every group")
	loadCtx, loadCancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer loadCancel()
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+2))
		wg.Go(func() { runWorker(loadCtx, w, wrng, c, loadKeys, h) })
	}
	waitFor(loadCtx, 2*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.okWrites > 0
	})
	t.Logf("killing node %d, which leads %d of the %d groups", victim, leads[victim], groups)
	c.kill(victim)
	// The other two elect a leader for each of its groups.
	other := c.nodes[victim%3+1]
	require.Eventually(t, func() bool {
		st, err := other.tryShardedStatus()
		if err != nil {
			return false
		}
		for _, g := range st.Groups {
			if g.Leader == 0 || g.Leader == victim {
				return false
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond, "the groups node %d led did not elect new leaders; logs in %s", victim, c.dir)
	c.start(victim)
	wg.Wait()
	c.waitHealthy(t, 20*time.Second)
	// The restarted node restored each group from its own snapshot (or a
	// later one), in its group's directory of the HostStorage.
	for _, g := range c.nodes[victim].shardedStatus(t).Groups {
		assert.GreaterOrEqual(t, g.Status.SnapshotIndex, snapped.SnapshotIndex[strconv.FormatUint(g.Group, 10)], "group %d", g.Group)
		assert.Positive(t, g.Status.SnapshotIndex, "group %d", g.Group)
	}

	// Every key reads back its last acknowledged write on every node,
	// the restarted one included.
	for _, k := range keys {
		for _, addr := range c.httpAddrs() {
			at := client.New(addr)
			v, _, err := at.Get(ctx, k, client.Linearizable)
			at.Close()
			require.NoError(t, err, "%s on %s; logs in %s", k, addr, c.dir)
			assert.Equal(t, "first "+k, string(v), "%s on %s", k, addr)
		}
	}
	final := client.New(c.nodes[victim].http)
	defer final.Close()
	for _, key := range loadKeys {
		call := h.now()
		value, rev, err := final.Get(ctx, key, client.Linearizable)
		if errors.Is(err, client.ErrNotFound) {
			err = nil
		}
		require.NoError(t, err, "final read of %s; logs in %s", key, c.dir)
		h.add(porcupine.Operation{ClientId: workers, Input: kvIn{op: opGet, key: key}, Output: kvOut{value: string(value)},
			Call: call, Return: h.now(), Metadata: fmt.Sprintf("final read on the restarted node, revision %d", rev)})
		if acked := h.maxAcked(key); value != nil && rev < acked {
			t.Errorf("key %s is at revision %d after the restart, but a write at revision %d was acknowledged; logs in %s", key, rev, acked, c.dir)
		}
	}
	ops := h.finish()
	t.Logf("history: %d operations (%s); nodes' logs: %s", len(ops), h.counts(), c.logCounts("became leader"))
	require.Greater(t, h.okWrites, 10, "too few writes succeeded to check anything; logs in %s", c.dir)
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, time.Minute)
	switch res {
	case porcupine.Illegal:
		viz := filepath.Join(c.dir, "linearizability.html")
		if err := porcupine.VisualizePath(kvModel, info, viz); err != nil {
			t.Logf("writing the visualization: %v", err)
		}
		t.Fatalf("seed %d: the history is NOT linearizable; visualization %s, nodes' logs in %s", seed, viz, c.dir)
	case porcupine.Unknown:
		t.Fatalf("seed %d: porcupine could not decide whether the history of %d operations is linearizable; logs in %s", seed, len(ops), c.dir)
	}
}

// A node refuses to start on data written with another -groups, saying
// why: the mapping of keys to groups depends on it.
func TestBlackBox_ShardedRefusesAnotherGroupCount(t *testing.T) {
	c := newTestCluster(t, 1)
	nd := c.nodes[1]
	single := slices.Clone(nd.args)
	nd.args = append(nd.args, "-groups", "4")
	for _, args := range [][]string{nd.args, single} {
		nd.args = args
		c.start(1)
		c.waitHealthy(t, 20*time.Second)
		c.kill(1)
		if len(args) == len(single) {
			break
		}
		// The same node, its data now of -groups 4.
		for _, groups := range []string{"2", "1"} {
			out, err := runBinary(c.bin, withGroups(single, groups)...)
			require.Error(t, err, "%s", out)
			assert.Contains(t, out, "holds the data of -groups 4, not -groups "+groups+": keys are mapped to groups by their number")
		}
		// A fresh directory for a single group.
		require.NoError(t, os.RemoveAll(filepath.Join(c.dir, "node1")))
	}
	out, err := runBinary(c.bin, withGroups(single, "4")...)
	require.Error(t, err, "%s", out)
	assert.Contains(t, out, "holds data but no GROUPS file: it was written with -groups 1")
}

// withGroups returns args with -groups groups.
func withGroups(args []string, groups string) []string {
	return append(slices.Clone(args), "-groups", groups)
}

// shardedStatus returns a sharded node's /status.
func (nd *testNode) shardedStatus(t *testing.T) server.ShardedStatus {
	t.Helper()
	st, err := nd.tryShardedStatus()
	require.NoError(t, err)
	return st
}

func (nd *testNode) tryShardedStatus() (server.ShardedStatus, error) {
	return fetchStatus[server.ShardedStatus](nd)
}

// The sharded variant over mutual TLS: the hosts' certificates name their
// host IDs, which are the node IDs of -id, so the single group's
// certificates serve unchanged.
func TestBlackBox_ShardedMutualTLS(t *testing.T) {
	c := newTestCluster(t, 3)
	_ = c.useMutualTLS(t)
	for _, nd := range c.nodes {
		nd.args = append(nd.args, "-groups", "2")
	}
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := client.New(c.httpAddrs()...)
	defer cl.Close()
	cl.Groups = 2 // a leader per group
	keys := []string{"a", "b", "c", "d"}
	groupsHit := map[uint64]bool{}
	for _, k := range keys {
		groupsHit[shard.GroupOf(k, 2)] = true
		_, err := cl.Put(ctx, k, []byte("over TLS "+k))
		require.NoError(t, err, k)
	}
	require.Len(t, groupsHit, 2, "the keys span both groups")
	for _, addr := range c.httpAddrs() {
		at := client.New(addr)
		for _, k := range keys {
			v, _, err := at.Get(ctx, k, client.Linearizable)
			require.NoError(t, err, "%s on %s", k, addr)
			assert.Equal(t, "over TLS "+k, string(v))
		}
		at.Close()
	}
}
