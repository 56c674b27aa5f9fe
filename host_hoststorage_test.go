package raft

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHost_TCP_GroupsShareOneHostStorageAndRestartFromIt runs what a
// service of many groups deploys: three hosts over TCP, each keeping all
// its groups in one HostStorage (fsync on). Every host stops, as processes
// do, its log is reopened, and every group comes back from it with what it
// had committed, elects and commits again.
func TestHost_TCP_GroupsShareOneHostStorageAndRestartFromIt(t *testing.T) {
	const hostsN = 3
	groups := groupIDs(8)
	dirs := map[uint64]string{}
	wals := map[uint64]*HostStorage{}
	open := func(host uint64) {
		wals[host] = openHS(t, dirs[host])
	}
	for h := uint64(1); h <= hostsN; h++ {
		dirs[h] = t.TempDir()
		open(h)
	}
	// Registered before the cluster, so that it runs after the hosts
	// (whose groups write to the logs) are closed.
	t.Cleanup(func() {
		for _, w := range wals {
			assert.NoError(t, w.Close())
		}
	})
	c := newHostCluster(t, hostsN, true)
	c.newStorage = func(k groupKey) Storage {
		s, err := wals[k.host].Group(k.group)
		require.NoError(t, err)
		return s
	}
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	last := map[uint64]uint64{}
	for _, g := range groups {
		for i := range 3 {
			last[g] = c.propose(g, fmt.Sprintf("g%d/%d", g, i))
		}
		c.waitApplied(g, last[g])
	}
	for h := uint64(1); h <= hostsN; h++ {
		assert.ElementsMatch(t, groups, wals[h].Groups(), "host %d's log holds every group", h)
	}

	// Every host stops; its log is closed and reopened, as a restarted
	// process would open it.
	for h := uint64(1); h <= hostsN; h++ {
		c.closeHost(h)
		require.NoError(t, wals[h].Close())
		delete(wals, h)
		open(h)
	}
	for h := uint64(1); h <= hostsN; h++ {
		c.startHost(h)
	}
	for _, g := range groups {
		for h := uint64(1); h <= hostsN; h++ {
			c.startGroup(g, h, c.members[g])
		}
	}
	c.waitLeaders(groups)
	for _, g := range groups {
		next := c.propose(g, fmt.Sprintf("g%d/after", g))
		require.Greater(t, next, last[g], "group %d went on after its log", g)
		c.waitApplied(g, next)
		for h := uint64(1); h <= hostsN; h++ {
			// The restarted replica applied its group's commands again from
			// the log, the ones before the restart included.
			commands := map[string]bool{}
			for _, e := range c.sms[groupKey{g, h}].entries() {
				commands[string(e.Data)] = true
			}
			for i := range 3 {
				assert.True(t, commands[fmt.Sprintf("g%d/%d", g, i)], "group %d on host %d lost g%d/%d", g, h, g, i)
			}
			assert.True(t, commands[fmt.Sprintf("g%d/after", g)])
		}
	}
	c.checkSameHistory(groups)
}
