package raft

import (
	"slices"

	"go.uber.org/zap"
)

// campaignKind says what started a campaign; MsgVote and MsgPreVote carry
// it in Context, as part of the wire format (never renumber).
type campaignKind uint64

const (
	// campaignPreElection is the PreVote phase of an ordinary election.
	campaignPreElection campaignKind = iota + 1
	campaignElection
	// campaignTransfer is an election started by MsgTimeoutNow, in both of
	// its phases (MsgPreVote, then MsgVote): the old leader asked for it, so
	// voters must not ignore it for CheckQuorum's lease.
	campaignTransfer
)

// tick advances the logical clock by one tick.
func (c *core) tick() {
	if c.quiesced() {
		c.quiesceTick() // a resting node keeps no timer but its lease clock (quiesce.go)
		return
	}
	c.lease.now++
	if c.role == Leader {
		c.tickLeader()
		return
	}
	c.electionElapsed++
	if c.electionElapsed >= c.randomizedTimeout {
		c.electionElapsed = 0
		if c.mayCampaign() {
			// A follower that hears nothing for an election timeout starts an
			// election (Raft §5.2); with PreVote it first asks whether it could win.
			c.campaign(campaignElection, c.preVote)
		} else {
			// A learner does not campaign, but it stops naming a leader it
			// has not heard from for an election timeout, so that its
			// callers are not sent to a leader that is gone (a voter forgets
			// it when it campaigns).
			if c.leader != 0 {
				c.logger.Info("no word from the leader for an election timeout; forgetting it", zap.Uint64("leader", c.leader))
			}
			c.leader = 0
			c.randomizedTimeout = c.electionTicks + c.rand.Intn(c.electionTicks)
		}
	}
}

// mayCampaign reports whether this node may start an election: it is a
// voter of the configuration in effect, or of an earlier one that has not
// been superseded by a committed configuration as far as it knows. The
// latter is a node that an uncommitted configuration removes: it must still
// be able to lead, counting votes in the configuration it has, when it
// holds entries that the remaining voters lack. Otherwise, when the nodes
// with the newest log are all being removed (the leader that appended a
// change leaving a joint configuration crashed, and only the removed nodes
// received the entry), nobody could be elected: the others cannot win
// without their votes, and they would not campaign. A leader outside its
// configuration steps down once that configuration commits (dissertation
// §4.2.2), as a leader removing itself does.
func (c *core) mayCampaign() bool {
	if c.isVoter() {
		return true
	}
	voter := false
	c.earlierConfigs(func(members, outgoing []Member) bool {
		isVoter := func(m Member) bool { return m.ID == c.id && !m.Learner }
		voter = slices.ContainsFunc(members, isVoter) || slices.ContainsFunc(outgoing, isVoter)
		return !voter
	})
	return voter
}

// inLease reports whether this node heard from a leader recently enough
// that, under CheckQuorum, that leader may still hold a quorum; with lease
// reads on, also for an election timeout after it started (leaseState.quiet).
func (c *core) inLease() bool {
	return c.checkQuorum && (c.leader != 0 || c.lease.quiet) && c.electionElapsed < c.electionTicks
}

// campaign starts an election of the given kind, campaignElection or
// campaignTransfer; with pre, it starts with the PreVote phase.
func (c *core) campaign(kind campaignKind, pre bool) {
	var term uint64
	msgType := MsgVote
	context := kind
	if pre {
		// Dissertation §9.6: ask at term+1 without moving to it, so that a
		// node which cannot win never raises the cluster's term.
		c.role = PreCandidate
		c.leader = 0
		c.resetRoleState()
		term = c.term + 1
		msgType = MsgPreVote
		if kind == campaignElection {
			context = campaignPreElection
		}
	} else {
		c.term++
		c.vote = c.id
		c.role = Candidate
		c.leader = 0
		c.resetRoleState()
		term = c.term
	}
	c.campaignKind = kind
	c.logger.Info("campaigning", zap.Stringer("role", c.role), zap.Uint64("term", term), zap.Bool("transfer", kind == campaignTransfer))
	c.votes = map[uint64]bool{c.id: true}
	if c.voters.vote(c.votes) == voteWon {
		// A single-voter cluster wins at once.
		if pre {
			c.campaign(kind, false)
		} else {
			c.becomeLeader()
		}
		return
	}
	for _, m := range c.allMembers() {
		if !c.voters.contains(m.ID) || m.ID == c.id {
			continue
		}
		c.send(Message{Type: msgType, To: m.ID, Term: term, Index: c.log.lastIndex(), LogTerm: c.log.lastTerm(), Context: uint64(context)})
	}
}

// handleVoteRequest answers RequestVote and PreVote (Raft §5.2, §5.4.1).
// It runs in every role; by now m.Term >= c.term.
func (c *core) handleVoteRequest(m Message) {
	respType := MsgVoteResp
	if m.Type == MsgPreVote {
		respType = MsgPreVoteResp
	}
	// One vote per term: a node may vote again only for the candidate it
	// already voted for (a retransmitted request). A PreVote for a later term
	// promises nothing and so is not bound by the vote of this term.
	canVote := c.vote == m.From ||
		(c.vote == 0 && c.leader == 0) ||
		(m.Type == MsgPreVote && m.Term > c.term)
	if c.hooks.grantEveryVote {
		canVote = true
	}
	if canVote && c.freshVoteRefused(m) {
		c.logger.Info("refusing a vote: this node started with no history (empty or wiped storage) and no leader has caught it up yet, "+
			"so a vote it cast before its storage was lost may be gone",
			zap.Stringer("msg", m.Type), zap.Uint64("candidate", m.From), zap.Uint64("term", m.Term), zap.Uint64("candidateLastIndex", m.Index))
		canVote = false
	}
	if canVote && c.log.isUpToDate(m.Index, m.LogTerm) {
		if m.Type == MsgVote {
			// The vote becomes durable before the response leaves (the
			// runtime persists hardState() before sending, Raft Figure 2).
			c.vote = m.From
			c.electionElapsed = 0
		}
		c.send(Message{Type: respType, To: m.From, Term: m.Term})
		return
	}
	c.send(Message{Type: respType, To: m.From, Reject: true})
}

// freshVoteRefused reports whether a fresh node (one whose storage held
// nothing beyond the founding configuration when it started) must refuse m's
// vote or pre-vote. Raft's one vote per term (§5.2) rests on the vote being
// durable (Figure 2); a voter whose disk was wiped forgot it, and restarted
// from InitialMembers it is at term 1 with no vote, so it could vote again
// in a term where it already voted: two leaders in one term. Its storage
// cannot tell a wiped voter from a new one, but the candidate
// can tell a new cluster from one with history: every leader appends an
// entry (its no-op) after the founding configuration at index 1, so a
// candidate whose log ends beyond index 1 runs in a cluster that has had a
// leader. Such a candidate gets no vote from a fresh node until a leader has
// sent it entries or a snapshot (its log then ends beyond index 1, and the
// rule lapses). The founding election, where every candidate's log ends at
// index 1, is not affected, so a new cluster still bootstraps. A wipe before
// any leader's entry reached a candidate is not covered (docs/protocol.md).
func (c *core) freshVoteRefused(m Message) bool {
	return c.fresh && !c.hooks.voteWhenFresh && c.log.lastIndex() <= 1 && m.Index > 1
}

// becomeLeader takes office: progress for every member, and a no-op entry
// of the new term so that earlier entries can commit (Raft §5.4.2, §8).
func (c *core) becomeLeader() {
	c.role = Leader
	c.leader = c.id
	c.resetRoleState()
	all := c.allMembers()
	c.progress = make(map[uint64]*progress, len(all))
	for _, m := range all {
		pr := c.newProgress(m.ID)
		pr.learner = !c.voters.contains(m.ID)
		c.progress[m.ID] = pr
	}
	// Members that an uncommitted configuration removed are still sent the
	// log, as the previous leader did, until they know of their removal.
	for _, m := range c.peerMembers() {
		if c.progress[m.ID] == nil && m.ID != c.id {
			c.progress[m.ID] = c.newProgress(m.ID)
			c.leaving = append(c.leaving, leavingMember{Member: m, removedAt: c.configIndex})
		}
	}
	c.logger.Info("became leader", zap.Uint64("term", c.term), zap.Uint64("lastIndex", c.log.lastIndex()))
	c.appendLeaderEntries(Entry{Type: EntryNoop})
	c.broadcastAppend()
}

// tickLeader sends heartbeats and, under CheckQuorum, steps down when a
// quorum has been silent for an election timeout (dissertation §6.2).
func (c *core) tickLeader() {
	c.heartbeatElapsed++
	c.electionElapsed++
	for id, pr := range c.progress {
		if id != c.id {
			pr.ticksSinceAck++
			pr.ticksSinceHeard++
		}
	}
	if c.electionElapsed >= c.electionTicks {
		c.electionElapsed = 0
		if c.checkQuorum {
			active := func(id uint64) uint64 {
				if pr := c.progress[id]; id == c.id || (pr != nil && pr.recentActive) {
					return 1
				}
				return 0
			}
			if c.voters.committed(active) == 0 {
				c.logger.Warn("no quorum heard from within an election timeout; stepping down", zap.Uint64("term", c.term))
				c.becomeFollower(c.term, 0)
				return
			}
		}
		for _, pr := range c.progress {
			pr.recentActive = false
		}
	}
	c.tickLeaving()
	if c.transferTarget != 0 {
		c.transferElapsed++
		if c.transferElapsed >= c.electionTicks {
			c.abandonTransfer("the target did not take over within an election timeout")
		}
	}
	if c.heartbeatElapsed >= c.heartbeatTicks {
		c.heartbeatElapsed = 0
		c.broadcastHeartbeat(c.heartbeatSeq())
	}
	// A follower the heartbeat did not bring up to our commit index (or
	// that got none this tick) is sent it now: it applies at most a tick
	// after the advance when no append carried it.
	c.flushCommit()
	if c.role == Leader {
		c.maybeQuiesce()
	}
}
