package raft

import (
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// inmemRecorder is a deliver callback that remembers what it received and
// when.
type inmemRecorder struct {
	mu       sync.Mutex
	received []Message
	arrivals []time.Time
}

func (r *inmemRecorder) deliver(m Message) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, m)
	r.arrivals = append(r.arrivals, now)
}

func (r *inmemRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.received)
}

func (r *inmemRecorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.received)
}

// contexts returns the Context of each message received, in arrival order.
func (r *inmemRecorder) contexts() []uint64 {
	var out []uint64
	for _, m := range r.messages() {
		out = append(out, m.Context)
	}
	return out
}

type inmemTestNode struct {
	transport Transport
	recorder  *inmemRecorder
}

// inmemTestPeers lists nodes 1 to 8, the peers of every endpoint that
// attachInmemNodes attaches.
var inmemTestPeers = []Member{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}, {ID: 5}, {ID: 6}, {ID: 7}, {ID: 8}}

// attachInmemNodes attaches a recording endpoint for each id, whose peers
// are inmemTestPeers.
func attachInmemNodes(t *testing.T, nw *InmemNetwork, ids ...uint64) map[uint64]*inmemTestNode {
	t.Helper()
	nodes := make(map[uint64]*inmemTestNode, len(ids))
	for _, id := range ids {
		node := &inmemTestNode{transport: nw.Transport(id), recorder: &inmemRecorder{}}
		require.NoError(t, node.transport.Attach(id, node.recorder.deliver))
		node.transport.SetPeers(inmemTestPeers)
		t.Cleanup(node.transport.Detach)
		nodes[id] = node
	}
	return nodes
}

func inmemMsg(from, to, n uint64) Message {
	return Message{Type: MsgHeartbeat, From: from, To: to, Term: 1, Context: n}
}

// newSeededInmemNetwork builds a network with a fresh seed and logs it, so
// that a failing run can be replayed WithSeed.
func newSeededInmemNetwork(t *testing.T) *InmemNetwork {
	t.Helper()
	nw := NewInmemNetwork(WithSeed(time.Now().UnixNano()))
	t.Logf("InmemNetwork seed %d", nw.Seed())
	return nw
}

// canSend sends one message from -> to and reports whether it arrived. It
// relies on delivery being synchronous when there are no faults.
func canSend(nodes map[uint64]*inmemTestNode, from, to uint64) bool {
	before := nodes[to].recorder.count()
	nodes[from].transport.Send([]Message{inmemMsg(from, to, 0)})
	return nodes[to].recorder.count() == before+1
}

// assertReachability checks canSend for every ordered pair of distinct ids.
func assertReachability(t *testing.T, nodes map[uint64]*inmemTestNode, ids []uint64, want func(from, to uint64) bool) {
	t.Helper()
	for _, from := range ids {
		for _, to := range ids {
			if from != to {
				assert.Equal(t, want(from, to), canSend(nodes, from, to), "%d -> %d", from, to)
			}
		}
	}
}

func TestInmemNetworkDeliversBetweenAttachedEndpoints(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, 1, 2, 3)

	data := []byte("command")
	withEntries := inmemMsg(1, 2, 1)
	withEntries.Type = MsgAppend
	withEntries.Entries = []Entry{{Index: 1, Term: 1, Data: data}}
	nodes[1].transport.Send([]Message{withEntries, inmemMsg(1, 3, 2), inmemMsg(1, 2, 3)})

	// Without faults delivery happens inside Send.
	got := nodes[2].recorder.messages()
	require.Len(t, got, 2)
	assert.Equal(t, withEntries, got[0])
	assert.Same(t, &data[0], &got[0].Entries[0].Data[0], "entry data must be passed on, not copied")
	assert.Equal(t, inmemMsg(1, 2, 3), got[1])
	assert.Equal(t, []uint64{2}, nodes[3].recorder.contexts())
	assert.Zero(t, nodes[1].recorder.count())

	nodes[3].transport.SetPeers(append(slices.Clone(inmemTestPeers), Member{ID: 9}))
	nodes[3].transport.Send([]Message{inmemMsg(3, 1, 4), inmemMsg(3, 9, 5)}) // 9 has no endpoint
	assert.Equal(t, []uint64{4}, nodes[1].recorder.contexts())
	assert.Equal(t, []Message{inmemMsg(1, 3, 2), Unreachable(inmemMsg(3, 9, 5))}, nodes[3].recorder.messages(), "the loss is reported to the sender")
	nodes[2].transport.Send(nil)

	assert.Equal(t, InmemStats{Sent: 5, Delivered: 4, DroppedNoReceiver: 1, Reported: 1}, nw.Stats())
}

func TestInmemEndpointSendsOnlyToPeersAndToWhomItHeardFrom(t *testing.T) {
	// As over TCP: an endpoint reaches the members it was given and the
	// nodes that sent it something, and no one else.
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := map[uint64]*inmemTestNode{}
	for _, id := range []uint64{1, 2, 3} {
		nodes[id] = &inmemTestNode{transport: nw.Transport(id), recorder: &inmemRecorder{}}
		require.NoError(t, nodes[id].transport.Attach(id, nodes[id].recorder.deliver))
		defer nodes[id].transport.Detach()
	}
	assert.False(t, canSend(nodes, 1, 2), "no peers given yet")
	assert.Equal(t, uint64(1), nw.Stats().DroppedUnknownPeer)

	nodes[1].transport.SetPeers([]Member{{ID: 1}, {ID: 2}})
	assert.True(t, canSend(nodes, 1, 2))
	assert.False(t, canSend(nodes, 1, 3))
	assert.True(t, canSend(nodes, 2, 1), "2 heard from 1: it may answer")
	assert.False(t, canSend(nodes, 2, 3))

	// Removed from the peers: 1 still answers 2, which it heard from.
	nodes[1].transport.SetPeers([]Member{{ID: 1}})
	assert.True(t, canSend(nodes, 1, 2))
	assert.False(t, canSend(nodes, 1, 3))
	assert.Equal(t, uint64(4), nw.Stats().DroppedUnknownPeer)
	assert.Zero(t, nw.Stats().DroppedNoReceiver)

	// A restarted node's endpoint starts knowing no one.
	nodes[2].transport.Detach()
	nodes[2] = &inmemTestNode{transport: nw.Transport(2), recorder: &inmemRecorder{}}
	require.NoError(t, nodes[2].transport.Attach(2, nodes[2].recorder.deliver))
	defer nodes[2].transport.Detach()
	assert.False(t, canSend(nodes, 2, 1))
}

func TestInmemTransportAttachErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	var r inmemRecorder

	tr := nw.Transport(1)
	assert.Error(t, tr.Attach(2, r.deliver), "id of another node")
	assert.Error(t, tr.Attach(1, nil), "nil deliver")
	require.NoError(t, tr.Attach(1, r.deliver))
	assert.Error(t, tr.Attach(1, r.deliver), "attached twice")
	tr.SetPeers([]Member{{ID: 1}, {ID: 2}})
	tr.Detach()
	tr.Detach() // idempotent
	assert.ErrorIs(t, tr.Attach(1, r.deliver), errInmemDetached)

	never := nw.Transport(2)
	never.Detach() // detaching an endpoint that was never attached is harmless
	assert.ErrorIs(t, never.Attach(2, r.deliver), errInmemDetached)

	nw.Close()
	assert.ErrorIs(t, nw.Transport(3).Attach(3, r.deliver), errInmemClosed)
}

func TestInmemNetworkNoDeliveryAfterDetach(t *testing.T) {
	defer goleak.VerifyNone(t)

	t.Run("undelayed", func(t *testing.T) {
		nw := NewInmemNetwork()
		defer nw.Close()
		nodes := attachInmemNodes(t, nw, 1, 2)
		nodes[2].transport.Detach()
		nodes[1].transport.Send([]Message{inmemMsg(1, 2, 1)})
		assert.Zero(t, nodes[2].recorder.count())
		assert.Equal(t, uint64(1), nw.Stats().DroppedNoReceiver)
	})

	t.Run("delayed messages sent before Detach", func(t *testing.T) {
		nw := newSeededInmemNetwork(t)
		defer nw.Close()
		nw.SetFaults(Faults{MinDelay: 100 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
		sender := attachInmemNodes(t, nw, 1)[1]
		var detached atomic.Bool
		var before, after atomic.Int64
		receiver := nw.Transport(2)
		require.NoError(t, receiver.Attach(2, func(Message) {
			if detached.Load() {
				after.Add(1)
			} else {
				before.Add(1)
			}
		}))
		const n = 20
		for i := range uint64(n) {
			sender.transport.Send([]Message{inmemMsg(1, 2, i)})
		}
		receiver.Detach()
		detached.Store(true)

		require.Eventually(t, func() bool { return nw.Stats().Pending == 0 },
			5*time.Second, time.Millisecond)
		assert.Zero(t, after.Load(), "delivered after Detach returned")
		// Normally nothing arrives before Detach (the delay is long), but a
		// very slow machine may let a few through; they must add up.
		stats := nw.Stats()
		assert.Equal(t, uint64(before.Load()), stats.Delivered)
		assert.Equal(t, uint64(n)-stats.Delivered, stats.DroppedNoReceiver)
	})

	t.Run("Detach while messages stream in", func(t *testing.T) {
		nw := NewInmemNetwork()
		defer nw.Close()
		sender := attachInmemNodes(t, nw, 1)[1]
		var detached atomic.Bool
		var late atomic.Int64
		first := make(chan struct{})
		var firstOnce sync.Once
		receiver := nw.Transport(2)
		require.NoError(t, receiver.Attach(2, func(Message) {
			if detached.Load() {
				late.Add(1)
			}
			firstOnce.Do(func() { close(first) })
		}))

		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := uint64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sender.transport.Send([]Message{inmemMsg(1, 2, i)})
			}
		}()
		<-first
		receiver.Detach()
		detached.Store(true)
		dropped := nw.Stats().DroppedNoReceiver
		require.Eventually(t, func() bool { return nw.Stats().DroppedNoReceiver > dropped+100 },
			5*time.Second, time.Millisecond)
		close(stop)
		<-done
		assert.Zero(t, late.Load(), "delivered after Detach returned")
	})
}

func TestInmemNetworkRestart(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, 1)
	send := func(to, n uint64) { nodes[1].transport.Send([]Message{inmemMsg(1, to, n)}) }

	t.Run("after Detach", func(t *testing.T) {
		var first, second inmemRecorder
		tr := nw.Transport(2)
		require.NoError(t, tr.Attach(2, first.deliver))
		send(2, 1)
		tr.Detach()
		send(2, 2) // nobody listens

		restarted := nw.Transport(2)
		require.NoError(t, restarted.Attach(2, second.deliver))
		defer restarted.Detach()
		send(2, 3)
		assert.Equal(t, []uint64{1}, first.contexts())
		assert.Equal(t, []uint64{3}, second.contexts())
	})

	t.Run("while the old endpoint is attached", func(t *testing.T) {
		var old, replacement inmemRecorder
		oldTr := nw.Transport(3)
		require.NoError(t, oldTr.Attach(3, old.deliver))
		send(3, 1)
		newTr := nw.Transport(3)
		require.NoError(t, newTr.Attach(3, replacement.deliver))
		send(3, 2)

		// The replaced endpoint can still send.
		oldTr.Send([]Message{inmemMsg(3, 1, 7)})
		assert.Contains(t, nodes[1].recorder.contexts(), uint64(7))

		oldTr.Detach() // must not unregister the replacement
		send(3, 3)
		newTr.Detach()
		send(3, 4)
		assert.Equal(t, []uint64{1}, old.contexts())
		assert.Equal(t, []uint64{2, 3}, replacement.contexts())
	})
}

func TestInmemNetworkPartition(t *testing.T) {
	defer goleak.VerifyNone(t)
	ids := []uint64{1, 2, 3, 4, 5}
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, ids...)
	groupOf := func(groups ...[]uint64) func(from, to uint64) bool {
		return func(from, to uint64) bool {
			for _, g := range groups {
				if slices.Contains(g, from) && slices.Contains(g, to) {
					return true
				}
			}
			return false
		}
	}

	t.Run("groups; unlisted nodes are isolated", func(t *testing.T) {
		nw.Partition([]uint64{1, 2}, []uint64{3, 4}) // 5 is in no group
		assertReachability(t, nodes, ids, groupOf([]uint64{1, 2}, []uint64{3, 4}))
		assert.False(t, canSend(nodes, 5, 5), "an unlisted node cannot even reach itself")
	})

	t.Run("overlapping groups make a bridge", func(t *testing.T) {
		nw.Partition([]uint64{1, 2}, []uint64{2, 3, 4, 5})
		assertReachability(t, nodes, ids, groupOf([]uint64{1, 2}, []uint64{2, 3, 4, 5}))
	})

	t.Run("a new Partition replaces the previous one", func(t *testing.T) {
		nw.Partition([]uint64{1, 3, 5}, []uint64{2, 4})
		assertReachability(t, nodes, ids, groupOf([]uint64{1, 3, 5}, []uint64{2, 4}))
	})

	t.Run("no groups isolate everyone", func(t *testing.T) {
		nw.Partition()
		assertReachability(t, nodes, ids, func(_, _ uint64) bool { return false })
	})

	t.Run("Heal", func(t *testing.T) {
		nw.Heal()
		assertReachability(t, nodes, ids, func(_, _ uint64) bool { return true })
	})

	stats := nw.Stats()
	assert.NotZero(t, stats.DroppedByPartition)
	assert.Equal(t, stats.Sent, stats.Delivered+stats.DroppedByPartition)
}

func TestInmemNetworkIsolate(t *testing.T) {
	defer goleak.VerifyNone(t)
	ids := []uint64{1, 2, 3, 4}
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, ids...)

	nw.Isolate(3)
	assertReachability(t, nodes, ids, func(from, to uint64) bool { return from != 3 && to != 3 })

	// Isolate adds to a Partition, in either order.
	nw.Partition([]uint64{1, 2, 3}, []uint64{4})
	nw.Isolate(1)
	// Nobody can talk: 1 and 3 are isolated, which leaves 2 and 4 alone in
	// their groups.
	assertReachability(t, nodes, ids, func(_, _ uint64) bool { return false })
	nw.Partition([]uint64{1, 2, 3, 4})
	assertReachability(t, nodes, ids, func(from, to uint64) bool {
		return from != 1 && from != 3 && to != 1 && to != 3
	})

	nw.Heal()
	assertReachability(t, nodes, ids, func(_, _ uint64) bool { return true })
}

func TestInmemNetworkCut(t *testing.T) {
	defer goleak.VerifyNone(t)
	ids := []uint64{1, 2, 3}
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, ids...)

	nw.Cut(1, 2)
	assertReachability(t, nodes, ids, func(from, to uint64) bool { return from != 1 || to != 2 })

	nw.Cut(2, 1)
	nw.Cut(3, 1)
	assertReachability(t, nodes, ids, func(from, to uint64) bool {
		return !(from == 1 && to == 2) && !(from == 2 && to == 1) && !(from == 3 && to == 1)
	})

	nw.Heal()
	assertReachability(t, nodes, ids, func(_, _ uint64) bool { return true })
}

func TestInmemNetworkHealClearsPartitionIsolateAndCutButNotFaults(t *testing.T) {
	defer goleak.VerifyNone(t)
	ids := []uint64{1, 2, 3, 4}
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, ids...)

	nw.Partition([]uint64{1, 2}, []uint64{3})
	nw.Isolate(2)
	nw.Cut(3, 4)
	nw.Heal()
	assertReachability(t, nodes, ids, func(_, _ uint64) bool { return true })

	nw.SetFaults(Faults{Drop: 1})
	nw.Heal()
	assert.False(t, canSend(nodes, 1, 2), "Heal must not clear SetFaults")
	nw.SetFaults(Faults{})
	assert.True(t, canSend(nodes, 1, 2))
}

func TestInmemFaultsDrop(t *testing.T) {
	defer goleak.VerifyNone(t)
	const n = 1000
	for _, tc := range []struct {
		name      string
		drop      float64
		delivered uint64
	}{
		{"Drop=0 drops nothing", 0, n},
		{"Drop=1 drops everything", 1, 0},
		{"Drop above 1 counts as 1", 7, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := newSeededInmemNetwork(t)
			defer nw.Close()
			nodes := attachInmemNodes(t, nw, 1, 2)
			nw.SetFaults(Faults{Drop: tc.drop})
			for i := range uint64(n) {
				nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
			}
			assert.Equal(t, int(tc.delivered), nodes[2].recorder.count())
			stats := nw.Stats()
			assert.Equal(t, tc.delivered, stats.Delivered)
			assert.Equal(t, n-tc.delivered, stats.DroppedByFault)
		})
	}
}

func TestInmemFaultsDuplicate(t *testing.T) {
	defer goleak.VerifyNone(t)
	const n = 100
	sent := make([]uint64, 0, 2*n)
	for i := range uint64(n) {
		sent = append(sent, i, i)
	}

	t.Run("undelayed copies arrive back to back", func(t *testing.T) {
		nw := newSeededInmemNetwork(t)
		defer nw.Close()
		nodes := attachInmemNodes(t, nw, 1, 2)
		nw.SetFaults(Faults{Duplicate: 1})
		for i := range uint64(n) {
			nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
		}
		assert.Equal(t, sent, nodes[2].recorder.contexts())
		assert.Equal(t, uint64(n), nw.Stats().Duplicated)
	})

	t.Run("each copy has its own delay", func(t *testing.T) {
		nw := newSeededInmemNetwork(t)
		defer nw.Close()
		nodes := attachInmemNodes(t, nw, 1, 2)
		nw.SetFaults(Faults{Duplicate: 1, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
		for i := range uint64(n) {
			nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
		}
		require.Eventually(t, func() bool { return nodes[2].recorder.count() == 2*n },
			5*time.Second, time.Millisecond)
		got := nodes[2].recorder.contexts()
		slices.Sort(got)
		assert.Equal(t, sent, got)
		stats := nw.Stats()
		assert.Equal(t, uint64(2*n), stats.Delayed)
		assert.Equal(t, uint64(2*n), stats.Delivered)
	})
}

func TestInmemFaultsDelay(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := newSeededInmemNetwork(t)
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, 1, 2)
	const minDelay, maxDelay, n = 50 * time.Millisecond, 80 * time.Millisecond, 20
	nw.SetFaults(Faults{MinDelay: minDelay, MaxDelay: maxDelay})

	start := time.Now()
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = inmemMsg(1, 2, uint64(i))
	}
	nodes[1].transport.Send(msgs)
	arrived := nodes[2].recorder.count()
	if time.Since(start) < minDelay {
		assert.Zero(t, arrived, "delivered before MinDelay")
	}
	assert.Equal(t, uint64(n), nw.Stats().Pending)

	require.Eventually(t, func() bool { return nodes[2].recorder.count() == n },
		5*time.Second, time.Millisecond)
	nodes[2].recorder.mu.Lock()
	for i, at := range nodes[2].recorder.arrivals {
		assert.GreaterOrEqual(t, at.Sub(start), minDelay, "message %d", i)
	}
	nodes[2].recorder.mu.Unlock()
	assert.Equal(t, InmemStats{Sent: n, Delivered: n, Delayed: n}, nw.Stats())
}

func TestInmemFaultsUnequalDelaysReorder(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := newSeededInmemNetwork(t)
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, 1, 2)
	nw.SetFaults(Faults{MaxDelay: 20 * time.Millisecond})

	const n = 200
	for i := range uint64(n) {
		nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
	}
	require.Eventually(t, func() bool { return nodes[2].recorder.count() == n },
		5*time.Second, time.Millisecond)
	got := nodes[2].recorder.contexts()
	// With 200 random delays over 20ms, arriving in order is (almost) impossible.
	assert.False(t, slices.IsSorted(got), "messages were not reordered")
	slices.Sort(got)
	for i, c := range got {
		require.Equal(t, uint64(i), c, "every message arrives exactly once")
	}
}

func TestInmemFaultsSameSeedSameOutcome(t *testing.T) {
	defer goleak.VerifyNone(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)

	run := func(seed int64) []uint64 {
		nw := NewInmemNetwork(WithSeed(seed))
		defer nw.Close()
		require.Equal(t, seed, nw.Seed())
		nodes := attachInmemNodes(t, nw, 1, 2, 3)
		nw.SetFaults(Faults{Drop: 0.5, Duplicate: 0.2})
		for i := range uint64(500) {
			nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
		}
		// Batches draw in the same order too; messages to 3 interleave.
		for i := uint64(500); i < 1000; i += 4 {
			nodes[1].transport.Send([]Message{
				inmemMsg(1, 2, i), inmemMsg(1, 3, i+1), inmemMsg(1, 2, i+2), inmemMsg(1, 3, i+3),
			})
		}
		return append(nodes[2].recorder.contexts(), nodes[3].recorder.contexts()...)
	}

	first := run(seed)
	assert.Equal(t, first, run(seed), "same seed, different outcome")
	assert.NotEqual(t, first, run(seed+1), "a different seed should drop other messages")
	assert.Greater(t, len(first), 300, "too few delivered for Drop=0.5")
	assert.Less(t, len(first), 900, "too many delivered for Drop=0.5")
}

func TestInmemNetworkCloseStopsPendingDeliveries(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := newSeededInmemNetwork(t)
	nodes := attachInmemNodes(t, nw, 1, 2)
	nw.SetFaults(Faults{MinDelay: time.Hour, MaxDelay: 2 * time.Hour})
	const n = 50
	for i := range uint64(n) {
		nodes[1].transport.Send([]Message{inmemMsg(1, 2, i)})
	}
	require.Equal(t, uint64(n), nw.Stats().Pending)

	nw.Close()
	nw.Close() // idempotent
	assert.Equal(t, InmemStats{Sent: n, Delayed: n, DroppedNoReceiver: n}, nw.Stats())

	nw.SetFaults(Faults{})
	nodes[1].transport.Send([]Message{inmemMsg(1, 2, n)})
	assert.Zero(t, nodes[2].recorder.count())
	assert.Equal(t, uint64(n+1), nw.Stats().DroppedNoReceiver, "messages sent after Close are dropped")
	// goleak checks that no timer goroutine is left.
}

func TestInmemNetworkCloseWaitsForDeliveryUnderWay(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := newSeededInmemNetwork(t)
	sender := attachInmemNodes(t, nw, 1)[1]
	entered, release := make(chan struct{}), make(chan struct{})
	receiver := nw.Transport(2)
	require.NoError(t, receiver.Attach(2, func(Message) {
		close(entered)
		<-release // a misbehaving, blocking receiver, to catch Close in the act
	}))
	defer receiver.Detach()
	nw.SetFaults(Faults{MinDelay: time.Millisecond, MaxDelay: time.Millisecond})
	sender.transport.Send([]Message{inmemMsg(1, 2, 1)})
	<-entered

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		nw.Close()
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a delivery was under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	assert.Equal(t, uint64(1), nw.Stats().Delivered)
}

func TestInmemDeliverMaySend(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	client := attachInmemNodes(t, nw, 1)[1]
	echo := nw.Transport(2)
	require.NoError(t, echo.Attach(2, func(m Message) {
		// Reply synchronously from inside deliver: the network holds no
		// lock here, so this must not deadlock.
		echo.Send([]Message{{Type: MsgHeartbeatResp, From: 2, To: m.From, Context: m.Context}})
	}))
	defer echo.Detach()
	client.transport.Send([]Message{inmemMsg(1, 2, 1), inmemMsg(1, 2, 2)})
	assert.Equal(t, []uint64{1, 2}, client.recorder.contexts())
}

func TestInmemNetworkConcurrentUse(t *testing.T) {
	defer goleak.VerifyNone(t)
	ids := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	const perNode = 2000

	// sendAll makes every node send perNode messages to random peers, in
	// batches, from its own goroutine, while chaos runs. It returns how many
	// messages each node was sent.
	sendAll := func(t *testing.T, nw *InmemNetwork, nodes map[uint64]*inmemTestNode, chaos func(stop <-chan struct{})) map[uint64]int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		addressed := make(map[uint64]int)
		for _, from := range ids {
			wg.Go(func() {
				random := rand.New(rand.NewSource(nw.Seed() + int64(from)))
				mine := make(map[uint64]int)
				for sent := 0; sent < perNode; {
					batch := make([]Message, min(1+random.Intn(8), perNode-sent))
					for i := range batch {
						to := ids[random.Intn(len(ids))]
						batch[i] = inmemMsg(from, to, uint64(sent+i))
						mine[to]++
					}
					nodes[from].transport.Send(batch)
					sent += len(batch)
				}
				mu.Lock()
				defer mu.Unlock()
				for to, k := range mine {
					addressed[to] += k
				}
			})
		}
		stop := make(chan struct{})
		chaosDone := make(chan struct{})
		go func() {
			defer close(chaosDone)
			chaos(stop)
		}()
		wg.Wait()
		close(stop)
		<-chaosDone
		require.Eventually(t, func() bool { return nw.Stats().Pending == 0 }, 10*time.Second, time.Millisecond)
		return addressed
	}

	t.Run("perfect network", func(t *testing.T) {
		nw := newSeededInmemNetwork(t)
		defer nw.Close()
		nodes := attachInmemNodes(t, nw, ids...)
		addressed := sendAll(t, nw, nodes, func(<-chan struct{}) { _ = nw.Stats() })
		for _, id := range ids {
			assert.Equal(t, addressed[id], nodes[id].recorder.count(), "node %d", id)
		}
		total := uint64(len(ids) * perNode)
		assert.Equal(t, InmemStats{Sent: total, Delivered: total}, nw.Stats())
	})

	t.Run("faults, partitions and restarts", func(t *testing.T) {
		nw := newSeededInmemNetwork(t)
		defer nw.Close()
		nodes := attachInmemNodes(t, nw, ids...)
		nw.SetFaults(Faults{Drop: 0.1, Duplicate: 0.1, MaxDelay: time.Millisecond})
		var restartedDelivered atomic.Int64
		sendAll(t, nw, nodes, func(stop <-chan struct{}) {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch i % 5 {
				case 0:
					nw.Partition(ids[:5], ids[4:])
				case 1:
					nw.Isolate(ids[i%len(ids)])
					nw.Cut(1, 2)
				case 2:
					nw.Heal()
				case 3:
					nw.SetFaults(Faults{Drop: 0.2, Duplicate: 0.2, MaxDelay: 2 * time.Millisecond})
				case 4:
					// Restart a node: its old endpoint stops receiving.
					tr := nw.Transport(8)
					assert.NoError(t, tr.Attach(8, func(Message) { restartedDelivered.Add(1) }))
					tr.Detach()
				}
			}
		})
		stats := nw.Stats()
		received := int64(0)
		for _, id := range ids {
			received += int64(nodes[id].recorder.count())
		}
		assert.Equal(t, uint64(received+restartedDelivered.Load()), stats.Delivered+stats.Reported)
		assert.Equal(t, stats.Sent+stats.Duplicated,
			stats.Delivered+stats.DroppedByFault+stats.DroppedByPartition+stats.DroppedNoReceiver+stats.DroppedUnknownPeer)
		assert.Equal(t, uint64(len(ids)*perNode), stats.Sent)
		assert.NotZero(t, stats.DroppedByFault)
		assert.NotZero(t, stats.Duplicated)
	})
}

func TestInmemNetworkSendWithoutFaultsDoesNotAllocate(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	var received atomic.Int64
	sender := nw.Transport(1)
	require.NoError(t, sender.Attach(1, func(Message) {}))
	sender.SetPeers(inmemTestPeers)
	defer sender.Detach()
	receiver := nw.Transport(2)
	require.NoError(t, receiver.Attach(2, func(Message) { received.Add(1) }))
	defer receiver.Detach()
	batch := []Message{inmemMsg(1, 2, 1), inmemMsg(1, 2, 2), inmemMsg(1, 3, 3)}

	allocs := testing.AllocsPerRun(1000, func() { sender.Send(batch) })
	assert.Zero(t, allocs)
	assert.NotZero(t, received.Load())
}

func BenchmarkInmemNetworkSend(b *testing.B) {
	nw := NewInmemNetwork()
	defer nw.Close()
	var received atomic.Int64
	for id := uint64(1); id <= 3; id++ {
		tr := nw.Transport(id)
		require.NoError(b, tr.Attach(id, func(Message) { received.Add(1) }))
		defer tr.Detach()
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		sender := nw.Transport(1) // a replaced endpoint can still send
		sender.SetPeers(inmemTestPeers)
		batch := []Message{inmemMsg(1, 2, 1), inmemMsg(1, 3, 2)}
		for pb.Next() {
			sender.Send(batch)
		}
	})
	b.ReportMetric(float64(received.Load())/b.Elapsed().Seconds(), "msgs/s")
}

func TestInmemNetworkReportsLossesToTheSender(t *testing.T) {
	defer goleak.VerifyNone(t)
	nw := NewInmemNetwork()
	defer nw.Close()
	nodes := attachInmemNodes(t, nw, 1, 2, 3)
	chunk := func(to, offset uint64) Message {
		return Message{Type: MsgSnapshot, From: 1, To: to, Term: 1, Index: 40, Context: offset, Data: []byte("x")}
	}
	reports := func() []Message { return msgsOf(nodes[1].recorder.messages(), MsgUnreachable) }

	nw.Isolate(3)
	nodes[1].transport.Send([]Message{inmemMsg(1, 3, 1), inmemMsg(1, 3, 2), chunk(3, 0), chunk(3, 64)})
	assert.Equal(t, []Message{Unreachable(inmemMsg(1, 3, 1)), Unreachable(chunk(3, 0)), Unreachable(chunk(3, 64))}, reports(),
		"one report for the peer, and one for each snapshot chunk")
	nw.Heal()

	nw.Cut(1, 2)
	nodes[1].transport.Send([]Message{inmemMsg(1, 2, 3)})
	assert.Len(t, reports(), 4, "a cut link is reported")
	nw.Heal()

	nodes[1].transport.Send([]Message{inmemMsg(1, 9, 4)})
	assert.Len(t, reports(), 5, "a peer with no endpoint is reported")

	nw.SetFaults(Faults{Drop: 1})
	nodes[1].transport.Send([]Message{inmemMsg(1, 2, 5), chunk(2, 128)})
	got := reports()
	require.Len(t, got, 6, "of random losses only snapshot chunks are reported, as a broken connection would lose them")
	assert.Equal(t, Unreachable(chunk(2, 128)), got[5])
	assert.EqualValues(t, 6, nw.Stats().Reported)
	assert.Zero(t, nodes[2].recorder.count()+nodes[3].recorder.count())
}
