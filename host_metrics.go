package raft

// What a Host shows of its groups as a whole (docs/observability.md, "A
// host's groups"): counts that stay a handful of series whatever the
// number of groups, and every group's Status on demand. A host of 1,000
// groups that gave each group its own series by default would give its
// metrics backend 1,000 label values per instrument; the counts tell an
// operator where to look, and GroupStatuses (or Group(id).Status) then
// shows the groups themselves.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// HostGroupSummary counts a host's groups by what their replica on the
// host is doing; see Host.GroupSummary.
type HostGroupSummary struct {
	// Groups is the number of groups running on the host.
	Groups int `json:"groups"`
	// Leading, Following and Campaigning count the groups whose replica
	// here leads, follows (followers and learners), or campaigns (a
	// PreCandidate or a Candidate).
	Leading     int `json:"leading"`
	Following   int `json:"following"`
	Campaigning int `json:"campaigning"`
	// NoLeader is the number of groups whose replica here knows no leader:
	// they cannot take writes through this host. Non-zero for more than an
	// election timeout or two means trouble.
	NoLeader int `json:"noLeader"`
	// Resting is the number of groups resting (HostConfig.QuiesceAfter).
	Resting int `json:"resting"`
	// LeadersByHost counts, over the groups on this host, the leader each
	// replica knows, by the leading host's ID (this host's included): how
	// the leaders of the groups this host shares are spread.
	LeadersByHost map[uint64]int `json:"leadersByHost"`
	// BalanceTransfers counts the leadership transfers that BalanceLeaders
	// (or the periodic balancer) started on this host since it started;
	// BalanceSucceeded and BalanceFailed those of them that ended so.
	BalanceTransfers uint64 `json:"balanceTransfers"`
	BalanceSucceeded uint64 `json:"balanceSucceeded"`
	BalanceFailed    uint64 `json:"balanceFailed"`
}

// GroupSummary counts the host's groups by what their replica here is
// doing. It reads each group's published state without copying its Status,
// so it is cheap enough to call every few seconds on a host of thousands
// of groups.
func (h *Host) GroupSummary() HostGroupSummary {
	s := HostGroupSummary{LeadersByHost: map[uint64]int{}, Resting: h.quiesce.resting(),
		BalanceTransfers: h.balanceStats.started.Load(), BalanceSucceeded: h.balanceStats.succeeded.Load(),
		BalanceFailed: h.balanceStats.failed.Load()}
	for _, n := range h.nodes() {
		role, leader := n.roleAndLeader()
		s.Groups++
		switch role {
		case Leader:
			s.Leading++
		case Follower:
			s.Following++
		default:
			s.Campaigning++
		}
		if leader == 0 {
			s.NoLeader++
		} else {
			s.LeadersByHost[leader]++
		}
	}
	return s
}

// GroupStatus is the Status of one group's replica on a host.
type GroupStatus struct {
	Group uint64 `json:"group"`
	// Resting: the group rests (HostConfig.QuiesceAfter).
	Resting bool   `json:"resting"`
	Status  Status `json:"status"`
}

// GroupStatuses returns the Status of every group running on the host, in
// increasing group ID order: every group's state on demand, for a debug
// page or a tool (it encodes to JSON), where metrics give only counts.
// It copies every group's Status: on a host of thousands of groups, call
// it when someone asks, not on every metrics collection.
func (h *Host) GroupStatuses() []GroupStatus {
	ids := h.Groups()
	out := make([]GroupStatus, 0, len(ids))
	for _, id := range ids {
		if n, ok := h.Group(id); ok {
			out = append(out, GroupStatus{Group: id, Resting: h.quiesce.isResting(id), Status: n.Status()})
		}
	}
	return out
}

// nodes returns the Nodes of the groups running on the host.
func (h *Host) nodes() []*Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	nodes := make([]*Node, 0, len(h.groups))
	for _, rec := range h.groups {
		if rec.node != nil {
			nodes = append(nodes, rec.node)
		}
	}
	return nodes
}

// hostGroupOf returns the group ID of a Host's group transport, for the
// raft.group.id attribute of the group's own metrics; 0 for any other
// transport.
func hostGroupOf(t Transport) uint64 {
	if g, ok := t.(*groupTransport); ok {
		return g.group
	}
	return 0
}

// attrLeaderID is the host ID of the leaders counted in raft.host.leaders;
// attrRole and attrOutcome take a fixed list of values.
const (
	attrLeaderID = attribute.Key("raft.leader.id")
	attrRole     = attribute.Key("raft.role")
	attrOutcome  = attribute.Key("raft.balance.outcome")
)

// hostMetrics holds a Host's instruments, all observable: the callback
// reads the state when the reader collects. A nil *hostMetrics records
// nothing.
type hostMetrics struct {
	registration metric.Registration
}

// observe creates the host's instruments on mp and registers their
// callback; nothing when mp is nil.
func (h *Host) observe(mp metric.MeterProvider) error {
	if mp == nil {
		return nil
	}
	meter := mp.Meter(meterName)
	host := attrNodeID.String(strconv.FormatUint(h.id, 10))
	hostOnly := metric.WithAttributeSet(attribute.NewSet(host))
	roles := map[string]metric.ObserveOption{}
	for _, r := range []string{"leader", "follower", "candidate"} {
		roles[r] = metric.WithAttributeSet(attribute.NewSet(host, attrRole.String(r)))
	}
	succeeded := metric.WithAttributeSet(attribute.NewSet(host, attrOutcome.String("succeeded")))
	failed := metric.WithAttributeSet(attribute.NewSet(host, attrOutcome.String("failed")))
	// The leaders' options, one per leading host, built once each.
	var leaderMu sync.Mutex
	leaderOpts := map[uint64]metric.ObserveOption{}
	leaderOpt := func(id uint64) metric.ObserveOption {
		leaderMu.Lock()
		defer leaderMu.Unlock()
		o, ok := leaderOpts[id]
		if !ok {
			o = metric.WithAttributeSet(attribute.NewSet(host, attrLeaderID.String(strconv.FormatUint(id, 10))))
			leaderOpts[id] = o
		}
		return o
	}

	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil {
			errs = append(errs, err)
		}
		return g
	}
	groups := gauge("raft.host.groups", "{group}", "Groups running on the host, by the role of their replica here (raft.role).")
	resting := gauge("raft.host.groups.resting", "{group}", "Groups resting (quiesced) on the host.")
	noLeader := gauge("raft.host.groups.no_leader", "{group}", "Groups whose replica on the host knows no leader.")
	leaders := gauge("raft.host.leaders", "{group}", "Groups on the host led by each host (raft.leader.id), as their replicas here know.")
	transfers, err := meter.Int64ObservableCounter("raft.host.balance.transfers", metric.WithUnit("{transfer}"),
		metric.WithDescription("Leadership transfers the host's balancing made, by raft.balance.outcome."))
	if err != nil {
		errs = append(errs, err)
	}
	unknown, err := meter.Int64ObservableCounter("raft.host.inbound.messages.unknown_group", metric.WithUnit("{message}"),
		metric.WithDescription("Inbound messages for a group the host does not run, dropped."))
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("raft: creating the host's metric instruments: %w", errors.Join(errs...))
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := h.GroupSummary()
		o.ObserveInt64(groups, int64(s.Leading), roles["leader"])
		o.ObserveInt64(groups, int64(s.Following), roles["follower"])
		o.ObserveInt64(groups, int64(s.Campaigning), roles["candidate"])
		o.ObserveInt64(resting, int64(s.Resting), hostOnly)
		o.ObserveInt64(noLeader, int64(s.NoLeader), hostOnly)
		for id, k := range s.LeadersByHost {
			o.ObserveInt64(leaders, int64(k), leaderOpt(id))
		}
		o.ObserveInt64(transfers, int64(s.BalanceSucceeded), succeeded)
		o.ObserveInt64(transfers, int64(s.BalanceFailed), failed)
		o.ObserveInt64(unknown, int64(h.droppedUnknownGroup.Load()), hostOnly)
		return nil
	}, groups, resting, noLeader, leaders, transfers, unknown)
	if err != nil {
		return fmt.Errorf("raft: registering the host's metrics callback: %w", err)
	}
	h.metrics = &hostMetrics{registration: reg}
	return nil
}

func (m *hostMetrics) unregister() {
	if m != nil && m.registration != nil {
		_ = m.registration.Unregister()
	}
}
