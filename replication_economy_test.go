package raft

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func withHeartbeatTicks(n int) coreOption {
	return func(c *coreConfig) { c.heartbeatTicks = n }
}

// countAppends counts, from now on, the appends the leader sends, with and
// without entries.
func countAppends(n *coreNet, leader uint64) (withEntries, commitOnly *int) {
	withEntries, commitOnly = new(int), new(int)
	n.drop = func(m Message) bool {
		if m.Type == MsgAppend && m.From == leader {
			if len(m.Entries) > 0 {
				*withEntries++
			} else {
				*commitOnly++
			}
		}
		return false
	}
	return withEntries, commitOnly
}

// A new commit index rides on the next append (Raft §5.3: a follower's
// commit index only decides when it applies), so one proposal at a time
// costs one append per follower, not one with the entry and one with the
// commit index.
func TestReplication_5_3_CommitIndexRidesOnTheNextAppend(t *testing.T) {
	c1, c2, c3, n := threeCores(t)
	n.elect(1)
	withEntries, commitOnly := countAppends(n, 1)
	const proposals = 12
	for i := range proposals {
		_, _, err := c1.propose(cmd(fmt.Sprint(i)))
		require.NoError(t, err)
		n.stabilize()
	}
	assert.Equal(t, 2*proposals, *withEntries, "one append with the entry per follower and proposal")
	assert.Equal(t, 0, *commitOnly, "no append only to carry the commit index")
	for _, f := range []*core{c2, c3} {
		assert.Equal(t, c1.log.committed-1, f.log.committed, "a follower knows all but the last commit index")
	}
}

// With no further proposal, a follower still learns the commit index by the
// leader's next tick, whether or not a heartbeat is due on it: its apply lag
// is at most one tick, and never a heartbeat interval.
func TestReplication_5_3_FollowerLearnsTheCommitIndexByTheNextTick(t *testing.T) {
	for _, hb := range []int{1, 3} {
		t.Run(fmt.Sprintf("heartbeatTicks=%d", hb), func(t *testing.T) {
			c1, c2, c3, n := threeCores(t, withHeartbeatTicks(hb))
			n.elect(1)
			for i := range 2 * hb {
				_, _, err := c1.propose(cmd("x"))
				require.NoError(t, err)
				n.stabilize()
				require.Less(t, c2.log.committed, c1.log.committed)
				c1.tick()
				n.stabilize()
				for _, f := range []*core{c2, c3} {
					require.Equal(t, c1.log.committed, f.log.committed, "after proposal %d, a follower learns the commit index on the next tick", i)
					require.Equal(t, c1.log.committed, n.applied[f.id][len(n.applied[f.id])-1].Index, "and applies it")
				}
			}
		})
	}
}

// A follower's read waits for it to apply up to the read index: the leader
// sends it the commit index along with the answer instead of leaving it to
// the next tick, for ReadIndex and lease reads alike.
func TestReplication_FollowerReadDoesNotWaitForTheCommitIndex(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			c1, c2, _, n := leaseCores(t)
			_, _, err := c1.propose(cmd("x"))
			require.NoError(t, err)
			n.stabilize()
			require.Less(t, c2.log.committed, c1.log.committed)
			require.True(t, c1.leaseValid())
			c2.read(7, lease)
			n.stabilize()
			require.Len(t, n.reads[2], 1)
			r := n.reads[2][0]
			require.NoError(t, r.err)
			assert.Equal(t, c1.log.committed, r.index)
			assert.GreaterOrEqual(t, c2.log.committed, r.index, "the follower can apply up to the read index without waiting for a tick")
		})
	}
}
