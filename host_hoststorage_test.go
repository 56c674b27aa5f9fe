package raft

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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

// TestHost_StartGroupRefusesAnotherGroupsHostStorage: a group started on
// the Storage that HostStorage.Group gave for another group would replay
// that group's log as its own and write over it; StartGroup refuses it.
func TestHost_StartGroupRefusesAnotherGroupsHostStorage(t *testing.T) {
	wal := openHS(t, t.TempDir())
	defer func() { assert.NoError(t, wal.Close()) }()
	nw := NewInmemNetwork()
	defer nw.Close()
	h, err := NewHost(HostConfig{ID: 1, Network: nw})
	require.NoError(t, err)
	defer func() { assert.NoError(t, h.Close()) }()
	cfg := Config{InitialMembers: []Member{{ID: 1}}}

	_, err = h.StartGroup(6, cfg, &recordingSM{}, openGroup(t, wal, 5))
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "group 6: the Storage is HostStorage.Group(5)'s; each group needs its own: HostStorage.Group(6)")
	assert.Empty(t, h.Groups())
	assert.Empty(t, wal.Groups(), "nothing was written to group 5's log")

	_, err = h.StartGroup(6, cfg, &recordingSM{}, openGroup(t, wal, 6))
	require.NoError(t, err)
}

// TestHost_TCP_RestartAtAnotherAddressWarns: a host restarted on another
// port (ListenAddr ":0") finds its groups' stored configurations naming its
// old address, which its peers dial; InitialMembers are ignored once the
// Storage holds state, so StartGroup warns rather than leave the replica
// silently unreachable.
func TestHost_TCP_RestartAtAnotherAddressWarns(t *testing.T) {
	dir := t.TempDir()
	start := func() (*Host, *HostStorage, *Node, *observer.ObservedLogs) {
		core, logs := observer.New(zapcore.WarnLevel)
		wal := openHS(t, dir)
		h, err := NewHost(HostConfig{ID: 1, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: tcpTestCluster}, Logger: zap.New(core)})
		require.NoError(t, err)
		n, err := h.StartGroup(7, Config{InitialMembers: []Member{{ID: 1, Addr: h.Addr()}}}, &recordingSM{}, openGroup(t, wal, 7))
		require.NoError(t, err)
		return h, wal, n, logs
	}
	const warning = "the group's stored configuration lists this host at another address"
	h, wal, n, logs := start()
	first := h.Addr()
	require.Eventually(t, func() bool { return n.Status().CommitIndex > 0 }, 10*time.Second, time.Millisecond)
	assert.Zero(t, logs.FilterMessageSnippet(warning).Len(), "no warning at the address the group names")
	require.NoError(t, h.Close())
	require.NoError(t, wal.Close())

	h, wal, _, logs = start()
	defer func() { assert.NoError(t, wal.Close()) }()
	defer func() { assert.NoError(t, h.Close()) }()
	require.NotEqual(t, first, h.Addr())
	warned := logs.FilterMessageSnippet(warning).All()
	require.Len(t, warned, 1)
	assert.Equal(t, first, warned[0].ContextMap()["stored"])
	assert.Equal(t, h.Addr(), warned[0].ContextMap()["addr"])
	assert.EqualValues(t, 7, warned[0].ContextMap()["group"])
}
