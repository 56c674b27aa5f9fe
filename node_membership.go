package raft

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"
)

// The Node's membership calls: each asks the core on the event loop to
// propose a configuration entry (membership.go), then waits until it
// commits; the applier tells the Node when it has been removed.

// AddVoter adds node id, reachable at addr, as a voter, or promotes the
// learner id to a voter, and returns once the change is committed. It is
// best to add a node as a learner first and promote it once it has caught
// up, so that the cluster's quorum never waits for a node that is far
// behind.
//
// On an existing member: the same role and address (or an empty addr)
// succeed at once without a change; another address changes the member's
// address. A new member needs a non-empty addr when the other members have
// addresses (the transport dials them); otherwise the error wraps
// ErrInvalidConfig. Fails with a *NotLeaderError off the leader,
// ErrMembershipChange while another change is uncommitted,
// ErrTransferInProgress during a leadership transfer, and ErrRemoved on a
// node removed from the cluster.
func (n *Node) AddVoter(ctx context.Context, id uint64, addr string) error {
	return n.changeMembers(ctx, addMember(id, addr, false))
}

// AddLearner adds node id, reachable at addr, as a learner: it receives the
// log but neither votes nor counts for quorum. Promote it with AddVoter.
// On a voter it is a demotion: the node stays a member and keeps receiving
// the log, but no longer votes; a leader that demotes itself steps down once
// the change commits. Addresses and errors are as for AddVoter; demoting the
// last voter fails with ErrInvalidConfig.
func (n *Node) AddLearner(ctx context.Context, id uint64, addr string) error {
	return n.changeMembers(ctx, addMember(id, addr, true))
}

// AddMember makes m a member, or changes the member m.ID to m, and returns
// once the change is committed: its role (m.Learner), its address (an empty
// m.Addr keeps the current one) and its metadata (m.Meta; nil clears it).
// Use it to add a member with metadata, such as the address its clients
// use, or to change a member's metadata later; a *NotLeaderError names the
// leader's Member, metadata included. Role changes and errors are as for
// AddVoter and AddLearner. Metadata needs every node to run a version that
// knows it (see Member.Meta).
func (n *Node) AddMember(ctx context.Context, m Member) error {
	return n.changeMembers(ctx, setMember(m))
}

// RemoveMember removes node id from the cluster and returns once the change
// is committed. A leader that removes itself steps down once the change
// commits (dissertation §4.2.2). Removing a non-member succeeds at once.
// The removed node notices when it applies the change: its Status shows
// Removed and its calls fail with ErrRemoved. Errors are as for AddVoter.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.changeMembers(ctx, removeMember(id))
}

func (n *Node) changeMembers(ctx context.Context, edit membershipEdit) error {
	if err := n.serving(); err != nil {
		return err
	}
	var p *Proposal
	var err error
	if cerr := n.call(ctx, func() {
		var changed bool
		var index, term uint64
		index, term, changed, err = n.core.changeMembers(edit)
		if changed {
			p = newProposal(nil)
			p.Index, p.Term = index, term
			close(p.appended)
			n.pendingProps = append(n.pendingProps, p)
		}
	}); cerr != nil {
		return cerr
	}
	if err != nil || p == nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

// appliedConfig records the configuration that the state machine has reached
// (apply goroutine), and notices when it removes this node or adds it back.
// It acts on applied configurations only: one that is merely appended may
// still be overwritten by another leader.
func (n *Node) appliedConfig(members []Member, index uint64) {
	self := func(m Member) bool { return m.ID == n.cfg.ID }
	was, now := slices.ContainsFunc(n.appliedMembers, self), slices.ContainsFunc(members, self)
	n.appliedMembers = members
	switch {
	case was && !now:
		n.removed.Store(true)
		n.logger.Warn("this node was removed from the cluster; it no longer takes part, and its calls fail with ErrRemoved",
			zap.Uint64("index", index))
		// Reads waiting for the leader's answer would wait for entries this
		// node no longer receives.
		n.postEvent(func() {
			for id, r := range n.reads {
				r.finish(ErrRemoved)
				delete(n.reads, id)
			}
		})
	case now && n.removed.Load():
		n.removed.Store(false)
		n.logger.Info("this node was added to the cluster again", zap.Uint64("index", index))
	}
}

// TransferLeadership hands leadership to the voter to (0: the most
// up-to-date voter) and returns nil once to leads (dissertation §3.10). The
// leader refuses proposals and membership changes with ErrTransferInProgress
// while the transfer runs. If the target has not taken over within an
// election timeout the leader gives the transfer up and takes proposals
// again; the call then fails with an error wrapping ErrTransferFailed, but
// only once the target can no longer take over (a message asking it to may
// still be on its way: the leader first appends an entry that voids it, and
// waits until the target has it). If the target becomes unreachable just
// then, the call waits until it answers or leadership changes.
// It also wraps ErrTransferFailed when another node takes over instead.
// Until the outcome is known, the call waits: if ctx ends first, the error
// wraps ctx.Err() and the outcome is unknown.
func (n *Node) TransferLeadership(ctx context.Context, to uint64) error {
	if err := n.serving(); err != nil {
		return err
	}
	var target, term uint64
	var err error
	if cerr := n.call(ctx, func() {
		term = n.core.status().term
		target, err = n.core.transferLeadership(to)
	}); cerr != nil {
		return cerr
	}
	if err != nil || target == n.cfg.ID {
		return err
	}
	done := make(chan error, 1)
	if cerr := n.call(ctx, func() {
		n.watchers = append(n.watchers, func() bool {
			st := n.core.status()
			switch {
			case st.term > term && st.leader == target:
				done <- nil
			case st.term > term && st.leader != 0:
				done <- fmt.Errorf("%w: %d leads instead of %d", ErrTransferFailed, st.leader, target)
			case st.term == term && n.core.transferSettled(target):
				done <- fmt.Errorf("%w: abandoned: %d did not take over within an election timeout", ErrTransferFailed, target)
			default:
				return false
			}
			return true
		})
	}); cerr != nil {
		return cerr
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("raft: leadership transfer to %d: outcome unknown: %w", target, ctx.Err())
	case <-n.stopped:
		return n.stopErr()
	}
}
