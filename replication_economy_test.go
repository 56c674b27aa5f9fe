package raft

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func withHeartbeatTicks(n int) coreOption {
	return func(c *coreConfig) { c.heartbeatTicks = n }
}

// countAppends counts, from now on, the appends the leader sends, with and
// without entries.
func countAppends(n *coreNet, leader uint64) (withEntries, commitOnly *int) {
	withEntries, commitOnly = new(int), new(int)
	n.drop = func(m Message) bool {
		if m.Type == MsgAppend && m.From == leader {
			if len(m.Entries) > 0 {
				*withEntries++
			} else {
				*commitOnly++
			}
		}
		return false
	}
	return withEntries, commitOnly
}

// A new commit index rides on the next append (Raft §5.3: a follower's
// commit index only decides when it applies), so one proposal at a time
// costs one append per follower, not one with the entry and one with the
// commit index.
func TestReplication_5_3_CommitIndexRidesOnTheNextAppend(t *testing.T) {
	c1, c2, c3, n := threeCores(t)
	n.elect(1)
	withEntries, commitOnly := countAppends(n, 1)
	const proposals = 12
	for i := range proposals {
		_, _, err := c1.propose(cmd(fmt.Sprint(i)))
		require.NoError(t, err)
		n.stabilize()
	}
	assert.Equal(t, 2*proposals, *withEntries, "one append with the entry per follower and proposal")
	assert.Equal(t, 0, *commitOnly, "no append only to carry the commit index")
	for _, f := range []*core{c2, c3} {
		assert.Equal(t, c1.log.committed-1, f.log.committed, "a follower knows all but the last commit index")
	}
}

// With no further proposal, a follower still learns the commit index by the
// leader's next tick, whether or not a heartbeat is due on it: its apply lag
// is at most one tick, and never a heartbeat interval.
func TestReplication_5_3_FollowerLearnsTheCommitIndexByTheNextTick(t *testing.T) {
	for _, hb := range []int{1, 3} {
		t.Run(fmt.Sprintf("heartbeatTicks=%d", hb), func(t *testing.T) {
			c1, c2, c3, n := threeCores(t, withHeartbeatTicks(hb))
			n.elect(1)
			for i := range 2 * hb {
				_, _, err := c1.propose(cmd("x"))
				require.NoError(t, err)
				n.stabilize()
				require.Less(t, c2.log.committed, c1.log.committed)
				c1.tick()
				n.stabilize()
				for _, f := range []*core{c2, c3} {
					require.Equal(t, c1.log.committed, f.log.committed, "after proposal %d, a follower learns the commit index on the next tick", i)
					require.Equal(t, c1.log.committed, n.applied[f.id][len(n.applied[f.id])-1].Index, "and applies it")
				}
			}
		})
	}
}

// A follower's read waits for it to apply up to the read index: the leader
// sends it the commit index along with the answer instead of leaving it to
// the next tick, for ReadIndex and lease reads alike.
func TestReplication_FollowerReadDoesNotWaitForTheCommitIndex(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			c1, c2, _, n := leaseCores(t)
			_, _, err := c1.propose(cmd("x"))
			require.NoError(t, err)
			n.stabilize()
			require.Less(t, c2.log.committed, c1.log.committed)
			require.True(t, c1.leaseValid())
			c2.read(7, lease)
			n.stabilize()
			require.Len(t, n.reads[2], 1)
			r := n.reads[2][0]
			require.NoError(t, r.err)
			assert.Equal(t, c1.log.committed, r.index)
			assert.GreaterOrEqual(t, c2.log.committed, r.index, "the follower can apply up to the read index without waiting for a tick")
		})
	}
}

// tickStampSM records, for each entry it applies, how many heartbeats the
// leader had sent by then.
type tickStampSM struct {
	discardSM
	heartbeats *atomic.Int64
	mu         sync.Mutex
	at         map[uint64]int64
}

func (s *tickStampSM) Apply(e Entry) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at[e.Index] = s.heartbeats.Load()
	return nil
}

func (s *tickStampSM) stamp(index uint64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.at[index]
	return h, ok
}

// An idle leader sends the commit index shortly after it advances instead
// of at its next tick: with no further proposal, a follower applies the last
// committed entry within the runtime's short grace period, not a tick
// (here 100 ms) later. Heartbeats go out on every tick, so the leader's
// heartbeats to a follower count its ticks: the test proposes just after
// one, and each follower must have applied the entry before the next.
func TestReplication_5_3_IdleLeaderSendsTheCommitIndexBeforeItsNextTick(t *testing.T) {
	var heartbeats atomic.Int64
	sms := map[uint64]*tickStampSM{}
	var smsMu sync.Mutex
	c := newTestCluster(t, 3,
		withConfig(func(cfg *Config) { cfg.ElectionTimeout, cfg.HeartbeatInterval = time.Second, 100*time.Millisecond }),
		withStateMachines(func(id uint64) StateMachine {
			smsMu.Lock()
			defer smsMu.Unlock()
			sms[id] = &tickStampSM{heartbeats: &heartbeats, at: map[uint64]int64{}}
			return sms[id]
		}))
	leader := c.waitLeader()
	// One heartbeat per tick: the leader's heartbeats to one follower.
	counted := c.follower(leader)
	ticked := make(chan struct{}, 1)
	c.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if from == leader && m.To == counted && m.Type == MsgHeartbeat {
			heartbeats.Add(1)
			select {
			case ticked <- struct{}{}:
			default:
			}
		}
		return inmemPass
	})
	for i := range 3 {
		// Just after a tick of the leader: the next is 100 ms away.
		select {
		case <-ticked: // a signal of an earlier tick
		default:
		}
		select {
		case <-ticked:
		case <-time.After(5 * time.Second):
			t.Fatal("the leader sent no heartbeat for 5 s")
		}
		before := heartbeats.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := c.nodes[leader].ProposeAsync(cmd(fmt.Sprint(i)))
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		cancel()
		require.NoError(t, err)
		for _, f := range c.others(leader) {
			c.waitApplied(f, p.Index)
			smsMu.Lock()
			sm := sms[f]
			smsMu.Unlock()
			at, ok := sm.stamp(p.Index)
			require.True(t, ok)
			assert.Equal(t, before, at, "proposal %d: follower %d applied entry %d only after the leader's next tick", i, f, p.Index)
		}
	}
}

// commitPending tells the runtime whether flushCommit would send anything:
// an idle leader then never wakes only to find that it owes nothing, and
// never sends to a follower that flow control holds back (a probe awaiting
// its answer), whose next append carries the commit index anyway.
func TestReplication_CommitPendingIsWhatFlushCommitSends(t *testing.T) {
	c1, c2, c3, n := threeCores(t)
	n.elect(1)
	require.True(t, c1.commitPending(), "the no-op's commit rode on no append")
	c1.flushCommit()
	n.stabilize()
	require.False(t, c1.commitPending(), "the followers know it now")
	_, _, err := c1.propose(cmd("x"))
	require.NoError(t, err)
	n.stabilize()
	require.True(t, c1.commitPending(), "the entry's commit rode on no append")

	pr := c1.progress[3]
	pr.becomeProbe(pr.match + 1)
	pr.probeSent = true
	require.True(t, c1.commitPending(), "follower 2 is owed the commit index")
	c1.flushCommit()
	msgs := n.collect(1)
	require.Len(t, msgs, 1)
	assert.Equal(t, MsgAppend, msgs[0].Type)
	assert.Equal(t, uint64(2), msgs[0].To)
	assert.Empty(t, msgs[0].Entries)
	assert.Equal(t, c1.log.committed, msgs[0].Commit)
	assert.False(t, c1.commitPending(), "follower 3's probe is awaited: its answer brings the commit index")
	c2.step(msgs[0])
	n.stabilize()
	assert.Equal(t, c1.log.committed, c2.log.committed)
	assert.Less(t, c3.log.committed, c1.log.committed)
}
