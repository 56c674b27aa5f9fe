package raft

import (
	"context"
	"math"
	"time"

	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Lease reads (lease.go; docs/protocol.md, "Lease reads"): the rules of the
// lease, one test each, on pure cores. The simulator checks that lease reads
// stay linearizable under faults and clock drift (TestSimLeaseReads) and
// that a lease longer than its bound gives a stale read
// (TestSimCatchesBrokenRules).

const testLeaseTicks = 4

func withLease(ticks int) coreOption { return func(c *coreConfig) { c.leaseTicks = ticks } }

// leaseCores elects node 1 of three cores with lease reads on, and has it
// send one heartbeat round that both followers acknowledge.
func leaseCores(t *testing.T) (c1, c2, c3 *core, n *coreNet) {
	t.Helper()
	c1, c2, c3, n = leaseThreeCores(t)
	n.elect(1)
	c1.tick()
	n.stabilize()
	require.True(t, c1.leaseValid(), "a heartbeat round acknowledged by a quorum gives the leader a lease")
	return c1, c2, c3, n
}

// leaseThreeCores returns three cores with lease reads on that have run
// for an election timeout since they started (see leaseState.quiet): only
// node 1 ticks in these tests.
func leaseThreeCores(t *testing.T) (c1, c2, c3 *core, n *coreNet) {
	c1, c2, c3, n = threeCores(t, withLease(testLeaseTicks))
	for _, c := range []*core{c1, c2, c3} {
		c.lease.quiet = false
	}
	return c1, c2, c3, n
}

// leaseAnswers reports whether core id answers a lease read at once, from
// its lease, with no message: a read whose answer has to wait for a
// heartbeat round is not answered by this ready.
func leaseAnswers(t *testing.T, n *coreNet, id uint64) bool {
	t.Helper()
	n.collect(id) // earlier output
	n.reads[id] = nil
	c := n.cores[id]
	c.leaseRead(1000)
	msgs := n.collect(id)
	for _, r := range n.reads[id] {
		if r.id == 1000 && r.err == nil {
			require.Empty(t, msgs, "a read the lease answers sends nothing")
			require.Equal(t, c.log.committed, r.index)
			return true
		}
	}
	_, queued := c.reads.queued[readKey{id: 1000}]
	require.True(t, queued, "without a lease the read falls back to ReadIndex")
	return false
}

func TestLease_LeaderAnswersWithNoMessage(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	assert.True(t, leaseAnswers(t, n, 1))
	assert.EqualValues(t, 1, c1.lease.served)
}

// The lease runs from the time the acknowledged round was SENT: acks that
// arrive late do not stretch it.
func TestLease_StartsWhenTheRoundIsSentNotWhenItIsAcknowledged(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	// Round A goes out; its heartbeats are held back.
	c1.tick()
	sentAt := c1.lease.now
	roundA := msgsOf(n.collect(1), MsgHeartbeat)
	require.NotEmpty(t, roundA)
	// Time passes; the heartbeats of later rounds are all lost.
	for c1.lease.now < sentAt+testLeaseTicks-1 {
		c1.tick()
		n.collect(1)
	}
	// Round A arrives now, and is acknowledged.
	for _, m := range roundA {
		n.cores[m.To].step(m)
	}
	n.stabilize()
	require.Equal(t, sentAt, c1.lease.start, "the lease starts when round A was sent")
	assert.True(t, leaseAnswers(t, n, 1), "still within leaseTicks of round A's send")
	c1.tick()
	n.collect(1) // lost
	assert.False(t, c1.leaseValid(), "leaseTicks after round A was sent, the lease is over however late its acks came")
}

func TestLease_ExpiresWithoutAQuorumsAnswers(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	n.drop = func(Message) bool { return true }
	for range testLeaseTicks - 1 {
		c1.tick()
		n.stabilize()
	}
	require.True(t, c1.leaseValid())
	c1.tick()
	n.stabilize()
	assert.False(t, c1.leaseValid())
	assert.False(t, leaseAnswers(t, n, 1), "an expired lease falls back to ReadIndex")
}

// A new leader does not know its predecessor's commit index until its own
// no-op commits (dissertation §6.4): before that, no lease.
func TestLease_VoidBeforeTheLeadersFirstCommitInItsTerm(t *testing.T) {
	c1, _, _, n := leaseThreeCores(t)
	n.drop = func(m Message) bool { return m.Type == MsgAppend && len(m.Entries) > 0 }
	n.elect(1)
	require.False(t, c1.committedInTerm())
	for range 2 {
		c1.tick()
		n.stabilize()
	}
	require.Equal(t, uint64(2), c1.progress[2].readAck, "followers acknowledge the heartbeat rounds")
	assert.False(t, c1.leaseValid())
	assert.False(t, leaseAnswers(t, n, 1))
	n.drop = nil
	c1.tick()
	n.stabilize()
	require.True(t, c1.committedInTerm())
	assert.True(t, leaseAnswers(t, n, 1), "once the no-op commits, the next acknowledged round gives a lease")
}

// During a leadership transfer the target's election is heard by followers
// in their lease (campaignTransfer), so the leader has none; after the
// transfer is abandoned, none until the target holds the fence.
func TestLease_VoidDuringALeadershipTransfer(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	held := holdTimeoutNow(n)
	_, err := c1.transferLeadership(2)
	require.NoError(t, err)
	n.stabilize()
	require.NotEmpty(t, *held)
	assert.False(t, c1.leaseValid(), "void while the transfer runs")
	assert.False(t, leaseAnswers(t, n, 1))

	// Abandoned, with the fence not yet at the target: still void.
	blocked := n.drop
	n.drop = func(m Message) bool { return blocked(m) || m.To == 2 }
	abandonTransfer(t, n, c1)
	n.stabilize()
	require.Zero(t, c1.transferTarget)
	c1.tick()
	n.stabilize()
	assert.False(t, c1.leaseValid(), "void while a late MsgTimeoutNow could still make the target campaign")

	// The target holds the fence: the transfer can no longer take effect.
	n.drop = blocked
	for range 3 {
		c1.tick()
		n.stabilize()
	}
	require.True(t, c1.transferSettled(2))
	assert.True(t, leaseAnswers(t, n, 1))
}

// A configuration change takes effect when appended (dissertation §4.1), and
// until it commits a candidate may be elected by a quorum of either
// configuration: no lease, and a round sent before the change never starts
// one after it.
func TestLease_VoidUntilAConfigurationChangeCommits(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	c1.tick()
	roundBefore := msgsOf(n.collect(1), MsgHeartbeat)
	n.drop = func(m Message) bool { return m.Type == MsgAppend && len(m.Entries) > 0 }
	_, _, changed, err := c1.changeMembers(addMember(4, "", true))
	require.NoError(t, err)
	require.True(t, changed)
	n.stabilize()
	require.Greater(t, c1.configIndex, c1.log.committed)
	assert.False(t, c1.leaseValid(), "void while the change is uncommitted")
	c1.tick()
	n.stabilize()
	assert.False(t, leaseAnswers(t, n, 1))

	// The change commits, in a round sent while it was uncommitted; the
	// round sent before it is acknowledged only now.
	n.drop = nil
	n.tickUntil(1, func() bool { return c1.configIndex <= c1.log.committed })
	for _, m := range roundBefore {
		n.cores[m.To].step(m)
	}
	n.stabilize()
	assert.False(t, c1.leaseValid(), "rounds sent before the change committed start no lease")
	c1.tick()
	n.stabilize()
	assert.True(t, leaseAnswers(t, n, 1), "a round sent after the commit does")
}

// In a joint configuration (dissertation §4.3) a round starts a lease only
// once a majority of each half acknowledged it.
func TestLease_JointConfigurationNeedsBothMajorities(t *testing.T) {
	c1, _, _, _ := leaseCores(t)
	c1.voters = joint{incoming: majority{1, 2, 3}, outgoing: majority{1, 4, 5}}
	for _, id := range []uint64{4, 5} {
		c1.progress[id] = c1.newProgress(id)
	}
	c1.resetLease()
	c1.reads.seq++
	c1.leaseRoundSent(c1.reads.seq)
	c1.progress[2].readAck, c1.progress[3].readAck = c1.reads.seq, c1.reads.seq
	c1.renewLease()
	assert.False(t, c1.lease.held, "the incoming majority alone starts no lease")
	c1.progress[4].readAck = c1.reads.seq
	c1.renewLease()
	assert.True(t, c1.lease.held, "with a majority of the outgoing half too, it does")
}

func TestLease_RequiresCheckQuorum(t *testing.T) {
	_, err := newCore(coreConfig{id: 1, electionTicks: 10, heartbeatTicks: 1, checkQuorum: false, leaseTicks: 3,
		entries: []Entry{configEntry(1, 1, 1, 2, 3)}, firstIndex: 1, hardState: HardState{Term: 1, Commit: 1}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	err = Config{ID: 1, LeaseReads: true, DisableCheckQuorum: true}.Validate()
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "CheckQuorum")
}

// A follower's lease read asks the leader, which answers from its lease
// with no heartbeat round; a plain ReadIndex request still gets one.
func TestLease_FollowerAsksTheLeaderWhoAnswersFromItsLease(t *testing.T) {
	c1, c2, _, n := leaseCores(t)
	c2.leaseRead(7)
	ask := msgsOf(n.collect(2), MsgReadIndex)
	require.Len(t, ask, 1)
	require.True(t, ask[0].Done, "the request says a lease answer will do")
	c1.step(ask[0])
	out := n.collect(1)
	assert.Empty(t, msgsOf(out, MsgHeartbeat), "no heartbeat round")
	resp := msgsOf(out, MsgReadIndexResp)
	require.Len(t, resp, 1)
	assert.Equal(t, c1.log.committed, resp[0].Index)

	c2.readIndex(8)
	c1.step(msgsOf(n.collect(2), MsgReadIndex)[0])
	out = n.collect(1)
	assert.Empty(t, msgsOf(out, MsgReadIndexResp), "a ReadIndex request waits for its round")
	assert.NotEmpty(t, msgsOf(out, MsgHeartbeat))
}

// A node that restarts forgets that it acknowledged a leader's round; with
// lease reads on, it ignores candidates for an election timeout after it
// starts, as it would have in that leader's lease.
func TestLease_RestartedNodeIgnoresCandidatesForAnElectionTimeout(t *testing.T) {
	vote := Message{Type: MsgVote, From: 2, To: 1, Term: 5, Index: 10, LogTerm: 4, Context: uint64(campaignElection)}
	for _, lease := range []bool{false, true} {
		opts := []coreOption{withoutPreVote()}
		if lease {
			opts = append(opts, withLease(testLeaseTicks))
		}
		c := newTestCore(t, 1, []uint64{1, 2, 3}, opts...)
		c.step(vote)
		granted := len(msgsOf(c.msgs, MsgVoteResp)) == 1 && !msgsOf(c.msgs, MsgVoteResp)[0].Reject
		c.msgs = nil
		if !lease {
			require.True(t, granted, "without lease reads a restarted node votes at once")
			continue
		}
		assert.False(t, granted, "with lease reads a restarted node ignores candidates at first")
		for c.electionElapsed < c.electionTicks-1 {
			c.tick()
		}
		c.step(vote)
		assert.Empty(t, c.msgs, "still within an election timeout of the start")
		c.tick()
		c.step(vote)
		resp := msgsOf(c.msgs, MsgVoteResp)
		require.Len(t, resp, 1)
		assert.False(t, resp[0].Reject, "after an election timeout it votes")
	}
}

func TestConfig_LeaseDriftMarginAndLength(t *testing.T) {
	for _, bad := range []float64{-0.1, 1, 2, math.NaN()} {
		err := Config{ID: 1, LeaseReads: true, LeaseDriftMargin: bad}.Validate()
		require.ErrorIs(t, err, ErrInvalidConfig, "margin %v", bad)
		assert.Contains(t, err.Error(), "LeaseDriftMargin")
	}
	// The defaults: 1 s election timeout, ticks of 100 ms, a margin of 0.1:
	// (10 - 2) / 1.1 = 7.27, so a lease of 7 ticks (700 ms).
	cfg := Config{ID: 1, LeaseReads: true}.withDefaults()
	assert.Equal(t, 7, cfg.leaseTicks())
	cfg.LeaseDriftMargin = 0.5
	assert.Equal(t, 5, cfg.leaseTicks())
	cfg.LeaseReads = false
	assert.Zero(t, cfg.leaseTicks())
}

// leaseServed returns how many reads node id's lease answered.
func leaseServed(t *testing.T, c *testCluster, id uint64) (served uint64) {
	t.Helper()
	require.NoError(t, c.nodes[id].call(context.Background(), func() { served = c.nodes[id].core.lease.served }))
	return served
}

// LeaseRead through the runtime: the leader answers from its lease, and a
// follower's read is answered by the leader's lease; both see a write
// acknowledged before they began.
func TestCluster_LeaseReadOnLeaderAndFollower(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) { cfg.LeaseReads = true }))
	leader := c.waitLeader()
	f := c.follower(leader)
	index := c.propose("a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		valid := false
		require.NoError(t, c.nodes[leader].call(ctx, func() { valid = c.nodes[leader].core.leaseValid() }))
		return valid
	}, 10*time.Second, time.Millisecond, "the leader gets a lease")

	before := leaseServed(t, c, leader)
	require.NoError(t, c.nodes[leader].LeaseRead(ctx))
	assert.GreaterOrEqual(t, c.nodes[leader].Status().AppliedIndex, index)
	require.NoError(t, c.nodes[f].LeaseRead(ctx))
	assert.GreaterOrEqual(t, c.nodes[f].Status().AppliedIndex, index)
	assert.Greater(t, leaseServed(t, c, leader), before, "the lease answered")

	// LinearizableRead is untouched: always a ReadIndex round.
	before = leaseServed(t, c, leader)
	require.NoError(t, c.nodes[leader].LinearizableRead(ctx))
	assert.Equal(t, before, leaseServed(t, c, leader))
}

// A leader whose event loop missed ticker fires (a long storage write, a
// stall) makes up the ticks from the monotonic clock before it answers
// lease reads, so its lease never outlives its bound in real time; it
// makes up at most an election timeout's worth, which ends any lease.
func TestCluster_LeaseLeaderMakesUpMissedTicks(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) { cfg.LeaseReads = true }))
	leader := c.waitLeader()
	n := c.nodes[leader]
	var made, capped uint64
	var stillLeads bool
	require.NoError(t, n.call(context.Background(), func() {
		before := n.core.lease.now
		n.clock.base = n.clock.base.Add(-5 * n.clock.period) // five periods passed unseen
		n.catchUpClock()
		made = n.core.lease.now - before
		before = n.core.lease.now
		n.clock.base = n.clock.base.Add(-1000 * n.clock.period)
		n.catchUpClock()
		capped = n.core.lease.now - before
		stillLeads = n.core.status().role == Leader
	}))
	assert.GreaterOrEqual(t, made, uint64(5))
	assert.LessOrEqual(t, capped, uint64(n.electionTick))
	if stillLeads {
		// (Making up ticks stops early if the leader steps down meanwhile,
		// for want of a quorum heard in an election timeout.)
		assert.GreaterOrEqual(t, capped, uint64(n.cfg.leaseTicks()), "enough to end any lease")
	}
}

// The leader reads its clock at the start of each batch from its inbox,
// before it steps a follower's lease read request or takes a local read:
// time that passed while its event loop was busy counts before any of them
// is answered from the lease.
func TestCluster_LeaseLeaderReadsItsClockBeforeEachBatch(t *testing.T) {
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) { cfg.LeaseReads = true }))
	leader := c.waitLeader()
	n := c.nodes[leader]
	var now0, now1 uint64
	require.NoError(t, n.call(context.Background(), func() {
		n.clock.base = n.clock.base.Add(-1000 * n.clock.period) // a long stall, unseen yet
		now0 = n.core.lease.now
	}))
	require.NoError(t, n.call(context.Background(), func() { now1 = n.core.lease.now }))
	// (At least one tick: making up stops early if the leader steps down.)
	assert.Positive(t, now1-now0, "the stall counted before the next batch was handled")
}

// A change of several voters goes through a joint configuration (D§4.3):
// no lease until the configuration that leaves it has committed; a round
// sent after that gives one.
func TestLease_VoidThroughAJointChange(t *testing.T) {
	c1, _, _, n := leaseCores(t)
	_, _, changed, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false))
	require.NoError(t, err)
	require.True(t, changed)
	require.NotNil(t, c1.outgoing, "two voters added at once: joint")
	assert.False(t, c1.leaseValid(), "void while the joint configuration is uncommitted")
	for i := 0; c1.outgoing != nil || c1.configIndex > c1.log.committed; i++ {
		require.Less(t, i, 100, "the change never completed")
		assert.False(t, leaseAnswers(t, n, 1), "void until the final configuration commits")
		c1.tick()
		n.stabilize()
	}
	assert.False(t, c1.leaseValid(), "rounds sent before the final configuration committed give no lease")
	c1.tick()
	n.stabilize()
	assert.True(t, leaseAnswers(t, n, 1), "a round sent after the change committed gives a lease")
}

// LeaseRead on nodes without Config.LeaseReads is a ReadIndex read.
func TestCluster_LeaseReadWithoutLeasesFallsBackToReadIndex(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	index := c.propose("a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []uint64{leader, c.follower(leader)} {
		require.NoError(t, c.nodes[id].LeaseRead(ctx))
		assert.GreaterOrEqual(t, c.nodes[id].Status().AppliedIndex, index)
	}
	assert.Zero(t, leaseServed(t, c, leader))
}
