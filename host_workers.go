package raft

// The shared CPU of a Host (host.go): the event loops of its groups run on
// a fixed pool of worker goroutines (HostConfig.Workers) instead of a
// goroutine per group.
//
// A group is put on the pool's run queue when it has work: something
// arrived in its inbox (a message, a proposal, a read, a call, a write
// made durable: Node.wake), the host's clock ticked it (host_clock.go), or
// its commit flush timer fired. A worker takes the group at the head of
// the queue and runs one pass of its event loop (Node.pass: drain the
// inbox, tick, carry out what the core asks, publish the status), then
// takes the next one. A single Node runs the same pass on a goroutine of
// its own (Node.run).
//
// Invariants, kept by loopTask.state:
//   - A group is on the run queue at most once, and never run by two
//     workers at once: a pass of a group happens-before the next.
//   - No wake-up is lost: work that arrives while a worker runs a pass of
//     the group sets its flag, and the group is queued again once the pass
//     ends (at the back of the queue, so that a busy group does not starve
//     the others).
//
// A pass must not wait for another group's pass: it may wait for its own
// storage writer (a compaction after a snapshot) or a device, which need
// no worker, but then it holds its worker meanwhile.

import (
	"sync"
	"sync/atomic"
)

// The states of a loopTask.
const (
	loopIdle    int32 = iota // no work known: not on the queue
	loopQueued               // on the run queue
	loopRunning              // a worker (or NewNode) runs a pass
	loopAgain                // running, and work arrived since the pass began: queue it again after
	loopStopped              // the loop has exited: never queued again
)

// loopTask is a group's event loop as the pool sees it.
type loopTask struct {
	node  *Node
	pool  *workerPool
	state atomic.Int32
	// tick: the host's clock ticked the group; notified: its inbox may hold
	// work (Node.wake). Each is taken (cleared) by the pass that handles it.
	tick     atomic.Bool
	notified atomic.Bool
}

// newLoopTask returns n's task, in the running state: NewNode acts as the
// loop until it calls start, so that work arriving meanwhile (once the
// transport is attached) is queued only then. NewNode sets pool before
// start.
func newLoopTask(n *Node) *loopTask {
	t := &loopTask{node: n}
	t.state.Store(loopRunning)
	return t
}

// schedule puts the group on the run queue, unless it is on it already or
// a worker runs it (which then queues it again).
func (t *loopTask) schedule() {
	for {
		switch s := t.state.Load(); s {
		case loopIdle:
			if t.state.CompareAndSwap(loopIdle, loopQueued) {
				t.pool.push(t)
				return
			}
		case loopRunning:
			if t.state.CompareAndSwap(loopRunning, loopAgain) {
				return
			}
		default: // queued, to run again, or stopped
			return
		}
	}
}

// ticked is the host clock's tick for the group.
func (t *loopTask) ticked() {
	t.tick.Store(true)
	t.schedule()
}

// start ends NewNode's turn as the loop.
func (t *loopTask) start() { t.passDone() }

// passDone ends a pass: the group goes back to idle, or on the queue when
// work arrived during the pass.
func (t *loopTask) passDone() {
	if t.state.CompareAndSwap(loopRunning, loopIdle) {
		return
	}
	t.state.Store(loopQueued) // from loopAgain: only this worker moves it on
	t.pool.push(t)
}

// run runs one pass of the group's loop on a worker.
func (t *loopTask) run() {
	t.state.Store(loopRunning) // from loopQueued: only the worker that popped it moves it on
	n := t.node
	select {
	case <-n.done:
		t.stop()
		return
	default:
	}
	// Taken after the state is running: work that comes after this point
	// makes the state loopAgain, and the group runs again.
	if !n.pass(t.tick.Swap(false), t.notified.Swap(false)) {
		t.stop()
		return
	}
	t.passDone()
}

// stop ends the group's loop (Close, or a fatal error).
func (t *loopTask) stop() {
	t.state.Store(loopStopped)
	t.node.exitLoop()
	t.node.loopWG.Done()
}

// workerPool is a Host's fixed set of workers and their run queue.
type workerPool struct {
	mu     sync.Mutex
	ready  sync.Cond
	queue  []*loopTask // FIFO: queue[head:] are waiting
	head   int
	closed bool
	wg     sync.WaitGroup
}

// newWorkerPool starts workers workers.
func newWorkerPool(workers int) *workerPool {
	p := &workerPool{}
	p.ready.L = &p.mu
	p.wg.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

// push appends t to the run queue and wakes a worker; it never blocks.
func (p *workerPool) push(t *loopTask) {
	p.mu.Lock()
	p.queue = append(p.queue, t)
	p.mu.Unlock()
	p.ready.Signal()
}

// next waits for a task; nil once the pool is closed.
func (p *workerPool) next() *loopTask {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.head == len(p.queue) {
		if p.closed {
			return nil
		}
		p.ready.Wait()
	}
	t := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	if p.head == len(p.queue) {
		// Empty: reuse the array from its start.
		p.queue, p.head = p.queue[:0], 0
	} else if p.head > 1024 && p.head > len(p.queue)/2 {
		// Mostly consumed: move what waits to the front, so that the array
		// does not grow while the queue never empties.
		k := copy(p.queue, p.queue[p.head:])
		clear(p.queue[k:])
		p.queue, p.head = p.queue[:k], 0
	}
	return t
}

func (p *workerPool) work() {
	defer p.wg.Done()
	for {
		t := p.next()
		if t == nil {
			return
		}
		t.run()
	}
}

// close stops the workers once the queue is empty and waits for them. The
// Host closes every group first, so nothing is queued after it.
func (p *workerPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ready.Broadcast()
	p.wg.Wait()
}

// loopPooled is implemented by a Transport whose Node runs its event loop
// on a pool of workers and takes its ticks from a shared clock: a group's
// view of its Host (host_transport.go).
type loopPooled interface {
	// bindLoop returns the pool to run t on, and has the transport's clock
	// tick t from now on. It is called once, after Attach.
	bindLoop(t *loopTask) *workerPool
}

// bindLoop implements loopPooled. It is called once Attach has put the
// group on the host's clock.
func (g *groupTransport) bindLoop(t *loopTask) *workerPool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.clock != nil {
		g.clock.task.Store(t)
	}
	return g.host.workers
}
