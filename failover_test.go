package raft

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTCPFailover_NewLeaderCommitsSoon measures failover over TCP: three
// nodes on loopback (election timeout 100 ms, so 100-200 ms randomized);
// the leader's process stops (Close, no handover), and the time runs until
// a proposal commits on the new leader. The stopped node then restarts and
// rejoins before the next round. Each failover must end within a second
// (five of the longest election timeouts), and the figures are logged.
// For a measurement, run more rounds:
//
//	RAFT_FAILOVER_ROUNDS=30 go test -run TestTCPFailover_NewLeaderCommitsSoon -v .
func TestTCPFailover_NewLeaderCommitsSoon(t *testing.T) {
	rounds := 3
	if s := os.Getenv("RAFT_FAILOVER_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "RAFT_FAILOVER_ROUNDS")
		rounds = n
	}
	c := newTCPCluster(t, 3)
	var took []time.Duration
	for round := range rounds {
		c.propose("before " + strconv.Itoa(round))
		old := c.waitLeader()
		start := time.Now()
		c.stopNode(old)
		index := c.propose("after " + strconv.Itoa(round))
		took = append(took, time.Since(start))
		c.restartNode(old)
		c.waitApplied(old, index)
	}
	slices.Sort(took)
	t.Logf("failover to a commit on the new leader, %d rounds: p50 %v, max %v, all %v", rounds, took[len(took)/2], took[len(took)-1], took)
	for _, d := range took {
		assert.Less(t, d, time.Second, "failover took %v", d)
	}
}
