package raft

import (
	"fmt"
	"slices"

	"go.uber.org/zap"
)

// Leadership transfer (dissertation §3.10): the leader brings the target up
// to date, stops taking proposals, and sends it MsgTimeoutNow; the target
// campaigns at once if its log is the leader's. A transfer that does not
// finish within an election timeout is abandoned, and a fence entry makes
// a late MsgTimeoutNow harmless (see abandonTransfer). Node.TransferLeadership
// is in node_membership.go.

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
		// A voter of the incoming half: an outgoing one would lead a
		// configuration that removes it.
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
	if i := slices.IndexFunc(c.members, func(m Member) bool { return m.ID == to }); i < 0 || c.members[i].Learner {
		if c.voters.contains(to) {
			return 0, fmt.Errorf("%w: %d votes only in the configuration being left (the membership change in progress removes or demotes it)", ErrInvalidConfig, to)
		}
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

// handleTimeoutNow starts the election a leadership transfer asks for
// (dissertation §3.10), unless this node cannot win it cleanly or the message
// belongs to a transfer that is over. The message names the leader's last
// entry when it was sent: a target whose log ends elsewhere is either behind
// the leader (it would lose, after deposing the leader) or has received
// entries the leader appended after it gave the transfer up, so the message
// is stale. A target also waits until it knows its configuration committed,
// so that it campaigns in the configuration the leader has.
//
// The campaign starts with a PreVote round even when PreVote is off, so that
// a stale MsgTimeoutNow reaching a target that has not yet received the
// leader's later entries cannot raise anyone's term: the voters that hold
// those entries refuse it (see abandonTransfer).
func (c *core) handleTimeoutNow(m Message) {
	var reason string
	switch {
	case !c.isVoter():
		reason = "not a voter"
	case m.Index == 0 || c.log.lastIndex() != m.Index || !c.log.matchTerm(m.Index, m.LogTerm):
		reason = "the log does not end where the leader's did"
	default:
		// The logs match up to m.Index, so the leader's commit index, never
		// beyond its last entry, is safe to take (Log Matching, Raft §5.3).
		c.log.commitTo(min(m.Commit, m.Index))
		if c.configIndex > c.log.committed {
			reason = "a configuration change is not yet committed"
		}
	}
	if reason != "" {
		c.logger.Info("ignoring MsgTimeoutNow", zap.Uint64("from", m.From), zap.Uint64("index", m.Index),
			zap.Uint64("lastIndex", c.log.lastIndex()), zap.String("reason", reason))
		return
	}
	c.logger.Info("leadership transfer: campaigning at once", zap.Uint64("from", m.From))
	c.campaign(campaignTransfer, true)
}
