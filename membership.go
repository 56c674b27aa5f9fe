package raft

import (
	"context"
	"fmt"
	"slices"
	"strings"

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

// addMember returns an edit that adds id as a voter or a learner, or changes
// the role or address of the member id:
//   - a new member needs an address if the other members have one (then the
//     transport dials members, and a member without an address would be
//     unreachable);
//   - for an existing member, an empty addr keeps its address, and one that
//     already has this role and address is left as it is (ok=false);
//   - a learner made a voter is promoted, a voter made a learner is demoted;
//     either is one change of the voter set, like adding or removing a
//     voter (dissertation §4.1), and a leader that demotes itself steps down
//     once the change commits, as when it removes itself;
//   - another address is an address change, which takes effect when the
//     configuration is appended, as any other.
func addMember(id uint64, addr string, learner bool) func([]Member) ([]Member, bool, error) {
	return func(members []Member) ([]Member, bool, error) {
		if id == 0 {
			return nil, false, fmt.Errorf("%w: member ID 0", ErrInvalidConfig)
		}
		i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
		if i < 0 {
			if addr == "" && slices.ContainsFunc(members, func(m Member) bool { return m.Addr != "" }) {
				return nil, false, fmt.Errorf("%w: member %d has no address, but the other members have addresses for the transport to dial", ErrInvalidConfig, id)
			}
			return append(members, Member{ID: id, Addr: addr, Learner: learner}), true, nil
		}
		next := Member{ID: id, Addr: addr, Learner: learner}
		if addr == "" {
			next.Addr = members[i].Addr
		}
		if members[i] == next {
			return nil, false, nil // already so
		}
		members[i] = next
		return members, true, nil
	}
}

// sameMembers reports whether a and b list the same members, in any order.
func sameMembers(a, b []Member) bool {
	if len(a) != len(b) {
		return false
	}
	for _, m := range a {
		if !slices.Contains(b, m) {
			return false
		}
	}
	return true
}

// memberList formats members for logs: "1@addr, 2@addr (learner)".
type memberList []Member

func (l memberList) String() string {
	var b strings.Builder
	for i, m := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d@%s", m.ID, m.Addr)
		if m.Learner {
			b.WriteString(" (learner)")
		}
	}
	return b.String()
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
	if c.transferTarget != 0 && c.transferTarget != to {
		c.abandonTransfer("another transfer replaces it")
	}
	c.transferTarget = to
	c.transferElapsed = 0
	c.maybeSendTimeoutNow()
	return to, nil
}

// maybeSendTimeoutNow sends MsgTimeoutNow once the target has every entry.
// The message names the leader's last entry, which no new entry follows
// while the transfer runs, so the target can tell whether it is current
// (see handleTimeoutNow), and carries the commit index, so that the target
// knows its configuration is committed.
func (c *core) maybeSendTimeoutNow() {
	pr := c.progress[c.transferTarget]
	if pr == nil {
		return
	}
	if pr.match == c.log.lastIndex() {
		c.send(Message{Type: MsgTimeoutNow, To: c.transferTarget, Index: c.log.lastIndex(), LogTerm: c.log.lastTerm(), Commit: c.log.committed})
		c.transferSent = true
		return
	}
	c.sendAppend(c.transferTarget, false)
}

// abandonTransfer gives up the transfer in progress (its target did not take
// over within an election timeout, or another transfer replaces it), and
// takes proposals again. A MsgTimeoutNow already sent may still be on its
// way, so the leader appends a no-op, the fence:
//   - once the target holds the fence, it ignores the message (its log no
//     longer ends where the message says) and ends a PreVote round it had
//     started; only then is the transfer over for TransferLeadership
//     (transferSettled);
//   - once the fence is committed, a majority of voters refuse the
//     target's PreVote, whose log lacks it, so a target cut off from the
//     leader cannot win a round it starts from then on (grants given
//     earlier may still arrive: hence the wait for the target above).
//     Membership changes wait until then
//     (transferring), so that this majority is one of the configuration the
//     target campaigns in.
func (c *core) abandonTransfer(reason string) {
	c.logger.Warn("leadership transfer abandoned", zap.Uint64("to", c.transferTarget), zap.String("reason", reason),
		zap.Bool("timeoutNowSent", c.transferSent))
	if c.transferSent {
		c.appendLeaderEntries(Entry{Type: EntryNoop})
		c.pendingBroadcast = true
		if c.transferFences == nil {
			c.transferFences = map[uint64]uint64{}
		}
		c.transferFences[c.transferTarget] = c.log.lastIndex()
	}
	c.transferTarget, c.transferSent = 0, false
}

// transferring reports whether membership changes must wait for a
// leadership transfer: one is in progress, or one was abandoned and its
// fence is not committed.
func (c *core) transferring() bool {
	if c.role != Leader {
		return false
	}
	if c.transferTarget != 0 {
		return true
	}
	for _, fence := range c.transferFences {
		if fence > c.log.committed {
			return true
		}
	}
	return false
}

// transferSettled reports whether the transfer to target can no longer
// take effect in this term: it is not in progress, and if it was abandoned
// after its MsgTimeoutNow went out, the target holds its fence, or was
// removed and forgotten after the fence committed. Only the target's own
// fence counts: a transfer to an earlier, unreachable target must not keep
// a later transfer's caller waiting (that target may still take over, but
// then the later transfer failed all the same).
func (c *core) transferSettled(target uint64) bool {
	if c.role != Leader || c.transferTarget == target {
		return false
	}
	fence, ok := c.transferFences[target]
	if !ok {
		return true
	}
	pr := c.progress[target]
	return pr != nil && pr.match >= fence || pr == nil && c.log.committed >= fence
}

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

// RemoveMember removes node id from the cluster and returns once the change
// is committed. A leader that removes itself steps down once the change
// commits (dissertation §4.2.2). Removing a non-member succeeds at once.
// The removed node notices when it applies the change: its Status shows
// Removed and its calls fail with ErrRemoved. Errors are as for AddVoter.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.changeMembers(ctx, removeMember(id))
}

func (n *Node) changeMembers(ctx context.Context, edit func([]Member) ([]Member, bool, error)) error {
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
			case c.term > term && c.leader != 0:
				done <- fmt.Errorf("%w: %d leads instead of %d", ErrTransferFailed, c.leader, target)
			case c.term == term && c.transferSettled(target):
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
