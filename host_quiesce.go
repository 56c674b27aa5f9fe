package raft

// The Host's side of quiescence (quiesce.go has the group's side). A group
// that rests is taken off the host's clock, so its event loop no longer
// wakes every tick, and its leader no longer heartbeats. What remains is
// one liveness signal per pair of hosts:
//
//   - A host that leads resting groups with replicas on a peer host sends
//     that host, every heartbeat interval (the shortest of those groups'),
//     one of those groups' quiesce notices again: one message per pair of
//     hosts, whatever the number of groups. It is an old heartbeat of a
//     leader that still leads, resent; Raft allows any message to be
//     duplicated and delayed, so it is safe whenever it arrives.
//   - A host that follows resting groups led by a peer host notes when it
//     last heard anything from that host (any message of any group). When
//     it has heard nothing for a group's election timeout, it wakes the
//     group with a loss report from the leader (MsgUnreachable): its
//     follower resumes its election timer and, if the leader's host is
//     really gone (crashed, partitioned away, its connection down), elects
//     a new leader one election timeout later, as without quiescence.
//   - A group stopped on the host that leads it while it rests sends its
//     followers its notices again without the quiesce flag: plain
//     heartbeats, which wake them, so that they elect a new leader rather
//     than wait for a host that is alive but no longer runs the group's
//     leader.

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQuiesceAfter is the default HostConfig.QuiesceAfter.
const DefaultQuiesceAfter = 3 * time.Second

// hostQuiesce tracks the resting groups of a Host.
type hostQuiesce struct {
	host  *Host
	after time.Duration // HostConfig.QuiesceAfter; 0: groups do not quiesce
	epoch time.Time     // heard times are monotonic nanoseconds since epoch

	// heard holds, per peer host ID, an *atomic.Int64: when a message from
	// that host last arrived. Host.route updates it without a lock.
	heard sync.Map

	mu     sync.Mutex
	peers  map[uint64]*quiescePeer
	groups map[uint64]*restingGroup // by group ID
	pings  atomic.Uint64
}

// restingGroup is a group resting on this host.
type restingGroup struct {
	view   *groupTransport
	report quiesceReport
	woken  time.Duration // follower: when the host last woke it for silence (since epoch); 0: never
}

// quiescePeer is what the host's resting groups expect of one peer host.
type quiescePeer struct {
	leading   map[uint64]Message // groups led here, resting: the notice to this peer
	lastPing  time.Duration      // since epoch
	following map[uint64]*restingGroup
	// shortest is the shortest election timeout of the groups in following
	// (or of some that were): the host looks at them only after that much
	// silence.
	shortest time.Duration
}

func newHostQuiesce(h *Host, after time.Duration) *hostQuiesce {
	return &hostQuiesce{host: h, after: after, epoch: time.Now(),
		peers: map[uint64]*quiescePeer{}, groups: map[uint64]*restingGroup{}}
}

func (q *hostQuiesce) now() time.Duration { return time.Since(q.epoch) }

// heardFrom records that a message from peer host from arrived.
func (q *hostQuiesce) heardFrom(from uint64) {
	if v, ok := q.heard.Load(from); ok {
		v.(*atomic.Int64).Store(int64(q.now()))
	}
}

func (q *hostQuiesce) lastHeard(from uint64) time.Duration {
	v, loaded := q.heard.LoadOrStore(from, new(atomic.Int64))
	at := v.(*atomic.Int64)
	if !loaded {
		at.Store(int64(q.now()))
	}
	return time.Duration(at.Load())
}

func (q *hostQuiesce) peer(id uint64) *quiescePeer {
	p := q.peers[id]
	if p == nil {
		p = &quiescePeer{leading: map[uint64]Message{}, following: map[uint64]*restingGroup{}}
		q.peers[id] = p
	}
	return p
}

// rest records that group g started resting, as r says.
func (q *hostQuiesce) rest(g *groupTransport, r quiesceReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetLocked(g.group)
	rg := &restingGroup{view: g, report: r}
	q.groups[g.group] = rg
	if r.leader == q.host.id {
		for _, m := range r.notices {
			q.peer(m.To).leading[g.group] = m
		}
		return
	}
	q.lastHeard(r.leader) // start watching the leader's host, if not yet
	p := q.peer(r.leader)
	if len(p.following) == 0 || r.electionTimeout < p.shortest {
		p.shortest = r.electionTimeout
	}
	p.following[g.group] = rg
}

// wake records that group stopped resting. With farewell (the group is
// being stopped), a resting leader's followers are sent plain heartbeats,
// which wake them.
func (q *hostQuiesce) wake(group uint64, farewell bool) {
	q.mu.Lock()
	rg := q.forgetLocked(group)
	q.mu.Unlock()
	if rg == nil || !farewell || rg.report.leader != q.host.id {
		return
	}
	msgs := slices.Clone(rg.report.notices)
	for i := range msgs {
		msgs[i].Done = false
	}
	q.host.link.sendGroup(group, msgs)
}

func (q *hostQuiesce) forgetLocked(group uint64) *restingGroup {
	rg := q.groups[group]
	if rg == nil {
		return nil
	}
	delete(q.groups, group)
	if rg.report.leader == q.host.id {
		for _, m := range rg.report.notices {
			if p := q.peers[m.To]; p != nil {
				delete(p.leading, group)
			}
		}
	} else if p := q.peers[rg.report.leader]; p != nil {
		delete(p.following, group)
	}
	return rg
}

// resting returns the number of groups resting on the host.
func (q *hostQuiesce) resting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.groups)
}

// check runs after each host tick, on the clock's goroutine: it sends the
// pings that are due and wakes the followers of peer hosts gone silent.
func (q *hostQuiesce) check(time.Time) {
	type send struct {
		group uint64
		m     Message
	}
	var pings []send
	var wake []*restingGroup
	now := q.now()
	q.mu.Lock()
	for id, p := range q.peers {
		if len(p.leading) > 0 {
			for group, m := range p.leading { // any one of them
				if now-p.lastPing >= q.groups[group].report.heartbeat {
					p.lastPing = now
					pings = append(pings, send{group, m})
				}
				break
			}
		}
		if len(p.following) == 0 {
			continue
		}
		if silence := now - q.lastHeard(id); silence >= p.shortest {
			for _, rg := range p.following {
				// Woken groups whose node has not reported yet (its inbox
				// was full, say) are woken again an election timeout later.
				if silence >= rg.report.electionTimeout && now-rg.woken >= rg.report.electionTimeout {
					rg.woken = now
					wake = append(wake, rg)
				}
			}
		}
	}
	q.mu.Unlock()
	for _, s := range pings {
		q.pings.Add(1)
		q.host.link.sendGroup(s.group, []Message{s.m})
	}
	for _, rg := range wake {
		// A loss report of the leader wakes the follower (quiesce.go); it
		// means nothing else to a follower.
		rg.view.receive(Message{Type: MsgUnreachable, From: rg.report.leader, To: q.host.id})
	}
}

// quiesceAfter implements quiesceListener.
func (g *groupTransport) quiesceAfter() time.Duration { return g.host.quiesce.after }

// quiesceChanged implements quiesceListener: a resting group is taken off
// the host's clock and its leader's host watched; a woken one is put back.
func (g *groupTransport) quiesceChanged(r quiesceReport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.attached || g.detached {
		return
	}
	if r.resting {
		g.host.clock.remove(g.clock)
		g.host.quiesce.rest(g, r)
		return
	}
	g.host.quiesce.wake(g.group, false)
	g.host.clock.resume(g.clock)
}
