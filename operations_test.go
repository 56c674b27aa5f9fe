package raft

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Procedures of docs/operations.md that no other test performs, each over
// TCPTransport and FileStorage, as separate nodes restarting on their data
// directories (rollingCluster).

// joinerTune returns a rollingCluster config tuning with a short election
// timeout in which the nodes that joiners lists start without
// InitialMembers, as nodes to be added (the test may change the list).
func joinerTune() (tune func(*Config), setJoiner func(id uint64, joiner bool)) {
	var mu sync.Mutex
	joiners := map[uint64]bool{}
	tune = func(cfg *Config) {
		cfg.ElectionTimeout = 200 * time.Millisecond
		cfg.HeartbeatInterval = 20 * time.Millisecond
		mu.Lock()
		defer mu.Unlock()
		if joiners[cfg.ID] {
			cfg.InitialMembers = nil
		}
	}
	return tune, func(id uint64, joiner bool) {
		mu.Lock()
		defer mu.Unlock()
		joiners[id] = joiner
	}
}

// stopAndWipe stops node id (its process exits) and deletes its data
// directory.
func (c *rollingCluster) stopAndWipe(id uint64) {
	c.t.Helper()
	c.stopNode(id)
	require.NoError(c.t, os.RemoveAll(filepath.Join(c.dir, fmt.Sprint(id))))
}

// stopNode stops node id, keeping its directory.
func (c *rollingCluster) stopNode(id uint64) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	require.NoError(c.t, n.Close())
	require.NoError(c.t, c.transports[id].Close())
	require.NoError(c.t, c.storages[id].Close())
}

// TestTCPFileStorage_WipedVoterWithholdsItsVote is "a member's disk was
// wiped and it restarted anyway": node wiped restarts on an empty
// directory with its founding flags while the leader is down. With the
// remaining voter it would be a majority, but it may have voted in that
// voter's term before the wipe: it withholds its vote, so no leader is
// elected until the old leader is back; then it is sent the whole log.
func TestTCPFileStorage_WipedVoterWithholdsItsVote(t *testing.T) {
	tune, _ := joinerTune()
	c := newRollingCluster(t, tune)
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		_, err := c.node(c.leader()).Propose(ctx, []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	c.waitCaughtUp()
	leader := c.leader()
	var wiped, other uint64
	for _, id := range c.ids {
		switch {
		case id == leader:
		case wiped == 0:
			wiped = id
		default:
			other = id
		}
	}
	addrs := map[uint64]string{leader: c.transports[leader].Addr(), wiped: c.transports[wiped].Addr()}
	c.stopNode(leader)
	c.stopAndWipe(wiped)
	c.listen(wiped, addrs[wiped])
	c.start(wiped)
	otherNode, wipedNode := c.node(other), c.node(wiped)
	require.Never(t, func() bool {
		return otherNode.Status().Role == Leader || wipedNode.Status().Role == Leader
	}, 10*200*time.Millisecond, 5*time.Millisecond, "a leader was elected with the vote of a wiped node")

	c.listen(leader, addrs[leader])
	c.start(leader)
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	_, err := c.node(c.leader()).Propose(ctx, []byte("after the wipe"))
	require.NoError(t, err)
	c.waitCaughtUp()
	assert.Equal(t, c.node(c.leader()).Status().CommitIndex, wipedNode.Status().AppliedIndex, "the wiped node has the whole log again")
}

// TestTCPFileStorage_RemoveWipeAndAddBack is the procedure for a member
// whose disk is lost or must be replaced under the same ID: remove it,
// wipe its directory, start it as a joiner (no InitialMembers), add it as
// a learner, and promote it once it has caught up. Writes go on
// throughout; then every node restarts in the final configuration.
func TestTCPFileStorage_RemoveWipeAndAddBack(t *testing.T) {
	tune, setJoiner := joinerTune()
	c := newRollingCluster(t, tune)
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	w := c.startWriter()
	w.waitWrites(20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const id = 3
	if c.leader() == id {
		require.NoError(t, c.node(id).TransferLeadership(ctx, 0))
	}
	require.NoError(t, c.node(c.leader()).RemoveMember(ctx, id))
	require.Eventually(t, func() bool { return c.node(id).Status().Removed }, 10*time.Second, time.Millisecond, "the removed node knows")
	addr := c.transports[id].Addr()
	c.stopAndWipe(id)
	w.waitWrites(20)

	setJoiner(id, true)
	c.listen(id, addr)
	c.start(id)
	require.NoError(t, c.node(c.leader()).AddLearner(ctx, id, addr))
	require.Eventually(t, func() bool {
		l := c.leader()
		return l != 0 && c.node(id).Status().AppliedIndex+10 >= c.node(l).Status().CommitIndex
	}, 20*time.Second, time.Millisecond, "the learner catches up")
	require.NoError(t, c.node(c.leader()).AddVoter(ctx, id, ""))
	w.waitWrites(20)
	c.waitCaughtUp()
	writes, gap := w.finish()
	t.Logf("%d writes; longest gap %v", writes, gap)

	// The founding flags work again for the re-added node: its stored
	// configuration wins.
	setJoiner(id, false)
	for _, n := range c.ids {
		require.NoError(t, c.restart(n, closeNode))
	}
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	_, err := c.node(c.leader()).Propose(ctx, []byte("after the restart"))
	require.NoError(t, err)
	c.waitCaughtUp()
	for _, n := range c.ids {
		st := c.node(n).Status()
		assert.Equal(t, []uint64{1, 2, 3}, memberIDs(st.Members), "node %d", n)
		assert.False(t, st.Removed, "node %d", n)
		for _, m := range st.Members {
			assert.False(t, m.Learner, "node %d: member %d", n, m.ID)
		}
	}
}
