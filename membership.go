package raft

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"
)

// Membership changes, one server at a time (dissertation §4.1): the leader
// appends a configuration entry holding the whole new member list, every
// node uses it as soon as it is in its log, and a new change may start only
// once the previous one has committed. Adding or removing a single voter
// keeps every majority of the old configuration overlapping every majority
// of the new one, so no two leaders can be elected in one term meanwhile.

// changeMembers proposes the configuration that edit makes of the current
// one. edit returns ok=false when the change is already in effect.
func (c *core) changeMembers(edit func(members []Member) ([]Member, bool, error)) (index, term uint64, changed bool, err error) {
	if c.role != Leader {
		return 0, 0, false, c.notLeader()
	}
	if c.configIndex > c.log.committed {
		// Checked before the edit: a change that is already in the pending
		// configuration is not done until that configuration commits.
		return 0, 0, false, ErrMembershipChange
	}
	next, ok, err := edit(slices.Clone(c.members))
	if err != nil || !ok {
		return 0, 0, false, err
	}
	voters := 0
	for _, m := range next {
		if !m.Learner {
			voters++
		}
	}
	if voters == 0 {
		return 0, 0, false, fmt.Errorf("%w: the change would leave no voter", ErrInvalidConfig)
	}
	index, term, err = c.proposeConfig(next)
	return index, term, err == nil, err
}

// addMember returns an edit that adds id (or changes its role and address).
func addMember(id uint64, addr string, learner bool) func([]Member) ([]Member, bool, error) {
	return func(members []Member) ([]Member, bool, error) {
		if id == 0 {
			return nil, false, fmt.Errorf("%w: member ID 0", ErrInvalidConfig)
		}
		i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
		switch {
		case i < 0:
			return append(members, Member{ID: id, Addr: addr, Learner: learner}), true, nil
		case members[i].Learner == learner && members[i].Addr == addr:
			return nil, false, nil // already so
		case learner && !members[i].Learner:
			return nil, false, fmt.Errorf("%w: %d is a voter; remove it to make it a learner", ErrInvalidConfig, id)
		}
		members[i] = Member{ID: id, Addr: addr, Learner: learner}
		return members, true, nil
	}
}

// removeMember returns an edit that removes id.
func removeMember(id uint64) func([]Member) ([]Member, bool, error) {
	return func(members []Member) ([]Member, bool, error) {
		i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
		if i < 0 {
			return nil, false, nil
		}
		return slices.Delete(members, i, i+1), true, nil
	}
}

// transferLeadership starts handing leadership to the voter to (0: the most
// up-to-date one). The leader stops taking proposals, brings the target's
// log up to date, and sends it MsgTimeoutNow so that it campaigns at once
// (dissertation §3.10). The transfer is abandoned after an election timeout.
func (c *core) transferLeadership(to uint64) (uint64, error) {
	if c.role != Leader {
		return 0, c.notLeader()
	}
	if to == 0 {
		var best uint64
		for _, m := range c.members {
			if pr := c.progress[m.ID]; m.ID != c.id && !m.Learner && pr != nil && (best == 0 || pr.match > c.progress[best].match) {
				best = m.ID
			}
		}
		if best == 0 {
			return 0, fmt.Errorf("%w: no other voter to transfer leadership to", ErrInvalidConfig)
		}
		to = best
	}
	if to == c.id {
		return to, nil
	}
	if m, ok := c.member(to); !ok || m.Learner {
		return 0, fmt.Errorf("%w: %d is not a voter", ErrInvalidConfig, to)
	}
	c.logger.Info("transferring leadership", zap.Uint64("to", to), zap.Uint64("term", c.term))
	c.transferTarget = to
	c.transferElapsed = 0
	c.maybeSendTimeoutNow()
	return to, nil
}

// maybeSendTimeoutNow sends MsgTimeoutNow once the target has every entry.
func (c *core) maybeSendTimeoutNow() {
	pr := c.progress[c.transferTarget]
	if pr == nil {
		return
	}
	if pr.match == c.log.lastIndex() {
		c.send(Message{Type: MsgTimeoutNow, To: c.transferTarget})
		return
	}
	c.sendAppend(c.transferTarget, false)
}

// AddVoter adds node id, reachable at addr, as a voter, or promotes the
// learner id to a voter, and returns once the change is committed. It is
// best to add a node as a learner first and promote it once it has caught
// up, so that the cluster's quorum never waits for a node that is far
// behind. Fails with a *NotLeaderError off the leader and ErrMembershipChange
// while another change is uncommitted. Adding a voter that already is one
// succeeds at once.
func (n *Node) AddVoter(ctx context.Context, id uint64, addr string) error {
	return n.changeMembers(ctx, addMember(id, addr, false))
}

// AddLearner adds node id, reachable at addr, as a learner: it receives the
// log but neither votes nor counts for quorum. Promote it with AddVoter.
func (n *Node) AddLearner(ctx context.Context, id uint64, addr string) error {
	return n.changeMembers(ctx, addMember(id, addr, true))
}

// RemoveMember removes node id from the cluster and returns once the change
// is committed. A leader that removes itself steps down once the change
// commits (dissertation §4.2.2). Removing a non-member succeeds at once.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.changeMembers(ctx, removeMember(id))
}

func (n *Node) changeMembers(ctx context.Context, edit func([]Member) ([]Member, bool, error)) error {
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

// TransferLeadership hands leadership to the voter to (0: the most
// up-to-date voter) and returns once to leads. The leader refuses proposals
// (ErrBusy) while the transfer runs; if the target has not taken over within
// an election timeout the transfer is abandoned and an error returned.
func (n *Node) TransferLeadership(ctx context.Context, to uint64) error {
	var target, term uint64
	var err error
	if cerr := n.call(ctx, func() {
		term = n.core.term
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
			c := n.core
			switch {
			case c.term > term && c.leader == target:
				done <- nil
			case c.role == Leader && c.transferTarget == 0:
				done <- fmt.Errorf("raft: leadership transfer to %d abandoned: it did not take over within an election timeout", target)
			case c.term > term && c.leader != 0:
				done <- fmt.Errorf("raft: leadership transfer to %d failed: %d leads instead", target, c.leader)
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
		return ctx.Err()
	case <-n.stopped:
		return n.stopErr()
	}
}
