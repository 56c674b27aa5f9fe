package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for what review of the first version found.

func TestReadIndex_StaleAnswerFromAnotherNodeIgnored(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	f := c.ids[0]
	if f == leader {
		f = c.ids[1]
	}
	oldIndex := c.propose("a")
	c.stop(f)
	c.start(f)
	c.waitApplied(f, oldIndex)
	require.Eventually(t, func() bool { return c.nodes[f].Status().Leader == leader }, 5*time.Second, time.Millisecond)
	c.net.Cut(leader, f)
	newIndex := c.propose("b")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		done <- c.nodes[f].LinearizableRead(ctx)
	}()
	var id uint64
	require.Eventually(t, func() bool {
		require.NoError(t, c.nodes[f].call(context.Background(), func() {
			for rid := range c.nodes[f].reads {
				id = rid
			}
		}))
		return id != 0
	}, 5*time.Second, time.Millisecond)
	// A stale answer with the live read's ID, but not from the leader.
	other := 6 - leader - f
	c.nodes[f].deliver(Message{Type: MsgReadIndexResp, From: other, To: f, Term: c.nodes[f].Status().Term, Index: oldIndex, Context: id})
	err := <-done
	if err == nil {
		assert.GreaterOrEqual(t, c.nodes[f].Status().AppliedIndex, newIndex, "a read must see a write acknowledged before it began")
	} else {
		// Failing is fine (f loses the leader it cannot hear); a stale
		// success is not.
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotLeader), "got %v", err)
	}
}

func TestReadIndex_IDsDifferAcrossRestarts(t *testing.T) {
	c := newTestCluster(t, 1)
	c.waitLeader()
	first := c.nodes[1].nextReadID
	c.stop(1)
	c.start(1)
	assert.NotEqual(t, first, c.nodes[1].nextReadID)
}

// blockingSM blocks every Apply until release is closed.
type blockingSM struct {
	recordingSM
	release chan struct{}
}

func (s *blockingSM) Apply(e Entry) any {
	<-s.release
	return s.recordingSM.Apply(e)
}

func (s *blockingSM) Snapshot() (Snapshot, error) { return nil, errors.New("no") }
func (s *blockingSM) Restore(io.Reader) error     { return errors.New("no") }

func TestCluster_SlowApplyDoesNotStallTheNode(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	term := c.nodes[leader].Status().Term
	// Restart the leader's peers' view: replace the leader's state machine
	// with one that blocks.
	sm := &blockingSM{release: make(chan struct{})}
	c.stop(leader)
	cfg := c.cfg(leader)
	cfg.MaxUncommittedEntries = 50
	n, err := NewNode(cfg, sm, c.storages[leader], c.net.Transport(leader))
	require.NoError(t, err)
	c.nodes[leader] = n
	defer close(sm.release)
	// Make it leader again.
	leader = c.waitLeader()
	if leader != n.cfg.ID {
		require.NoError(t, c.nodes[leader].TransferLeadership(context.Background(), n.cfg.ID))
		leader = c.waitLeader()
	}
	require.Equal(t, n.cfg.ID, leader)
	term = n.Status().Term

	// Apply is stuck: proposals pile up until back-pressure, and a Propose
	// honours its context.
	var busy error
	for i := 0; i < 200 && busy == nil; i++ {
		_, busy = n.ProposeAsync([]byte(fmt.Sprint(i)))
	}
	assert.ErrorIs(t, busy, ErrBusy)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err = n.Propose(ctx, []byte("late"))
	cancel()
	assert.Error(t, err)
	assert.Less(t, time.Since(start), time.Second)
	// The event loop still runs: leadership holds over several election
	// timeouts, since heartbeats keep flowing.
	deadline := time.Now().Add(5 * cfg.ElectionTimeout)
	for time.Now().Before(deadline) {
		s := n.Status()
		require.Equal(t, Leader, s.Role)
		require.Equal(t, term, s.Term)
		time.Sleep(10 * time.Millisecond) // sampling interval, not a wait for a condition
	}
}

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

func TestReadIndex_RetriesAreNotQueuedTwice(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	n.drop = func(m Message) bool { return m.Type == MsgHeartbeatResp }
	for i := 0; i < 5; i++ {
		c1.readIndex(7)
		c1.step(Message{Type: MsgReadIndex, From: 2, To: 1, Term: c1.term, Context: 9})
		n.stabilize()
	}
	assert.Len(t, c1.reads.pending, 2, "one local and one remote read, however often retried")
	n.drop = nil
	c1.tick()
	n.stabilize()
	assert.Empty(t, c1.reads.pending)
	assert.Empty(t, c1.reads.queued)
}
