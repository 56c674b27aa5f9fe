package raft

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMembership_4_1_OneChangeAtATime(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp } // nothing commits
	_, _, changed, err := c1.changeMembers(addMember(4, "", false))
	require.NoError(t, err)
	require.True(t, changed)
	assert.True(t, c1.voters.contains(4), "a configuration is used as soon as it is appended")
	_, _, _, err = c1.changeMembers(addMember(5, "", false))
	assert.ErrorIs(t, err, ErrMembershipChange)
}

// A change that is still uncommitted is not done: proposing it again is
// refused as a change in progress, not reported as a no-op (§4.1: one change
// at a time).
func TestMembership_PendingChangeIsNotReportedDone(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(Message) bool { return true }
	_, _, changed, err := c1.changeMembers(addMember(4, "", false))
	require.NoError(t, err)
	require.True(t, changed)
	_, _, changed, err = c1.changeMembers(addMember(4, "", false))
	assert.False(t, changed)
	assert.ErrorIs(t, err, ErrMembershipChange, "the same change, still uncommitted, is not done")
}

func TestMembership_4_1_WaitsForLeadersFirstCommit(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp } // the no-op cannot commit
	n.elect(1)
	_, _, _, err := c1.changeMembers(addMember(4, "", false))
	assert.ErrorIs(t, err, ErrMembershipChange)
}

func TestMembership_4_1_TruncatedConfigReverts(t *testing.T) {
	// A follower that appended a configuration entry which the new leader
	// overwrites goes back to the previous configuration.
	c := newTestCore(t, 2, []uint64{1, 2, 3}, withHardState(HardState{Term: 2, Commit: 1}))
	four := configEntry(2, 2, 1, 2, 3, 4)
	c.step(Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{four}})
	require.True(t, c.voters.contains(4))
	c.step(Message{Type: MsgAppend, From: 3, To: 2, Term: 3, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 3, Type: EntryNoop}}})
	assert.False(t, c.voters.contains(4))
	assert.Equal(t, uint64(1), c.configIndex)
}

func TestMembership_RemovedLeaderStepsDown_4_2_2(t *testing.T) {
	c1, c2, _, n := threeCores(t)
	n.elect(1)
	_, _, changed, err := c1.changeMembers(removeMember(1))
	require.NoError(t, err)
	require.True(t, changed)
	n.stabilize()
	assert.Equal(t, Follower, c1.role)
	assert.False(t, c2.voters.contains(1))
	assert.GreaterOrEqual(t, c2.log.committed, c1.configIndex, "the removal committed before the leader left")
}

func TestMembership_4_2_3_PeersIncludeLeavingMembersUntilCommitted(t *testing.T) {
	c1, c2, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp } // the removal cannot commit
	_, _, _, err := c1.changeMembers(removeMember(3))
	require.NoError(t, err)
	n.stabilize()
	ids := func(members []Member) []uint64 {
		var out []uint64
		for _, m := range members {
			out = append(out, m.ID)
		}
		slices.Sort(out)
		return out
	}
	require.Equal(t, []uint64{1, 2}, ids(c2.members), "the follower appended the removal")
	assert.Equal(t, []uint64{1, 2, 3}, ids(c1.peerMembers()), "the leader")
	assert.Equal(t, []uint64{1, 2, 3}, ids(c2.peerMembers()), "a follower")

	n.drop = nil
	n.tickUntil(1, func() bool { return c2.log.committed >= c2.configIndex }) // until the leader resends
	assert.Equal(t, []uint64{1, 2}, ids(c2.peerMembers()), "a follower, once the removal committed")
	// The leader keeps the leaving member until it knows of its removal.
	n.tickUntil(1, func() bool { return len(c1.leaving) == 0 })
	assert.Equal(t, []uint64{1, 2}, ids(c1.peerMembers()))
}

// TestMembership_4_2_3_LeavingMemberLearnsItsRemovalWhenTheCommitIsLost:
// the append that carries the commit of a removal to the member leaving is
// lost (over TCP the transport used to drop it with the lane). The leader
// keeps sending to the member, and keeps it a peer, until the member
// reports a commit index that covers its removal; then it stops.
func TestMembership_4_2_3_LeavingMemberLearnsItsRemovalWhenTheCommitIsLost(t *testing.T) {
	c1, _, c3, n := threeCores(t)
	n.elect(1)
	index, _, _, err := c1.changeMembers(removeMember(3))
	require.NoError(t, err)
	n.drop = func(m Message) bool { return m.To == 3 && m.Commit >= index }
	n.stabilize()
	require.GreaterOrEqual(t, c1.log.committed, index, "the removal committed")
	require.Less(t, c3.log.committed, index, "the leaving member has not heard of it")
	assert.Contains(t, c1.replicaIDs(), uint64(3), "the leader still sends to it")
	assert.True(t, slices.ContainsFunc(c1.peerMembers(), func(m Member) bool { return m.ID == 3 }), "and keeps it a peer")

	n.drop = nil
	n.tickUntil(1, func() bool { return len(c1.leaving) == 0 })
	assert.GreaterOrEqual(t, c3.log.committed, index, "a heartbeat told it")
	assert.NotContains(t, c1.replicaIDs(), uint64(3))
	assert.False(t, slices.ContainsFunc(c1.peerMembers(), func(m Member) bool { return m.ID == 3 }))
}

// TestMembership_4_2_3_LeavingMemberGivenUpAfterTwoElectionTimeouts: a
// member that is down when its removal commits is not sent to for ever.
func TestMembership_4_2_3_LeavingMemberGivenUpAfterTwoElectionTimeouts(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	index, _, _, err := c1.changeMembers(removeMember(3))
	require.NoError(t, err)
	n.drop = func(m Message) bool { return m.To == 3 }
	n.stabilize()
	require.GreaterOrEqual(t, c1.log.committed, index)
	ticks := 0
	n.tickUntil(1, func() bool { ticks++; return len(c1.leaving) == 0 })
	assert.GreaterOrEqual(t, ticks, 2*c1.electionTicks)
	assert.NotContains(t, c1.replicaIDs(), uint64(3))
}

// TestMembership_4_2_3_NewLeaderSendsToLeavingMember: a leader elected while
// a removal is uncommitted sends the log to the member leaving, as its
// predecessor did, so that it learns of its removal.
func TestMembership_4_2_3_NewLeaderSendsToLeavingMember(t *testing.T) {
	voters := []uint64{1, 2, 3, 4}
	c1, c2, c3, c4 := newTestCore(t, 1, voters), newTestCore(t, 2, voters), newTestCore(t, 3, voters), newTestCore(t, 4, voters)
	n := newCoreNet(t, c1, c2, c3, c4)
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp && m.To == 1 }
	_, _, _, err := c1.changeMembers(removeMember(4))
	require.NoError(t, err)
	n.stabilize()
	require.False(t, c4.isVoter(), "4 appended its removal")
	require.Less(t, c4.log.committed, c4.configIndex, "which is not committed")
	delete(n.cores, 1) // the leader is gone
	n.drop = nil
	for i := 0; c2.role != Leader; i++ {
		require.Less(t, i, 1000, "2 never won")
		for _, c := range []*core{c2, c3, c4} {
			c.tick() // the others leave their lease too
		}
		n.stabilize()
	}
	n.tickUntil(2, func() bool { return len(c2.leaving) == 0 })
	assert.GreaterOrEqual(t, c4.log.committed, c4.configIndex, "it learned that its removal committed")
}

func TestMembership_NeverLeavesNoVoter(t *testing.T) {
	c1 := newTestCore(t, 1, []uint64{1})
	n := newCoreNet(t, c1)
	n.elect(1)
	_, _, _, err := c1.changeMembers(removeMember(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

// memberCluster is a cluster of Nodes over one of the transports, so that
// the membership tests run over the in-memory network and over TCP alike:
// TCPTransport only reaches the members it is given and the nodes that
// connected to it, and the in-memory network models the same.
type memberCluster struct {
	*testCluster
	// addEmpty starts node id with empty storage and no members, as a node
	// about to be added, and returns the address to add it with.
	addEmpty func(id uint64) string
	// droppedUnknownPeer counts the messages the transports dropped for
	// want of an address.
	droppedUnknownPeer func() uint64
}

var memberClusterTransports = []struct {
	name  string
	start func(t *testing.T, n int) *memberCluster
}{
	{"inmem", func(t *testing.T, n int) *memberCluster {
		// Nodes added later start empty, knowing no cluster.
		c := newTestCluster(t, n, withConfig(func(cfg *Config) {
			if cfg.ID > uint64(n) {
				cfg.InitialMembers = nil
			}
		}))
		return &memberCluster{testCluster: c,
			addEmpty: func(id uint64) string {
				c.ids = append(c.ids, id)
				c.storages[id] = NewMemoryStorage()
				c.start(id)
				return ""
			},
			droppedUnknownPeer: func() uint64 { return c.net.Stats().DroppedUnknownPeer },
		}
	}},
	{"tcp", func(t *testing.T, n int) *memberCluster {
		c := newTCPCluster(t, n)
		return &memberCluster{testCluster: c.testCluster,
			addEmpty: func(id uint64) string {
				c.listen(id, "127.0.0.1:0")
				c.storages[id] = NewMemoryStorage()
				c.sms[id] = &recordingSM{}
				node, err := NewNode(fastConfig(t, id, nil), c.sms[id], c.storages[id], c.transports[id])
				require.NoError(t, err)
				c.nodes[id] = node
				c.ids = append(c.ids, id)
				return c.addrs[id]
			},
			droppedUnknownPeer: func() uint64 {
				var n uint64
				for _, tr := range c.transports {
					n += tr.Stats().DroppedUnknownPeer
				}
				return n
			},
		}
	}},
}

func TestCluster_AddLearnerPromoteAndRemove(t *testing.T) {
	for _, tr := range memberClusterTransports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.start(t, 3)
			for i := 0; i < 20; i++ {
				c.propose(fmt.Sprint(i))
			}
			// Node 4 starts empty, knowing no cluster.
			addr := c.addEmpty(4)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			leader := c.waitLeader(1, 2, 3)
			require.NoError(t, c.nodes[leader].AddLearner(ctx, 4, addr))
			last := c.propose("after learner")
			c.waitApplied(4, last)
			assert.Len(t, c.sms[4].entries(), 21, "the learner received the whole log")
			require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, addr))
			require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, addr), "adding a voter again is a no-op")
			require.Eventually(t, func() bool { return len(c.nodes[4].Status().Members) == 4 && !c.nodes[4].Status().Members[3].Learner }, 5*time.Second, time.Millisecond)

			// Remove the leader itself: another node takes over.
			require.NoError(t, c.nodes[leader].RemoveMember(ctx, leader))
			rest := c.others(leader)
			newLeader := c.waitLeader(rest...)
			assert.NotEqual(t, leader, newLeader)
			res, err := c.nodes[newLeader].Propose(ctx, []byte("after removal"))
			require.NoError(t, err)
			for _, id := range rest {
				c.waitApplied(id, res.(uint64))
			}
			c.checkSameHistory()
		})
	}
}

func TestCluster_LeaderRemovesItself_4_2_2(t *testing.T) {
	// The leader keeps leading (and the others keep answering it) until its
	// removal commits; then it steps down, the others elect a leader among
	// themselves after about an election timeout, and the old leader,
	// no longer a voter, never campaigns.
	const electionTimeout = 100 * time.Millisecond // fastConfig's
	for _, tr := range memberClusterTransports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.start(t, 3)
			c.propose("before")
			leader := c.waitLeader()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, c.nodes[leader].RemoveMember(ctx, leader), "the removal commits")
			removed := time.Now()
			rest := c.others(leader)
			newLeader := c.waitLeader(rest...)
			took := time.Since(removed)
			t.Logf("new leader %d after %v", newLeader, took)
			// The others campaign when their randomized timeout (one to two
			// election timeouts after the last heartbeat) expires; the rest
			// of the bound is room for the election's round trips on a
			// loaded machine.
			assert.Less(t, took, 5*electionTimeout, "the others took %v to elect a leader", took)
			assert.Equal(t, Follower, c.nodes[leader].Status().Role)

			res, err := c.nodes[newLeader].Propose(ctx, []byte("after removal"))
			require.NoError(t, err, "writes go on")
			for _, id := range rest {
				c.waitApplied(id, res.(uint64))
			}
			oldTerm, newTerm := c.nodes[leader].Status().Term, c.nodes[newLeader].Status().Term
			// Never may run its last check after it returns: the check reads
			// no map that the cleanup modifies.
			old, others := c.nodes[leader], []*Node{}
			for _, id := range rest {
				others = append(others, c.nodes[id])
			}
			assert.Never(t, func() bool {
				if old.Status().Term != oldTerm {
					return true
				}
				for _, n := range others {
					if n.Status().Term != newTerm {
						return true
					}
				}
				return false
			}, 5*electionTimeout, 5*time.Millisecond, "the removed leader campaigned, or the others' terms moved")
			assert.Zero(t, c.droppedUnknownPeer(), "a message went to a node without an address")
			c.checkSameHistory()
		})
	}
}

// peersRecorder is a Transport that records the IDs of every SetPeers.
type peersRecorder struct {
	Transport
	mu    sync.Mutex
	calls [][]uint64
}

func (r *peersRecorder) SetPeers(members []Member) {
	var ids []uint64
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	r.mu.Lock()
	r.calls = append(r.calls, ids)
	r.mu.Unlock()
	r.Transport.SetPeers(members)
}

// since returns the calls after the first n.
func (r *peersRecorder) since(n int) [][]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls[n:])
}

func (r *peersRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func TestNode_PeersKeepLeavingMembersUntilTheRemovalCommits_4_2_2(t *testing.T) {
	// The Node gives its transport the members of the committed and of the
	// latest configuration: a transport that stops sending to a node as
	// soon as it leaves the latest configuration (as TCPTransport does)
	// must still reach it until its removal commits, so that the leader
	// keeps sending it the log (dissertation §4.2.3) and the followers
	// keep answering a leader that is removing itself (§4.2.2).
	recorders := map[uint64]*peersRecorder{}
	c := newTestCluster(t, 3, withTransportWrapper(func(id uint64, tr Transport) Transport {
		recorders[id] = &peersRecorder{Transport: tr}
		return recorders[id]
	}))
	leader := c.waitLeader()
	rest := c.others(leader)
	removed, follower := rest[0], rest[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The leader removes a follower.
	before := map[uint64]int{leader: recorders[leader].count(), follower: recorders[follower].count()}
	require.NoError(t, c.nodes[leader].RemoveMember(ctx, removed))
	c.waitApplied(follower, c.nodes[leader].Status().CommitIndex)
	remaining := []uint64{min(leader, follower), max(leader, follower)}
	require.Eventually(t, func() bool { return len(recorders[follower].since(before[follower])) == 2 }, 5*time.Second, time.Millisecond,
		"want one SetPeers when the removal is appended and one when it commits")
	assert.Equal(t, [][]uint64{{1, 2, 3}, remaining}, recorders[follower].since(before[follower]),
		"the removed node stays a peer of the follower until its removal commits")
	// The leader keeps it until it knows it was removed, which is after the
	// commit: the last call drops it, every earlier one keeps it.
	require.Eventually(t, func() bool {
		calls := recorders[leader].since(before[leader])
		return len(calls) >= 2 && slices.Equal(calls[len(calls)-1], remaining)
	}, 5*time.Second, time.Millisecond, "the leader drops the removed node once it knows of its removal")
	calls := recorders[leader].since(before[leader])
	for _, peers := range calls[:len(calls)-1] {
		assert.Equal(t, []uint64{1, 2, 3}, peers, "the leader keeps the removed node until then")
	}
	require.Eventually(t, func() bool { return c.nodes[removed].Status().Removed }, 5*time.Second, time.Millisecond)

	// The leader removes itself.
	before[follower] = recorders[follower].count()
	require.NoError(t, c.nodes[leader].RemoveMember(ctx, leader))
	require.Eventually(t, func() bool { return len(recorders[follower].since(before[follower])) == 2 }, 5*time.Second, time.Millisecond,
		"want one SetPeers when the removal is appended and one when it commits")
	assert.Equal(t, [][]uint64{remaining, {follower}}, recorders[follower].since(before[follower]),
		"the follower keeps the leaving leader as a peer until the removal commits")
}

func TestCluster_TransferLeadership(t *testing.T) {
	for _, tr := range memberClusterTransports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.start(t, 3)
			leader := c.waitLeader()
			target := c.follower(leader)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c.propose("x")
			require.NoError(t, c.nodes[leader].TransferLeadership(ctx, target))
			assert.Equal(t, target, c.waitLeader())

			// To the most up-to-date voter.
			require.NoError(t, c.nodes[target].TransferLeadership(ctx, 0))
			assert.NotEqual(t, target, c.waitLeader())
			c.propose("y")
			c.checkSameHistory()
		})
	}
}

func TestCluster_TransferLeadershipRejectsBadTarget(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	err := c.nodes[leader].TransferLeadership(context.Background(), 42)
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestMembership_4_2_3_RemovedNodeLearnsOfItsRemoval(t *testing.T) {
	c1, _, c3, n := threeCores(t)
	n.elect(1)
	_, _, changed, err := c1.changeMembers(removeMember(3))
	require.NoError(t, err)
	require.True(t, changed)
	n.stabilize()
	assert.False(t, c3.voters.contains(3), "the removed node received its removal")
	assert.False(t, c3.isVoter(), "so it will not campaign")
	assert.Nil(t, c1.progress[3], "once the removal committed, the leader forgets it")
	assert.Empty(t, c1.leaving)
	for i := 0; i < 5*c3.electionTicks; i++ {
		c3.tick()
	}
	assert.Empty(t, msgsOf(n.collect(3), MsgPreVote), "a removed node does not campaign")
}

// TestLearner_ForgetsALeaderItNoLongerHears: a learner never campaigns, so
// nothing used to make it forget a leader that is gone; it named that
// leader in every *NotLeaderError. It now forgets it after an election
// timeout without word from it, as a voter does when it campaigns.
func TestLearner_ForgetsALeaderItNoLongerHears(t *testing.T) {
	withLearner := Entry{Index: 2, Term: 1, Type: EntryConfChange,
		Data: encodeMembers([]Member{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4, Learner: true}})}
	opts := []coreOption{withEntries(withLearner), withHardState(HardState{Term: 1, Commit: 2})}
	voters := []uint64{1, 2, 3}
	c1, c4 := newTestCore(t, 1, voters, opts...), newTestCore(t, 4, voters, opts...)
	n := newCoreNet(t, c1, newTestCore(t, 2, voters, opts...), newTestCore(t, 3, voters, opts...), c4)
	n.elect(1)
	require.Equal(t, uint64(1), c4.leader)
	delete(n.cores, 1) // the leader is gone
	for i := 0; i < 2*c4.electionTicks; i++ {
		c4.tick()
		n.stabilize()
	}
	assert.Zero(t, c4.leader, "the learner no longer names the leader it cannot hear")
}
