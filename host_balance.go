package raft

// Leader balancing for a Host (docs/multigroup.md, "Placement and
// balancing"). Every write of a group goes through its leader, so a host
// that leads most of its groups does most of the work of all of them:
// balancing hands leadership of some groups to followers on hosts that
// lead fewer, with leadership transfer (dissertation §3.10, transfer.go).
//
// Each host decides for itself, from what it sees: its own groups and their
// Status. A host is a voter of a group with V voters; over the groups it
// holds, its fair share of the leaders is the sum of 1/V, and its target
// is that share rounded up, plus BalanceOptions.Tolerance. A host over its
// target transfers the leadership of some of the groups it leads to
// followers that are caught up and reachable, on hosts under their target,
// until it is at its target or no such follower is left. It counts the
// other hosts' leaders and shares from the groups it shares with them (the
// leader a replica knows, Status.Leader).
//
// Why it converges, and does not move a group back and forth: a host only
// gives leadership away while it leads more than its target, and never
// below it; a receiver is chosen only while it leads fewer than its
// target. When each host sees every group of the hosts it hands leadership
// to (every group on the same hosts, or hosts in fixed replica sets), the
// counts and targets are exact, so a transfer takes one leader off a host
// over its target and puts it on a host under its own: the sum over hosts
// of their leaders over target drops by one with each transfer, and never
// rises. Hosts that balance at the same time may pick the same receiver and
// take it one over its target; that host then gives one away, and the sum
// still dropped (two hosts lost one each, one host gained one). A host's
// view may also lag a transfer another host just made (its replica of the
// group has not heard of the new leader yet); such a view overcounts the
// host that gave the group away, which is then not chosen, and undercounts
// the one that took it, which may be taken one over its target and give one
// away in turn. Once every host is at or under its target, no host starts
// a transfer: running the balancer again, on any host, changes nothing.
// Leaders moved by anything else (a host that restarts, an election) are
// put back by the next runs.
//
// Limits: a host sees only the groups it shares. With placements where a
// peer host also leads groups this host does not hold, this host counts
// fewer of its leaders, and may hand it a group that takes it over its
// real target; the peer then gives one away in turn. And balancing moves
// leaders among a group's replicas only: where the replicas themselves are
// placed unevenly, a host can be left over its target with no follower to
// hand to (BalanceResult.Unplaced).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// errNoLongerLeads: a group BalanceLeaders planned to move is no longer
// led by this host (an election moved it meanwhile).
var errNoLongerLeads = fmt.Errorf("%w: this host no longer leads the group", ErrTransferFailed)

// balanceFailuresToExclude is how many transfers in a row to one host may
// fail before BalanceLeaders passes that host over for the rest of the
// call: one failure can be bad luck (the follower was busy, a message was
// lost), several in a row mean the host is down or overloaded, which its
// followers' progress shows only an election timeout later.
const balanceFailuresToExclude = 3

// DefaultBalanceMaxInFlight is the default BalanceOptions.MaxInFlight.
const DefaultBalanceMaxInFlight = 4

// BalanceOptions tunes Host.BalanceLeaders. The zero value is the
// documented default of every field.
type BalanceOptions struct {
	// Tolerance is how many groups a host may lead over its fair share,
	// rounded up, before it hands any over: its target is
	// ceil(share) + Tolerance, where its share is the sum, over the groups
	// of which it is a voter, of 1 / the group's number of voters (so 4
	// with 12 groups of 3 voters). A host is also chosen to receive
	// leadership only while it leads fewer than its target. Default 0: as
	// even as the numbers allow.
	Tolerance int
	// MaxInFlight is the number of transfers under way at once, at most.
	// A group refuses proposals while its leadership is being transferred
	// (ErrTransferInProgress; at most an election timeout, usually a round
	// trip), so this bounds how many groups pause at a time. Default
	// DefaultBalanceMaxInFlight.
	MaxInFlight int
	// MaxTransfers is the number of transfers one call starts, at most;
	// the periodic balancer (HostConfig.BalanceInterval) moves that many
	// per interval. Default 0: as many as the host is over its target.
	MaxTransfers int
	// MaxLag is how many entries behind the leader's last one a follower
	// may be and still receive leadership. The transfer itself brings the
	// follower up to date first (the group takes no proposal meanwhile),
	// so a follower that lags far would keep the group paused longer.
	// Default 0: it holds every entry, as of the leader's last tick.
	MaxLag uint64
	// SkipResting leaves the groups that rest (HostConfig.QuiesceAfter)
	// alone: they are counted but not moved. A transfer wakes the group,
	// which rests again QuiesceAfter after the transfer. Default false:
	// resting groups are moved too, since a group that rests now is not
	// idle forever, and its leader's host takes its load when it wakes.
	SkipResting bool
}

// Validate returns an error naming the first invalid field, or nil. Every
// error wraps ErrInvalidConfig.
func (o BalanceOptions) Validate() error { return o.validate("BalanceOptions") }

// validate is Validate, naming the fields under name (HostConfig's
// BalanceOptions field, or the type itself).
func (o BalanceOptions) validate(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s", ErrInvalidConfig, name, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Tolerance < 0:
		return bad("Tolerance %d is negative", o.Tolerance)
	case o.MaxInFlight < 0:
		return bad("MaxInFlight %d is negative", o.MaxInFlight)
	case o.MaxTransfers < 0:
		return bad("MaxTransfers %d is negative (0: no limit)", o.MaxTransfers)
	}
	return nil
}

// LeaderMove is one leadership transfer BalanceLeaders attempted.
type LeaderMove struct {
	Group uint64
	// From is this host; To the host that was to lead the group.
	From, To uint64
	// Err is why the transfer failed (wrapping ErrTransferFailed when the
	// target did not take over, or the context's error); nil: To leads.
	Err error
}

// BalanceResult reports what one BalanceLeaders call saw and did.
type BalanceResult struct {
	// Groups is the number of groups counted: those running on the host of
	// which it is a voter. A group in a joint configuration is counted but
	// not moved.
	Groups int
	// Target is the number of groups the host may lead:
	// ceil(share) + Tolerance (see BalanceOptions.Tolerance).
	Target int
	// LedBefore is the number of groups the host led when the call started,
	// LedAfter when it returned.
	LedBefore, LedAfter int
	// Moves are the transfers attempted, in the order they finished.
	Moves []LeaderMove
	// Unplaced is by how many groups the host was still over its target
	// when no group it leads had a follower to take over: caught up,
	// reachable, on a host under its target. Non-zero when the other hosts
	// are full, or down, or the groups' replicas are placed unevenly.
	Unplaced int
}

// Transferred returns the number of transfers that succeeded.
func (r BalanceResult) Transferred() int {
	k := 0
	for _, m := range r.Moves {
		if m.Err == nil {
			k++
		}
	}
	return k
}

// balanceGroup is what BalanceLeaders knows of one group.
type balanceGroup struct {
	id      uint64
	node    *Node
	resting bool
	joint   bool
	st      Status // for a group this host leads
}

// balancePlan is the state of one BalanceLeaders call: the leader counts
// and targets it works from, updated as transfers start and finish.
type balancePlan struct {
	self      uint64
	tolerance int
	maxLag    uint64
	share     map[uint64]float64 // fair share of leaders, by host, over the groups this host sees
	leads     map[uint64]int     // leaders by host, as this host sees them
	fresh     map[uint64]bool    // hosts some awake group led here heard from within an election timeout
	stale     map[uint64]bool    // hosts some awake group led here has not heard from for that long
	failed    map[uint64]int     // transfers in a row to each host that failed in this call
	excluded  map[uint64]bool    // hosts passed over for the rest of the call
	queue     []*balanceGroup    // groups led here that may move, awake ones first
}

func (p *balancePlan) target(host uint64) int {
	// The share is a sum of fractions: round a sum that should be whole
	// but came out a hair above it down to it.
	return int(math.Ceil(p.share[host]-1e-9)) + p.tolerance
}

// electionTimeout returns a group's election timeout (with its defaults).
func (n *Node) electionTimeout() time.Duration { return n.cfg.ElectionTimeout }

// BalanceLeaders spreads the leaders of the host's groups over the hosts:
// while the host leads more groups than its target (see
// BalanceOptions.Tolerance), it transfers the leadership of some of them
// (Node.TransferLeadership) to followers that hold the leader's log (up to
// BalanceOptions.MaxLag entries), have answered within an election timeout,
// and sit on hosts that lead fewer groups than their own target, the one
// with the most room first. At most BalanceOptions.MaxInFlight transfers
// run at once; a group whose transfer failed is not tried again in the same
// call, nor a host to which three transfers in a row failed.
//
// A leader's view of its followers is as of its last tick (Status.Progress),
// so a group whose leader was elected a moment ago, and shows its
// followers at Match 0 until it ticks after their answers, has no follower
// caught up yet: it is left for a later call (BalanceResult.Unplaced counts
// it). Wait until its Status shows them caught up to have one call move it.
//
// Call it on every host, now and then (or set HostConfig.BalanceInterval):
// each host only gives leadership away, never takes it, and only while it
// is over its target, so runs on every host converge and, once the
// leaders are spread, move nothing (see the comment at the top of
// host_balance.go for why, and for the limits when hosts hold different
// sets of groups). A transfer that fails is reported in the result's Moves
// and is not an error of the call.
//
// It returns an error wrapping ErrInvalidConfig for invalid opts or a nil
// ctx, ErrClosed once the host is closed, and the context's error (with
// the moves made so far) when ctx ends: it then stops waiting for the
// transfers under way, which their groups still complete or abandon
// within an election timeout.
func (h *Host) BalanceLeaders(ctx context.Context, opts BalanceOptions) (BalanceResult, error) {
	if err := opts.Validate(); err != nil {
		return BalanceResult{}, err
	}
	if ctx == nil {
		return BalanceResult{}, fmt.Errorf("%w: BalanceLeaders needs a context", ErrInvalidConfig)
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultBalanceMaxInFlight
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return BalanceResult{}, errHostClosed
	}
	plan, res := h.balanceView(opts)
	if res.LedBefore <= res.Target {
		res.LedAfter = h.countLed()
		return res, nil
	}

	results := make(chan LeaderMove)
	inFlight, started := 0, 0
	finished := func(m LeaderMove) {
		inFlight--
		h.recordMove(m)
		res.Moves = append(res.Moves, m)
		switch {
		case m.Err == nil:
		case errors.Is(m.Err, errNoLongerLeads):
			plan.leads[m.To]-- // and this host no longer counts it
		default:
			plan.leads[h.id]++
			plan.leads[m.To]--
			if plan.failed[m.To]++; plan.failed[m.To] >= balanceFailuresToExclude {
				plan.excluded[m.To] = true
			}
		}
		if m.Err == nil {
			plan.failed[m.To] = 0
		}
	}
	for {
		for ctx.Err() == nil && inFlight < opts.MaxInFlight && plan.leads[h.id] > res.Target &&
			(opts.MaxTransfers == 0 || started < opts.MaxTransfers) {
			g, to := plan.next()
			if g == nil {
				break
			}
			plan.leads[h.id]--
			plan.leads[to]++
			inFlight++
			started++
			h.balanceStats.started.Add(1)
			go func() { results <- h.transfer(ctx, g, to) }()
		}
		if inFlight == 0 {
			break
		}
		select {
		case m := <-results:
			finished(m)
		case <-ctx.Done():
			// The transfers under way use ctx too: they return promptly.
			for inFlight > 0 {
				finished(<-results)
			}
		}
	}
	res.Unplaced = max(0, plan.leads[h.id]-res.Target)
	if opts.MaxTransfers != 0 && started >= opts.MaxTransfers {
		res.Unplaced = 0 // stopped by the limit, not for want of a follower
	}
	res.LedAfter = h.countLed()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("raft: balancing leaders: %w", err)
	}
	return res, nil
}

// balanceView reads the status of every group on the host and returns the
// plan a BalanceLeaders call starts from, and the result's counts.
func (h *Host) balanceView(opts BalanceOptions) (*balancePlan, BalanceResult) {
	p := &balancePlan{self: h.id, tolerance: opts.Tolerance, maxLag: opts.MaxLag,
		share: map[uint64]float64{}, leads: map[uint64]int{},
		fresh: map[uint64]bool{}, stale: map[uint64]bool{}, failed: map[uint64]int{}, excluded: map[uint64]bool{}}
	var res BalanceResult
	var resting []*balanceGroup
	for _, id := range h.Groups() {
		n, ok := h.Group(id)
		if !ok {
			continue
		}
		st := n.Status()
		if st.Err != nil || st.Removed {
			continue
		}
		voters := make([]uint64, 0, len(st.Members))
		for _, m := range st.Members {
			if !m.Learner {
				voters = append(voters, m.ID)
			}
		}
		if !slices.Contains(voters, h.id) {
			continue // a learner here, or not a member (yet)
		}
		res.Groups++
		for _, v := range voters {
			p.share[v] += 1 / float64(len(voters))
		}
		if st.Leader != 0 {
			p.leads[st.Leader]++
		}
		if st.Role != Leader {
			continue
		}
		g := &balanceGroup{id: id, node: n, resting: h.quiesce.isResting(id), joint: st.Outgoing != nil, st: st}
		if !g.resting {
			// An awake leader's progress is at most a tick old: it tells
			// which hosts answer, for the resting groups too, whose
			// progress is as of when they came to rest.
			for _, pr := range st.Progress {
				if pr.SinceContact < n.electionTimeout() {
					p.fresh[pr.ID] = true
				} else {
					p.stale[pr.ID] = true
				}
			}
		}
		switch {
		case g.joint:
		case g.resting && opts.SkipResting:
		case g.resting:
			resting = append(resting, g)
		default:
			p.queue = append(p.queue, g)
		}
	}
	p.queue = append(p.queue, resting...)
	res.Target = p.target(h.id)
	res.LedBefore = p.leads[h.id]
	return p, res
}

// next removes from the queue the first group that has a follower to take
// over, and returns it and that follower; nil when none has.
func (p *balancePlan) next() (*balanceGroup, uint64) {
	for i, g := range p.queue {
		if to := p.receiver(g); to != 0 {
			p.queue = slices.Delete(p.queue, i, i+1)
			return g, to
		}
	}
	return nil, 0
}

// receiver returns the follower of g to hand its leadership to, or 0: a
// voter that holds the leader's log up to maxLag entries and is reachable,
// on a host under its target, the one with the most room (then the fewest
// leaders, then the lowest ID, so that every run picks alike).
func (p *balancePlan) receiver(g *balanceGroup) uint64 {
	var best uint64
	bestRoom, bestLeads := 0, 0
	for _, pr := range g.st.Progress {
		id := pr.ID
		if id == p.self || p.excluded[id] || !p.caughtUp(g, pr) {
			continue
		}
		room := p.target(id) - p.leads[id]
		if room <= 0 {
			continue
		}
		if best == 0 || room > bestRoom || room == bestRoom && (p.leads[id] < bestLeads || p.leads[id] == bestLeads && id < best) {
			best, bestRoom, bestLeads = id, room, p.leads[id]
		}
	}
	return best
}

// caughtUp reports whether the member of pr may take over g: a voter of
// the configuration (not leaving it) whose log holds the leader's up to
// maxLag entries, that the leader heard from within an election timeout
// and is not sending a snapshot. A resting group's progress is as of when it came to
// rest, when every follower held the whole log and answered; its followers
// are then judged by the host's awake groups: a host that one of them has
// not heard from for an election timeout, and none has, is passed over.
func (p *balancePlan) caughtUp(g *balanceGroup, pr MemberProgress) bool {
	if pr.Learner || pr.Leaving || pr.Match+p.maxLag < g.st.LastIndex {
		return false
	}
	if g.resting {
		return p.fresh[pr.ID] || !p.stale[pr.ID]
	}
	// Match counts, not the replication state: a follower back from a
	// partition may stay in Probe with the whole log while nothing is
	// proposed.
	return pr.State != ReplicationSnapshot && pr.SinceContact < g.node.electionTimeout()
}

// transfer hands g's leadership to host to, checking first that this
// host still leads g. It bounds the wait by a few election timeouts: a
// transfer ends within one (dissertation §3.10), and the group may take a
// little longer to show it.
func (h *Host) transfer(ctx context.Context, g *balanceGroup, to uint64) LeaderMove {
	m := LeaderMove{Group: g.id, From: h.id, To: to}
	if role, _ := g.node.roleAndLeader(); role != Leader {
		m.Err = fmt.Errorf("group %d: %w", g.id, errNoLongerLeads)
		return m
	}
	tctx, cancel := context.WithTimeout(ctx, 5*g.node.electionTimeout())
	defer cancel()
	if err := g.node.TransferLeadership(tctx, to); err != nil {
		m.Err = fmt.Errorf("group %d to host %d: %w", g.id, to, err)
	}
	return m
}

// countLed returns the number of groups the host leads now.
func (h *Host) countLed() int {
	k := 0
	for _, n := range h.nodes() {
		if role, _ := n.roleAndLeader(); role == Leader {
			k++
		}
	}
	return k
}

// roleAndLeader returns the node's role and the leader it knows, as last
// published, without copying its Status.
func (n *Node) roleAndLeader() (Role, uint64) {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	return n.status.Role, n.status.Leader
}

// isResting reports whether group rests on this host.
func (q *hostQuiesce) isResting(group uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.groups[group]
	return ok
}

// balanceStats counts the transfers the host's balancing started and how
// they ended (HostGroupSummary, and the host's metrics).
type balanceStats struct {
	started, succeeded, failed atomic.Uint64
}

func (h *Host) recordMove(m LeaderMove) {
	if m.Err == nil {
		h.balanceStats.succeeded.Add(1)
		if ce := h.logger.Check(zap.DebugLevel, "balancing: leadership transferred"); ce != nil {
			ce.Write(zap.Uint64("group", m.Group), zap.Uint64("to", m.To))
		}
		return
	}
	h.balanceStats.failed.Add(1)
	if errors.Is(m.Err, context.Canceled) {
		return
	}
	h.logger.Info("balancing: leadership transfer failed", zap.Uint64("group", m.Group), zap.Uint64("to", m.To), zap.Error(m.Err))
}

// hostBalancer runs BalanceLeaders every HostConfig.BalanceInterval.
type hostBalancer struct {
	cancel context.CancelFunc // stops the balancer and the transfers under way
	done   sync.WaitGroup
}

// startBalancer starts the periodic balancer, if HostConfig.BalanceInterval
// asks for one. Each wait is the interval give or take a fifth, drawn at
// random, so that hosts started together do not all balance at the same
// instant (which would have them pick the same receivers).
func (h *Host) startBalancer() {
	every := h.cfg.BalanceInterval
	if every <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &hostBalancer{cancel: cancel}
	h.balancer = b
	rng := rand.New(rand.NewPCG(h.id, uint64(time.Now().UnixNano())))
	b.done.Add(1)
	go func() {
		defer b.done.Done()
		for {
			t := time.NewTimer(every*4/5 + time.Duration(rng.Int64N(int64(every*2/5)+1)))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			res, err := h.BalanceLeaders(ctx, h.cfg.BalanceOptions)
			switch {
			case ctx.Err() != nil || errors.Is(err, ErrClosed):
				return
			case err != nil:
				h.logger.Warn("balancing leaders", zap.Error(err))
			case len(res.Moves) > 0 || res.Unplaced > 0:
				h.logger.Info("balanced leaders", zap.Int("groups", res.Groups), zap.Int("target", res.Target),
					zap.Int("ledBefore", res.LedBefore), zap.Int("ledAfter", res.LedAfter),
					zap.Int("transferred", res.Transferred()), zap.Int("unplaced", res.Unplaced))
			}
		}
	}()
}

// stopBalancer stops the periodic balancer, ending the transfers it has
// under way, and waits for it.
func (h *Host) stopBalancer() {
	if b := h.balancer; b != nil {
		b.cancel()
		b.done.Wait()
	}
}
