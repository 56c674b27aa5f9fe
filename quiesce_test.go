package raft

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withQuiesce makes a core quiesce after ticks idle ticks.
func withQuiesce(ticks int) coreOption { return func(c *coreConfig) {} }

func quiescingCores(t *testing.T, after int, opts ...coreOption) (c1, c2, c3 *core, n *coreNet) {
	c1, c2, c3, n = threeCores(t, opts...)
	for _, c := range []*core{c1, c2, c3} {
		c.quiesce.after = after
	}
	return c1, c2, c3, n
}

// tickAll ticks every core k times, delivering messages after each tick.
func (n *coreNet) tickAll(k int) {
	for range k {
		for _, id := range n.ids() {
			n.cores[id].tick()
		}
		n.stabilize()
	}
}

func TestQuiesce_IdleLeaderQuiescesAndFollowersRest(t *testing.T) {
	c1, c2, c3, n := quiescingCores(t, 5)
	n.elect(1)
	_, _, err := c1.propose(cmd("x"))
	require.NoError(t, err)
	n.stabilize()
	n.tickAll(7)
	t.Logf("idle=%d idleLeader=%v", c1.quiesce.idle, c1.idleLeader())
	for id, pr := range c1.progress {
		t.Logf("%d %+v", id, *pr)
	}
	t.Logf("last %d commit %d stable %d", c1.log.lastIndex(), c1.log.committed, c1.log.stable)
	assert.True(t, c1.quiesced())
	assert.True(t, c2.quiesced())
	assert.True(t, c3.quiesced())
}
