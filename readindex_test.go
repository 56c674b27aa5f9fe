package raft

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ReadIndex (dissertation §6.4) as the runtime runs it: a read's answer
// must come from the leader the read asked, for the read it asked about.
// The core's rules are checked in raft_test.go (TestReadIndex_6_4_*).

// A follower's pending read takes its answer only from the leader it asked:
// an answer with the read's ID from another node, with an index older than a
// write acknowledged before the read began, must not complete it.
func TestReadIndex_StaleAnswerFromAnotherNodeIgnored(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.waitLeader()
	f := c.follower(leader)
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

// Each incarnation of a node numbers its reads from a new start, so that a
// late answer to a read of an earlier incarnation matches none of its own.
func TestReadIndex_IDsDifferAcrossRestarts(t *testing.T) {
	c := newTestCluster(t, 1)
	c.waitLeader()
	first := c.nodes[1].nextReadID
	c.stop(1)
	c.start(1)
	assert.NotEqual(t, first, c.nodes[1].nextReadID)
}

// A read retried while its confirmation is outstanding is not queued again:
// the leader holds one local and one remote read however often they are
// retried, and answers both once heartbeats get through.
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
