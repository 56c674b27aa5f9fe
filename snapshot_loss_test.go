package raft

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

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
	// Wait for the snapshot the leader will send: the newest one, taken
	// at the last threshold crossing below last.
	require.Eventually(t, func() bool { return sc.nodes[leader].Status().SnapshotIndex+sc.cfg(leader).SnapshotThreshold > last },
		10*time.Second, time.Millisecond)
	meta, rc, err := sc.storages[leader].Snapshot()
	require.NoError(t, err)
	data, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	first, err := sc.storages[leader].FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(2), "the leader compacted past what the lagging node has")
	return &lossSetup{sc: sc, leader: leader, lagging: lagging, last: last, snap: meta, size: uint64(len(data)),
		chunks: (len(data) + lossChunkSize - 1) / lossChunkSize}
}

// catchUp installs filter, heals the network and returns how long the
// lagging node takes to apply everything.
func (s *lossSetup) catchUp(t *testing.T, filter inmemFilter) time.Duration {
	t.Helper()
	s.sc.net.setFilter(filter)
	began := time.Now()
	s.sc.net.Heal()
	s.sc.waitApplied(s.lagging, s.last)
	took := time.Since(began)
	s.sc.net.setFilter(nil)
	s.sc.waitSame(s.last)
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
// with the first or last chunk lost; RAFT_LOSS_RUNS sets the runs per case.
func TestSnapshot_LossCatchUpTimes(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	runs := 3
	fmt.Sscan(os.Getenv("RAFT_LOSS_RUNS"), &runs)
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
		t.Logf("%-28s median %v of %v", c.name, median(slices.Clone(times)).Round(time.Millisecond), times)
	}
}
