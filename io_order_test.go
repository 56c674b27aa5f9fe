package raft

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of the runtime's I/O order with the asynchronous write pipeline
// (docs/io-ordering.md): a node on a mock Storage whose writes can be held
// in flight, and a mock Transport that records what leaves and when.

// ioNode is a node on mocks; held writes block in Save until release is
// closed.
type ioNode struct {
	t       *testing.T
	n       *Node
	deliver func(Message)
	release chan struct{}

	mu     sync.Mutex
	events []string // "held", "saved" (a held write returned), "send <type> to <id>"
	sent   []Message
	answer func(m Message) // called for each message sent, outside mu
}

// newIONode starts node 1 of voters on mocks; hold picks the writes that
// stay in flight until release is closed.
func newIONode(t *testing.T, cfg Config, voters []uint64, hold func(HardState, []Entry) bool) *ioNode {
	t.Helper()
	ctrl := gomock.NewController(t)
	storage := NewMockStorage(ctrl)
	transport := NewMockTransport(ctrl)
	expectRecovery(storage, configEntry(1, 1, voters...))
	x := &ioNode{t: t, release: make(chan struct{})}
	transport.EXPECT().Attach(uint64(1), gomock.Any()).DoAndReturn(func(_ uint64, d func(Message)) error { x.deliver = d; return nil })
	transport.EXPECT().SetPeers(gomock.Any()).AnyTimes()
	transport.EXPECT().Detach()
	storage.EXPECT().Save(gomock.Any(), gomock.Any()).AnyTimes().DoAndReturn(func(hs HardState, ents []Entry) error {
		if hold(hs, ents) {
			x.record("held")
			<-x.release
			x.record("saved")
		}
		return nil
	})
	transport.EXPECT().Send(gomock.Any()).AnyTimes().Do(func(msgs []Message) {
		x.mu.Lock()
		answer := x.answer
		for _, m := range msgs {
			x.events = append(x.events, fmt.Sprintf("send %v to %d", m.Type, m.To))
			x.sent = append(x.sent, m)
		}
		x.mu.Unlock()
		if answer != nil {
			for _, m := range msgs {
				answer(m)
			}
		}
	})
	n, err := NewNode(cfg, &recordingSM{}, storage, transport)
	require.NoError(t, err)
	x.n = n
	t.Cleanup(func() {
		select {
		case <-x.release:
		default:
			close(x.release)
		}
		n.Close()
	})
	return x
}

func (x *ioNode) record(e string) {
	x.mu.Lock()
	x.events = append(x.events, e)
	x.mu.Unlock()
}

// sentOf returns the messages of type mt sent so far.
func (x *ioNode) sentOf(mt MessageType) []Message {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []Message
	for _, m := range x.sent {
		if m.Type == mt {
			out = append(out, m)
		}
	}
	return out
}

// held reports whether a held write is in flight.
func (x *ioNode) held() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.events) > 0 && indexOf(x.events, "held") >= 0 && indexOf(x.events, "saved") < 0
}

func (x *ioNode) eventsCopy() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.events...)
}

func indexOf(events []string, e string) int {
	for i, x := range events {
		if x == e {
			return i
		}
	}
	return -1
}

func TestIOOrder_FollowerAcknowledgesOnlyDurableEntries(t *testing.T) {
	// A follower's acknowledgment of an append leaves only once the entries
	// are durable (Raft Figure 2), and a heartbeat's answer, which states
	// the term of that write, waits behind it: later messages never
	// overtake an earlier one's promise. Meanwhile the event loop goes on
	// (it steps the heartbeat and learns the commit index), but applies
	// nothing that is not durable here.
	x := newIONode(t, Config{ID: 1, ElectionTimeout: time.Hour, Seed: 1}, []uint64{1, 2, 3},
		func(_ HardState, ents []Entry) bool { return len(ents) > 0 })
	x.deliver(Message{Type: MsgAppend, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{{Index: 2, Term: 2, Type: EntryCommand, Data: []byte("x")}}})
	require.Eventually(t, func() bool { return x.n.Status().Leader == 2 && x.held() }, 5*time.Second, time.Millisecond)
	x.deliver(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 2})
	require.Eventually(t, func() bool { return x.n.Status().CommitIndex == 2 }, 5*time.Second, time.Millisecond,
		"the event loop steps messages while a write is in flight")

	assert.Empty(t, x.sentOf(MsgAppendResp), "no acknowledgment before the entries are durable")
	assert.Empty(t, x.sentOf(MsgHeartbeatResp), "no answer overtakes the acknowledgment it follows")
	assert.Equal(t, uint64(1), x.n.Status().AppliedIndex, "a committed entry is applied only once durable here")

	close(x.release)
	require.Eventually(t, func() bool { return len(x.sentOf(MsgHeartbeatResp)) == 1 }, 5*time.Second, time.Millisecond)
	events := x.eventsCopy()
	saved, ack, hb := indexOf(events, "saved"), indexOf(events, "send MsgAppendResp to 2"), indexOf(events, "send MsgHeartbeatResp to 2")
	require.GreaterOrEqual(t, ack, 0, "events: %v", events)
	assert.Less(t, saved, ack, "events: %v", events)
	assert.Less(t, ack, hb, "events: %v", events)
	assert.Equal(t, uint64(2), x.sentOf(MsgAppendResp)[0].Index)
	require.Eventually(t, func() bool { return x.n.Status().AppliedIndex == 2 }, 5*time.Second, time.Millisecond)
}

func TestIOOrder_VoteLeavesOnlyOnceTermAndVoteAreDurable(t *testing.T) {
	// A vote is granted only once the term and the vote are durable (Raft
	// Figure 2: "update stable storage before responding"): a node that
	// crashed after voting but before writing could vote again in the term.
	x := newIONode(t, Config{ID: 1, ElectionTimeout: time.Hour, Seed: 1}, []uint64{1, 2, 3},
		func(hs HardState, _ []Entry) bool { return hs.Vote != 0 })
	x.deliver(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Context: uint64(campaignElection)})
	require.Eventually(t, func() bool { return x.n.Status().Term == 2 && x.held() }, 5*time.Second, time.Millisecond)
	assert.Empty(t, x.sentOf(MsgVoteResp), "no vote before it is durable")

	close(x.release)
	require.Eventually(t, func() bool { return len(x.sentOf(MsgVoteResp)) == 1 }, 5*time.Second, time.Millisecond)
	assert.False(t, x.sentOf(MsgVoteResp)[0].Reject)
	events := x.eventsCopy()
	assert.Less(t, indexOf(events, "saved"), indexOf(events, "send MsgVoteResp to 2"), "events: %v", events)
}

// newIOLeader makes node 1 of three lead: the mock transport grants its
// votes and answers its appends and heartbeats from the followers for
// which acks says so. Writes of the command "x" are held.
func newIOLeader(t *testing.T, acks func(from uint64) bool) *ioNode {
	t.Helper()
	x := newIONode(t, Config{ID: 1, ElectionTimeout: 50 * time.Millisecond, Seed: 1, DisablePreVote: true}, []uint64{1, 2, 3},
		func(_ HardState, ents []Entry) bool {
			for _, e := range ents {
				if e.Type == EntryCommand && string(e.Data) == "x" {
					return true
				}
			}
			return false
		})
	x.mu.Lock()
	x.answer = func(m Message) {
		var r Message
		switch {
		case m.Type == MsgVote:
			r = Message{Type: MsgVoteResp, From: m.To, To: 1, Term: m.Term}
		case m.Type == MsgAppend && acks(m.To):
			r = Message{Type: MsgAppendResp, From: m.To, To: 1, Term: m.Term, Index: m.Index + uint64(len(m.Entries))}
		case m.Type == MsgHeartbeat && acks(m.To):
			r = Message{Type: MsgHeartbeatResp, From: m.To, To: 1, Term: m.Term, Context: m.Context}
		default:
			return
		}
		go x.deliver(r)
	}
	x.mu.Unlock()
	require.Eventually(t, func() bool { return x.n.Status().Role == Leader }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, x.n.LinearizableRead(ctx), "the leader commits its no-op")
	return x
}

func TestIOOrder_LeaderCommitsOnDurableFollowersWhileItsOwnWriteIsInFlight(t *testing.T) {
	// The leader sends its entries before its own write ends and goes on
	// stepping the acknowledgments meanwhile: a majority of durable
	// followers commits the entry without waiting for the leader's fsync
	// (dissertation §10.2.1). The leader applies it, and answers the
	// proposal, once its own write is durable.
	x := newIOLeader(t, func(uint64) bool { return true })
	p, err := x.n.ProposeAsync([]byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return x.n.Status().CommitIndex >= p.Index }, 5*time.Second, time.Millisecond,
		"committed by the followers while the leader's write is in flight")
	assert.True(t, x.held(), "the leader's write is still in flight")
	assert.Less(t, x.n.Status().AppliedIndex, p.Index, "applied only once durable on the leader")
	select {
	case <-p.Done():
		t.Fatal("the proposal was answered before the leader's write was durable")
	default:
	}

	close(x.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = p.Wait(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, x.n.Status().AppliedIndex, p.Index)
}

func TestIOOrder_LeaderCountsItselfOnlyOnceItsWriteIsDurable(t *testing.T) {
	// With one follower of two answering, the entry needs the leader's own
	// copy to commit, and the leader counts it only once its write is
	// durable (dissertation §10.2.1): a commit must never rest on a write a
	// crash could undo.
	x := newIOLeader(t, func(from uint64) bool { return from == 2 })
	p, err := x.n.ProposeAsync([]byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, pr := range x.n.Status().Progress {
			if pr.ID == 2 && pr.Match >= p.Index {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "follower 2 acknowledged the entry")
	assert.True(t, x.held())
	assert.Less(t, x.n.Status().CommitIndex, p.Index, "not committed on one follower and an undurable leader")

	close(x.release)
	require.Eventually(t, func() bool { return x.n.Status().CommitIndex >= p.Index }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = p.Wait(ctx)
	require.NoError(t, err)
}

func TestIOOrder_SlowDiskAppliesBackPressure(t *testing.T) {
	// A leader whose disk does not finish a write cannot apply what its
	// followers commit; proposals fail with ErrBusy once
	// MaxUncommittedEntries wait to be applied, instead of queueing without
	// bound behind the disk. Once the write ends, they are answered.
	const limit = 16
	x := newIONode(t, Config{ID: 1, ElectionTimeout: 50 * time.Millisecond, Seed: 1, DisablePreVote: true, MaxUncommittedEntries: limit},
		[]uint64{1, 2, 3}, func(_ HardState, ents []Entry) bool {
			for _, e := range ents {
				if e.Type == EntryCommand {
					return true
				}
			}
			return false
		})
	x.mu.Lock()
	x.answer = func(m Message) {
		var r Message
		switch m.Type {
		case MsgVote:
			r = Message{Type: MsgVoteResp, From: m.To, To: 1, Term: m.Term}
		case MsgAppend:
			r = Message{Type: MsgAppendResp, From: m.To, To: 1, Term: m.Term, Index: m.Index + uint64(len(m.Entries))}
		case MsgHeartbeat:
			r = Message{Type: MsgHeartbeatResp, From: m.To, To: 1, Term: m.Term, Context: m.Context}
		default:
			return
		}
		go x.deliver(r)
	}
	x.mu.Unlock()
	require.Eventually(t, func() bool { return x.n.Status().Role == Leader }, 10*time.Second, time.Millisecond)

	var accepted []*Proposal
	var busy error
	for len(accepted) <= 4*limit {
		p, err := x.n.ProposeAsync([]byte("x"))
		if err != nil {
			busy = err
			break
		}
		accepted = append(accepted, p)
	}
	require.ErrorIs(t, busy, ErrBusy)
	assert.LessOrEqual(t, len(accepted), limit, "at most MaxUncommittedEntries wait for the disk")
	// The proposals were refused while unapplied; the writer goroutine may
	// not have entered Save yet, but it does, and stays there.
	require.Eventually(t, x.held, 5*time.Second, time.Millisecond, "the leader's write is held in flight")

	close(x.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range accepted {
		_, err := p.Wait(ctx)
		require.NoError(t, err)
	}
}

func TestIOOrder_ProposalCommittedBeforeItsLeaderStepsDownIsAnswered(t *testing.T) {
	// The followers commit a proposal while the leader's own write is in
	// flight, and the leader then stops leading (a higher term) before that
	// write ends. The proposal committed: it is applied once the write is
	// durable, and answered with its result, not failed with
	// ErrLeadershipLost as an uncommitted one would be.
	x := newIOLeader(t, func(uint64) bool { return true })
	p, err := x.n.ProposeAsync([]byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return x.n.Status().CommitIndex >= p.Index }, 5*time.Second, time.Millisecond)
	require.True(t, x.held())

	x.deliver(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: p.Term + 1, Commit: p.Index})
	require.Eventually(t, func() bool { return x.n.Status().Role == Follower }, 5*time.Second, time.Millisecond)
	select {
	case <-p.Done():
		_, err := p.Wait(context.Background())
		t.Fatalf("answered before its entry was durable on the leader: %v", err)
	default:
	}

	close(x.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = p.Wait(ctx)
	require.NoError(t, err)
}
