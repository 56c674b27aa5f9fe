package raft

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Unit tests of the core's quiescence (quiesce.go); the Host's side is
// tested in host_quiesce_test.go.

// quiescingCores returns three connected cores that quiesce after `after`
// idle ticks (0: never, as single nodes), with 1 elected and an entry of
// its term committed everywhere.
func quiescingCores(t *testing.T, after int, opts ...coreOption) (c1, c2, c3 *core, n *coreNet) {
	t.Helper()
	c1, c2, c3, n = threeCores(t, opts...)
	for _, c := range []*core{c1, c2, c3} {
		c.quiesce.after = after
		c.lease.quiet = false // as leaseThreeCores: only node 1 ticks to elect
	}
	n.elect(1)
	_, _, err := c1.propose(cmd("x"))
	require.NoError(t, err)
	n.stabilize()
	return c1, c2, c3, n
}

// tickAll ticks every core k times, delivering messages after each tick,
// and returns the number of messages the cores sent.
func (n *coreNet) tickAll(k int) int {
	sent := 0
	for range k {
		for _, id := range n.ids() {
			n.cores[id].tick()
		}
		for _, id := range n.ids() {
			msgs := n.collect(id)
			sent += len(msgs)
			for _, m := range msgs {
				if c := n.cores[m.To]; c != nil && (n.drop == nil || !n.drop(m)) {
					c.step(m)
				}
			}
		}
		n.stabilize()
	}
	return sent
}

func TestQuiesce_IdleLeaderQuiescesAndFollowersRest(t *testing.T) {
	c1, c2, c3, n := quiescingCores(t, 5)
	n.tickAll(5 + 1)
	require.True(t, c1.quiesced(), "the leader rests after 5 idle ticks")
	require.True(t, c2.quiesced(), "follower 2 got the notice")
	require.True(t, c3.quiesced(), "follower 3 got the notice")
	elapsed := c2.electionElapsed
	// Resting: no heartbeat, no election, however long.
	assert.Zero(t, n.tickAll(100), "resting cores send nothing")
	assert.Equal(t, Leader, c1.role)
	assert.Equal(t, elapsed, c2.electionElapsed, "a resting follower's election timer stands still")
	assert.True(t, c1.quiesced() && c2.quiesced() && c3.quiesced())
}

func TestQuiesce_SingleNodesNeverQuiesce(t *testing.T) {
	c1, _, _, n := quiescingCores(t, 0)
	assert.NotZero(t, n.tickAll(100))
	assert.False(t, c1.quiesced())
	assert.Empty(t, c1.quiesce.notices)
}

func TestQuiesce_NotWhileAFollowerLags(t *testing.T) {
	c1, _, c3, n := quiescingCores(t, 5)
	n.drop = func(m Message) bool { return m.To == 3 || m.From == 3 }
	_, _, err := c1.propose(cmd("y"))
	require.NoError(t, err)
	n.tickAll(50)
	assert.False(t, c1.quiesced(), "follower 3 lacks an entry: the leader keeps heartbeating")
	assert.Less(t, c3.log.lastIndex(), c1.log.lastIndex())
	n.drop = nil
	n.tickAll(20)
	assert.True(t, c1.quiesced(), "once 3 caught up, the group rests")
}

// A message wakes a resting leader, which heartbeats at once (waking its
// followers) and drops its lease: a lease read after quiescence waits for a
// new round.
func TestQuiesce_MessageWakesTheLeaderWhichDropsItsLease(t *testing.T) {
	c1, c2, c3, n := quiescingCores(t, 5, withLease(3))
	n.tickAll(6)
	require.True(t, c1.quiesced())
	require.True(t, c1.leaseValid(), "the lease of the last rounds before resting")

	c2.readIndex(7) // a follower's read: a MsgReadIndex to the leader
	msgs := n.collect(2)
	require.Len(t, msgs, 1)
	c1.step(msgs[0])
	assert.False(t, c1.quiesced(), "a message wakes the leader")
	assert.False(t, c1.leaseValid(), "the lease does not survive quiescence")
	heartbeats := msgsOf(n.collect(1), MsgHeartbeat)
	assert.GreaterOrEqual(t, len(heartbeats), 2, "the woken leader heartbeats at once (and starts the read's round)")
	for _, m := range heartbeats {
		assert.False(t, m.Done, "a plain heartbeat, which wakes the follower")
		n.cores[m.To].step(m)
	}
	n.stabilize()
	assert.False(t, c2.quiesced() || c3.quiesced(), "the followers woke")
	assert.Len(t, n.reads[2], 1, "the read was answered")
	assert.True(t, c1.leaseValid(), "a new round renewed the lease")
	n.tickAll(6)
	assert.True(t, c1.quiesced(), "idle again, the group rests again")
}

// A resting follower that hears from nobody but a candidate wakes and
// votes as usual; a stale notice of an earlier term does not make a
// follower rest.
func TestQuiesce_NoticeOfAnEarlierTermIsIgnored(t *testing.T) {
	c1, c2, _, n := quiescingCores(t, 5)
	n.tickAll(6)
	require.True(t, c2.quiesced())
	notice := c1.quiesce.notices[0]
	// Node 2 wakes (its host lost the leader's) and moves to a later term.
	c2.step(Message{Type: MsgUnreachable, From: 1, To: 2})
	require.False(t, c2.quiesced())
	c2.becomeFollower(c2.term+1, 0)
	notice.To = 2
	c2.step(notice)
	assert.False(t, c2.quiesced(), "a notice of an earlier term is refused")
}
