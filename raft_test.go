package raft

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Unit tests of the pure core, one protocol rule each, named after the
// section of the Raft paper (§) or dissertation (D§) that states the rule.

func TestTerms_5_1_HigherTermMakesFollower(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3})
	n := newCoreNet(t, c, newTestCore(t, 2, []uint64{1, 2, 3}))
	n.elect(1)
	require.Equal(t, Leader, c.role)

	c.step(Message{Type: MsgAppendResp, From: 2, To: 1, Term: c.term + 3})
	assert.Equal(t, Follower, c.role)
	assert.Equal(t, uint64(5), c.term)
	assert.Zero(t, c.vote, "a new term starts without a vote")
}

func TestTerms_5_1_LowerTermRejected(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withHardState(HardState{Term: 5, Commit: 1}))
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 4, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 4}}})
	assert.Equal(t, uint64(1), c.log.lastIndex(), "entries of a stale leader are not taken")
	msgs := c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.Equal(t, MsgAppendResp, msgs[0].Type)
	assert.True(t, msgs[0].Reject)
	assert.Equal(t, uint64(5), msgs[0].Term, "the stale leader learns the newer term")
}

func TestElection_5_2_OneVotePerTerm(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1})
	c.step(Message{Type: MsgVote, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1}) // retransmission
	rd := c.ready(HardState{})
	require.Len(t, rd.messages, 3)
	assert.False(t, rd.messages[0].Reject, "first candidate gets the vote")
	assert.True(t, rd.messages[1].Reject, "second candidate in the same term is refused")
	assert.False(t, rd.messages[2].Reject, "a retransmitted request of the same candidate is granted again")
	assert.Equal(t, HardState{Term: 2, Vote: 2, Commit: 1}, rd.hardState)
	assert.True(t, rd.saveState, "the vote is handed to the runtime to persist in the same ready as the response")
}

func TestElection_5_2_VoteRecoveredAfterRestart(t *testing.T) {
	// The vote is part of the durable state: a core restarted from it must
	// not vote for a second candidate in the same term.
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withHardState(HardState{Term: 2, Vote: 2, Commit: 1}))
	c.step(Message{Type: MsgVote, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1})
	msgs := c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.True(t, msgs[0].Reject)
}

func TestElection_5_2_FreshStorageWithholdsVoteFromClusterWithHistory(t *testing.T) {
	// A voter whose disk was wiped restarts from InitialMembers like a new
	// founder: term 1, no vote. It may have voted in the candidate's term
	// before, so it refuses candidates whose log shows the cluster has had a
	// leader (beyond index 1), pre-votes too, until a leader catches it up.
	fresh := func(c *coreConfig) { c.fresh = true }
	// Without CheckQuorum's lease, so that the vote after the append below
	// is heard at once.
	noLease := func(c *coreConfig) { c.checkQuorum = false }
	c := newTestCore(t, 1, []uint64{1, 2, 3}, fresh, noLease)
	c.step(Message{Type: MsgPreVote, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2})
	rd := c.ready(HardState{})
	require.Len(t, rd.messages, 2)
	assert.True(t, rd.messages[0].Reject, "pre-vote for a candidate with history refused")
	assert.True(t, rd.messages[1].Reject, "vote for a candidate with history refused")
	assert.Zero(t, c.vote)

	// A leader of term 3 sends it entries: it is caught up, and votes again
	// by the ordinary rules in later terms.
	c.step(Message{Type: MsgAppend, From: 3, To: 1, Term: 3, Index: 1, LogTerm: 1, Commit: 2,
		Entries: []Entry{{Index: 2, Term: 2, Type: EntryNoop}, {Index: 3, Term: 3, Type: EntryNoop}}})
	require.Equal(t, uint64(3), c.log.lastIndex())
	c.ready(HardState{})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 3})
	rd = c.ready(HardState{})
	require.Len(t, rd.messages, 1)
	assert.False(t, rd.messages[0].Reject, "caught up by a leader, it votes")
	assert.Equal(t, uint64(2), c.vote)

	// The founding election of a new cluster: every candidate's log ends at
	// the founding configuration, and fresh founders vote.
	c = newTestCore(t, 1, []uint64{1, 2, 3}, fresh)
	c.step(Message{Type: MsgPreVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1})
	rd = c.ready(HardState{})
	require.Len(t, rd.messages, 2)
	assert.False(t, rd.messages[0].Reject)
	assert.False(t, rd.messages[1].Reject)

	// A node that did not start on empty storage votes by the ordinary rules.
	c = newTestCore(t, 1, []uint64{1, 2, 3})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 2})
	rd = c.ready(HardState{})
	require.Len(t, rd.messages, 1)
	assert.False(t, rd.messages[0].Reject)
}

func TestElection_5_2_FreshNodeCaughtUpKeepsItsVoteForTheLeader(t *testing.T) {
	// A wiped voter voted for 3 in term 3 before its disk was lost. Leader 3
	// catches it up, in term 3, with entries of term 2 only so far; then 3
	// falls silent. Node 2, which missed term 3's election (it still has
	// term 2, with as long a log), campaigns in term 3: the wiped node must
	// not give it a second vote in term 3 (seed 6420 of the simulator with
	// RAFT_SIM_FAULTS=20 elected two leaders in one term this way). The
	// leader that caught it up counts as its vote in that term: it won the
	// term, so the vote changes nothing else.
	fresh := func(c *coreConfig) { c.fresh = true }
	noLease := func(c *coreConfig) { c.checkQuorum = false }
	c := newTestCore(t, 1, []uint64{1, 2, 3}, fresh, noLease)
	c.step(Message{Type: MsgAppend, From: 3, To: 1, Term: 3, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{{Index: 2, Term: 2, Type: EntryNoop}, {Index: 3, Term: 2, Type: EntryCommand, Data: cmd("x")}}})
	require.Equal(t, uint64(3), c.log.lastIndex())
	rd := c.ready(HardState{})
	assert.Equal(t, uint64(3), rd.hardState.Vote, "durable before the append is acknowledged")
	for c.role != PreCandidate {
		c.tick() // 3 is silent: the node forgets it and pre-campaigns
	}
	c.ready(HardState{})
	c.step(Message{Type: MsgPreVote, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 2})
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 2})
	rd = c.ready(HardState{})
	require.Len(t, rd.messages, 2)
	assert.True(t, rd.messages[0].Reject, "pre-vote in the leader's term refused")
	assert.True(t, rd.messages[1].Reject, "vote in the leader's term refused")
	assert.Equal(t, uint64(3), c.vote)

	// In a later term it votes by the ordinary rules.
	c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 3, LogTerm: 2})
	rd = c.ready(HardState{})
	require.Len(t, rd.messages, 1)
	assert.False(t, rd.messages[0].Reject)
	assert.Equal(t, uint64(2), c.vote)
}

func TestElection_5_2_MajorityWins(t *testing.T) {
	c1 := newTestCore(t, 1, []uint64{1, 2, 3}, withoutPreVote())
	c2 := newTestCore(t, 2, []uint64{1, 2, 3}, withoutPreVote())
	c3 := newTestCore(t, 3, []uint64{1, 2, 3}, withoutPreVote())
	n := newCoreNet(t, c1, c2, c3)
	n.elect(1)
	assert.Equal(t, []uint64{1}, n.leaders())
	assert.Equal(t, uint64(1), c2.leader)
	assert.Equal(t, uint64(1), c3.leader)
}

func TestElection_5_2_CandidateLosesWithoutMajority(t *testing.T) {
	c1 := newTestCore(t, 1, []uint64{1, 2, 3}, withoutPreVote())
	n := newCoreNet(t, c1) // 2 and 3 are unreachable
	for i := 0; i < 100 && c1.role != Candidate; i++ {
		c1.tick()
	}
	require.Equal(t, Candidate, c1.role)
	c1.step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c1.term, Reject: true})
	c1.step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: c1.term, Reject: true})
	n.stabilize()
	assert.Equal(t, Follower, c1.role, "two rejections of three make the election lost")
}

func TestElection_5_2_RandomizedTimeoutInRange(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3})
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		c.resetRoleState()
		require.GreaterOrEqual(t, c.randomizedTimeout, c.electionTicks)
		require.Less(t, c.randomizedTimeout, 2*c.electionTicks)
		seen[c.randomizedTimeout] = true
	}
	assert.Greater(t, len(seen), 5, "timeouts are spread over [T, 2T)")
}

func TestElection_5_4_1_UpToDateCheck(t *testing.T) {
	// The voter's log ends at index 3, term 2.
	ents := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}}
	cases := []struct {
		name           string
		lastIdx, lastT uint64
		grant          bool
	}{
		{"higher last term, shorter log", 2, 3, true},
		{"same last term, longer log", 4, 2, true},
		{"same last term, same length", 3, 2, true},
		{"same last term, shorter log", 2, 2, false},
		{"lower last term, longer log", 10, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 2, Commit: 1}))
			c.step(Message{Type: MsgVote, From: 2, To: 1, Term: 3, Index: tc.lastIdx, LogTerm: tc.lastT})
			msgs := c.ready(HardState{}).messages
			require.Len(t, msgs, 1)
			assert.Equal(t, !tc.grant, msgs[0].Reject)
		})
	}
}

func TestLeaderCompleteness_5_4_StaleLogCannotWin(t *testing.T) {
	// 1 and 2 hold entry 2 of term 2 (committed by them), 3 missed it: 3
	// cannot become leader, so the committed entry survives.
	ents := []Entry{{Index: 2, Term: 2}}
	c1 := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 2, Commit: 2}), withoutPreVote())
	c2 := newTestCore(t, 2, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 2, Commit: 2}), withoutPreVote())
	c3 := newTestCore(t, 3, []uint64{1, 2, 3}, withHardState(HardState{Term: 2, Commit: 1}), withoutPreVote())
	n := newCoreNet(t, c1, c2, c3)
	term := c3.term
	for i := 0; i < 10*c3.electionTicks; i++ {
		c3.tick()
		n.stabilize()
		require.NotEqual(t, Leader, c3.role)
	}
	require.Greater(t, c3.term, term+2, "node 3 campaigned several times")
	// Someone up to date wins and keeps entry 2.
	n.elect(1)
	assert.Equal(t, uint64(2), c3.log.entry(2).Term)
}

func TestLogMatching_5_3_RejectOnMismatchWithHint(t *testing.T) {
	// Follower: [1:1, 2:2, 3:2, 4:2]; leader sends prev (5, 3): the follower
	// is short, and hints at its last entry with term <= 3.
	ents := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}, {Index: 4, Term: 2}}
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 1}))
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 3, Index: 5, LogTerm: 3})
	msgs := c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.True(t, msgs[0].Reject)
	assert.Equal(t, uint64(4), msgs[0].HintIndex)
	assert.Equal(t, uint64(2), msgs[0].HintTerm)

	// prev (4, 3) mismatches at index 4 (term 2): same hint.
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 3, Index: 4, LogTerm: 3})
	msgs = c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.True(t, msgs[0].Reject)
	assert.Equal(t, uint64(4), msgs[0].HintIndex)
}

func TestLogMatching_5_3_LeaderSkipsWholeTerm(t *testing.T) {
	// The leader's log has many entries of term 3 the follower lacks; the
	// follower holds term-2 entries. One rejection moves next past all of
	// term 3, instead of one index per round trip.
	leaderEnts := []Entry{{Index: 2, Term: 2}}
	for i := uint64(3); i <= 50; i++ {
		leaderEnts = append(leaderEnts, Entry{Index: i, Term: 3})
	}
	followerEnts := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}, {Index: 4, Term: 2}}
	l := newTestCore(t, 1, []uint64{1, 2}, withEntries(leaderEnts...), withHardState(HardState{Term: 3, Commit: 1}), withoutPreVote())
	f := newTestCore(t, 2, []uint64{1, 2}, withEntries(followerEnts...), withHardState(HardState{Term: 3, Commit: 1}), withoutPreVote())
	n := newCoreNet(t, l, f)
	rejections := 0
	n.drop = func(m Message) bool {
		if m.Type == MsgAppendResp && m.Reject {
			rejections++
		}
		return false
	}
	n.elect(1)
	assert.LessOrEqual(t, rejections, 2)
	require.Equal(t, l.log.lastIndex(), f.log.lastIndex())
	for i := uint64(2); i <= l.log.lastIndex(); i++ {
		assert.Equal(t, l.log.entry(i).Term, f.log.entry(i).Term, "index %d", i)
	}
}

func TestLogMatching_5_3_TruncateOnlyOnConflict(t *testing.T) {
	// Follower: [1:1, 2:2, 3:2, 4:3]. A stale append that carries entries 2-3
	// (already held) must not truncate entry 4.
	ents := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}, {Index: 4, Term: 3}}
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 1}))
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 3, Index: 1, LogTerm: 1, Entries: ents[:2]})
	assert.Equal(t, uint64(4), c.log.lastIndex(), "a duplicated append must not truncate")
	msgs := c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.False(t, msgs[0].Reject)
	assert.Equal(t, uint64(3), msgs[0].Index, "acknowledges only what the message covered")

	// A real conflict at index 3 truncates 3 and 4.
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 4, Index: 2, LogTerm: 2, Entries: []Entry{{Index: 3, Term: 4}}})
	assert.Equal(t, uint64(3), c.log.lastIndex())
	assert.Equal(t, uint64(4), c.log.entry(3).Term)
}

func TestLogMatching_5_3_StaleAppendBelowCommit(t *testing.T) {
	// An append below the commit index truncates nothing and acknowledges
	// only the entries it carried and we checked, never the rest of what we
	// count as committed.
	ents := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}, {Index: 4, Term: 2}}
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 2, Commit: 4}))
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1})
	msgs := c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.False(t, msgs[0].Reject)
	assert.Equal(t, uint64(1), msgs[0].Index, "only the previous entry was checked")

	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Entries: ents[:2]})
	msgs = c.ready(HardState{}).messages
	require.Len(t, msgs, 1)
	assert.Equal(t, uint64(3), msgs[0].Index)
	assert.Equal(t, uint64(4), c.log.lastIndex(), "nothing is truncated")
}

func TestLogMatching_5_3_CommittedEntryDifferingFromLeaderStopsTheNode(t *testing.T) {
	// A follower held 6..10 of term 2, uncommitted. The term-3 leader
	// overwrote 6..7 and said commit 7, and a torn write kept the commit
	// index but not the new entries. On restart the follower counts the old
	// 6/2 and 7/2 as committed. When the leader probes below that commit
	// index, the follower must not acknowledge a match up to 7 (the leader
	// would never repair it: it ignores rejections at or below the match);
	// it finds the difference and stops with ErrCorrupt.
	var ents []Entry
	for i := uint64(2); i <= 10; i++ {
		ents = append(ents, Entry{Index: i, Term: 2})
	}
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 7}))
	require.Equal(t, uint64(7), c.log.committed)
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 3, Index: 5, LogTerm: 2, Commit: 7,
		Entries: []Entry{{Index: 6, Term: 3}, {Index: 7, Term: 3}}})
	rd := c.ready(HardState{Term: 3, Commit: 7})
	assert.Empty(t, msgsOf(rd.messages, MsgAppendResp), "no acknowledgment of entries that differ from the leader's")
	require.Error(t, rd.err)
	assert.ErrorIs(t, rd.err, ErrCorrupt)
	assert.Equal(t, uint64(2), c.log.entry(6).Term, "a committed entry is never overwritten")

	// So does a snapshot whose last entry differs from a committed one.
	c3 := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 7}))
	c3.step(Message{Type: MsgSnapshot, From: 2, To: 1, Term: 3, Index: 7, LogTerm: 3})
	rd = c3.ready(HardState{Term: 3, Commit: 7})
	assert.Empty(t, msgsOf(rd.messages, MsgAppendResp))
	assert.ErrorIs(t, rd.err, ErrCorrupt)
	// A snapshot whose last entry we hold is acknowledged at that entry.
	c4 := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 7}))
	c4.step(Message{Type: MsgSnapshot, From: 2, To: 1, Term: 3, Index: 5, LogTerm: 2})
	rd = c4.ready(HardState{Term: 3, Commit: 7})
	require.NoError(t, rd.err)
	require.Len(t, msgsOf(rd.messages, MsgAppendResp), 1)
	assert.Equal(t, uint64(5), msgsOf(rd.messages, MsgAppendResp)[0].Index)

	// A probe whose previous entry is a differing committed entry stops it too.
	c2 := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 7}))
	c2.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 3, Index: 6, LogTerm: 3})
	rd = c2.ready(HardState{Term: 3, Commit: 7})
	assert.Empty(t, msgsOf(rd.messages, MsgAppendResp))
	assert.ErrorIs(t, rd.err, ErrCorrupt)
}

func TestCommit_5_4_2_Figure8(t *testing.T) {
	figure8(t, coreHooks{}, 1)
}

// TestCommit_5_4_2_Figure8Bites shows that the test above catches a leader
// that commits an earlier term's entry by counting replicas.
func TestCommit_5_4_2_Figure8Bites(t *testing.T) {
	figure8(t, coreHooks{commitPreviousTermByCounting: true}, 2)
}

// figure8 checks the commit index after entry 2 (term 2) reached a quorum
// under the leader of term 4, before its no-op did.
func figure8(t *testing.T, hooks coreHooks, wantCommit uint64) {
	// The leader of term 4 holds entry 2 of term 2 that no quorum had. Once
	// a follower stores entry 2, a quorum holds it, yet it must not commit by
	// counting: only the leader's own term-4 no-op commits it (Figure 8).
	ents := []Entry{{Index: 2, Term: 2}}
	l := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 3, Commit: 1}), withoutPreVote())
	f := newTestCore(t, 2, []uint64{1, 2, 3}, withHardState(HardState{Term: 3, Commit: 1}), withoutPreVote())
	l.hooks = hooks
	n := newCoreNet(t, l, f)
	// The follower's acknowledgments of the no-op (index 3) are lost; the
	// probe that finds entry 2 on it gets through.
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp && m.Index >= 3 }
	n.elect(1)
	require.Equal(t, Leader, l.role)
	require.Equal(t, uint64(4), l.term)
	require.GreaterOrEqual(t, f.log.lastIndex(), uint64(2))
	f.step(Message{Type: MsgAppend, From: 1, To: 2, Term: 4, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2}}})
	n.stabilize()
	assert.Equal(t, wantCommit, l.log.committed, "entry 2 (term 2) is on a quorum but must not commit by counting")
	if wantCommit != 1 {
		return
	}

	n.drop = nil
	// The lost acknowledgments are made up for within an election timeout
	// (unanswered appends are retried from the match point).
	for i := 0; i < l.electionTicks && l.log.committed < 3; i++ {
		l.tick()
		n.stabilize()
	}
	assert.Equal(t, uint64(3), l.log.committed, "the no-op of term 4 commits, and entry 2 with it")
}

func TestCommit_5_3_NeverGoesBackwards(t *testing.T) {
	ents := []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}}
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withEntries(ents...), withHardState(HardState{Term: 2, Commit: 3}))
	c.step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 1})
	assert.Equal(t, uint64(3), c.log.committed)
	c.step(Message{Type: MsgAppend, From: 2, To: 1, Term: 2, Index: 3, LogTerm: 2, Commit: 2})
	assert.Equal(t, uint64(3), c.log.committed)
}

func TestCommit_10_2_1_LeaderCountsItselfOnlyAfterPersisting(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1})
	for c.role != Leader {
		c.tick()
	}
	rd := c.ready(HardState{})
	require.NotEmpty(t, rd.entries)
	assert.Equal(t, uint64(1), c.log.committed, "a one-node leader must not commit before its own write")
	last := rd.entries[len(rd.entries)-1]
	c.persisted(last.Index, last.Term)
	assert.Equal(t, last.Index, c.log.committed)
}

func TestReplication_ProposalsBatchIntoOneAppend(t *testing.T) {
	l := newTestCore(t, 1, []uint64{1, 2, 3})
	n := newCoreNet(t, l, newTestCore(t, 2, []uint64{1, 2, 3}), newTestCore(t, 3, []uint64{1, 2, 3}))
	n.elect(1)
	for i := 0; i < 10; i++ {
		_, _, err := l.propose(cmd("x"))
		require.NoError(t, err)
	}
	appends := msgsOf(n.collect(1), MsgAppend)
	require.Len(t, appends, 2, "one append per follower")
	assert.Len(t, appends[0].Entries, 10)
}

func TestReplication_PipelineBoundedByInflight(t *testing.T) {
	l := newTestCore(t, 1, []uint64{1, 2})
	n := newCoreNet(t, l, newTestCore(t, 2, []uint64{1, 2}))
	n.elect(1)
	sent := 0
	for i := 0; i < 20; i++ {
		_, _, err := l.propose(cmd("x"))
		require.NoError(t, err)
		sent += len(msgsOf(n.collect(1), MsgAppend)) // never delivered
	}
	assert.Equal(t, l.maxInflight, sent, "appends beyond the inflight window wait")
}

func TestReplication_FollowerCatchesUp(t *testing.T) {
	c1, _, c3, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.To == 3 || m.From == 3 }
	for i := 0; i < 500; i++ {
		_, _, err := c1.propose(cmd("x"))
		require.NoError(t, err)
		n.stabilize()
	}
	assert.Less(t, c3.log.lastIndex(), uint64(10))
	n.drop = nil
	for i := 0; i < 50 && c3.log.lastIndex() < c1.log.lastIndex(); i++ {
		c1.tick()
		n.stabilize()
	}
	assert.Equal(t, c1.log.lastIndex(), c3.log.lastIndex())
	assert.Equal(t, c1.log.committed, c3.log.committed)
}

func TestReplication_FollowerWithWipedStorageCaughtUpFromTheStart(t *testing.T) {
	// A follower acknowledged entries, then restarts on a wiped disk with
	// only the founding configuration: the leader must replicate to it again
	// from the start, though its rejections name an index it had matched.
	voters := []uint64{1, 2, 3}
	c1, _, _, n := threeCores(t)
	n.elect(1)
	for i := 0; i < 5; i++ {
		_, _, err := c1.propose(cmd("x"))
		require.NoError(t, err)
		n.stabilize()
	}
	require.Greater(t, c1.progress[3].match, uint64(5))
	wiped := newTestCore(t, 3, voters, func(c *coreConfig) { c.fresh = true })
	n.cores[3], n.saved[3] = wiped, wiped.hardState()
	for i := 0; i < 10 && wiped.log.lastIndex() < c1.log.lastIndex(); i++ {
		_, _, err := c1.propose(cmd("y"))
		require.NoError(t, err)
		n.stabilize()
	}
	assert.Equal(t, c1.log.lastIndex(), wiped.log.lastIndex())
	assert.Equal(t, c1.log.committed, wiped.log.committed)
}

func TestReplication_IdleLeaderCatchesUpAWipedFollower(t *testing.T) {
	// As above, but nothing is proposed after the wipe: the leader believes
	// the follower holds every entry, so only heartbeats go to it. Its
	// answers, which cannot commit beyond the founding configuration, must
	// make the leader check (the simulator's seed 1152 with
	// RAFT_SIM_FAULTS=20 never caught up a wiped follower of an idle
	// cluster, whose reads then waited for ever).
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprintf("transport reported a loss: %v", lost), func(t *testing.T) {
			voters := []uint64{1, 2, 3}
			c1, _, _, n := threeCores(t)
			n.elect(1)
			for i := 0; i < 5; i++ {
				_, _, err := c1.propose(cmd("x"))
				require.NoError(t, err)
				n.stabilize()
			}
			require.Equal(t, c1.log.lastIndex(), c1.progress[3].match)
			if lost {
				// The node's crash broke the connection: the leader probes it.
				c1.step(Message{Type: MsgUnreachable, From: 3, To: 1})
			}
			wiped := newTestCore(t, 3, voters, func(c *coreConfig) { c.fresh = true })
			n.cores[3], n.saved[3] = wiped, wiped.hardState()
			for i := 0; i < 5*c1.electionTicks && wiped.log.committed < c1.log.committed; i++ {
				c1.tick()
				n.stabilize()
			}
			assert.Equal(t, c1.log.lastIndex(), wiped.log.lastIndex())
			assert.Equal(t, c1.log.committed, wiped.log.committed)
		})
	}
}

func TestReplication_UncommittedBound(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3})
	c.maxUncommittedEnts = 5
	n := newCoreNet(t, c, newTestCore(t, 2, []uint64{1, 2, 3}))
	n.elect(1)
	n.drop = func(Message) bool { return true } // nothing commits from here on
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, _, err = c.propose(cmd("x"))
	}
	assert.ErrorIs(t, err, ErrBusy)
}

func TestProposeOnFollowerIsNotLeader(t *testing.T) {
	c1, c2 := newTestCore(t, 1, []uint64{1, 2}), newTestCore(t, 2, []uint64{1, 2})
	n := newCoreNet(t, c1, c2)
	n.elect(1)
	_, _, err := c2.propose(cmd("x"))
	var nle *NotLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Equal(t, uint64(1), nle.Leader)
	assert.ErrorIs(t, err, ErrNotLeader)
}

func TestPreVote_9_6_PartitionedNodeKeepsTerm(t *testing.T) {
	c1, _, c3, n := threeCores(t)
	n.elect(1)
	term := c1.term
	n.drop = func(m Message) bool { return m.To == 3 || m.From == 3 }
	for i := 0; i < 200; i++ {
		c3.tick()
		n.stabilize()
	}
	assert.Equal(t, term, c3.term, "pre-candidates do not raise their term")
	n.drop = nil
	for i := 0; i < 3; i++ {
		c1.tick()
		c3.tick()
		n.stabilize()
	}
	assert.Equal(t, Leader, c1.role, "the healthy leader is not disrupted")
	assert.Equal(t, term, c1.term)
	assert.Equal(t, uint64(1), c3.leader)
}

func TestPreVote_9_6_DisabledRaisesTerm(t *testing.T) {
	c3 := newTestCore(t, 3, []uint64{1, 2, 3}, withoutPreVote())
	term := c3.term
	for i := 0; i < 100; i++ {
		c3.tick()
	}
	assert.Greater(t, c3.term, term, "without PreVote a partitioned node keeps raising its term (the problem PreVote solves)")
}

func TestCheckQuorum_6_2_LeaderStepsDownWithoutQuorum(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.From == 1 || m.To == 1 }
	for i := 0; i < 2*c1.electionTicks && c1.role == Leader; i++ {
		c1.tick()
		n.stabilize()
	}
	assert.Equal(t, Follower, c1.role)
}

func TestCheckQuorum_6_2_NoStepDownWithQuorum(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.From == 3 || m.To == 3 }
	for i := 0; i < 5*c1.electionTicks; i++ {
		c1.tick()
		n.stabilize()
	}
	assert.Equal(t, Leader, c1.role)
}

func TestCheckQuorum_4_2_3_FollowerInLeaseIgnoresVotes(t *testing.T) {
	_, c2, _, n := threeCores(t)
	n.elect(1)
	term := c2.term
	c2.step(Message{Type: MsgVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100})
	assert.Equal(t, term, c2.term, "a follower that just heard from the leader ignores the candidate")
	assert.Empty(t, msgsOf(n.collect(2), MsgVoteResp))

	// A transfer-initiated election is heard despite the lease.
	c2.step(Message{Type: MsgVote, From: 3, To: 2, Term: term + 1, Index: 100, LogTerm: 100, Context: uint64(campaignTransfer)})
	assert.Equal(t, term+1, c2.term)
}

func TestReadIndex_6_4_WaitsForNoopCommit(t *testing.T) {
	c1, c2 := newTestCore(t, 1, []uint64{1, 2, 3}), newTestCore(t, 2, []uint64{1, 2, 3})
	n := newCoreNet(t, c1, c2)
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp } // the no-op cannot commit
	n.elect(1)
	c1.readIndex(7)
	n.stabilize()
	assert.Empty(t, n.reads[1], "no read index before the leader commits an entry of its term")
	n.drop = nil
	c1.tick()
	n.stabilize()
	require.Len(t, n.reads[1], 1)
	assert.Equal(t, uint64(7), n.reads[1][0].id)
	assert.Equal(t, c1.log.committed, n.reads[1][0].index)
}

func TestReadIndex_6_4_NeedsQuorumConfirmation(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgHeartbeatResp }
	c1.readIndex(1)
	c1.readIndex(2)
	msgs := n.collect(1)
	assert.Len(t, msgsOf(msgs, MsgHeartbeat), 2, "two reads share one heartbeat round")
	n.stabilize()
	assert.Empty(t, n.reads[1], "unconfirmed leadership serves no read")
	n.drop = nil
	c1.tick()
	n.stabilize()
	require.Len(t, n.reads[1], 2)
	for _, r := range n.reads[1] {
		assert.NoError(t, r.err)
	}
}

func TestReadIndex_6_4_OneRoundInFlight(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	c1.readIndex(1)
	first := n.collect(1)
	require.Len(t, msgsOf(first, MsgHeartbeat), 2, "a read starts a round")
	// Reads keep arriving while the round is out: they start none of their own.
	for id := uint64(2); id <= 5; id++ {
		c1.readIndex(id)
		assert.Empty(t, msgsOf(n.collect(1), MsgHeartbeat), "read %d waits for the round in flight", id)
	}
	// The first round is confirmed: its read is served, and the waiting
	// reads share the next round, which confirms them all.
	for _, m := range first {
		n.cores[m.To].step(m)
	}
	n.stabilize()
	require.Len(t, n.reads[1], 5)
	for i, r := range n.reads[1] {
		assert.NoError(t, r.err)
		assert.Equal(t, uint64(i+1), r.id)
		assert.Equal(t, c1.log.committed, r.index)
	}
}

func TestReadIndex_6_4_1_FollowerAsksLeader(t *testing.T) {
	c1, c2, _, n := threeCores(t)
	n.elect(1)
	_, _, err := c1.propose(cmd("x"))
	require.NoError(t, err)
	n.stabilize()
	c2.readIndex(9)
	n.stabilize()
	require.Len(t, n.reads[2], 1)
	assert.Equal(t, uint64(9), n.reads[2][0].id)
	assert.Equal(t, c1.log.committed, n.reads[2][0].index)
}

func TestReadIndex_LeaderChangeFailsPendingReads(t *testing.T) {
	c1 := newTestCore(t, 1, []uint64{1, 2, 3})
	n := newCoreNet(t, c1, newTestCore(t, 2, []uint64{1, 2, 3}), newTestCore(t, 3, []uint64{1, 2, 3}))
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgHeartbeatResp }
	c1.readIndex(1)
	n.stabilize()
	c1.step(Message{Type: MsgAppend, From: 2, To: 1, Term: c1.term + 1, Index: 0})
	n.collect(1)
	require.Len(t, n.reads[1], 1)
	assert.ErrorIs(t, n.reads[1][0].err, ErrLeadershipLost)
}

func TestStorageRecovery_RejectsImpossibleLog(t *testing.T) {
	_, err := newCore(coreConfig{id: 1, electionTicks: 10, heartbeatTicks: 1,
		hardState: HardState{Term: 1}, entries: []Entry{{Index: 1, Term: 1}, {Index: 3, Term: 1}}})
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestStorageRecovery_AdoptsTermOfEntriesWhoseHardStateWasTorn(t *testing.T) {
	// Storage writes a Save's entries before its hard state; a torn write can
	// keep term-3 entries and lose HardState{Term: 3}. Nothing was sent in
	// term 3 before the write was durable, so the node takes term 3 with no
	// vote (§5.1), rather than refuse to start or run with a term below its
	// own log's.
	c, err := newCore(coreConfig{id: 1, electionTicks: 10, heartbeatTicks: 1,
		hardState: HardState{Term: 2, Vote: 2, Commit: 1}, entries: []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 3}}})
	require.NoError(t, err)
	assert.Equal(t, uint64(3), c.term)
	assert.Equal(t, uint64(0), c.vote, "the vote of term 2 does not carry over to term 3")
	assert.Equal(t, HardState{Term: 3, Commit: 1}, c.hardState())
}

func TestReplication_HeartbeatNeverCommitsBeyondMatch(t *testing.T) {
	// A heartbeat carries min(match, commit): a follower must not commit
	// entries it holds but that may differ from the leader's (§5.3).
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.To == 3 }
	for i := 0; i < 5; i++ {
		_, _, err := c1.propose(cmd("x"))
		require.NoError(t, err)
		n.stabilize()
	}
	require.Greater(t, c1.log.committed, c1.progress[3].match)
	c1.broadcastHeartbeat(0)
	seen := false
	for _, m := range msgsOf(n.collect(1), MsgHeartbeat) {
		if m.To == 3 {
			seen = true
			assert.Equal(t, c1.progress[3].match, m.Commit)
		}
	}
	require.True(t, seen, "a heartbeat went to node 3")
}

func TestLog_DurableReportOfAReplacedWriteCountsNothing(t *testing.T) {
	// A follower's write is in flight when a new leader's append replaces
	// part of it (§5.3). The report that the first write is durable comes
	// after: it must not make the replacing entries count as durable. They
	// are applied only once their own write is.
	c := newTestCore(t, 2, []uint64{1, 2, 3})
	c.step(Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{cmdEntry(2, 2), cmdEntry(3, 2)}})
	first := c.ready(HardState{Term: 1, Commit: 1})
	require.Len(t, first.entries, 2)
	c.step(Message{Type: MsgAppend, From: 3, To: 2, Term: 3, Index: 2, LogTerm: 2, Commit: 3,
		Entries: []Entry{cmdEntry(3, 3)}})
	second := c.ready(first.hardState)
	require.Equal(t, []Entry{cmdEntry(3, 3)}, second.entries, "the replacing entry is the next write")
	assert.Empty(t, second.committed, "nothing durable to apply yet")

	c.persisted(3, 2) // the first write: its entry 3 is gone from the log
	rd := c.ready(second.hardState)
	for _, e := range rd.committed {
		assert.NotEqual(t, uint64(3), e.Index, "entry 3 of term 3 is not durable yet")
	}
	c.persisted(3, 3)
	rd = c.ready(second.hardState)
	require.NotEmpty(t, rd.committed)
	assert.Equal(t, cmdEntry(3, 3), rd.committed[len(rd.committed)-1])
}
