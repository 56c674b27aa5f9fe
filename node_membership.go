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
// node removed from the cluster. On a leader elected a moment ago it first
// waits (within ctx) until the leader has committed an entry of its term,
// which Raft requires before a change.
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

// ChangeOp is what a MemberChange does.
type ChangeOp uint8

const (
	// ChangeAddVoter adds Member as a voter, or promotes the learner
	// Member.ID, as AddVoter does.
	ChangeAddVoter ChangeOp = iota + 1
	// ChangeAddLearner adds Member as a learner, or demotes the voter
	// Member.ID, as AddLearner does.
	ChangeAddLearner
	// ChangeRemove removes the member Member.ID, as RemoveMember does; only
	// the ID matters.
	ChangeRemove
	// ChangeSetMember makes Member a member, or sets the role, address and
	// metadata of the member Member.ID, as AddMember does.
	ChangeSetMember
)

// String returns the operation's name, such as "AddVoter".
func (op ChangeOp) String() string {
	switch op {
	case ChangeAddVoter:
		return "AddVoter"
	case ChangeAddLearner:
		return "AddLearner"
	case ChangeRemove:
		return "Remove"
	case ChangeSetMember:
		return "SetMember"
	}
	return fmt.Sprintf("ChangeOp(%d)", uint8(op))
}

// MemberChange is one change of the cluster's membership, for
// ChangeMembership.
type MemberChange struct {
	Op     ChangeOp
	Member Member
}

// edit returns the membership edit that makes the change.
func (mc MemberChange) edit() (membershipEdit, error) {
	switch mc.Op {
	case ChangeAddVoter:
		return addMember(mc.Member.ID, mc.Member.Addr, false), nil
	case ChangeAddLearner:
		return addMember(mc.Member.ID, mc.Member.Addr, true), nil
	case ChangeRemove:
		return removeMember(mc.Member.ID), nil
	case ChangeSetMember:
		return setMember(mc.Member), nil
	}
	return nil, fmt.Errorf("%w: unknown membership change operation %v", ErrInvalidConfig, mc.Op)
}

// ChangeMembership makes several membership changes at once, and returns
// once the cluster runs the resulting configuration (it has committed).
// Each change is as the call it names (AddVoter, AddLearner, RemoveMember,
// AddMember), applied to the current configuration in order.
//
// Changes that add, remove, promote or demote more than one voter go
// through a joint configuration (dissertation §4.3): from the moment it is
// appended until the cluster has left it, elections and commitment need a
// majority of the old voters and a majority of the new ones, so the
// cluster never depends on a configuration that is neither. Replacing a
// voter is one call that never passes through an even-sized cluster:
//
//	err := n.ChangeMembership(ctx,
//		raft.MemberChange{Op: raft.ChangeAddVoter, Member: raft.Member{ID: 4, Addr: "10.0.0.4:7000"}},
//		raft.MemberChange{Op: raft.ChangeRemove, Member: raft.Member{ID: 3}})
//
// The leader leaves the joint configuration by itself once it has
// committed; a leader elected meanwhile does the same. Status shows the
// configuration being left in Outgoing until then, and a leader that the
// change removes or demotes leads until the end and then steps down.
// While the cluster is joint, another change fails with
// ErrMembershipChange. Add a new voter as a learner first and let it catch
// up if the cluster must not wait for it: the new majority must store every
// entry committed during the change.
//
// Changes of at most one voter (and any number of learner, address or
// metadata changes) take the single-server path as the other calls do.
// Changes already in effect succeed at once. Two changes of the same member
// in one call, an unknown Op, or a result without voters fail with
// ErrInvalidConfig; other errors are as for AddVoter. Joint configurations
// need every node to run a version that knows them (docs/protocol.md,
// "Formats and versions").
func (n *Node) ChangeMembership(ctx context.Context, changes ...MemberChange) error {
	edits := make([]membershipEdit, 0, len(changes))
	for i, mc := range changes {
		if slices.ContainsFunc(changes[:i], func(o MemberChange) bool { return o.Member.ID == mc.Member.ID }) {
			return fmt.Errorf("%w: member %d appears in more than one change", ErrInvalidConfig, mc.Member.ID)
		}
		edit, err := mc.edit()
		if err != nil {
			return err
		}
		edits = append(edits, edit)
	}
	if len(edits) == 0 {
		return nil
	}
	return n.changeMembers(ctx, edits...)
}

func (n *Node) changeMembers(ctx context.Context, edits ...membershipEdit) error {
	if err := n.serving(); err != nil {
		return err
	}
	var p *Proposal
	var joint bool
	var err error
	decided := make(chan struct{})
	// attempt runs on the event loop. A leader elected a moment ago may not
	// change the configuration until it has committed an entry of its own
	// term (dissertation §4.1, the fix to single-server changes); that is
	// a matter of one round trip, so the change waits for it rather than
	// fail with ErrMembershipChange, which would tell a caller that has
	// just seen the leader elected that some other change is under way.
	attempt := func() bool {
		if n.core.leaderSettling() {
			return false
		}
		var changed bool
		var index, term uint64
		index, term, changed, err = n.core.changeMembers(edits...)
		if changed {
			p = newProposal(nil)
			p.Index, p.Term = index, term
			close(p.appended)
			n.pendingProps = append(n.pendingProps, p)
			joint = n.core.status().outgoing != nil
		}
		close(decided)
		return true
	}
	if cerr := n.call(ctx, func() {
		if !attempt() {
			n.watchers = append(n.watchers, func() bool {
				return ctx.Err() != nil || attempt()
			})
		}
	}); cerr != nil {
		return cerr
	}
	select {
	case <-decided:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return n.stopErr()
	}
	if err != nil || p == nil {
		return err
	}
	if _, err = p.Wait(ctx); err != nil || !joint {
		return err
	}
	return n.waitLeftJoint(ctx, p.Index)
}

// waitLeftJoint waits until this node's log holds a committed
// configuration entry after the joint one at index that is not joint: the
// cluster has left the joint configuration. The leader of the moment
// appends it, this one or a later one.
func (n *Node) waitLeftJoint(ctx context.Context, index uint64) error {
	done := make(chan struct{})
	if cerr := n.call(ctx, func() {
		n.watchers = append(n.watchers, func() bool {
			st := n.core.status()
			if st.configIndex > index && st.configCommitted && st.outgoing == nil {
				close(done)
				return true
			}
			return ctx.Err() != nil
		})
	}); cerr != nil {
		return cerr
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("raft: the joint configuration at %d committed, but the cluster has not yet left it: %w", index, ctx.Err())
	case <-n.stopped:
		return n.stopErr()
	}
}

// appliedConfig records the configuration that the state machine has reached
// (apply goroutine), and notices when it removes this node or adds it back.
// It acts on applied configurations only: one that is merely appended may
// still be overwritten by another leader.
func (n *Node) appliedConfig(members, outgoing []Member, index uint64) {
	self := func(m Member) bool { return m.ID == n.cfg.ID }
	was := slices.ContainsFunc(n.appliedMembers, self) || slices.ContainsFunc(n.appliedOutgoing, self)
	now := slices.ContainsFunc(members, self) || slices.ContainsFunc(outgoing, self)
	n.appliedMembers, n.appliedOutgoing = members, outgoing
	switch {
	case was && !now:
		n.removed.Store(true)
		n.signalRemoved()
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
		n.signalRemoved()
		n.logger.Info("this node was added to the cluster again", zap.Uint64("index", index))
	}
}

// TransferLeadership hands leadership to the voter to (0: the most
// up-to-date voter) and returns nil once to leads (dissertation §3.10).
// While the cluster is joint (see ChangeMembership), the target must be a
// voter of the new configuration, which it then finishes the change in. The
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
