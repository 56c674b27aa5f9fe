package raft

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Joint consensus (dissertation §4.3): several voters change at once
// through a configuration that needs a majority of the old voters and one
// of the new voters for every decision.

func TestQuorumJoint(t *testing.T) {
	q := joint{incoming: majority{1, 4, 5}, outgoing: majority{1, 2, 3}}
	acks := map[uint64]uint64{1: 9, 2: 9, 3: 9, 4: 2, 5: 1}
	ack := func(id uint64) uint64 { return acks[id] }
	assert.Equal(t, uint64(2), q.committed(ack), "the new majority {1,4} has only 2")
	acks[4], acks[5], acks[2], acks[3] = 9, 9, 1, 1
	assert.Equal(t, uint64(1), q.committed(ack), "the old majority has only 1")

	assert.True(t, q.contains(2) && q.contains(4) && !q.contains(6))
	assert.Equal(t, votePending, q.vote(map[uint64]bool{1: true, 2: true, 3: true}), "only the old majority")
	assert.Equal(t, votePending, q.vote(map[uint64]bool{1: true, 4: true, 5: true}), "only the new majority")
	assert.Equal(t, voteWon, q.vote(map[uint64]bool{1: true, 2: true, 4: true}))
	assert.Equal(t, voteLost, q.vote(map[uint64]bool{4: false, 5: false}), "the new voters refused")
	assert.Equal(t, voteLost, q.vote(map[uint64]bool{1: true, 2: false, 3: false, 4: true, 5: true}), "the old voters refused")
}

func TestJointConfigEncoding(t *testing.T) {
	in := []Member{{ID: 1, Addr: "a"}, {ID: 4, Addr: "d", Meta: map[string]string{"http": "x"}}, {ID: 6, Addr: "f", Learner: true}}
	out := []Member{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}
	data := encodeConfig(in, out)
	assert.Equal(t, byte(3), data[0])
	members, outgoing, err := decodeConfig(data)
	require.NoError(t, err)
	assert.True(t, sameMembers(in, members))
	assert.True(t, sameMembers(out, outgoing))

	// Not joint: the formats earlier versions read.
	assert.Equal(t, byte(1), encodeConfig(out, nil)[0])
	_, outgoing, err = decodeConfig(encodeConfig(out, nil))
	require.NoError(t, err)
	assert.Nil(t, outgoing)

	for i := 1; i < len(data); i++ {
		_, _, err := decodeConfig(data[:i])
		assert.ErrorIs(t, err, ErrCorrupt, "truncated at %d", i)
	}
	_, _, err = decodeConfig(encodeConfig(in, []Member{{ID: 2, Learner: true}}))
	assert.ErrorIs(t, err, ErrCorrupt, "an outgoing half without voters could never commit")
	_, _, err = decodeConfig(append([]byte{4}, data[1:]...))
	assert.ErrorIs(t, err, ErrCorrupt, "a newer format")
}

// fiveCores returns cores 1 to 5, of which 1, 2 and 3 are the voters, all
// connected; 1 leads.
func fiveCores(t *testing.T) (map[uint64]*core, *coreNet) {
	t.Helper()
	cores := map[uint64]*core{}
	var list []*core
	for id := uint64(1); id <= 5; id++ {
		cores[id] = newTestCore(t, id, []uint64{1, 2, 3})
		list = append(list, cores[id])
	}
	n := newCoreNet(t, list...)
	n.elect(1)
	return cores, n
}

// tickAllUntil ticks every core until cond holds, delivering messages
// meanwhile: elections need the voters' timers to run too (they ignore
// candidates while they believe a leader is alive, §4.2.3).
func (n *coreNet) tickAllUntil(cond func() bool) {
	n.t.Helper()
	for i := 0; !cond(); i++ {
		require.Less(n.t, i, 1000, "condition never held")
		for _, id := range n.ids() {
			n.cores[id].tick()
		}
		n.stabilize()
	}
}

func voterSet(c *core) []uint64 {
	var ids []uint64
	for _, m := range c.allMembers() {
		if c.voters.contains(m.ID) {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestJoint_4_3_EveryDecisionNeedsBothMajorities(t *testing.T) {
	// {1,2,3} -> {1,4,5}: two voters in, two out. The joint entry reaches
	// only one half's voters (besides the leader, in both): it does not
	// commit until the other half's majority has it too.
	for _, only := range []struct {
		name string
		cut  [2]uint64
	}{{"the new voters", [2]uint64{2, 3}}, {"the old voters", [2]uint64{4, 5}}} {
		t.Run(only.name, func(t *testing.T) {
			cores, n := fiveCores(t)
			c1 := cores[1]
			index, _, changed, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(2), removeMember(3))
			require.NoError(t, err)
			require.True(t, changed)
			require.NotNil(t, c1.outgoing, "more than one voter changes: the configuration is joint")
			assert.Equal(t, []uint64{1, 2, 3, 4, 5}, voterSet(c1), "both halves vote, from the moment it is appended")

			cut := func(m Message) bool {
				return slices.Contains(only.cut[:], m.From) || slices.Contains(only.cut[:], m.To)
			}
			n.drop = cut
			n.tickUntil(1, func() bool {
				for _, id := range []uint64{2, 3, 4, 5} {
					if !slices.Contains(only.cut[:], id) && cores[id].log.lastIndex() < index {
						return false
					}
				}
				return true
			})
			n.stabilize()
			assert.Less(t, c1.log.committed, index, "committed with one half's majority alone")

			n.drop = nil
			n.tickUntil(1, func() bool { return c1.outgoing == nil && c1.configIndex <= c1.log.committed })
			assert.Greater(t, c1.configIndex, index, "the leader left the joint configuration by itself")
			assert.Equal(t, []uint64{1, 4, 5}, voterSet(c1))
			n.tickUntil(1, func() bool {
				for _, id := range []uint64{2, 3, 4, 5} {
					if cores[id].log.committed < c1.configIndex {
						return false
					}
				}
				return true
			})
			for _, id := range []uint64{2, 3, 4, 5} {
				assert.Nil(t, cores[id].outgoing, "node %d", id)
				assert.Equal(t, []uint64{1, 4, 5}, voterSet(cores[id]), "node %d", id)
			}
		})
	}
}

func TestJoint_4_3_OneVoterChangeTakesTheSingleServerPath(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	_, _, changed, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", true))
	require.NoError(t, err)
	require.True(t, changed)
	assert.Nil(t, c1.outgoing, "one voter and one learner: not joint")
	n.stabilize()
	assert.Equal(t, []uint64{1, 2, 3, 4}, voterSet(c1))

	// A change that undoes itself is no change.
	_, _, changed, err = c1.changeMembers(addMember(6, "", false), removeMember(6))
	require.NoError(t, err)
	assert.False(t, changed)
}

func TestJoint_4_3_NoOtherChangeUntilLeft(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp }
	_, _, _, err := c1.changeMembers(addMember(4, "", false), removeMember(3))
	require.NoError(t, err)
	_, _, _, err = c1.changeMembers(addMember(5, "", false))
	assert.ErrorIs(t, err, ErrMembershipChange, "joint and uncommitted")
}

// A leader that the change removes leads through the joint configuration
// and steps down once the new one commits (§4.2.2, §4.3).
func TestJoint_4_3_LeaderRemovedByTheChangeStepsDownAtTheEnd(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	_, _, _, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(1))
	require.NoError(t, err)
	require.NotNil(t, c1.outgoing)
	n.stabilize()
	assert.Equal(t, Follower, c1.role, "stepped down once the new configuration committed")
	assert.Nil(t, c1.outgoing)
	for _, id := range []uint64{2, 3, 4, 5} {
		assert.GreaterOrEqual(t, cores[id].log.committed, c1.configIndex, "node %d knows the change committed", id)
		assert.Equal(t, []uint64{2, 3, 4, 5}, voterSet(cores[id]))
	}
	delete(n.cores, 1)
	n.tickAllUntil(func() bool { return len(n.leaders()) == 1 })
	assert.NotEqual(t, uint64(1), n.leaders()[0])
}

// A leader elected while the cluster is joint finishes the change: once it
// has committed an entry of its term, it appends the new configuration.
func TestJoint_4_3_NewLeaderFinishesLeaving(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	index, _, _, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(2), removeMember(3))
	require.NoError(t, err)
	// The joint entry commits, but the leader dies before anyone hears of
	// the entry that leaves it.
	n.drop = func(m Message) bool {
		return m.From == 1 && m.Type == MsgAppend && len(m.Entries) > 0 && m.Entries[0].Index > index
	}
	n.stabilize()
	require.GreaterOrEqual(t, c1.log.committed, index)
	require.Greater(t, c1.configIndex, index, "the leader appended the leave")
	delete(n.cores, 1)
	n.drop = nil
	for _, id := range []uint64{2, 3, 4, 5} {
		require.NotNil(t, cores[id].outgoing, "node %d is still joint", id)
	}
	n.tickAllUntil(func() bool { return len(n.leaders()) == 1 && cores[n.leaders()[0]].outgoing == nil })
	l := cores[n.leaders()[0]]
	n.tickUntil(l.id, func() bool { return l.configIndex <= l.log.committed })
	assert.Equal(t, []uint64{1, 4, 5}, voterSet(l))
}

// The joint configuration survives a restart (reloadConfig from the log) and
// a snapshot taken while joint.
func TestJoint_4_3_JointConfigurationIsRestored(t *testing.T) {
	in := []Member{{ID: 1}, {ID: 4}, {ID: 5}}
	out := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	jointEntry := Entry{Index: 2, Term: 1, Type: EntryConfChange, Data: encodeConfig(in, out)}
	c := newTestCore(t, 4, []uint64{1, 2, 3}, withEntries(jointEntry))
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, voterSet(c))
	assert.True(t, sameMembers(out, c.outgoing))

	// A snapshot at the joint entry, through FileStorage's snapshot format.
	dir := t.TempDir()
	st, err := OpenFileStorage(dir)
	require.NoError(t, err)
	meta := SnapshotMeta{Index: 2, Term: 1, Members: in, Outgoing: out}
	require.NoError(t, st.SaveSnapshot(meta, strings.NewReader("")))
	require.NoError(t, st.Close())
	st, err = OpenFileStorage(dir)
	require.NoError(t, err)
	defer st.Close()
	got, rc, err := st.Snapshot()
	require.NoError(t, err)
	rc.Close()
	assert.True(t, sameMembers(out, got.Outgoing), "the outgoing half is stored")
	c2, err := newCore(coreConfig{id: 5, electionTicks: 10, heartbeatTicks: 1, firstIndex: 3, firstTerm: 1, snapshot: got,
		hardState: HardState{Term: 1, Commit: 2}, maxInflight: 1, maxUncommittedEntries: 1, maxUncommittedBytes: 1})
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, voterSet(c2))
	assert.Equal(t, uint64(2), c2.configIndex)
}

func memberIDs(members []Member) []uint64 {
	ids := make([]uint64, 0, len(members))
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestCluster_ChangeMembershipReplacesVoters replaces a follower and then
// the leader, each with one call, over the in-memory network and TCP.
func TestCluster_ChangeMembershipReplacesVoters(t *testing.T) {
	for _, tr := range memberClusterTransports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.start(t, 3)
			c.propose("before")
			leader := c.waitLeader(1, 2, 3)
			gone := c.follower(leader)
			addr4 := c.addEmpty(4)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, c.nodes[leader].ChangeMembership(ctx,
				MemberChange{Op: ChangeAddVoter, Member: Member{ID: 4, Addr: addr4}},
				MemberChange{Op: ChangeRemove, Member: Member{ID: gone}}))
			st := c.nodes[leader].Status()
			assert.Nil(t, st.Outgoing, "the call returns once the cluster has left the joint configuration")
			want := []uint64{4}
			for _, id := range []uint64{1, 2, 3} {
				if id != gone {
					want = append(want, id)
				}
			}
			slices.Sort(want)
			assert.Equal(t, want, memberIDs(st.Members))
			require.Eventually(t, func() bool { return c.nodes[gone].Status().Removed }, 5*time.Second, time.Millisecond,
				"the replaced node learns of its removal")
			last := c.propose("after the follower's replacement")
			for _, id := range want {
				c.waitApplied(id, last)
			}

			// Now the leader replaces itself: it leads until the end of the
			// change, then steps down, and one of the others takes over.
			addr5 := c.addEmpty(5)
			require.NoError(t, c.nodes[leader].ChangeMembership(ctx,
				MemberChange{Op: ChangeAddVoter, Member: Member{ID: 5, Addr: addr5}},
				MemberChange{Op: ChangeRemove, Member: Member{ID: leader}}))
			rest := slices.DeleteFunc(append(slices.Clone(want), 5), func(id uint64) bool { return id == leader })
			newLeader := c.waitLeader(rest...)
			res, err := c.nodes[newLeader].Propose(ctx, []byte("after the leader's replacement"))
			require.NoError(t, err)
			for _, id := range rest {
				c.waitApplied(id, res.(uint64))
				st := c.nodes[id].Status()
				assert.Equal(t, rest, memberIDs(st.Members), "node %d", id)
				assert.Nil(t, st.Outgoing, "node %d", id)
			}
			require.Eventually(t, func() bool { return c.nodes[leader].Status().Removed }, 5*time.Second, time.Millisecond)
			assert.Zero(t, c.droppedUnknownPeer(), "a message went to a node without an address")
			c.checkSameHistory()
		})
	}
}

func TestNode_ChangeMembershipRefusesBadInput(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	n := c.nodes[leader]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, changes := range map[string][]MemberChange{
		"the same member twice": {{Op: ChangeAddVoter, Member: Member{ID: 4}}, {Op: ChangeRemove, Member: Member{ID: 4}}},
		"unknown op":            {{Op: 0, Member: Member{ID: 4}}},
		"member ID 0":           {{Op: ChangeAddVoter, Member: Member{ID: 0}}},
		"no voter left":         {{Op: ChangeRemove, Member: Member{ID: 1}}, {Op: ChangeRemove, Member: Member{ID: 2}}, {Op: ChangeRemove, Member: Member{ID: 3}}},
	} {
		assert.ErrorIs(t, n.ChangeMembership(ctx, changes...), ErrInvalidConfig, name)
	}
	assert.NoError(t, n.ChangeMembership(ctx), "no change")
	assert.NoError(t, n.ChangeMembership(ctx, MemberChange{Op: ChangeAddVoter, Member: Member{ID: leader}}), "already so")
	var nle *NotLeaderError
	assert.ErrorAs(t, c.nodes[c.follower(leader)].ChangeMembership(ctx, MemberChange{Op: ChangeRemove, Member: Member{ID: leader}}), &nle)
	assert.Equal(t, []uint64{1, 2, 3}, memberIDs(n.Status().Members), "nothing changed")
	assert.Equal(t, "AddVoter", ChangeAddVoter.String())
	assert.Equal(t, "ChangeOp(9)", ChangeOp(9).String())
}

// TestTCPFileStorage_ReplaceADeadVoter is docs/operations.md's "Replace a
// dead node": over TCP on FileStorage, node 3 dies for good; one call adds
// node 4 and removes node 3 (the cluster never runs with four voters, and
// the dead node is not needed: the old majority {1,2} and the new {1,2,4}
// suffice). Then every node restarts from its directory in the new
// configuration.
func TestTCPFileStorage_ReplaceADeadVoter(t *testing.T) {
	c := newRollingCluster(t, func(cfg *Config) {
		cfg.ElectionTimeout = 200 * time.Millisecond
		cfg.HeartbeatInterval = 20 * time.Millisecond
		if cfg.ID == 4 {
			cfg.InitialMembers = nil // a joiner
		}
	})
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	w := c.startWriter()
	w.waitWrites(20)

	// Node 3 dies: its process stops and its disk is gone.
	if c.leader() == 3 {
		require.NoError(t, c.node(3).TransferLeadership(context.Background(), 0))
	}
	c.mu.Lock()
	dead := c.nodes[3]
	delete(c.nodes, 3)
	c.mu.Unlock()
	require.NoError(t, dead.Close())
	require.NoError(t, c.transports[3].Close())
	require.NoError(t, c.storages[3].Close())
	delete(c.transports, 3)
	delete(c.storages, 3)
	w.waitWrites(20)

	addr4 := c.listen(4, "127.0.0.1:0")
	c.start(4)
	c.ids = []uint64{1, 2, 4}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	require.NoError(t, c.node(c.leader()).ChangeMembership(ctx,
		MemberChange{Op: ChangeAddVoter, Member: Member{ID: 4, Addr: addr4}},
		MemberChange{Op: ChangeRemove, Member: Member{ID: 3}}))
	w.waitWrites(20)
	c.waitCaughtUp()
	writes, gap := w.finish()
	t.Logf("%d writes; longest gap %v", writes, gap)

	// Every node restarts from its directory, in the new configuration.
	for _, id := range c.ids {
		require.NoError(t, c.restart(id, closeNode))
	}
	require.Eventually(t, func() bool { return c.leader() != 0 }, 20*time.Second, time.Millisecond)
	l := c.node(c.leader())
	_, err := l.Propose(ctx, []byte("after the restart"))
	require.NoError(t, err)
	c.waitCaughtUp()
	for _, id := range c.ids {
		st := c.node(id).Status()
		assert.Equal(t, []uint64{1, 2, 4}, memberIDs(st.Members), "node %d", id)
		assert.Nil(t, st.Outgoing, "node %d", id)
		assert.Equal(t, l.Status().CommitIndex, st.AppliedIndex, "node %d", id)
	}
}

// TestJoint_RemovedNodeWithTheNewestLogCanLead: {1,2,3} -> {3,4,5}. The
// leader, 1, appends the entry that leaves the joint configuration and only
// node 2, which that entry removes, receives it; then 1 crashes. Node 2
// holds the newest log, so 3 cannot win the old half's majority without it,
// and 2 is not a voter of the configuration in its log: unless a node that
// an uncommitted configuration removes may still campaign, nobody is ever
// elected. Node 2 leads the new configuration until it commits, then steps
// down (§4.2.2).
func TestJoint_RemovedNodeWithTheNewestLogCanLead(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	index, _, _, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(1), removeMember(2))
	require.NoError(t, err)
	n.drop = func(m Message) bool {
		return m.From == 1 && m.To != 2 && m.Type == MsgAppend && len(m.Entries) > 0 && m.Entries[len(m.Entries)-1].Index > index
	}
	n.stabilize()
	require.Greater(t, c1.configIndex, index, "the leader appended the leave")
	require.Equal(t, c1.configIndex, cores[2].configIndex, "node 2 has it")
	require.Less(t, cores[2].log.committed, c1.configIndex, "uncommitted")
	for _, id := range []uint64{3, 4, 5} {
		require.NotNil(t, cores[id].outgoing, "node %d is still joint", id)
	}
	delete(n.cores, 1)
	n.drop = nil
	n.tickAllUntil(func() bool {
		for _, id := range []uint64{3, 4, 5} {
			if c := cores[id]; c.outgoing != nil || c.configIndex > c.log.committed {
				return false
			}
		}
		return true
	})
	n.tickAllUntil(func() bool { return len(n.leaders()) == 1 && n.leaders()[0] != 2 })
	assert.Equal(t, Follower, cores[2].role)
	for _, id := range []uint64{3, 4, 5} {
		assert.Equal(t, []uint64{3, 4, 5}, voterSet(cores[id]), "node %d", id)
	}
}

// TestJoint_OutgoingVoterGetsTheSnapshot: {1,2,3} -> {L,4,5} while the
// outgoing half's majority needs a voter that the change removes and that is
// behind the leader's compaction point. The leader must stream it the
// snapshot (it is a voter of the joint configuration, though not of the
// incoming half), or the joint entry never commits and the cluster is stuck
// in the change for ever.
func TestJoint_OutgoingVoterGetsTheSnapshot(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4, Learner: true}, {ID: 5, Learner: true}}
	sc := newSnapCluster(t, 5, func(cfg *Config) {
		cfg.InitialMembers = members
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.HeartbeatInterval = 30 * time.Millisecond
	})
	leader := sc.waitLeader()
	var old []uint64 // the founders other than the leader
	for _, id := range []uint64{1, 2, 3} {
		if id != leader {
			old = append(old, id)
		}
	}
	blocked, lagging := old[0], old[1]
	// lagging hears nothing, and nobody hears it, without the leader being
	// told: it stays in the leader's view until it answers again.
	var blockAppends atomic.Bool
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		switch {
		case from == lagging || m.To == lagging:
			return inmemDropSilently
		case blockAppends.Load() && m.To == blocked && m.Type == MsgAppend:
			return inmemDropSilently
		}
		return inmemPass
	})
	last := sc.proposeAmong([]uint64{leader}, 80, func(i int) string { return fmt.Sprintf("command %d", i) })
	sc.waitApplied(leader, last)
	sc.snapshotNow(leader)
	first, err := sc.storages[leader].FirstIndex()
	require.NoError(t, err)
	lagLast, err := sc.storages[lagging].LastIndex()
	require.NoError(t, err)
	require.Greater(t, first, lagLast+1, "the leader compacted past what the lagging node has")

	// blocked answers heartbeats (the leader keeps its quorum for
	// CheckQuorum) but receives no entry: the old half's majority needs
	// lagging, which needs the snapshot.
	blockAppends.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- sc.nodes[leader].ChangeMembership(ctx,
			MemberChange{Op: ChangeAddVoter, Member: Member{ID: 4}}, MemberChange{Op: ChangeAddVoter, Member: Member{ID: 5}},
			MemberChange{Op: ChangeRemove, Member: Member{ID: blocked}}, MemberChange{Op: ChangeRemove, Member: Member{ID: lagging}})
	}()
	require.Eventually(t, func() bool { return sc.nodes[leader].Status().Outgoing != nil }, 5*time.Second, time.Millisecond)
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if m.To == blocked && m.Type == MsgAppend {
			return inmemDropSilently
		}
		return inmemPass
	})
	require.NoError(t, <-done, "the cluster left the joint configuration")
	assert.Positive(t, sc.lists[lagging].restored, "the outgoing voter caught up through the snapshot")
	want := []uint64{leader, 4, 5}
	slices.Sort(want)
	assert.Equal(t, want, memberIDs(sc.nodes[leader].Status().Members))
}

// TestSnapshot_RemovedMemberBehindLearnsOfItsRemoval: a member removed
// while it is behind the leader's compaction point is sent the snapshot,
// as it is sent the log, until it knows of its removal (D§4.2.3).
func TestSnapshot_RemovedMemberBehindLearnsOfItsRemoval(t *testing.T) {
	sc := newSnapCluster(t, 3, func(cfg *Config) {
		cfg.ElectionTimeout = time.Second
		cfg.HeartbeatInterval = 50 * time.Millisecond
	})
	leader := sc.waitLeader()
	lagging := sc.follower(leader)
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if from == lagging || m.To == lagging {
			return inmemDropSilently
		}
		return inmemPass
	})
	last := sc.proposeAmong([]uint64{leader}, 80, func(i int) string { return fmt.Sprintf("command %d", i) })
	sc.waitApplied(leader, last)
	sc.snapshotNow(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, sc.nodes[leader].RemoveMember(ctx, lagging))
	sc.net.setFilter(nil)
	require.Eventually(t, func() bool { return sc.nodes[lagging].Status().Removed }, 10*time.Second, time.Millisecond,
		"the removed member learns of its removal")
	assert.Positive(t, sc.lists[lagging].restored, "through the snapshot")
}

// TestJoint_EmptyOutgoingIsNotJoint: a Storage that stores SnapshotMeta in
// its own format may give back an empty, non-nil Outgoing for a snapshot
// that is not joint (a decoder that makes every list). That is no joint
// configuration: one with no outgoing voter could never elect or commit,
// and its encoding would be refused by every receiver.
func TestJoint_EmptyOutgoingIsNotJoint(t *testing.T) {
	meta := SnapshotMeta{Index: 5, Term: 2, Members: []Member{{ID: 1}}, Outgoing: []Member{}}
	c, err := newCore(coreConfig{id: 1, electionTicks: 10, heartbeatTicks: 1, firstIndex: 6, firstTerm: 2, snapshot: meta,
		hardState: HardState{Term: 2, Commit: 5}, maxInflight: 1, maxUncommittedEntries: 8, maxUncommittedBytes: 1 << 10})
	require.NoError(t, err)
	assert.Nil(t, c.outgoing)
	assert.Nil(t, c.status().outgoing)
	n := newCoreNet(t, c)
	n.elect(1)
	assert.Equal(t, Leader, c.role)

	data := encodeConfig(meta.Members, meta.Outgoing)
	assert.Equal(t, byte(1), data[0], "the format of a configuration that is not joint")
	_, _, err = decodeConfig(data)
	require.NoError(t, err)
}

// A leadership transfer while joint goes to a voter of the incoming half:
// one of the outgoing half only would lead a configuration that removes it.
// The leader does not leave the joint configuration while the transfer may
// take effect; the target, elected by both majorities, does.
func TestJoint_TransferWhileJointTheTargetLeavesIt(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	index, _, _, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(2), removeMember(3))
	require.NoError(t, err)
	_, err = c1.transferLeadership(2)
	assert.ErrorIs(t, err, ErrInvalidConfig, "a voter of the outgoing half only")
	assert.ErrorContains(t, err, "configuration being left")
	to, err := c1.transferLeadership(0)
	require.NoError(t, err)
	assert.Contains(t, []uint64{4, 5}, to, "the most up-to-date voter of the incoming half")
	n.stabilize()
	target := cores[to]
	n.tickAllUntil(func() bool {
		return target.role == Leader && target.outgoing == nil && target.configIndex <= target.log.committed
	})
	assert.Greater(t, target.configIndex, index)
	leave := target.log.entry(target.configIndex)
	assert.Equal(t, target.term, leave.Term, "the new leader left the joint configuration")
	for id, c := range cores {
		if c.log.committed >= target.configIndex {
			assert.Equal(t, []uint64{1, 4, 5}, voterSet(c), "node %d", id)
		}
	}
}

// While joint, a leader that is only in the outgoing half confirms reads
// and keeps its office (CheckQuorum) with a majority of each half, never
// with the outgoing half alone.
func TestJoint_ReadIndexAndCheckQuorumNeedBothHalves(t *testing.T) {
	joint := func(t *testing.T) (*core, *coreNet) {
		cores, n := fiveCores(t)
		c1 := cores[1]
		_, _, _, err := c1.changeMembers(addMember(4, "", false), addMember(5, "", false), removeMember(1), removeMember(3))
		require.NoError(t, err)
		require.NotNil(t, c1.outgoing)
		n.drop = func(m Message) bool { return m.From == 4 || m.To == 4 || m.From == 5 || m.To == 5 }
		n.stabilize()
		require.NotNil(t, c1.outgoing, "still joint: the new voters have not acknowledged it")
		return c1, n
	}
	t.Run("ReadIndex", func(t *testing.T) {
		c1, n := joint(t)
		c1.readIndex(77)
		for i := 0; i < c1.electionTicks/2; i++ {
			c1.tick()
			n.stabilize()
		}
		assert.Empty(t, n.reads[1], "a read confirmed by the outgoing half alone")
		n.drop = nil
		n.tickUntil(1, func() bool { return len(n.reads[1]) > 0 })
		assert.Equal(t, uint64(77), n.reads[1][0].id)
		assert.NoError(t, n.reads[1][0].err)
	})
	t.Run("CheckQuorum", func(t *testing.T) {
		c1, n := joint(t)
		for i := 0; i < 2*c1.electionTicks && c1.role == Leader; i++ {
			c1.tick()
			n.stabilize()
		}
		assert.Equal(t, Follower, c1.role, "the incoming half is silent: the leader steps down")
	})
}

// One call promotes the learner 4 and demotes the leader, 1: two voter
// changes, so a joint configuration in which 1 still votes (in the outgoing
// half). 1 leads until the new configuration commits, then steps down and
// stays a learner: it neither campaigns nor counts for quorum.
func TestJoint_PromoteALearnerAndDemoteTheLeaderInOneChange(t *testing.T) {
	cores, n := fiveCores(t)
	c1 := cores[1]
	_, _, _, err := c1.changeMembers(addMember(4, "", true))
	require.NoError(t, err)
	n.stabilize()
	require.Equal(t, []uint64{1, 2, 3}, voterSet(c1))

	_, _, _, err = c1.changeMembers(addMember(4, "", false), addMember(1, "", true))
	require.NoError(t, err)
	require.NotNil(t, c1.outgoing)
	assert.Equal(t, []uint64{1, 2, 3, 4}, voterSet(c1), "1 votes in the outgoing half, 4 in the incoming one")
	n.stabilize()
	assert.Equal(t, Follower, c1.role, "demoted: stepped down once the new configuration committed")
	for _, id := range []uint64{1, 2, 3, 4} {
		c := cores[id]
		assert.Nil(t, c.outgoing, "node %d", id)
		assert.Equal(t, []uint64{2, 3, 4}, voterSet(c), "node %d", id)
		m, ok := c.member(1)
		assert.True(t, ok && m.Learner, "node %d: 1 is a learner", id)
	}
	assert.False(t, c1.mayCampaign())
	n.tickAllUntil(func() bool { return len(n.leaders()) == 1 })
	assert.NotEqual(t, uint64(1), n.leaders()[0])
}

// A node that an uncommitted configuration removes may campaign (see
// mayCampaign). One removed while cut off, which never learned that its
// removal committed and which the leader gave up on, must not disrupt the
// cluster when it comes back: CheckQuorum's lease makes the voters ignore
// it while their leader is alive.
func TestJoint_RemovedNodeThatMissedTheCommitDoesNotDisruptAHealthyCluster(t *testing.T) {
	cores, n := fiveCores(t)
	c1, c3 := cores[1], cores[3]
	index, _, _, err := c1.changeMembers(removeMember(3))
	require.NoError(t, err)
	// 3 receives the entry, never the commit.
	n.drop = func(m Message) bool { return m.To == 3 && m.Commit >= index || m.From == 3 && m.Index > index }
	n.stabilize()
	require.Equal(t, index, c3.configIndex)
	require.Less(t, c3.log.committed, index)
	n.drop = func(m Message) bool { return m.To == 3 || m.From == 3 }
	n.tickAllUntil(func() bool { return c1.status().leavingMembers == 0 })
	require.True(t, c3.mayCampaign(), "it does not know that its removal committed")

	n.drop = nil
	term := c1.term
	for i := 0; i < 10*c1.electionTicks; i++ {
		for _, id := range n.ids() {
			n.cores[id].tick()
		}
		n.stabilize()
	}
	assert.Equal(t, []uint64{1}, n.leaders())
	assert.Equal(t, term, c1.term, "the removed node raised nobody's term")
}

// RecoverCluster on survivors whose last configuration is joint: the
// recovered configuration is not joint, so the survivors elect and commit
// on their own, and keep the entries any of them held.
func TestJoint_RecoverClusterFromAJointConfiguration(t *testing.T) {
	in := []Member{{ID: 1}, {ID: 4}, {ID: 5}}
	out := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	log := []Entry{
		configEntry(1, 1, 1, 2, 3),
		{Index: 2, Term: 2, Type: EntryNoop},
		{Index: 3, Term: 2, Type: EntryCommand, Data: cmd("a")},
		{Index: 4, Term: 2, Type: EntryConfChange, Data: encodeConfig(in, out)},
		{Index: 5, Term: 2, Type: EntryCommand, Data: cmd("b")},
	}
	survivors := []Member{{ID: 1}, {ID: 2}}
	var cores []*core
	for _, id := range []uint64{1, 2} {
		st := NewMemoryStorage()
		ents := log
		if id == 2 {
			ents = log[:4] // 2 lacks the last entry
		}
		require.NoError(t, st.Save(HardState{Term: 2, Vote: 1, Commit: 3}, ents))
		require.NoError(t, RecoverCluster(st, survivors))
		loaded, err := loadStorage(Config{ID: id}, st, simSM{})
		require.NoError(t, err)
		c, err := newCore(coreConfig{id: id, electionTicks: 10, heartbeatTicks: 1, preVote: true, checkQuorum: true,
			maxInflight: 8, maxAppendBytes: 1 << 20, maxUncommittedEntries: 64, maxUncommittedBytes: 1 << 20, seed: int64(id),
			hardState: loaded.hs, firstIndex: loaded.first, firstTerm: loaded.firstTerm, entries: loaded.entries, snapshot: loaded.snap})
		require.NoError(t, err)
		assert.Nil(t, c.outgoing, "node %d", id)
		assert.Equal(t, []uint64{1, 2}, voterSet(c), "node %d", id)
		cores = append(cores, c)
	}
	n := newCoreNet(t, cores...)
	n.tickAllUntil(func() bool { return len(n.leaders()) == 1 })
	l := n.cores[n.leaders()[0]]
	assert.Equal(t, uint64(1), l.id, "the most up-to-date survivor")
	n.tickUntil(l.id, func() bool { return l.configIndex <= l.log.committed && cores[1].log.committed == l.log.committed })
	assert.Equal(t, cmd("b"), l.log.entry(5).Data)
	assert.Nil(t, cores[1].outgoing)
}

// A snapshot taken while the cluster is joint stores both halves, and a
// node that installs it is joint too, until the cluster leaves.
func TestJoint_SnapshotTakenWhileJointIsInstalledJoint(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4, Learner: true}, {ID: 5, Learner: true}}
	sc := newSnapCluster(t, 5, func(cfg *Config) {
		cfg.InitialMembers = members
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.HeartbeatInterval = 30 * time.Millisecond
	})
	leader := sc.waitLeader()
	var old []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != leader {
			old = append(old, id)
		}
	}
	// 4 hears nothing while the leader moves on and compacts.
	var jointIndex atomic.Uint64
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		switch {
		case from == 4 || m.To == 4:
			return inmemDropSilently
		case m.To == 5 && m.Type == MsgAppend && jointIndex.Load() != 0 && m.Index+uint64(len(m.Entries)) > jointIndex.Load():
			// 5 acknowledges the joint entry, not the one that leaves it.
			return inmemDropSilently
		}
		return inmemPass
	})
	last := sc.proposeAmong([]uint64{leader}, 80, func(i int) string { return fmt.Sprintf("command %d", i) })
	sc.waitApplied(leader, last)

	// The joint configuration commits ({leader, 5} of the new voters), but
	// the cluster cannot leave it: 4 is cut off and 5 gets no further entry.
	jointIndex.Store(last + 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- sc.nodes[leader].ChangeMembership(ctx,
			MemberChange{Op: ChangeAddVoter, Member: Member{ID: 4}}, MemberChange{Op: ChangeAddVoter, Member: Member{ID: 5}},
			MemberChange{Op: ChangeRemove, Member: Member{ID: old[0]}}, MemberChange{Op: ChangeRemove, Member: Member{ID: old[1]}})
	}()
	sc.waitApplied(leader, last+1)
	meta, _ := sc.snapshotNow(leader)
	require.Equal(t, last+1, meta.Index, "taken at the joint entry")
	assert.Equal(t, []uint64{leader, 4, 5}, sortedIDs(meta.Members))
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, sortedIDs(meta.Outgoing), "the snapshot stores the outgoing half")
	first, err := sc.storages[leader].FirstIndex()
	require.NoError(t, err)
	lag, err := sc.storages[4].LastIndex()
	require.NoError(t, err)
	require.Greater(t, first, lag+1, "4 needs the snapshot")

	// 4 comes back and installs the snapshot (still without the entry
	// that leaves): it is joint.
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if (m.To == 4 || m.To == 5) && m.Type == MsgAppend && m.Index+uint64(len(m.Entries)) > jointIndex.Load() {
			return inmemDropSilently
		}
		return inmemPass
	})
	// The state machine may report the restored index a moment before the
	// event loop, which installs the snapshot's configuration, publishes
	// its Status: wait for both.
	require.Eventually(t, func() bool {
		st := sc.nodes[4].Status()
		return st.AppliedIndex >= last+1 && st.Outgoing != nil
	}, 10*time.Second, time.Millisecond, "4 installed the snapshot and is joint: %+v", sc.nodes[4].Status())
	assert.Positive(t, sc.lists[4].restored, "4 caught up through the snapshot")
	st := sc.nodes[4].Status()
	assert.Equal(t, []uint64{leader, 4, 5}, sortedIDs(st.Members))
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, sortedIDs(st.Outgoing), "installed joint")

	// Then the cluster leaves the joint configuration.
	sc.net.setFilter(nil)
	require.NoError(t, <-done)
	require.Eventually(t, func() bool {
		st := sc.nodes[4].Status()
		return st.Outgoing == nil && st.CommitIndex > last+1
	}, 10*time.Second, time.Millisecond)
	assert.Equal(t, []uint64{leader, 4, 5}, sortedIDs(sc.nodes[4].Status().Members))
}

func sortedIDs(members []Member) []uint64 {
	ids := memberIDs(members)
	slices.Sort(ids)
	return ids
}

// ChangeMembership returns once the cluster has left the joint
// configuration, also when the leader that made the change loses office
// before the entry that leaves it commits: the next leader leaves it, and
// the call sees it through its own log. If ctx ends first, the error says
// that the joint configuration committed.
func TestCluster_ChangeMembershipSurvivesALeaderChangeWhileJoint(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4, Learner: true}, {ID: 5, Learner: true}}
	setup := func(t *testing.T) (c *testCluster, leader, jointIndex uint64, changes []MemberChange) {
		c = newTestCluster(t, 5, withConfig(func(cfg *Config) { cfg.InitialMembers = members }))
		leader = c.waitLeader()
		var old []uint64
		for _, id := range []uint64{1, 2, 3} {
			if id != leader {
				old = append(old, id)
			}
		}
		c.propose("before")
		jointIndex = c.nodes[leader].Status().LastIndex + 1
		// Nobody receives the entry that leaves the joint configuration.
		c.net.setFilter(func(from uint64, m *Message) inmemVerdict {
			if from == leader && m.Type == MsgAppend && m.Index+uint64(len(m.Entries)) > jointIndex {
				return inmemDropSilently
			}
			return inmemPass
		})
		changes = []MemberChange{{Op: ChangeAddVoter, Member: Member{ID: 4}}, {Op: ChangeAddVoter, Member: Member{ID: 5}},
			{Op: ChangeRemove, Member: Member{ID: old[0]}}, {Op: ChangeRemove, Member: Member{ID: old[1]}}}
		return c, leader, jointIndex, changes
	}
	t.Run("context ends", func(t *testing.T) {
		c, leader, jointIndex, changes := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err := c.nodes[leader].ChangeMembership(ctx, changes...)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "has not yet left")
		assert.Equal(t, jointIndex, c.nodes[leader].Status().CommitIndex, "the joint entry committed")
	})
	t.Run("leader changes", func(t *testing.T) {
		c, leader, jointIndex, changes := setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.nodes[leader].ChangeMembership(ctx, changes...) }()
		require.Eventually(t, func() bool { return c.nodes[leader].Status().CommitIndex >= jointIndex }, 5*time.Second, time.Millisecond)
		// The leader is cut off; another, elected by both halves, leaves
		// the joint configuration. The leader's own leave entry is
		// replaced when it hears from the new leader.
		term := c.nodes[leader].Status().Term
		c.net.Isolate(leader)
		c.net.setFilter(nil)
		c.waitLeader(4, 5)
		c.net.Heal()
		require.NoError(t, <-done)
		want := []uint64{leader, 4, 5}
		slices.Sort(want)
		st := c.nodes[leader].Status()
		assert.Equal(t, want, memberIDs(st.Members))
		assert.Nil(t, st.Outgoing)
		assert.Greater(t, st.Term, term, "another leader ended the change")
	})
}

// A leader elected while the cluster is joint leaves the joint
// configuration only once it has committed an entry of its own term (as
// for any configuration change, §4.1 and its errata): before that, its
// knowledge of what committed may be stale.
func TestJoint_4_3_NewLeaderLeavesOnlyAfterItsFirstCommit(t *testing.T) {
	in := []Member{{ID: 1}, {ID: 2}, {ID: 4}}
	out := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	jointEntry := Entry{Index: 2, Term: 1, Type: EntryConfChange, Data: encodeConfig(in, out)}
	var cores []*core
	for _, id := range []uint64{1, 2, 3, 4} {
		cores = append(cores, newTestCore(t, id, []uint64{1, 2, 3}, withEntries(jointEntry), withHardState(HardState{Term: 1, Commit: 2})))
	}
	n := newCoreNet(t, cores...)
	c1 := cores[0]
	n.drop = func(m Message) bool { return m.Type == MsgAppendResp } // the no-op cannot commit
	n.tickUntil(1, func() bool { return c1.role == Leader })
	n.stabilize()
	require.GreaterOrEqual(t, c1.log.committed, uint64(2), "the joint entry is known committed")
	assert.NotNil(t, c1.outgoing, "left the joint configuration before committing an entry of its term")
	assert.Equal(t, uint64(2), c1.configIndex)

	n.drop = nil
	n.tickUntil(1, func() bool { return c1.outgoing == nil && c1.configIndex <= c1.log.committed })
	assert.Equal(t, []uint64{1, 2, 4}, voterSet(c1))
}
