package raft

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// Tests of leader balancing (host_balance.go) and of what a Host shows of
// its groups (host_metrics.go): three hosts whose groups are all led by
// host 1 to start with spread their leaders within their targets, then
// move nothing however often balancing runs on every host; a follower's
// host cut off is not given leadership; resting groups; the periodic
// balancer; bad input.

// newBalanceCluster starts 3 hosts (over TCP when tcp is set) and groups
// 1..groups with a replica on each, and hands the leadership of every
// group to host 1. Quiescence is off unless quiesceAfter is positive. The
// election timeout is longer than hostCluster's, so that no election
// moves a leader behind the test's back on a loaded machine. Each of
// tweaks may change the cluster's settings before the hosts start.
func newBalanceCluster(t *testing.T, tcp bool, groups int, quiesceAfter time.Duration, tweaks ...func(*hostCluster)) (*hostCluster, []uint64) {
	t.Helper()
	c := newHostCluster(t, 0, tcp)
	c.tuneHost = func(_ uint64, cfg *HostConfig) {
		cfg.QuiesceAfter = -1
		if quiesceAfter > 0 {
			cfg.QuiesceAfter = quiesceAfter
		}
	}
	c.tune = func(_ uint64, cfg *Config) {
		cfg.ElectionTimeout = 400 * time.Millisecond
		cfg.HeartbeatInterval = 20 * time.Millisecond
	}
	for _, tweak := range tweaks {
		tweak(c)
	}
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	ids := groupIDs(groups)
	for _, g := range ids {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(ids)
	c.leadAllFrom(1, ids)
	return c, ids
}

// leadAllFrom hands the leadership of every group of ids to host.
func (c *hostCluster) leadAllFrom(host uint64, ids []uint64) {
	c.t.Helper()
	for _, g := range ids {
		require.Eventually(c.t, func() bool {
			leader := c.agreedLeader(g)
			if leader == host {
				return true
			}
			if leader != 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = c.node(g, leader).TransferLeadership(ctx, host)
				cancel()
			}
			return false
		}, 20*time.Second, 5*time.Millisecond, "host %d does not lead group %d: %v", host, g, lazyGroups{c, []uint64{g}})
	}
	c.waitCaughtUp(host, ids)
}

// waitCaughtUp waits until, in every group of ids, the leader on host shows
// each follower holding its whole log and heard from within a few
// heartbeats: what BalanceLeaders asks of a follower before it hands it
// leadership, which a leader elected a moment ago does not show yet.
// Every other member must be in the leader's Progress: a member it lacks
// is not shown caught up.
func (c *hostCluster) waitCaughtUp(host uint64, ids []uint64) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, g := range ids {
			n := c.node(g, host)
			if n == nil {
				return false
			}
			st := n.Status()
			if st.Role != Leader || len(st.Progress) != len(st.Members)-1 {
				return false
			}
			for _, pr := range st.Progress {
				if pr.Match < st.LastIndex || pr.SinceContact >= n.electionTimeout()/4 {
					return false
				}
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "host %d's groups do not show their followers caught up: %v", host, lazyGroups{c, ids})
}

// leaderCounts returns how many of the groups ids each host leads, once
// every group has an agreed leader.
func (c *hostCluster) leaderCounts(ids []uint64) map[uint64]int {
	c.t.Helper()
	counts := map[uint64]int{}
	for _, leader := range c.waitLeaders(ids) {
		counts[leader]++
	}
	return counts
}

// balanceAll runs BalanceLeaders on every host at once and returns the
// results by host.
func (c *hostCluster) balanceAll(opts BalanceOptions) map[uint64]BalanceResult {
	c.t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := map[uint64]BalanceResult{}
	for id, h := range c.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := h.BalanceLeaders(ctx, opts)
			assert.NoError(c.t, err, "host %d", id)
			mu.Lock()
			results[id] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

// testBalanceSpreadsAndConverges: every group led by host 1 to start with;
// one call on host 1 spreads the leaders evenly; then rounds of balancing
// on every host at once, from a skewed start again, converge, and once
// converged move nothing (no group goes back and forth).
func testBalanceSpreadsAndConverges(t *testing.T, tcp bool, groups int) {
	c, ids := newBalanceCluster(t, tcp, groups, 0)
	target := (groups + 2) / 3
	require.Equal(t, map[uint64]int{1: groups}, c.leaderCounts(ids), "host 1 leads every group to start with")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	assert.Equal(t, groups, res.Groups)
	assert.Equal(t, target, res.Target)
	assert.Equal(t, groups, res.LedBefore)
	assert.Equal(t, groups-target, res.Transferred(), "moves: %v", res.Moves)
	assert.Equal(t, target, res.LedAfter)
	assert.Zero(t, res.Unplaced)
	for _, m := range res.Moves {
		assert.NoError(t, m.Err)
		assert.Equal(t, uint64(1), m.From)
	}
	counts := c.leaderCounts(ids)
	for id := uint64(1); id <= 3; id++ {
		assert.LessOrEqual(t, counts[id], target, "host %d leads %d groups, over its target %d: %v", id, counts[id], target, counts)
	}

	// From a skewed start again, with every host balancing at once.
	c.leadAllFrom(1, ids)
	moved := map[uint64]int{} // successful moves, by group
	converged := false
	for round := 0; round < 10 && !converged; round++ {
		converged = true
		for id, r := range c.balanceAll(BalanceOptions{}) {
			for _, m := range r.Moves {
				assert.Equal(t, id, m.From)
				if m.Err == nil {
					moved[m.Group]++
				}
			}
			if len(r.Moves) > 0 {
				converged = false
			}
		}
	}
	require.True(t, converged, "balancing on every host still moved leaders after 10 rounds")
	for g, k := range moved {
		assert.Equal(t, 1, k, "group %d moved %d times on its way to balance", g, k)
	}
	leaders := c.waitLeaders(ids)
	counts = c.leaderCounts(ids)
	for id := uint64(1); id <= 3; id++ {
		assert.LessOrEqual(t, counts[id], target, "host %d over its target: %v", id, counts)
	}
	// Balanced: more rounds on every host move nothing.
	for round := 0; round < 3; round++ {
		for id, r := range c.balanceAll(BalanceOptions{}) {
			assert.Empty(t, r.Moves, "host %d moved leaders once balanced (round %d)", id, round)
			assert.Zero(t, r.Unplaced, "host %d", id)
			assert.LessOrEqual(t, r.LedAfter, r.Target, "host %d", id)
		}
	}
	assert.Equal(t, leaders, c.waitLeaders(ids), "leaders changed once balanced")

	// The host's summary agrees.
	s := c.hosts[1].GroupSummary()
	assert.Equal(t, groups, s.Groups)
	assert.Equal(t, counts[1], s.Leading)
	assert.Equal(t, groups-counts[1], s.Following)
	assert.Zero(t, s.NoLeader)
	assert.Equal(t, counts, s.LeadersByHost)
	assert.Equal(t, s.BalanceTransfers, s.BalanceSucceeded+s.BalanceFailed)
	assert.GreaterOrEqual(t, s.BalanceSucceeded, uint64(2*(groups-target)))
}

func TestHost_Inmem_BalanceLeadersSpreadsAndConverges(t *testing.T) {
	testBalanceSpreadsAndConverges(t, false, 24)
}

func TestHost_TCP_BalanceLeadersSpreadsAndConverges(t *testing.T) {
	testBalanceSpreadsAndConverges(t, true, 12)
}

// TestHost_LeaderStatusListsTheMembersFromItsElection: the first Status in
// which a replica shows itself leader already lists every other member in
// Progress: a new leader's view is published with its role, not at its
// first tick (up to a tick later, which left waitCaughtUp, and any caller
// looping over Progress, seeing a leader with no follower to check, so
// all of them caught up). Leadership
// goes round the three hosts a few times, each new leader watched from
// before the transfer.
func TestHost_LeaderStatusListsTheMembersFromItsElection(t *testing.T) {
	c, _ := newBalanceCluster(t, false, 1, 0)
	leader := uint64(1)
	for round := 0; round < 6; round++ {
		to := leader%3 + 1
		n := c.node(1, to)
		first := make(chan Status, 1)
		stop := make(chan struct{})
		go func() {
			for {
				ch := n.Changed()
				if st := n.Status(); st.Role == Leader {
					first <- st
					return
				}
				select {
				case <-ch:
				case <-stop:
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.node(1, leader).TransferLeadership(ctx, to)
		cancel()
		var st Status
		select {
		case st = <-first:
		case <-time.After(10 * time.Second):
		}
		close(stop)
		require.NoError(t, err, "round %d: transfer from host %d to host %d", round, leader, to)
		require.Equal(t, Leader, st.Role, "round %d: host %d does not show itself leader", round, to)
		var ids []uint64
		for _, pr := range st.Progress {
			ids = append(ids, pr.ID)
		}
		var want []uint64
		for _, m := range st.Members {
			if m.ID != to {
				want = append(want, m.ID)
			}
		}
		require.Equal(t, want, ids, "round %d: host %d's first Status as leader (term %d): %+v", round, to, st.Term, st.Progress)
		leader = to
	}
}

// TestHost_BalanceLeadersHostsSeeDifferentGroups: five hosts, each group on
// three of them drawn at random (the seed replays it), each led by the
// lowest-ID host of its three to start with. A host then sees only the
// groups it shares (the limit host_balance.go describes); rounds of
// balancing on every host at once still come to rest, with every host at
// or under its target or reporting why not, and then move nothing.
func TestHost_BalanceLeadersHostsSeeDifferentGroups(t *testing.T) {
	const groups = 20
	c := newHostCluster(t, 5, false)
	rng := rand.New(rand.NewPCG(uint64(c.seed), 0))
	ids := groupIDs(groups)
	first := map[uint64]uint64{}
	for _, g := range ids {
		perm := rng.Perm(5)[:3]
		slices.Sort(perm)
		hosts := []uint64{uint64(perm[0] + 1), uint64(perm[1] + 1), uint64(perm[2] + 1)}
		first[g] = hosts[0]
		c.foundGroup(g, hosts...)
	}
	c.waitLeaders(ids)
	for _, g := range ids {
		c.leadAllFrom(first[g], []uint64{g})
	}
	converged := false
	rounds := 0
	for ; rounds < 15 && !converged; rounds++ {
		converged = true
		for _, r := range c.balanceAll(BalanceOptions{}) {
			if len(r.Moves) > 0 {
				converged = false
			}
		}
	}
	require.True(t, converged, "balancing still moved leaders after %d rounds: %v", rounds, c.leaderCounts(ids))
	t.Logf("converged in %d rounds: leaders by host %v", rounds, c.leaderCounts(ids))
	leaders := c.waitLeaders(ids)
	for round := 0; round < 3; round++ {
		for id, r := range c.balanceAll(BalanceOptions{}) {
			if round == 0 {
				t.Logf("host %d: %d groups, leads %d, target %d, unplaced %d", id, r.Groups, r.LedAfter, r.Target, r.Unplaced)
			}
			assert.Empty(t, r.Moves, "host %d moved leaders once balanced (round %d)", id, round)
			assert.True(t, r.LedAfter <= r.Target || r.Unplaced > 0, "host %d leads %d, over its target %d, with nothing unplaced", id, r.LedAfter, r.Target)
		}
	}
	assert.Equal(t, leaders, c.waitLeaders(ids), "leaders changed once balanced")
}

// TestHost_BalanceLeadersPassesOverACutOffHost: host 3 is cut off, so host
// 1's groups have not heard from their follower there; balancing hands
// leadership to host 2 only, up to its target, and reports the rest as
// unplaced. Once host 3 is back, the rest goes to it.
func TestHost_BalanceLeadersPassesOverACutOffHost(t *testing.T) {
	const groups = 12
	c, ids := newBalanceCluster(t, false, groups, 0)
	c.net.Isolate(3)
	require.Eventually(t, func() bool {
		for _, g := range ids {
			for _, pr := range c.node(g, 1).Status().Progress {
				if pr.ID == 3 && pr.SinceContact < 400*time.Millisecond {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "host 1 still hears from host 3: %+v", c.node(1, 1).Status().Progress)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	for _, m := range res.Moves {
		assert.NotEqual(t, uint64(3), m.To, "leadership of group %d offered to the cut-off host", m.Group)
	}
	assert.Equal(t, 4, res.Transferred(), "moves: %v", res.Moves)
	assert.Equal(t, 4, res.Unplaced, "host 2 is full at 4, host 3 is cut off")
	assert.Equal(t, 8, res.LedAfter)

	c.net.Heal()
	require.Eventually(t, func() bool {
		for _, g := range ids {
			if n := c.node(g, 1); n.Status().Role == Leader {
				for _, pr := range n.Status().Progress {
					if pr.ID == 3 && pr.SinceContact >= 400*time.Millisecond {
						return false
					}
				}
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "host 1 does not hear from host 3 again: %+v %v", c.node(1, 1).Status().Progress, lazyGroups{c, ids})
	res, err = c.hosts[1].BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	for _, m := range res.Moves {
		assert.Equal(t, uint64(3), m.To)
	}
	assert.Zero(t, res.Unplaced)
	counts := c.leaderCounts(ids)
	assert.Equal(t, map[uint64]int{1: 4, 2: 4, 3: 4}, counts)
}

// TestHost_BalanceLeadersRestingGroups: groups that rest are left alone with
// SkipResting and moved otherwise; the transfer wakes them, and they rest
// again once idle; balancing them again moves nothing.
func TestHost_BalanceLeadersRestingGroups(t *testing.T) {
	const groups = 12
	c, ids := newBalanceCluster(t, false, groups, 800*time.Millisecond)
	allResting := func() bool {
		for _, h := range c.hosts {
			if h.Stats().Quiesced != groups {
				return false
			}
		}
		return true
	}
	require.Eventually(t, allResting, 20*time.Second, 10*time.Millisecond, "the groups do not all rest")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{SkipResting: true})
	require.NoError(t, err)
	assert.Empty(t, res.Moves)
	assert.Equal(t, 8, res.Unplaced, "resting groups skipped: none to move")
	assert.Equal(t, groups, c.hosts[1].GroupSummary().Resting)

	res, err = c.hosts[1].BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	assert.Equal(t, 8, res.Transferred(), "moves: %v", res.Moves)
	assert.Equal(t, map[uint64]int{1: 4, 2: 4, 3: 4}, c.leaderCounts(ids))
	require.Eventually(t, allResting, 20*time.Second, 10*time.Millisecond, "the moved groups do not rest again")
	for id, r := range c.balanceAll(BalanceOptions{}) {
		assert.Empty(t, r.Moves, "host %d", id)
	}
	assert.True(t, allResting(), "balancing a balanced host woke groups")
}

// TestHost_PeriodicBalancing: with HostConfig.BalanceInterval on every host,
// the leaders spread by themselves, then stay where they are. The groups
// elect their leaders on hosts 1 and 2 before host 3 starts its replicas,
// so host 3 leads none to start with.
func TestHost_PeriodicBalancing(t *testing.T) {
	const groups = 12
	c := newHostCluster(t, 0, false)
	c.tuneHost = func(_ uint64, cfg *HostConfig) {
		cfg.QuiesceAfter = -1
		cfg.BalanceInterval = 50 * time.Millisecond
		cfg.BalanceOptions = BalanceOptions{MaxInFlight: 2}
	}
	c.tune = func(_ uint64, cfg *Config) {
		cfg.ElectionTimeout = 400 * time.Millisecond
		cfg.HeartbeatInterval = 20 * time.Millisecond
	}
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	ids := groupIDs(groups)
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	for _, g := range ids {
		c.members[g] = members
		c.startGroup(g, 1, members)
		c.startGroup(g, 2, members)
	}
	c.waitLeaders(ids)
	for _, g := range ids {
		c.startGroup(g, 3, members)
	}
	require.Eventually(t, func() bool {
		counts := map[uint64]int{}
		for _, g := range ids {
			counts[c.agreedLeader(g)]++
		}
		return counts[1] == 4 && counts[2] == 4 && counts[3] == 4
	}, 30*time.Second, 10*time.Millisecond, "the leaders do not spread: %v", lazyGroups{c, ids})
	assert.NotZero(t, c.hosts[3].GroupSummary().Leading)
	leaders := c.waitLeaders(ids)
	hosts := []*Host{c.hosts[1], c.hosts[2], c.hosts[3]} // Never's last poll may run after it returns
	transfers := func() (k uint64) {
		for _, h := range hosts {
			k += h.GroupSummary().BalanceTransfers
		}
		return k
	}
	before := transfers()
	assert.NotZero(t, before)
	// Twenty balancing intervals: nothing moves.
	require.Never(t, func() bool { return transfers() != before }, time.Second, 20*time.Millisecond,
		"the periodic balancers moved leaders once balanced")
	assert.Equal(t, leaders, c.waitLeaders(ids))
}

// TestHost_BalanceLeadersLimits: MaxTransfers caps one call's transfers,
// Tolerance raises the target, and a call whose context ended moves
// nothing.
func TestHost_BalanceLeadersLimits(t *testing.T) {
	c, _ := newBalanceCluster(t, false, 9, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{MaxTransfers: 2, MaxInFlight: 1})
	require.NoError(t, err)
	assert.Len(t, res.Moves, 2)
	assert.Equal(t, 7, res.LedAfter)
	assert.Zero(t, res.Unplaced, "stopped by MaxTransfers, not for want of a follower")
	res, err = c.hosts[1].BalanceLeaders(ctx, BalanceOptions{Tolerance: 2})
	require.NoError(t, err)
	assert.Equal(t, 5, res.Target, "ceil(9/3) + 2")
	assert.Equal(t, 2, res.Transferred())

	// A context that ended: nothing moves, and the call says why.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	res, err = c.hosts[1].BalanceLeaders(done, BalanceOptions{})
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, res.Moves)
	assert.Equal(t, 5, res.LedAfter)
}

// TestHost_BalanceLeadersBadInput: invalid options and a closed host get
// clear errors.
func TestHost_BalanceLeadersBadInput(t *testing.T) {
	c := newHostCluster(t, 1, false)
	h := c.hosts[1]
	ctx := context.Background()
	for _, tc := range []struct {
		opts BalanceOptions
		want string
	}{
		{BalanceOptions{Tolerance: -1}, "BalanceOptions.Tolerance -1 is negative"},
		{BalanceOptions{MaxInFlight: -2}, "BalanceOptions.MaxInFlight -2 is negative"},
		{BalanceOptions{MaxTransfers: -3}, "BalanceOptions.MaxTransfers -3 is negative"},
	} {
		_, err := h.BalanceLeaders(ctx, tc.opts)
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), tc.want)
	}
	//lint:ignore SA1012 checking that a nil context is refused
	_, err := h.BalanceLeaders(nil, BalanceOptions{})
	require.ErrorIs(t, err, ErrInvalidConfig)

	for _, tc := range []struct {
		cfg  HostConfig
		want string
	}{
		{HostConfig{ID: 9, Network: c.net, BalanceInterval: -time.Second}, "HostConfig.BalanceInterval -1s is negative"},
		{HostConfig{ID: 9, Network: c.net, BalanceOptions: BalanceOptions{Tolerance: -1}}, "HostConfig.BalanceOptions.Tolerance -1 is negative"},
	} {
		_, err := NewHost(tc.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), tc.want)
	}

	// No groups: nothing to do.
	res, err := h.BalanceLeaders(ctx, BalanceOptions{})
	require.NoError(t, err)
	assert.Equal(t, BalanceResult{}, res)

	c.closeHost(1)
	_, err = h.BalanceLeaders(ctx, BalanceOptions{})
	require.ErrorIs(t, err, ErrClosed)
}

// TestHost_BalanceScale measures balancing at scale; it runs only when
// RAFT_BALANCE_SCALE names the number of groups (docs/multigroup.md,
// "Placement and balancing", has the figures):
//
//	RAFT_BALANCE_SCALE=1000 go test -run TestHost_BalanceScale -v -timeout 30m .
//
// Three hosts over TCP on loopback, every group with a replica on each,
// the default Config (election timeout 1s, heartbeats every 100ms) and
// quiescence as RAFT_BALANCE_QUIESCE says (default off). For each
// MaxInFlight of 1, 4 (the default) and 16, in the same run: every group's
// leadership is handed to host 1, then one BalanceLeaders call on host 1
// spreads it; the time of that call, and its ratio to MaxInFlight 1's. Then
// the time of GroupSummary and GroupStatuses over all the groups.
func TestHost_BalanceScale(t *testing.T) {
	groups, _ := strconv.Atoi(os.Getenv("RAFT_BALANCE_SCALE"))
	if groups <= 0 {
		t.Skip("set RAFT_BALANCE_SCALE to the number of groups to run this measurement")
	}
	quiesce := os.Getenv("RAFT_BALANCE_QUIESCE") != ""
	t.Logf("load average at start: %s", loadAverage())
	c := newHostCluster(t, 0, true)
	c.logLevel = zap.ErrorLevel
	c.tuneHost = func(_ uint64, cfg *HostConfig) {
		if !quiesce {
			cfg.QuiesceAfter = -1
		}
		cfg.TickInterval = 10 * time.Millisecond
	}
	c.tune = func(_ uint64, cfg *Config) {
		cfg.ElectionTimeout = time.Second
		cfg.HeartbeatInterval = 100 * time.Millisecond
	}
	for id := uint64(1); id <= 3; id++ {
		c.startHost(id)
	}
	ids := groupIDs(groups)
	for _, g := range ids {
		c.foundGroup(g, 1, 2, 3)
	}
	// Elections of a thousand groups on a loaded machine take longer than
	// waitLeaders waits.
	require.Eventually(t, func() bool {
		for _, g := range ids {
			if c.agreedLeader(g) == 0 {
				return false
			}
		}
		return true
	}, 5*time.Minute, 100*time.Millisecond, "not every group elected a leader")
	var base time.Duration
	for _, k := range []int{1, 4, 16} {
		c.skewTo(1, ids)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res, err := c.hosts[1].BalanceLeaders(ctx, BalanceOptions{MaxInFlight: k})
		cancel()
		took := time.Since(start)
		require.NoError(t, err)
		if k == 1 {
			base = took
		}
		failures := 0
		for _, m := range res.Moves {
			if m.Err != nil && failures < 3 {
				failures++
				t.Logf("a failed transfer: %v", m.Err)
			}
		}
		t.Logf("MaxInFlight %2d: %d groups, %d transferred (%d failed) in %v, %.1f transfers/s, %.2f of MaxInFlight 1's time; led after %d, target %d, unplaced %d",
			k, res.Groups, res.Transferred(), len(res.Moves)-res.Transferred(), took.Round(time.Millisecond),
			float64(res.Transferred())/took.Seconds(), took.Seconds()/base.Seconds(), res.LedAfter, res.Target, res.Unplaced)
	}
	h := c.hosts[2]
	start := time.Now()
	const reps = 20
	for range reps {
		h.GroupSummary()
	}
	summary := time.Since(start) / reps
	start = time.Now()
	for range reps {
		h.GroupStatuses()
	}
	statuses := time.Since(start) / reps
	t.Logf("%d groups: GroupSummary %v, GroupStatuses %v per call", groups, summary, statuses)
	t.Logf("load average at end: %s", loadAverage())
}

// skewTo hands the leadership of every group of ids to host, 16 transfers
// at a time, then checks it took.
func (c *hostCluster) skewTo(host uint64, ids []uint64) {
	c.t.Helper()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, g := range ids {
		leader := c.agreedLeader(g)
		if leader == host || leader == 0 {
			continue
		}
		n := c.node(g, leader)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.TransferLeadership(ctx, host)
		}()
	}
	wg.Wait()
	c.leadAllFrom(host, ids)
}
