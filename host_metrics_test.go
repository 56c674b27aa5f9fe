package raft

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of what a Host shows of its groups (host_metrics.go): the host's
// metrics count its groups in a handful of series whatever their number,
// a group's own metrics carry its group ID only when that group asks for
// them, and every group's Status is there on demand.

// TestHost_MetricsCountTheGroupsNotOneSeriesEach: three hosts with one
// provider, six groups led by host 1 and then balanced. The host's
// instruments show the groups by role, the leaders by host and the
// balancing's transfers; the one group given a MeterProvider of its own
// has its metrics with raft.group.id, and no other group has any series.
func TestHost_MetricsCountTheGroupsNotOneSeriesEach(t *testing.T) {
	const groups = 6
	r := newMetricsReader(t)
	c, ids := newBalanceCluster(t, false, groups, 0, func(c *hostCluster) {
		tuneHost := c.tuneHost
		c.tuneHost = func(id uint64, cfg *HostConfig) {
			tuneHost(id, cfg)
			cfg.MeterProvider = r.provider
		}
		tune := c.tune
		c.tune = func(group uint64, cfg *Config) {
			tune(group, cfg)
			if group == 1 {
				cfg.MeterProvider = r.provider
			}
		}
	})
	all := r.collect()
	assert.Equal(t, float64(groups), value(all, "raft.host.groups", 1, attrRole.String("leader")))
	for id := uint64(2); id <= 3; id++ {
		assert.Equal(t, float64(groups), value(all, "raft.host.groups", id, attrRole.String("follower")), "host %d", id)
		assert.Zero(t, value(all, "raft.host.groups", id, attrRole.String("leader")), "host %d", id)
		assert.Equal(t, float64(groups), value(all, "raft.host.leaders", id, attrLeaderID.String("1")), "host %d", id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// newBalanceCluster waited until host 1 showed every follower caught
	// up: one call places all four.
	res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	require.Equal(t, 4, res.Transferred(), "moves: %v", res.Moves)
	require.Zero(t, res.Unplaced)
	counts := c.leaderCounts(ids)
	require.Equal(t, map[uint64]int{1: 2, 2: 2, 3: 2}, counts)

	r.eventually(func(all map[string][]metricPoint) bool {
		for id := uint64(1); id <= 3; id++ {
			if value(all, "raft.host.groups", id, attrRole.String("leader")) != 2 ||
				value(all, "raft.host.groups", id) != groups ||
				value(all, "raft.host.groups.no_leader", id) != 0 ||
				value(all, "raft.host.groups.resting", id) != 0 {
				return false
			}
			for leader := uint64(1); leader <= 3; leader++ {
				if value(all, "raft.host.leaders", id, attrLeaderID.String(strconv.FormatUint(leader, 10))) != 2 {
					return false
				}
			}
		}
		return value(all, "raft.host.balance.transfers", 1, attrOutcome.String("succeeded")) == 4 &&
			value(all, "raft.host.balance.transfers", 1, attrOutcome.String("failed")) == 0
	}, "the host metrics do not show the balanced leaders: %v", counts)

	// Group 1's own metrics, one series per replica; no other group's.
	all = r.collect()
	groupIDs := map[string]bool{}
	for name, points := range all {
		for _, p := range points {
			if v, ok := p.attrs.Value(attrGroupID); ok {
				groupIDs[v.AsString()] = true
			} else {
				assert.Contains(t, name, "raft.host.", "%s has a point of a group without raft.group.id", name)
			}
		}
	}
	assert.Equal(t, map[string]bool{"1": true}, groupIDs)
	leaders, found := sumOf(all["raft.is_leader"], false, attrGroupID.String("1"))
	assert.True(t, found)
	assert.Equal(t, 1.0, leaders, "exactly one replica of group 1 leads")
	assert.Len(t, all["raft.is_leader"], 3, "one series per replica of group 1")

	// Every group's Status on demand, as JSON.
	statuses := c.hosts[2].GroupStatuses()
	require.Len(t, statuses, groups)
	led := 0
	for i, gs := range statuses {
		assert.Equal(t, ids[i], gs.Group)
		assert.False(t, gs.Resting)
		if gs.Status.Role == Leader {
			led++
		}
	}
	assert.Equal(t, counts[2], led)
	b, err := json.Marshal(statuses[0])
	require.NoError(t, err)
	assert.Contains(t, string(b), `"group":1,"resting":false,"status":{"id":2,`)

	// A closed host's callback is gone.
	c.closeHost(3)
	all = r.collect()
	_, found = sumOf(all["raft.host.groups"], false, nodeAttr(3))
	assert.False(t, found, "a closed host still reports its groups")
}
