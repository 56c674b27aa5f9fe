package raft

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of quiescence on a Host (quiesce.go, host_quiesce.go): idle groups
// stop ticking and heartbeating, wake on a proposal or a message, and
// their followers still elect a new leader when the leader's host crashes
// or is cut off while they rest. The groups' timeouts are hostCluster's:
// election 100ms, heartbeat and tick 10ms.

const testQuiesceAfter = 200 * time.Millisecond

// newQuiescingCluster starts hosts 1 to 3 whose groups quiesce after
// quiesceAfter (negative: never), founds groups on all three and waits for
// their leaders.
func newQuiescingCluster(t *testing.T, tcp bool, quiesceAfter time.Duration, groups []uint64, tweaks ...func(*hostCluster)) *hostCluster {
	t.Helper()
	c := newHostCluster(t, 0, tcp)
	c.tuneHost = func(_ uint64, cfg *HostConfig) { cfg.QuiesceAfter = quiesceAfter }
	for _, tweak := range tweaks {
		tweak(c)
	}
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups)
	return c
}

// waitQuiesced waits until every running host has n groups resting.
func (c *hostCluster) waitQuiesced(n int) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, h := range c.hosts {
			if h.Stats().Quiesced != n {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "the groups did not all quiesce: %v", lazyQuiesced{c})
}

type lazyQuiesced struct{ c *hostCluster }

func (l lazyQuiesced) String() string {
	s := ""
	for id, h := range l.c.hosts {
		s += fmt.Sprintf(" host %d: %d resting;", id, h.Stats().Quiesced)
	}
	return s
}

// clockGroups returns the number of groups on a host's clock.
func clockGroups(h *Host) int {
	h.clock.mu.Lock()
	defer h.clock.mu.Unlock()
	n := 0
	for _, class := range h.clock.classes {
		n += class.count
	}
	return n
}

// sentOver returns the messages the in-memory network carried over window.
// (Waiting out a window is the measurement, not a wait for a condition.)
func sentOver(nw *InmemNetwork, window time.Duration) uint64 {
	before := nw.Stats().Sent
	<-time.After(window)
	return nw.Stats().Sent - before
}

func TestHost_Inmem_IdleGroupsStopHeartbeating(t *testing.T) {
	groups := groupIDs(30)
	const window = 500 * time.Millisecond
	// A longer election timeout than the tests' 100 ms: on a loaded machine
	// (-race, load 20 and more) a host's liveness message was once late by
	// more than 100 ms, a follower rightly woke its group to elect, and the
	// count of messages while resting went over the bound. The heartbeat
	// interval, which the bound is computed from, stays 10 ms.
	slowElections := func(c *hostCluster) {
		c.tune = func(_ uint64, cfg *Config) { cfg.ElectionTimeout = 600 * time.Millisecond }
	}

	// The same groups without quiescence, for the baseline.
	awake := newQuiescingCluster(t, false, -1, groups, slowElections)
	awake.propose(1, "g1/x")
	<-time.After(2 * testQuiesceAfter) // as long as the quiescing groups are given, below
	for _, h := range awake.hosts {
		assert.Zero(t, h.Stats().Quiesced, "QuiesceAfter < 0 turns quiescence off")
		assert.Equal(t, len(groups), clockGroups(h))
	}
	awakeSent := sentOver(awake.net, window)
	awake.closeAll()

	c := newQuiescingCluster(t, false, testQuiesceAfter, groups, slowElections)
	c.propose(1, "g1/x")
	c.waitQuiesced(len(groups))
	for id, h := range c.hosts {
		assert.Zero(t, clockGroups(h), "host %d still ticks resting groups", id)
	}
	sent := sentOver(c.net, window)
	for id, h := range c.hosts {
		assert.Equal(t, len(groups), h.Stats().Quiesced, "host %d: groups woke while idle", id)
	}
	// Resting, the hosts exchange one message (and its answer) per pair of
	// hosts and heartbeat interval at most: 3 hosts, 2 peers each, 10ms.
	bound := uint64(3*2*2) * uint64(window/(10*time.Millisecond)) * 3 / 2
	t.Logf("messages over %v: %d awake, %d quiesced (bound %d)", window, awakeSent, sent, bound)
	assert.LessOrEqual(t, sent, bound)
	assert.Less(t, sent*4, awakeSent, "quiesced groups send at least 4 times fewer messages")
	var pings uint64
	for _, h := range c.hosts {
		pings += h.Stats().QuiescePings
	}
	assert.NotZero(t, pings, "the hosts send liveness pings for their resting groups")
}

func TestHost_Inmem_ProposalOnAQuiescedGroupCommitsPromptly(t *testing.T) {
	groups := groupIDs(10)
	c := newQuiescingCluster(t, false, testQuiesceAfter, groups)
	c.waitQuiesced(len(groups))
	for _, g := range groups {
		start := time.Now()
		index := c.propose(g, fmt.Sprintf("g%d/woken", g))
		c.waitApplied(g, index) // on every replica: the followers learn the commit
		took := time.Since(start)
		assert.Less(t, took, time.Second, "group %d: a proposal on a quiesced group commits and applies everywhere promptly", g)
		// A read on a follower goes through the woken leader.
		leader := c.agreedLeader(g)
		follower := uint64(1)
		if leader == 1 {
			follower = 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		require.NoError(t, c.node(g, follower).LinearizableRead(ctx))
		cancel()
	}
	// Idle again, they rest again.
	c.waitQuiesced(len(groups))
	c.checkSameHistory(groups)

	// A read on a resting leader wakes it: it heartbeats again (its
	// followers must not be left without a leader's word).
	leader := c.agreedLeader(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, c.node(1, leader).LinearizableRead(ctx))
	assert.Less(t, c.hosts[leader].Stats().Quiesced, len(groups), "the read woke group 1's leader")
	c.waitQuiesced(len(groups))
}

// testLeaderHostLost cuts the host that leads the most groups off while
// every group rests (crash: it is isolated, then closed, so that nothing it
// says on the way out arrives; partition: it is isolated and comes back
// later), and checks that the groups it led elect a leader on the other
// hosts within a bound and commit.
func testLeaderHostLost(t *testing.T, tcp, crash bool) {
	groups := groupIDs(20)
	c := newQuiescingCluster(t, tcp, testQuiesceAfter, groups)
	c.waitQuiesced(len(groups))
	count := map[uint64]int{}
	for _, g := range groups {
		count[c.agreedLeader(g)]++
	}
	lost := uint64(1)
	for id := range count {
		if count[id] > count[lost] {
			lost = id
		}
	}
	require.NotZero(t, count[lost])
	t.Logf("host %d leads %d of the %d resting groups", lost, count[lost], len(groups))

	start := time.Now()
	switch {
	case !tcp:
		c.net.Isolate(lost)
	case crash:
		// The process dies: its connections drop, it sends nothing more.
		require.NoError(t, c.hosts[lost].tcp.Close())
	default:
		t.Fatal("no partition over TCP")
	}
	if crash {
		c.closeHost(lost)
	}
	others := slices.DeleteFunc([]uint64{1, 2, 3}, func(id uint64) bool { return id == lost })
	// Every group has a leader on the other hosts, which both agree on.
	leaders := map[uint64]uint64{}
	require.Eventually(t, func() bool {
		for _, g := range groups {
			a, b := c.node(g, others[0]).Status(), c.node(g, others[1]).Status()
			if a.Leader == 0 || a.Leader == lost || a.Leader != b.Leader || a.Term != b.Term {
				return false
			}
			leaders[g] = a.Leader
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "not every group elected a leader away from host %d: %v", lost, lazyGroups{c, groups})
	took := time.Since(start)
	t.Logf("every group led by the lost host elected a new leader %v after it was cut off", took)
	// A follower waits for an election timeout of silence, then one of its
	// own before it campaigns: about 2 to 3 election timeouts (100ms), and
	// a generous margin for a loaded machine.
	assert.Less(t, took, 5*time.Second)
	for _, g := range groups {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.node(g, leaders[g]).Propose(ctx, []byte(fmt.Sprintf("g%d/after", g)))
		cancel()
		require.NoError(t, err, "group %d", g)
	}
	if !crash {
		// The cut-off host comes back: its stale leaders step down on the
		// new leaders' messages, and every replica agrees again.
		c.net.Heal()
		c.waitLeaders(groups)
		for _, g := range groups {
			c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/healed", g)))
		}
	}
	c.checkSameHistory(groups)
}

func TestHost_Inmem_LeaderHostCrashWhileQuiesced(t *testing.T) {
	testLeaderHostLost(t, false, true)
}

func TestHost_TCP_LeaderHostCrashWhileQuiesced(t *testing.T) {
	testLeaderHostLost(t, true, true)
}

func TestHost_Inmem_LeaderHostPartitionedWhileQuiesced(t *testing.T) {
	testLeaderHostLost(t, false, false)
}

// A follower's host restarts while the groups rest: its groups rejoin and
// every group commits on all three hosts.
func TestHost_Inmem_FollowerHostRestartsWhileQuiesced(t *testing.T) {
	groups := groupIDs(20)
	c := newQuiescingCluster(t, false, testQuiesceAfter, groups)
	c.waitQuiesced(len(groups))
	c.closeHost(3)
	c.startHost(3)
	for _, g := range groups {
		c.startGroup(g, 3, c.members[g])
	}
	c.waitLeaders(groups)
	for _, g := range groups {
		c.waitApplied(g, c.propose(g, fmt.Sprintf("g%d/after", g)))
	}
	c.checkSameHistory(groups)
	c.waitQuiesced(len(groups))
}

// A group stopped on the host that leads it while it rests tells its
// followers, which elect a leader among themselves. (The host stays up and
// leads other resting groups, so its followers' hosts keep hearing from it.)
func TestHost_Inmem_QuiescedLeaderStoppedWakesItsFollowers(t *testing.T) {
	groups := groupIDs(10)
	c := newQuiescingCluster(t, false, testQuiesceAfter, groups)
	c.waitQuiesced(len(groups))
	led := map[uint64][]uint64{}
	for _, g := range groups {
		l := c.agreedLeader(g)
		led[l] = append(led[l], g)
	}
	var host, group uint64
	for h, gs := range led {
		if len(gs) >= 2 {
			host, group = h, gs[0]
		}
	}
	require.NotZero(t, host)
	require.NoError(t, c.hosts[host].StopGroup(group))
	start := time.Now()
	require.Eventually(t, func() bool {
		l := c.agreedLeader(group)
		return l != 0 && l != host
	}, 10*time.Second, 5*time.Millisecond, "group %d did not elect a leader after its quiesced leader stopped: %v", group, lazyGroups{c, []uint64{group}})
	t.Logf("group %d elected a new leader %v after its leader on host %d stopped", group, time.Since(start), host)
	c.waitApplied(group, c.propose(group, fmt.Sprintf("g%d/after", group)))
}
