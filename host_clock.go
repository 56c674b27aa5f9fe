package raft

// The shared clock of a Host (host.go): one ticker per host drives the ticks
// of every group it runs, instead of a time.Ticker per Node.
//
// The host's clock fires every HostConfig.TickInterval (the host tick). A
// group whose tick (Config: the shorter of HeartbeatInterval and
// ElectionTimeout/10) is k host ticks long is given one of k slots when it
// starts, round robin, and ticks at the host ticks of its slot: every k-th
// host tick. The groups of a host therefore do not all tick, and send
// their heartbeats, at the same moment, but spread evenly over their tick.
//
// A tick reaches a group as a flag on its event loop's task, which puts the
// group on the host's run queue (host_workers.go); the flag holds one tick,
// like a time.Ticker's channel, so that a group whose pass is late misses
// ticks rather than holding up the others, and takes at most one stale
// tick when a worker runs it. That is what lease
// reads (node_lease.go) assume of a ticker: ticks a period apart, of which
// one may arrive late; a leader makes up missed ticks by the monotonic
// clock. When the host's own goroutine falls behind (the process was
// stalled), the host ticks each group at most once for the host ticks
// missed, as a time.Ticker drops the fires its reader missed. A host tick
// is never handed out before its time. A group's first tick may come
// sooner than a whole tick after it starts (its slot comes up): that
// makes a leader count more time than passed, never less, which only
// shortens a lease.

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHostTickInterval is the default HostConfig.TickInterval.
const DefaultHostTickInterval = 10 * time.Millisecond

// hostClock is a Host's ticker and the groups it ticks.
type hostClock struct {
	period time.Duration
	start  time.Time

	mu      sync.Mutex
	classes map[int]*tickClass // by the group tick's length in host ticks

	// after, if set before the clock runs, is called on the clock's
	// goroutine after each host tick (the Host's quiescence checks,
	// host_quiesce.go).
	after func(now time.Time)

	stop chan struct{}
	done chan struct{}
}

// tickClass holds the groups whose tick is the same number of host ticks
// long, by slot.
type tickClass struct {
	slots [][]*hostTicked
	next  int // the slot of the next group to join
	count int
}

// hostTicked is a group's place on the clock.
type hostTicked struct {
	every int // the group's tick, in host ticks
	slot  int // it ticks at the host ticks n with n % every == slot
	index int // its index in its slot, for removal
	// task is the group's event loop, which the clock ticks; nil until
	// its node is bound to it (groupTransport.bindLoop).
	task atomic.Pointer[loopTask]
}

func newHostClock(period time.Duration, after func(now time.Time)) *hostClock {
	c := &hostClock{
		period:  period,
		start:   time.Now(),
		classes: map[int]*tickClass{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		after:   after,
	}
	go c.run()
	return c
}

// add puts a group whose tick is every host ticks long on the clock.
func (c *hostClock) add(every int) *hostTicked {
	c.mu.Lock()
	defer c.mu.Unlock()
	class := c.classes[every]
	if class == nil {
		class = &tickClass{slots: make([][]*hostTicked, every)}
		c.classes[every] = class
	}
	g := &hostTicked{every: every}
	c.insertLocked(class, g)
	return g
}

// insertLocked gives g the class's next slot.
func (c *hostClock) insertLocked(class *tickClass, g *hostTicked) {
	g.slot = class.next
	class.next = (class.next + 1) % g.every
	g.index = len(class.slots[g.slot])
	class.slots[g.slot] = append(class.slots[g.slot], g)
	class.count++
}

// resume puts a group that remove took off the clock (a quiesced group,
// quiesce.go) back on it.
func (c *hostClock) resume(g *hostTicked) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.index >= 0 {
		return
	}
	class := c.classes[g.every]
	if class == nil {
		class = &tickClass{slots: make([][]*hostTicked, g.every)}
		c.classes[g.every] = class
	}
	c.insertLocked(class, g)
}

// remove takes g off the clock; no tick is sent to it after remove returns.
func (c *hostClock) remove(g *hostTicked) {
	c.mu.Lock()
	defer c.mu.Unlock()
	class := c.classes[g.every]
	if class == nil || g.index < 0 {
		return
	}
	slot := class.slots[g.slot]
	last := len(slot) - 1
	slot[g.index] = slot[last]
	slot[g.index].index = g.index
	slot[last] = nil
	class.slots[g.slot] = slot[:last]
	g.index = -1
	if class.count--; class.count == 0 {
		delete(c.classes, g.every)
	}
}

func (c *hostClock) run() {
	defer close(c.done)
	ticker := time.NewTicker(c.period)
	defer ticker.Stop()
	var last int64 // the last host tick handed out
	for {
		select {
		case <-c.stop:
			return
		case <-ticker.C:
		}
		now := time.Now()
		// Host ticks are counted by the monotonic clock, not by the
		// ticker's fires: the slots stay a whole group tick apart even
		// when the ticker drops fires.
		current := int64(now.Sub(c.start) / c.period)
		if current <= last {
			continue
		}
		c.fire(last, current, now)
		last = current
		if c.after != nil {
			c.after(now)
		}
	}
}

// fire ticks the groups whose slots came up in the host ticks (last,
// current]: each at most once.
func (c *hostClock) fire(last, current int64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for every, class := range c.classes {
		if current-last >= int64(every) {
			for _, slot := range class.slots {
				sendTicks(slot)
			}
			continue
		}
		for n := last + 1; n <= current; n++ {
			sendTicks(class.slots[n%int64(every)])
		}
	}
}

func sendTicks(groups []*hostTicked) {
	for _, g := range groups {
		if t := g.task.Load(); t != nil {
			t.ticked()
		}
	}
}

// close stops the clock's goroutine and waits for it.
func (c *hostClock) close() {
	close(c.stop)
	<-c.done
}
