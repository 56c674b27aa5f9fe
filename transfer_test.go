package raft

import (
	"context"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Leadership transfer (dissertation §3.10): a MsgTimeoutNow must never move
// leadership after its transfer was given up, and the target campaigns only
// when it can win cleanly.

// holdTimeoutNow makes n drop every MsgTimeoutNow and returns the list it
// keeps them in, to deliver late.
func holdTimeoutNow(n *coreNet) *[]Message {
	var held []Message
	n.drop = func(m Message) bool {
		if m.Type == MsgTimeoutNow {
			held = append(held, m)
			return true
		}
		return false
	}
	return &held
}

// transferWithHeldTimeoutNow elects node 1 of three cores and has it
// transfer leadership to node 2, holding back the MsgTimeoutNow it sends,
// which it returns for the test to deliver when it likes.
func transferWithHeldTimeoutNow(t *testing.T) (c1, c2, c3 *core, n *coreNet, timeoutNow Message) {
	t.Helper()
	c1, c2, c3, n = threeCores(t)
	n.elect(1)
	held := holdTimeoutNow(n)
	_, err := c1.transferLeadership(2)
	require.NoError(t, err)
	n.stabilize()
	require.NotEmpty(t, *held, "the leader asked the target to campaign")
	return c1, c2, c3, n, (*held)[0]
}

// abandonTransfer ticks leader c until it gives its transfer up, without
// delivering what the last tick produced.
func abandonTransfer(t *testing.T, n *coreNet, c *core) {
	t.Helper()
	for i := 0; ; i++ {
		require.Less(t, i, 10*c.electionTicks, "the transfer was never abandoned")
		c.tick()
		if c.transferTarget == 0 {
			return
		}
		n.stabilize()
	}
}

func TestTransfer_3_10_StaleTimeoutNowCannotDeposeTheLeader(t *testing.T) {
	// The MsgTimeoutNow reaches the target only after the transfer was given
	// up and the leader committed new entries without it: the target is cut
	// off meanwhile, so its log still ends where the message says.
	c1, c2, c3, n, timeoutNow := transferWithHeldTimeoutNow(t)
	term := c1.term

	n.drop = func(m Message) bool { return m.Type == MsgTimeoutNow || m.To == 2 || m.From == 2 }
	abandonTransfer(t, n, c1)
	assert.True(t, c1.transferring(), "the outcome is unknown until the entry that voids the message commits")
	_, _, err := c1.propose(cmd("after"))
	require.NoError(t, err, "the leader takes proposals again once it gave the transfer up")
	n.stabilize()
	require.False(t, c1.transferring(), "the voiding entry committed on 1 and 3")
	assert.False(t, c1.transferSettled(2), "the target does not hold it yet")

	c2.step(timeoutNow)
	n.drop = nil
	n.stabilize()
	c1.tick() // a heartbeat round brings the target up to date
	n.stabilize()
	assert.Equal(t, Leader, c1.role, "the leader keeps its office")
	for _, c := range []*core{c1, c2, c3} {
		assert.Equal(t, term, c.term, "node %d: nobody's term moved", c.id)
	}
	assert.Equal(t, []uint64{1}, n.leaders())
	assert.Equal(t, Follower, c2.role)
	assert.True(t, c1.transferSettled(2), "the target holds the voiding entry")
}

func TestTransfer_3_10_TargetThatReceivesTheFenceEndsItsPreVote(t *testing.T) {
	// The target started its PreVote round and node 3 granted it; the
	// grant arrives only after the leader gave the transfer up and the
	// target received the leader's next entry.
	c1, c2, c3, n, timeoutNow := transferWithHeldTimeoutNow(t)
	term := c1.term
	c2.step(timeoutNow)
	require.Equal(t, PreCandidate, c2.role)
	var grant []Message
	for _, m := range msgsOf(n.collect(2), MsgPreVote) {
		if m.To == 3 {
			c3.step(m)
			grant = msgsOf(n.collect(3), MsgPreVoteResp)
		}
	}
	require.Len(t, grant, 1)
	require.False(t, grant[0].Reject)

	abandonTransfer(t, n, c1)
	n.stabilize()
	c1.tick()
	n.stabilize()
	assert.Equal(t, Follower, c2.role, "the leader's new entry ended the campaign")
	require.True(t, c1.transferSettled(2))

	c2.step(grant[0])
	n.stabilize()
	assert.Equal(t, Follower, c2.role)
	for _, c := range []*core{c1, c2, c3} {
		assert.Equal(t, term, c.term, "node %d: nobody's term moved", c.id)
	}
	assert.Equal(t, []uint64{1}, n.leaders())
}

func TestTransfer_3_10_VoterInLeaseIgnoresATransferCandidateThatLacksEntries(t *testing.T) {
	_, c2, _, n := threeCores(t)
	n.elect(1)
	term := c2.term
	last, lastTerm := c2.log.lastIndex(), c2.log.lastTerm()
	for _, typ := range []MessageType{MsgPreVote, MsgVote} {
		c2.step(Message{Type: typ, From: 3, To: 2, Term: term + 1, Index: last - 1, LogTerm: lastTerm, Context: uint64(campaignTransfer)})
		assert.Equal(t, term, c2.term, "%s", typ)
		assert.Empty(t, n.collect(2), "%s: ignored, as any candidate under the lease", typ)
	}
	c2.step(Message{Type: MsgPreVote, From: 3, To: 2, Term: term + 1, Index: last, LogTerm: lastTerm, Context: uint64(campaignTransfer)})
	resp := msgsOf(n.collect(2), MsgPreVoteResp)
	require.Len(t, resp, 1)
	assert.False(t, resp[0].Reject, "a transfer candidate with our whole log is heard despite the lease")
}

func TestTransfer_3_10_StaleTimeoutNowIsIgnoredByACurrentTarget(t *testing.T) {
	c1, c2, _, n, timeoutNow := transferWithHeldTimeoutNow(t)
	abandonTransfer(t, n, c1)
	n.stabilize()
	require.False(t, c1.transferring())

	term := c2.term
	c2.step(timeoutNow)
	assert.Empty(t, msgsOf(n.collect(2), MsgPreVote), "the target holds entries the message does not know of")
	assert.Equal(t, Follower, c2.role)
	assert.Equal(t, term, c2.term)
}

func TestTransfer_3_10_TargetBehindTheLeaderDoesNotCampaign(t *testing.T) {
	c2 := newTestCore(t, 2, []uint64{1, 2, 3}, withHardState(HardState{Term: 2, Commit: 1}))
	c2.step(Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2, Type: EntryNoop}}, Commit: 1})
	c2.ready(c2.hardState())
	for _, m := range []Message{
		{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 2, Commit: 2}, // the leader has more
		{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2, Index: 2, LogTerm: 1, Commit: 1}, // another entry at 2
		{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2},                                  // names no entry
	} {
		c2.step(m)
		assert.Equal(t, Follower, c2.role, "%+v", m)
		assert.Empty(t, c2.ready(c2.hardState()).messages, "%+v", m)
	}
}

func TestTransfer_3_10_TargetWaitsForItsConfigurationToCommit(t *testing.T) {
	c2 := newTestCore(t, 2, []uint64{1, 2, 3}, withHardState(HardState{Term: 2, Commit: 1}))
	four := configEntry(3, 2, 1, 2, 3, 4)
	c2.step(Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{{Index: 2, Term: 2, Type: EntryNoop}, four}})
	c2.ready(c2.hardState())
	require.Equal(t, uint64(3), c2.configIndex)

	c2.step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 2, Commit: 2})
	assert.Equal(t, Follower, c2.role, "its configuration is not known to be committed")
	assert.Empty(t, c2.ready(c2.hardState()).messages)

	// The leader's commit index in the message settles it.
	c2.step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 2, Commit: 3})
	assert.Equal(t, PreCandidate, c2.role)
	assert.Equal(t, uint64(3), c2.log.committed)
	msgs := msgsOf(c2.ready(c2.hardState()).messages, MsgPreVote)
	require.Len(t, msgs, 3, "it asks the voters of the configuration with 4")
	for _, m := range msgs {
		assert.Equal(t, campaignTransfer, campaignKind(m.Context), "voters hear it despite their lease")
	}
}

func TestTransfer_3_10_TargetTakesOverWithPreVoteOff(t *testing.T) {
	// A transfer's election always starts with PreVote; it must work in a
	// cluster that has PreVote off.
	c1, c2, _, n := threeCores(t, withoutPreVote())
	n.elect(1)
	term := c1.term
	_, err := c1.transferLeadership(2)
	require.NoError(t, err)
	n.stabilize()
	assert.Equal(t, Leader, c2.role)
	assert.Equal(t, term+1, c2.term)
	assert.Equal(t, []uint64{2}, n.leaders())
}

func TestTransfer_3_10_LeaderHeartbeatDoesNotStopTheTargetsPreVote(t *testing.T) {
	c1, c2, c3, n, timeoutNow := transferWithHeldTimeoutNow(t)
	n.drop = nil

	c2.step(timeoutNow)
	require.Equal(t, PreCandidate, c2.role)
	preVotes := msgsOf(n.collect(2), MsgPreVote)
	require.NotEmpty(t, preVotes)
	// A heartbeat of the leader overtakes the answers.
	for i := 0; i < c1.heartbeatTicks; i++ {
		c1.tick()
	}
	for _, m := range msgsOf(n.collect(1), MsgHeartbeat) {
		if m.To == 2 {
			c2.step(m)
		}
	}
	assert.Equal(t, PreCandidate, c2.role, "the leader that asked for the election does not cancel it")
	for _, m := range preVotes {
		n.cores[m.To].step(m)
	}
	n.stabilize()
	assert.Equal(t, Leader, c2.role)
	assert.NotEqual(t, Leader, c3.role)
}

func TestTransfer_RefusesProposalsAndMembershipChangesWithItsOwnError(t *testing.T) {
	c1, _, _, n, _ := transferWithHeldTimeoutNow(t)

	_, _, err := c1.propose(cmd("x"))
	assert.ErrorIs(t, err, ErrTransferInProgress)
	assert.NotErrorIs(t, err, ErrBusy, "ErrBusy means the log or state machine is behind")
	_, _, changed, err := c1.changeMembers(addMember(4, "", true))
	assert.ErrorIs(t, err, ErrTransferInProgress)
	assert.False(t, changed)
	assert.Equal(t, uint64(1), c1.configIndex, "no configuration entry was appended")

	// Given up, with the voiding entry not yet committed: proposals are
	// taken again, membership changes still wait.
	n.drop = func(m Message) bool { return m.Type == MsgTimeoutNow || m.Type == MsgAppendResp }
	abandonTransfer(t, n, c1)
	n.stabilize()
	_, _, err = c1.propose(cmd("y"))
	assert.NoError(t, err)
	_, _, _, err = c1.changeMembers(addMember(4, "", true))
	assert.ErrorIs(t, err, ErrTransferInProgress)

	n.drop = nil
	c1.tick() // a heartbeat round restarts replication
	n.stabilize()
	require.False(t, c1.transferring())
	_, _, changed, err = c1.changeMembers(addMember(4, "", true))
	assert.NoError(t, err)
	assert.True(t, changed)
}

// timeoutNowHolder is a Transport that keeps every MsgTimeoutNow instead of
// sending it, for a test to deliver late.
type timeoutNowHolder struct {
	Transport
	mu      sync.Mutex
	held    []Message
	holding chan struct{} // if set, signalled for each message held
}

func (h *timeoutNowHolder) Send(msgs []Message) {
	var out []Message
	h.mu.Lock()
	for _, m := range msgs {
		if m.Type == MsgTimeoutNow {
			h.held = append(h.held, m)
			if h.holding != nil {
				select {
				case h.holding <- struct{}{}:
				default:
				}
			}
		} else {
			out = append(out, m)
		}
	}
	h.mu.Unlock()
	h.Transport.Send(out)
}

func (h *timeoutNowHolder) taken() []Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Message(nil), h.held...)
}

// startHoldingCluster starts three nodes whose transports hold every
// MsgTimeoutNow, and returns them once one leads and has committed its no-op.
// A transfer is abandoned after electionTimeout (0: fastConfig's).
func startHoldingCluster(t *testing.T, nw *InmemNetwork, electionTimeout time.Duration) (nodes map[uint64]*Node, holders map[uint64]*timeoutNowHolder, leader uint64) {
	t.Helper()
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes, holders = map[uint64]*Node{}, map[uint64]*timeoutNowHolder{}
	for _, m := range members {
		holders[m.ID] = &timeoutNowHolder{Transport: nw.Transport(m.ID), holding: make(chan struct{}, 1)}
		cfg := fastConfig(t, m.ID, members)
		if electionTimeout > 0 {
			cfg.ElectionTimeout, cfg.HeartbeatInterval = electionTimeout, electionTimeout/10
		}
		n, err := NewNode(cfg, &recordingSM{}, NewMemoryStorage(), holders[m.ID])
		require.NoError(t, err)
		nodes[m.ID] = n
		t.Cleanup(func() { n.Close() })
	}
	require.Eventually(t, func() bool {
		for id, n := range nodes {
			if s := n.Status(); s.Role == Leader && s.CommitIndex > 1 {
				leader = id
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond)
	return nodes, holders, leader
}

func TestCluster_TransferOutcomeStaysUnknownWhileTheTargetIsCutOff(t *testing.T) {
	// The target is cut off right after the leader asked it to campaign: the
	// message may still arrive, so the transfer is not reported abandoned.
	nw := NewInmemNetwork()
	t.Cleanup(nw.Close)
	nodes, holders, leader := startHoldingCluster(t, nw, 0)
	target := leader%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*nodes[leader].cfg.ElectionTimeout)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- nodes[leader].TransferLeadership(ctx, target) }()
	select {
	case <-holders[leader].holding:
	case <-ctx.Done():
		t.Fatal("the leader never asked the target to campaign")
	}
	nw.Isolate(target)
	err := <-result
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrTransferFailed)
	assert.ErrorContains(t, err, "outcome unknown")
	s := nodes[leader].Status()
	assert.Equal(t, Leader, s.Role, "the leader gave the transfer up and leads on")
}

func TestCluster_TransferAbandonedIsNotUndoneByALateTimeoutNow(t *testing.T) {
	nw := NewInmemNetwork()
	t.Cleanup(nw.Close)
	nodes, holders, leader := startHoldingCluster(t, nw, 0)
	target := leader%3 + 1
	term := nodes[leader].Status().Term
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := nodes[leader].TransferLeadership(ctx, target)
	require.ErrorIs(t, err, ErrTransferFailed)
	assert.Contains(t, err.Error(), "abandoned")
	late := holders[leader].taken()
	require.NotEmpty(t, late, "the leader asked the target to campaign")
	res, err := nodes[leader].Propose(ctx, []byte("after"))
	require.NoError(t, err, "proposals are taken again")

	// The message arrives now. The target steps it before the call below
	// runs (the event loop steps messages before calls), and must not have
	// moved to a new term (it may be in a PreVote round the others refuse).
	holders[leader].Transport.Send(late[:1])
	var targetTerm uint64
	var targetRole Role
	require.NoError(t, nodes[target].call(ctx, func() { targetTerm, targetRole = nodes[target].core.term, nodes[target].core.role }))
	assert.Equal(t, term, targetTerm)
	assert.NotEqual(t, Candidate, targetRole)
	s := nodes[leader].Status()
	assert.Equal(t, Leader, s.Role)
	assert.Equal(t, term, s.Term)
	assert.GreaterOrEqual(t, s.CommitIndex, res.(uint64))
}

func TestCluster_ProposalsAndMembershipChangesDuringATransferGetTheirOwnError(t *testing.T) {
	nw := NewInmemNetwork()
	t.Cleanup(nw.Close)
	// Long enough that the transfer is still on when the calls below run.
	nodes, holders, leader := startHoldingCluster(t, nw, time.Second)
	target := leader%3 + 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- nodes[leader].TransferLeadership(ctx, target) }()
	<-holders[leader].holding

	_, err := nodes[leader].Propose(ctx, []byte("x"))
	assert.ErrorIs(t, err, ErrTransferInProgress)
	assert.NotErrorIs(t, err, ErrBusy)
	_, err = nodes[leader].ProposeAsync([]byte("x"))
	assert.ErrorIs(t, err, ErrTransferInProgress)
	assert.ErrorIs(t, nodes[leader].AddLearner(ctx, 4, ""), ErrTransferInProgress)
	assert.ErrorIs(t, nodes[leader].RemoveMember(ctx, target), ErrTransferInProgress)

	assert.ErrorIs(t, <-result, ErrTransferFailed, "nothing reached the target: abandoned")
	_, err = nodes[leader].Propose(ctx, []byte("y"))
	assert.NoError(t, err)
	assert.NoError(t, nodes[leader].AddLearner(ctx, 4, ""))
}

// TestTransfer_Randomized_AbandonedTransferNeverTakesEffect drives cores
// through random ticks, proposals and leadership transfers over a network
// that drops, duplicates, delays and reorders messages, and checks after
// every step that at most one node leads each term and that a node wins a
// transfer's election only while the leader of the previous term has not yet
// settled that transfer (what TransferLeadership reports as abandoned).
// RAFT_SEED replays a run. With MsgTimeoutNow acted on unconditionally (the
// earlier rule) it fails in every run of 60; without the rule that new
// entries end a transfer's PreVote round, in most.
func TestTransfer_Randomized_AbandonedTransferNeverTakesEffect(t *testing.T) {
	seed := envSeed()
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with RAFT_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	runs, steps := 60, 3000
	if testing.Short() {
		runs = 5
	}
	for run := 0; run < runs; run++ {
		voters := []uint64{1, 2, 3}
		if run%2 == 1 {
			voters = []uint64{1, 2, 3, 4, 5}
		}
		runTransferChaos(t, rng, voters, steps)
		if t.Failed() {
			t.Fatalf("run %d failed; seed %d", run, seed)
		}
	}
}

// transferRecord is what the checker knows of one target's transfers in a term.
type transferRecord struct{ settled bool }

func runTransferChaos(t *testing.T, rng *rand.Rand, voters []uint64, steps int) {
	t.Helper()
	var cores []*core
	for _, id := range voters {
		cores = append(cores, newTestCore(t, id, voters))
	}
	n := newCoreNet(t, cores...)
	var flight []Message
	// late holds messages delayed for long, until the step in due: any
	// message now and then, and MsgTimeoutNow often, so that some arrive
	// after their transfer was given up.
	type lateMsg struct {
		m   Message
		due int
	}
	var late []lateMsg
	step := 0
	leaderOf := map[uint64]uint64{}                      // term -> leader
	transfers := map[uint64]map[uint64]*transferRecord{} // term -> target -> record
	collect := func() {
		for _, id := range n.ids() {
			for _, m := range n.collect(id) {
				if rng.Intn(100) < 3 || m.Type == MsgTimeoutNow && rng.Intn(4) != 0 {
					late = append(late, lateMsg{m, step + 20 + rng.Intn(400)})
				} else {
					flight = append(flight, m)
				}
			}
		}
		late = slices.DeleteFunc(late, func(l lateMsg) bool {
			if l.due <= step {
				flight = append(flight, l.m)
				return true
			}
			return false
		})
	}
	leader := func() *core {
		for _, c := range cores {
			if c.role == Leader {
				return c
			}
		}
		return nil
	}
	started, won := 0, 0
	defer func() {
		t.Logf("%d voters: %d transfers started, %d won, %d terms", len(voters), started, won, len(leaderOf))
	}()
	for ; step < steps; step++ {
		switch r := rng.Intn(100); {
		case r < 65 && len(flight) > 0:
			// Mostly one of the newest messages, sometimes any: messages
			// are reordered, and some stay in flight for long.
			i := len(flight) - 1 - rng.Intn(min(len(flight), 8))
			if rng.Intn(10) == 0 {
				i = rng.Intn(len(flight))
			}
			m := flight[i]
			switch d := rng.Intn(100); {
			case d < 5: // dropped
				flight = slices.Delete(flight, i, i+1)
			case d < 10: // duplicated: a copy stays in flight
				n.cores[m.To].step(m)
			default:
				flight = slices.Delete(flight, i, i+1)
				n.cores[m.To].step(m)
			}
		case r < 85:
			cores[rng.Intn(len(cores))].tick()
		case r < 93:
			if l := leader(); l != nil {
				l.propose(cmd("x"))
			}
		case r < 95:
			// Demote or promote a member: membership changes must wait for
			// transfers, and transfers must work in any configuration.
			if l := leader(); l != nil {
				id := voters[rng.Intn(len(voters))]
				l.changeMembers(addMember(id, "", rng.Intn(2) == 0))
			}
		default:
			if l := leader(); l != nil && rng.Intn(4) == 0 {
				to := voters[rng.Intn(len(voters))]
				if got, err := l.transferLeadership(to); err == nil && got != l.id {
					if transfers[l.term] == nil {
						transfers[l.term] = map[uint64]*transferRecord{}
					}
					transfers[l.term][got] = &transferRecord{}
					started++
				}
			}
		}
		collect()

		for _, c := range cores {
			if c.role != Leader {
				continue
			}
			if prev, ok := leaderOf[c.term]; ok {
				require.Equal(t, prev, c.id, "step %d: two leaders in term %d", step, c.term)
				for target, rec := range transfers[c.term] {
					if c.transferSettled(target) {
						rec.settled = true
					}
				}
				continue
			}
			leaderOf[c.term] = c.id
			if c.campaignKind != campaignTransfer {
				continue
			}
			won++
			rec := transfers[c.term-1][c.id]
			require.NotNil(t, rec, "step %d: %d won a transfer election in term %d that nobody asked for", step, c.id, c.term)
			require.False(t, rec.settled, "step %d: %d won term %d through a transfer that term %d's leader had settled",
				step, c.id, c.term, c.term-1)
		}
	}
}

// TestCluster_AbandonedTransferIsReportedWhileAnEarlierTargetIsCutOff: a
// transfer to x, whose MsgTimeoutNow went out, is replaced by one to y, and
// x is cut off, so it never receives the entry that voids the earlier
// message. When the transfer to y is abandoned too, its caller learns so:
// only y's own fence decides, not the fence of a target that cannot be
// reached.
func TestCluster_AbandonedTransferIsReportedWhileAnEarlierTargetIsCutOff(t *testing.T) {
	nw := NewInmemNetwork()
	t.Cleanup(nw.Close)
	nodes, holders, leader := startHoldingCluster(t, nw, 0)
	x := leader%3 + 1
	y := x%3 + 1
	et := nodes[leader].cfg.ElectionTimeout
	ctx, cancel := context.WithTimeout(context.Background(), 20*et)
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- nodes[leader].TransferLeadership(ctx, x) }()
	select {
	case <-holders[leader].holding:
	case <-ctx.Done():
		t.Fatal("the leader never asked x to campaign")
	}
	nw.Isolate(x)
	err := nodes[leader].TransferLeadership(ctx, y)
	require.ErrorIs(t, err, ErrTransferFailed, "y's transfer was abandoned and y holds its fence")
	require.NoError(t, ctx.Err(), "answered before the deadline")
	cancel()
	assert.Error(t, <-first, "x's transfer did not succeed")
}

// A MsgTimeoutNow that is lost is sent again: the leader keeps its transfer
// going on later ticks, and the target takes over (dissertation §3.10).
func TestTransfer_3_10_LostTimeoutNowIsResent(t *testing.T) {
	c1, c2, _, n := threeCores(t)
	n.elect(1)
	dropped := false
	n.drop = func(m Message) bool {
		if m.Type == MsgTimeoutNow && !dropped {
			dropped = true
			return true
		}
		return false
	}
	_, err := c1.transferLeadership(2)
	require.NoError(t, err)
	n.stabilize()
	require.True(t, dropped)
	for i := 0; i < c1.electionTicks && c2.role != Leader; i++ {
		c1.tick()
		n.stabilize()
	}
	assert.Equal(t, Leader, c2.role)
}
