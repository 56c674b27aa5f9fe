package raft

import (
	"context"
	"fmt"
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

func TestMembership_NeverLeavesNoVoter(t *testing.T) {
	c1 := newTestCore(t, 1, []uint64{1})
	n := newCoreNet(t, c1)
	n.elect(1)
	_, _, _, err := c1.changeMembers(removeMember(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestCluster_AddLearnerPromoteAndRemove(t *testing.T) {
	c := newTestCluster(t, 3)
	for i := 0; i < 20; i++ {
		c.propose(fmt.Sprint(i))
	}
	// Node 4 starts empty, knowing no cluster.
	c.ids = append(c.ids, 4)
	c.storages[4] = NewMemoryStorage()
	base := c.cfg
	c.cfg = func(id uint64) Config {
		cfg := base(id)
		if id == 4 {
			cfg.InitialMembers = nil
		}
		return cfg
	}
	c.start(4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader := c.waitLeader(1, 2, 3)
	require.NoError(t, c.nodes[leader].AddLearner(ctx, 4, ""))
	last := c.propose("after learner")
	c.waitApplied(4, last)
	assert.Len(t, c.sms[4].entries(), 21, "the learner received the whole log")
	require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, ""))
	require.NoError(t, c.nodes[leader].AddVoter(ctx, 4, ""), "adding a voter again is a no-op")
	require.Eventually(t, func() bool { return len(c.nodes[4].Status().Members) == 4 && !c.nodes[4].Status().Members[3].Learner }, 5*time.Second, time.Millisecond)

	// Remove the leader itself: another node takes over.
	require.NoError(t, c.nodes[leader].RemoveMember(ctx, leader))
	var rest []uint64
	for _, id := range c.ids {
		if id != leader {
			rest = append(rest, id)
		}
	}
	newLeader := c.waitLeader(rest...)
	assert.NotEqual(t, leader, newLeader)
	res, err := c.nodes[newLeader].Propose(ctx, []byte("after removal"))
	require.NoError(t, err)
	for _, id := range rest {
		c.waitApplied(id, res.(uint64))
	}
	c.checkSameHistory()
}

func TestCluster_TransferLeadership(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	target := c.ids[0]
	if target == leader {
		target = c.ids[1]
	}
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
