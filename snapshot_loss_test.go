package raft

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Catching up by snapshot when a chunk or the final acknowledgment is lost.

// lossElectionTimeout is the election timeout of the loss tests: long
// enough that scheduling noise on a loaded machine stays well below it.
const lossElectionTimeout = 300 * time.Millisecond

const lossChunkSize = 512

// lossSetup is a cluster whose follower lagging needs the leader's
// snapshot, which is chunks chunks long, once the network heals.
type lossSetup struct {
	sc              *snapCluster
	leader, lagging uint64
	last            uint64 // the index the lagging node must apply
	snap            SnapshotMeta
	size            uint64 // bytes of snapshot data
	chunks          int
}

func newLossSetup(t *testing.T) *lossSetup {
	t.Helper()
	sc := newSnapCluster(t, 3, func(c *Config) {
		c.ElectionTimeout = lossElectionTimeout
		c.HeartbeatInterval = lossElectionTimeout / 10
		c.SnapshotChunkSize = lossChunkSize
	})
	leader := sc.waitLeader()
	lagging, others := sc.isolateFollower(leader)
	last := sc.proposeAmong(others, 120, func(i int) string { return fmt.Sprintf("command number %03d, padded", i) })
	leader = sc.waitLeader(others...)
	sc.waitApplied(leader, last)
	// The snapshot the leader will send holds every command, so that its
	// size, and its number of chunks, is the same in every run.
	meta, data := sc.snapshotNow(leader)
	first, err := sc.storages[leader].FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(2), "the leader compacted past what the lagging node has")
	require.EqualValues(t, last, meta.Index)
	return &lossSetup{sc: sc, leader: leader, lagging: lagging, last: last, snap: meta, size: uint64(len(data)),
		chunks: (len(data) + lossChunkSize - 1) / lossChunkSize}
}

// catchUp installs filter, heals the network, commits one more command and
// returns how long the lagging node takes to apply it: the snapshot, then
// the entry after it, which the leader sends only once it knows that the
// snapshot is installed.
func (s *lossSetup) catchUp(t *testing.T, filter inmemFilter) time.Duration {
	t.Helper()
	s.sc.net.setFilter(filter)
	began := time.Now()
	s.sc.net.Heal()
	res, err := s.sc.nodes[s.leader].Propose(context.Background(), []byte("after the snapshot"))
	require.NoError(t, err)
	last := res.(uint64)
	s.sc.waitApplied(s.lagging, last)
	took := time.Since(began)
	s.sc.net.setFilter(nil)
	s.sc.waitSame(last)
	require.Positive(t, s.sc.lists[s.lagging].restored, "the lagging node caught up through a snapshot")
	return took
}

// dropChunk returns a filter that loses the first transmission of the
// chunk at position k (counted from 0) with the given verdict.
func (s *lossSetup) dropChunk(k int, verdict inmemVerdict) (inmemFilter, *atomic.Bool) {
	var dropped atomic.Bool
	return func(from uint64, m *Message) inmemVerdict {
		if m.Type == MsgSnapshot && m.To == s.lagging && m.Context == uint64(k*lossChunkSize) && dropped.CompareAndSwap(false, true) {
			return verdict
		}
		return inmemPass
	}, &dropped
}

// dropFinalAck returns a filter that loses the lagging node's
// acknowledgments of the installed snapshot: its final MsgSnapshotResp and
// the MsgAppendResp it sends with it.
func (s *lossSetup) dropFinalAck() (inmemFilter, *atomic.Int32) {
	var snapResp, appendResp atomic.Bool
	var dropped atomic.Int32
	return func(from uint64, m *Message) inmemVerdict {
		if from != s.lagging || m.To != s.leader {
			return inmemPass
		}
		if (m.Type == MsgSnapshotResp && m.Context == s.size && snapResp.CompareAndSwap(false, true)) ||
			(m.Type == MsgAppendResp && !m.Reject && m.Index >= s.snap.Index && appendResp.CompareAndSwap(false, true)) {
			dropped.Add(1)
			return inmemDropSilently
		}
		return inmemPass
	}, &dropped
}

// lossBound is how long a catch-up with one lost message may take: about
// one election timeout more than a catch-up without loss takes.
const lossBound = lossElectionTimeout + lossElectionTimeout/2

func TestSnapshot_LostChunkAtEveryPositionRecoversWithinAnElectionTimeout(t *testing.T) {
	for _, verdict := range []inmemVerdict{inmemDropSilently, inmemDropReported} {
		name := map[inmemVerdict]string{inmemDropSilently: "silent", inmemDropReported: "reported"}[verdict]
		t.Run(name, func(t *testing.T) {
			s := newLossSetup(t)
			require.GreaterOrEqual(t, s.chunks, 3, "the snapshot needs several chunks")
			for k := 0; k < s.chunks; k++ {
				t.Run(fmt.Sprint("chunk", k), func(t *testing.T) {
					if k > 0 {
						s = newLossSetup(t)
					}
					filter, dropped := s.dropChunk(k, verdict)
					took := s.catchUp(t, filter)
					require.True(t, dropped.Load(), "chunk %d of %d was sent and lost", k, s.chunks)
					t.Logf("chunk %d of %d lost (%s): caught up in %v", k, s.chunks, name, took.Round(time.Millisecond))
					require.Less(t, took, lossBound, "catching up after losing chunk %d of %d", k, s.chunks)
				})
			}
		})
	}
}

func TestSnapshot_LostFinalAcknowledgmentRecoversWithinAnElectionTimeout(t *testing.T) {
	s := newLossSetup(t)
	filter, dropped := s.dropFinalAck()
	took := s.catchUp(t, filter)
	require.EqualValues(t, 2, dropped.Load(), "both acknowledgments were lost")
	t.Logf("final acknowledgment lost: caught up in %v", took.Round(time.Millisecond))
	require.Less(t, took, lossBound)
}

// TestSnapshot_LossCatchUpTimes measures catch-up times without loss and
// with a chunk or the final acknowledgment lost, RAFT_LOSS_RUNS times each
// (it runs only when that is set), and checks their medians against
// lossBound. docs/snapshots.md reports its figures.
func TestSnapshot_LossCatchUpTimes(t *testing.T) {
	var runs int
	fmt.Sscan(os.Getenv("RAFT_LOSS_RUNS"), &runs)
	if runs <= 0 {
		t.Skip("a measurement: set RAFT_LOSS_RUNS to the number of runs per case")
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	cases := []struct {
		name   string
		filter func(s *lossSetup) inmemFilter
	}{
		{"no loss", func(*lossSetup) inmemFilter { return nil }},
		{"first chunk lost (silent)", func(s *lossSetup) inmemFilter { f, _ := s.dropChunk(0, inmemDropSilently); return f }},
		{"last chunk lost (silent)", func(s *lossSetup) inmemFilter { f, _ := s.dropChunk(s.chunks-1, inmemDropSilently); return f }},
		{"last chunk lost (reported)", func(s *lossSetup) inmemFilter { f, _ := s.dropChunk(s.chunks-1, inmemDropReported); return f }},
		{"final acknowledgment lost", func(s *lossSetup) inmemFilter { f, _ := s.dropFinalAck(); return f }},
	}
	for _, c := range cases {
		var times []time.Duration
		for range runs {
			t.Run(c.name, func(t *testing.T) {
				s := newLossSetup(t)
				times = append(times, s.catchUp(t, c.filter(s)))
			})
		}
		m := median(slices.Clone(times))
		t.Logf("%-28s median %v of %v", c.name, m.Round(time.Millisecond), times)
		assert.Less(t, m, lossBound, c.name)
	}
}

// breakingTransport is a TCPTransport whose inbound snapshot connection
// breaks when brk says so, losing the chunk being read: what a connection
// reset in the middle of a frame does.
type breakingTransport struct {
	*TCPTransport
	brk func(m Message) bool
}

func (b *breakingTransport) Attach(id uint64, deliver func(Message)) error {
	return b.TCPTransport.Attach(id, func(m Message) {
		if m.Type == MsgSnapshot && b.brk(m) {
			b.mu.Lock()
			in := b.streams[tcpStreamKey{from: m.From, lane: tcpLaneBulk}]
			b.mu.Unlock()
			if in != nil {
				in.close()
			}
			return
		}
		deliver(m)
	})
}

func TestTCPSnapshot_BrokenConnectionMidTransferRecoversWithinAnElectionTimeout(t *testing.T) {
	for _, pos := range []string{"middle", "last"} {
		t.Run(pos, func(t *testing.T) {
			c, _ := newTCPListCluster(t, 3, func(cfg *Config) {
				cfg.ElectionTimeout = lossElectionTimeout
				cfg.HeartbeatInterval = lossElectionTimeout / 10
				cfg.SnapshotThreshold = 50
				cfg.TrailingEntries = 10
				cfg.SnapshotChunkSize = 16 << 10
			})
			leader := c.waitLeader()
			lagging := c.follower(leader)
			c.stopNode(lagging)
			payload := strings.Repeat("x", 256)
			var last uint64
			for i := range 200 {
				last = c.propose(fmt.Sprint(i, payload))
			}
			leader = c.waitLeader()
			require.Eventually(t, func() bool { return c.nodes[leader].Status().SnapshotIndex >= 150 }, 10*time.Second, time.Millisecond)

			var broken atomic.Int64 // when the connection broke, in Unix nanoseconds
			brk := func(m Message) bool {
				hit := (pos == "last" && m.Done) || (pos == "middle" && m.Context > 0 && !m.Done)
				return hit && broken.CompareAndSwap(0, time.Now().UnixNano())
			}
			c.listen(lagging, c.addrs[lagging])
			tr := &breakingTransport{TCPTransport: c.transports[lagging], brk: brk}
			sm := &listSM{}
			n, err := NewNode(c.cfg(lagging), sm, c.storages[lagging], tr)
			require.NoError(t, err)
			c.nodes[lagging] = n
			c.waitApplied(lagging, last)
			require.NotZero(t, broken.Load(), "the connection broke during the transfer")
			took := time.Since(time.Unix(0, broken.Load()))
			t.Logf("%s chunk lost with its connection: caught up %v after the break", pos, took.Round(time.Millisecond))
			require.Less(t, took, lossBound)
			require.Eventually(t, func() bool { return len(sm.list()) == 200 }, 10*time.Second, time.Millisecond)
			sm.mu.Lock()
			defer sm.mu.Unlock()
			require.Positive(t, sm.restored, "the lagging node caught up through a snapshot")
		})
	}
}

func TestCore_HeartbeatResponseReportsTheSnapshotTransfer(t *testing.T) {
	_, c2, _, n := threeCores(t)
	n.elect(1)
	heartbeat := Message{Type: MsgHeartbeat, From: 1, To: 2, Term: c2.term, Context: 7}
	respond := func() Message {
		t.Helper()
		c2.step(heartbeat)
		resps := msgsOf(n.collect(2), MsgHeartbeatResp)
		require.Len(t, resps, 1)
		return resps[0]
	}

	resp := respond()
	assert.True(t, resp.Done, "the response carries a status")
	assert.Zero(t, resp.Index, "no transfer under way")
	assert.EqualValues(t, 7, resp.Context)

	c2.snapshotReceiving(snapshotTransfer{from: 1, index: 40, bytes: 1024})
	resp = respond()
	assert.True(t, resp.Done)
	assert.EqualValues(t, 40, resp.Index, "the snapshot being received")
	assert.EqualValues(t, 1024, resp.HintIndex, "the bytes stored so far")

	c2.snapshotReceiving(snapshotTransfer{from: 3, index: 40, bytes: 1024})
	resp = respond()
	assert.Zero(t, resp.Index, "a transfer from another leader is none of this one's")

	encoded, err := resp.MarshalBinary()
	require.NoError(t, err)
	var decoded Message
	require.NoError(t, decoded.UnmarshalBinary(encoded))
	assert.Equal(t, resp, decoded, "the status fits the existing codec")
}

func TestCore_LeaderRoutesSnapshotStatusesAndLostChunks(t *testing.T) {
	c1, _, _, n := threeCores(t)
	n.elect(1)
	pr := c1.progress[2]
	require.Equal(t, replicate, pr.state)

	c1.step(Unreachable(Message{Type: MsgSnapshot, From: 1, To: 2, Term: c1.term, Index: 30}))
	assert.Equal(t, replicate, pr.state, "a lost snapshot chunk says nothing of the appends")
	c1.step(Unreachable(Message{Type: MsgAppend, From: 1, To: 2, Term: c1.term}))
	assert.Equal(t, probe, pr.state, "appends pipelined to an unreachable follower are found again by probing")

	pr.state, pr.pendingSnapshot = snapshotState, 40
	c1.step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: c1.term, Done: true, Index: 40, HintIndex: 512})
	lost := Unreachable(Message{Type: MsgSnapshot, From: 1, To: 2, Term: c1.term, Index: 40, Context: 512})
	c1.step(lost)
	c1.step(Unreachable(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: c1.term}))
	c1.step(Message{Type: MsgHeartbeatResp, From: 3, To: 1, Term: c1.term, Done: true})
	rd := c1.ready(n.saved[1])
	require.Len(t, rd.snapshotMsgs, 2, "the status and the lost chunk go to the sender; nothing else")
	assert.Equal(t, MsgHeartbeatResp, rd.snapshotMsgs[0].Type)
	assert.EqualValues(t, 512, rd.snapshotMsgs[0].HintIndex)
	assert.Equal(t, lost, rd.snapshotMsgs[1])
	assert.Equal(t, snapshotState, pr.state)
}

func TestUnreachableIsLocalOnly(t *testing.T) {
	chunk := Message{Type: MsgSnapshot, From: 1, To: 2, Term: 3, Index: 40, Context: 512, Data: []byte("x"), Done: true}
	assert.Equal(t, Message{Type: MsgUnreachable, From: 2, To: 1, Term: 3, Index: 40, Context: 512}, Unreachable(chunk))
	assert.Equal(t, Message{Type: MsgUnreachable, From: 2, To: 1, Term: 3}, Unreachable(Message{Type: MsgAppend, From: 1, To: 2, Term: 3, Index: 9}))
	assert.Equal(t, "MsgUnreachable", MsgUnreachable.String())
	r := Unreachable(chunk)
	_, err := r.MarshalBinary()
	require.ErrorIs(t, err, errInvalidMessage, "a report never crosses the network")
	var m Message
	require.ErrorIs(t, m.UnmarshalBinary([]byte{codecVersion, byte(MsgUnreachable), 2, 1, 3, 0, 40, 0, 0, 0, 0, 0, 0}), ErrCorrupt)
}

func TestTCPReportsLostMessagesToItsNode(t *testing.T) {
	a := newTestTCP(t, "a", TCPConfig{DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 40 * time.Millisecond})
	inbox := attachInbox(t, a, 1)
	gone := newTestTCP(t, "gone", TCPConfig{})
	addr := gone.Addr()
	require.NoError(t, gone.Close()) // nothing listens there now
	a.SetPeers([]Member{{ID: 1, Addr: a.Addr()}, {ID: 2, Addr: addr}})
	chunk := Message{Type: MsgSnapshot, From: 1, To: 2, Term: 3, Index: 40, Context: 512, Data: []byte("chunk")}
	reports := func() []Message { return msgsOf(inbox.all(), MsgUnreachable) }

	a.Send([]Message{heartbeat(1, 4, 1), heartbeat(1, 4, 2)})
	assert.Equal(t, []Message{Unreachable(heartbeat(1, 4, 1))}, reports(), "a message to a peer without an address, once per batch")

	a.Send([]Message{heartbeat(1, 2, 3), chunk})
	require.Eventually(t, func() bool { return len(reports()) >= 3 }, 10*time.Second, time.Millisecond,
		"the failed dial reports the queue it drops")
	got := reports()[1:3]
	assert.ElementsMatch(t, []Message{Unreachable(heartbeat(1, 2, 3)), Unreachable(chunk)}, got)
}

func TestSnapshot_FollowerWithoutStatusRecoversByTimeout(t *testing.T) {
	// A follower of an earlier version sends no status: the lost chunk goes
	// again after the old two election timeouts, which still works.
	s := newLossSetup(t)
	drop, dropped := s.dropChunk(1, inmemDropSilently)
	took := s.catchUp(t, func(from uint64, m *Message) inmemVerdict {
		if from == s.lagging && m.Type == MsgHeartbeatResp {
			m.Done, m.Index, m.HintIndex = false, 0, 0
		}
		return drop(from, m)
	})
	require.True(t, dropped.Load())
	t.Logf("without statuses: caught up in %v", took.Round(time.Millisecond))
	assert.GreaterOrEqual(t, took, 2*lossElectionTimeout, "only the statuses make it faster")
}

func TestSnapshot_SlowRestoreIsNotResentWhileTheFollowerSaysItInstalls(t *testing.T) {
	sc := newSnapCluster(t, 3, func(c *Config) { c.SnapshotChunkSize = 512 })
	lagging, last := sc.stopFollowerAndMoveOn(300)
	_, data := sc.snapshotNow(sc.waitLeader())
	chunks := (len(data) + 511) / 512

	var sent atomic.Int64
	sc.net.setFilter(func(from uint64, m *Message) inmemVerdict {
		if m.Type == MsgSnapshot && m.To == lagging {
			sent.Add(1)
		}
		return inmemPass
	})
	sm := &slowRestoreSM{} // restores for three election timeouts
	n, err := NewNode(sc.cfg(lagging), sm, sc.storages[lagging], sc.net.Transport(lagging))
	require.NoError(t, err)
	sc.nodes[lagging] = n
	require.Eventually(t, func() bool { return n.Status().AppliedIndex >= last }, 20*time.Second, 5*time.Millisecond)
	assert.EqualValues(t, chunks, sent.Load(), "each chunk is sent once: the follower's statuses say it is installing")
}
