package raft

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of a Host's shared clock (host_clock.go).

// addTicked puts a group on c with a task that no pool runs (it stays in
// the running state, so that its ticks only set its flag).
func addTicked(c *hostClock, every int) *hostTicked {
	g := c.add(every)
	g.task.Store(newLoopTask(nil))
	return g
}

// ticked takes g's tick and reports whether it held one.
func ticked(g *hostTicked) bool { return g.task.Load().tick.Swap(false) }

// A group whose tick is k host ticks long ticks at every k-th host tick,
// at its slot; the groups of a class are spread evenly over the slots, so
// that they do not all tick (and heartbeat) at once.
func TestHostClock_SpreadsGroupsOverTheirTick(t *testing.T) {
	c := &hostClock{period: time.Millisecond, classes: map[int]*tickClass{}} // no goroutine: the test fires it
	var groups []*hostTicked
	for range 9 {
		groups = append(groups, addTicked(c, 3))
	}
	one := addTicked(c, 1)
	perSlot := [3]int{}
	for _, g := range groups {
		perSlot[g.slot]++
	}
	assert.Equal(t, [3]int{3, 3, 3}, perSlot, "nine groups over three slots")

	now := time.Now()
	for n := int64(1); n <= 6; n++ {
		c.fire(n-1, n, now)
		assert.True(t, ticked(one), "a group one host tick long ticks at every host tick")
		count := 0
		for _, g := range groups {
			if ticked(g) {
				count++
				assert.Equal(t, int(n%3), g.slot, "a group ticks at its slot's host ticks")
			}
		}
		assert.Equal(t, 3, count, "host tick %d ticks one slot's groups", n)
	}

	// A stalled host that missed host ticks ticks each group once.
	c.fire(6, 20, now)
	for _, g := range append(groups, one) {
		assert.True(t, ticked(g))
		assert.False(t, ticked(g), "once")
	}

	// A group that has not taken its tick misses the next ones, as a
	// time.Ticker's reader does: the clock never waits for a group.
	c.fire(20, 21, now)
	c.fire(21, 22, now)
	assert.True(t, ticked(one))
	assert.False(t, ticked(one), "one tick held at most")
	for _, g := range groups {
		ticked(g)
	}

	// Removed groups get no ticks; the others keep theirs.
	for _, g := range groups[:8] {
		c.remove(g)
	}
	c.remove(groups[0]) // twice: nothing
	c.fire(22, 25, now)
	assert.True(t, ticked(groups[8]))
	for _, g := range groups[:8] {
		assert.False(t, ticked(g))
	}
	c.remove(groups[8])
	assert.NotContains(t, c.classes, 3, "an empty class is dropped")
}

// Every group of a host is ticked by the host's one clock: the groups'
// nodes run no ticker of their own, and a stopped group leaves the clock.
func TestHost_OneClockTicksEveryGroup(t *testing.T) {
	c := newHostCluster(t, 3, false)
	groups := groupIDs(20)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	c.waitLeaders(groups) // elections need ticks: the clock brings them
	h := c.hosts[1]
	classCount := func() map[int]int {
		h.clock.mu.Lock()
		defer h.clock.mu.Unlock()
		counts := map[int]int{}
		for every, class := range h.clock.classes {
			counts[every] = class.count
		}
		return counts
	}
	// A tick of 10ms is two host ticks of 5ms.
	assert.Equal(t, map[int]int{2: len(groups)}, classCount())
	for _, g := range groups {
		n := c.node(g, 1)
		require.NotNil(t, n.task, "group %d's node runs on the host's workers, ticked by its clock", g)
	}
	require.NoError(t, h.StopGroup(groups[0]))
	assert.Equal(t, map[int]int{2: len(groups) - 1}, classCount())
}
