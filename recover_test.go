package raft

// Tests of RecoverCluster, the unsafe recovery from a lost quorum: the
// survivors of a cluster keep every write any of them knew committed, and
// the recovery entries never break Log Matching among them.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// survivorCluster is a testCluster whose nodes (re)open a FileStorage in their
// own directory each time they start.
type survivorCluster struct {
	*testCluster
	dirs  map[uint64]string
	files map[uint64]*FileStorage
}

func newSurvivorCluster(t *testing.T, n int) *survivorCluster {
	fc := &survivorCluster{dirs: map[uint64]string{}, files: map[uint64]*FileStorage{}}
	for id := uint64(1); id <= uint64(n); id++ {
		fc.dirs[id] = t.TempDir()
	}
	fc.testCluster = newTestCluster(t, n, withStorages(func(id uint64) Storage {
		s, err := OpenFileStorage(fc.dirs[id], WithNoSync())
		require.NoError(t, err)
		fc.files[id] = s
		return s
	}))
	// Registered after newTestCluster's cleanup, so it runs before it:
	// nodes stop before their storage closes.
	t.Cleanup(func() {
		for _, id := range fc.running() {
			fc.stop(id)
		}
		for _, s := range fc.files {
			s.Close()
		}
	})
	return fc
}

// kill stops node id and closes its storage: it is lost for good.
func (fc *survivorCluster) kill(id uint64) {
	fc.stop(id)
	require.NoError(fc.t, fc.files[id].Close())
}

// writeAll commits n writes named prefix-i, on whichever node leads, and
// records them in acked by index.
func (fc *survivorCluster) writeAll(prefix string, n int, acked map[uint64]string) {
	for i := 0; i < n; i++ {
		data := fmt.Sprintf("%s-%d", prefix, i)
		acked[fc.propose(data)] = data
	}
}

// writeOn commits n writes named prefix-i on node id, which leads.
func (fc *survivorCluster) writeOn(id uint64, prefix string, n int, acked map[uint64]string) {
	fc.t.Helper()
	for i := 0; i < n; i++ {
		data := fmt.Sprintf("%s-%d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := fc.nodes[id].Propose(ctx, []byte(data))
		cancel()
		require.NoError(fc.t, err)
		acked[res.(uint64)] = data
	}
}

// requireApplied waits until node id has applied every acknowledged write
// and checks that its state machine holds each of them at its index.
func (fc *survivorCluster) requireApplied(id uint64, acked map[uint64]string) {
	fc.t.Helper()
	var last uint64
	for i := range acked {
		last = max(last, i)
	}
	fc.waitApplied(id, last)
	got := map[uint64]string{}
	for _, e := range fc.sms[id].entries() {
		got[e.Index] = string(e.Data)
	}
	for i, data := range acked {
		require.Equal(fc.t, data, got[i], "node %d lost the write acknowledged at index %d", id, i)
	}
}

func idsOf(ms []Member) []uint64 {
	var ids []uint64
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestRecoverCluster_TwoSurvivorsOfFiveKeepEveryCommittedWrite(t *testing.T) {
	fc := newSurvivorCluster(t, 5)
	acked := map[uint64]string{}
	fc.writeAll("before", 20, acked)

	// The survivors will be the leader, which has every write, and a
	// follower that missed the last ones: their logs differ in length.
	leader := fc.waitLeader()
	lagging := fc.follower(leader)
	fc.net.Isolate(lagging)
	fc.writeOn(leader, "lagging", 10, acked)
	var lost []uint64
	for _, id := range fc.ids {
		if id != leader && id != lagging {
			lost = append(lost, id)
		}
	}
	for _, id := range lost {
		fc.kill(id) // never restarted
	}
	// The survivors talk, except that the leader's messages to the lagging
	// node stay cut, so that their logs still differ when they stop.
	fc.net.Heal()
	fc.net.Cut(leader, lagging)

	// Two of five cannot commit.
	commitBefore := fc.nodes[leader].Status().CommitIndex
	for _, id := range []uint64{leader, lagging} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*fc.cfg(id).ElectionTimeout)
		_, err := fc.nodes[id].Propose(ctx, []byte("no quorum"))
		cancel()
		require.Error(t, err, "two of five nodes committed a write")
	}
	require.Equal(t, commitBefore, fc.nodes[leader].Status().CommitIndex)
	require.Greater(t, fc.nodes[leader].Status().LastIndex, fc.nodes[lagging].Status().LastIndex)

	survivors := []Member{{ID: leader}, {ID: lagging}}
	// A running node's directory is locked: the recovery refuses it.
	require.ErrorIs(t, RecoverClusterDir(fc.dirs[leader], survivors, WithNoSync()), ErrLocked)

	for _, id := range []uint64{leader, lagging} {
		fc.stop(id)
		require.NoError(t, fc.files[id].Close())
	}
	fc.net.Heal()
	for _, id := range []uint64{leader, lagging} {
		require.NoError(t, RecoverClusterDir(fc.dirs[id], survivors, WithNoSync()))
	}
	for _, id := range []uint64{leader, lagging} {
		fc.start(id)
	}

	// The most up-to-date survivor leads (§5.4.1), and the other one gets
	// every write from it.
	require.Equal(t, leader, fc.waitLeader(leader, lagging), "the survivor with the longest log leads")
	for _, id := range []uint64{leader, lagging} {
		fc.requireApplied(id, acked)
		assert.ElementsMatch(t, []uint64{leader, lagging}, idsOf(fc.nodes[id].Status().Members))
	}
	assert.GreaterOrEqual(t, fc.nodes[leader].Status().CommitIndex, commitBefore)

	// And the recovered cluster commits new writes.
	fc.writeAll("after", 5, acked)
	for _, id := range []uint64{leader, lagging} {
		fc.requireApplied(id, acked)
	}
	fc.checkSameHistory()
}

func TestRecoverCluster_SingleSurvivor(t *testing.T) {
	fc := newSurvivorCluster(t, 3)
	acked := map[uint64]string{}
	fc.writeAll("before", 10, acked)
	survivor := fc.waitLeader()
	fc.writeAll("more", 5, acked)
	for _, id := range fc.others(survivor) {
		fc.kill(id)
	}
	fc.stop(survivor)
	require.NoError(t, fc.files[survivor].Close())

	require.NoError(t, RecoverClusterDir(fc.dirs[survivor], []Member{{ID: survivor}}, WithNoSync()))
	fc.start(survivor)
	require.Equal(t, survivor, fc.waitLeader(survivor))
	fc.requireApplied(survivor, acked)
	fc.writeAll("after", 3, acked)
	fc.requireApplied(survivor, acked)
	assert.Equal(t, []uint64{survivor}, idsOf(fc.nodes[survivor].Status().Members))
}

func TestRecoverCluster_RefusesBadInput(t *testing.T) {
	stored := func() *MemoryStorage {
		s := NewMemoryStorage()
		require.NoError(t, s.Save(HardState{Term: 1, Commit: 1},
			[]Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers([]Member{{ID: 1}, {ID: 2}, {ID: 3}})}}))
		return s
	}
	for _, tc := range []struct {
		name    string
		storage *MemoryStorage
		members []Member
		want    string
	}{
		{"no members", stored(), nil, "no members"},
		{"ID 0", stored(), []Member{{ID: 1}, {ID: 0}}, "ID 0"},
		{"duplicate ID", stored(), []Member{{ID: 1}, {ID: 2}, {ID: 1}}, "ID 1 twice"},
		{"no voter", stored(), []Member{{ID: 1, Learner: true}}, "no voter"},
		{"some without address", stored(), []Member{{ID: 1, Addr: "a:1"}, {ID: 2}}, "address"},
		{"empty storage", NewMemoryStorage(), []Member{{ID: 1}}, "nothing to recover"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tc.storage.LastIndex()
			hsBefore, _ := tc.storage.InitialState()
			err := RecoverCluster(tc.storage, tc.members)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
			after, _ := tc.storage.LastIndex()
			hsAfter, _ := tc.storage.InitialState()
			assert.Equal(t, before, after, "nothing was written")
			assert.Equal(t, hsBefore, hsAfter, "nothing was written")
		})
	}
	err := RecoverClusterDir(t.TempDir(), nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func TestRecoverCluster_TwiceWithTheSameMembersChangesNothing(t *testing.T) {
	s := NewMemoryStorage()
	require.NoError(t, s.Save(HardState{Term: 3, Vote: 2, Commit: 2}, []Entry{
		{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers([]Member{{ID: 1}, {ID: 2}, {ID: 3}})},
		{Index: 2, Term: 2, Data: []byte("x")},
	}))
	require.NoError(t, RecoverCluster(s, []Member{{ID: 2}, {ID: 1}}))
	hs, _ := s.InitialState()
	last, _ := s.LastIndex()
	require.NoError(t, RecoverCluster(s, []Member{{ID: 1}, {ID: 2}}), "same members, in another order")
	hs2, _ := s.InitialState()
	last2, _ := s.LastIndex()
	assert.Equal(t, hs, hs2)
	assert.Equal(t, last, last2)
	// The recovery kept the commit index, dropped the vote, and wrote the
	// entry after the last one in a term no leader used.
	assert.Equal(t, HardState{Term: 2 * recoveryTermStep, Commit: 2}, hs)
	term, _ := s.Term(3)
	assert.Equal(t, uint64(2+recoveryTermStep), term)
}

// startRecovered starts nodes 1 and 2 of a three-node cluster on storages
// that hold the given logs and hard states, after recovering both with
// members {1, 2}; it returns the cluster once node want leads.
func startRecovered(t *testing.T, want uint64, logs map[uint64][]Entry, hss map[uint64]HardState) *testCluster {
	c := newTestCluster(t, 3, withoutStarting())
	survivors := []Member{{ID: 1}, {ID: 2}}
	for id, log := range logs {
		s := NewMemoryStorage()
		require.NoError(t, s.Save(hss[id], log))
		require.NoError(t, RecoverCluster(s, survivors))
		c.storages[id] = s
	}
	c.start(1)
	c.start(2)
	require.Equal(t, want, c.waitLeader(1, 2))
	return c
}

// recoveryTestLog is a log of a cluster {1, 2, 3} with commands at index 2 on,
// the term of each given by terms.
func recoveryTestLog(terms ...uint64) []Entry {
	log := []Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers([]Member{{ID: 1}, {ID: 2}, {ID: 3}})}}
	for i, term := range terms {
		log = append(log, Entry{Index: uint64(i + 2), Term: term, Data: []byte(fmt.Sprintf("cmd %d@%d", i+2, term))})
	}
	return log
}

// Node 2 holds one more entry than node 1, of the same term, and knows it
// committed. A recovery entry with the last entry's term would sit at
// node 2's (index, term) and node 1 would take it for node 2's entry
// (Log Matching, §5.3), never applying that write.
func TestRecoverCluster_RecoveryEntryNeverMatchesARealEntry(t *testing.T) {
	c := startRecovered(t, 2,
		map[uint64][]Entry{1: recoveryTestLog(1, 1), 2: recoveryTestLog(1, 1, 1)},
		map[uint64]HardState{1: {Term: 1, Commit: 3}, 2: {Term: 1, Commit: 4}})
	c.waitApplied(1, 4)
	got := c.sms[1].entries()
	require.GreaterOrEqual(t, len(got), 3)
	assert.Equal(t, "cmd 4@1", string(got[2].Data), "node 1 applied node 2's committed write")
	c.checkSameHistory()
}

// Node 1 has a higher term (it campaigned) but a shorter log; node 2 knows
// its last entry committed. A recovery entry in the node's current term
// would make node 1 look more up to date and win, losing that write; the
// recovery keeps the order of the logs, so node 2 leads.
func TestRecoverCluster_KeepsTheOrderOfTheSurvivorsLogs(t *testing.T) {
	c := startRecovered(t, 2,
		map[uint64][]Entry{1: recoveryTestLog(1, 1), 2: recoveryTestLog(1, 1, 2)},
		map[uint64]HardState{1: {Term: 9, Vote: 1, Commit: 3}, 2: {Term: 2, Commit: 4}})
	c.waitApplied(1, 4)
	got := c.sms[1].entries()
	require.GreaterOrEqual(t, len(got), 3)
	assert.Equal(t, "cmd 4@2", string(got[2].Data), "node 1 applied node 2's committed write")
	c.checkSameHistory()
	// Both run, neither stopped on finding a committed entry replaced.
	for _, id := range []uint64{1, 2} {
		assert.NoError(t, c.nodes[id].Status().Err)
	}
}

func TestRecoverCluster_ReportsAFailedWrite(t *testing.T) {
	s := NewMemoryStorage()
	require.NoError(t, s.Save(HardState{Term: 1, Commit: 1}, recoveryTestLog()))
	boom := errors.New("disk gone")
	s.FailSaves(boom)
	require.ErrorIs(t, RecoverCluster(s, []Member{{ID: 1}}), boom)
}

// A crash between storing a leader's snapshot and discarding the log
// behind it leaves a log that the Node discards when it starts: the
// recovery entry must come after the snapshot, not after that log.
func TestRecoverCluster_AfterASnapshotWhoseLogWasNotDiscarded(t *testing.T) {
	c := newTestCluster(t, 3, withoutStarting(), withStateMachines(func(uint64) StateMachine { return newKVSM() }))
	s := c.storages[1]
	require.NoError(t, s.Save(HardState{Term: 1, Commit: 3}, recoveryTestLog(1, 1)))
	require.NoError(t, s.SaveSnapshot(SnapshotMeta{Index: 5, Term: 1, Members: []Member{{ID: 1}, {ID: 2}, {ID: 3}}}, strings.NewReader("")))
	require.NoError(t, RecoverCluster(s, []Member{{ID: 1}}))
	c.start(1)
	require.Equal(t, uint64(1), c.waitLeader(1))
	assert.Equal(t, []uint64{1}, idsOf(c.nodes[1].Status().Members))
	assert.GreaterOrEqual(t, c.nodes[1].Status().LastIndex, uint64(6))
}

// Recovering only one survivor is unsafe, as documented: here the
// recovered node 1 is behind node 2, which still has the old configuration.
// Node 1 wins the election (its recovery entry's term is above every real
// one) and replaces node 2's last entry, which node 2 knew committed: node 2
// detects it and stops with ErrCorrupt instead of serving a lost write.
func TestRecoverCluster_RecoveringOnlyOneSurvivorIsDetectedOnTheOther(t *testing.T) {
	c := newTestCluster(t, 3, withoutStarting())
	require.NoError(t, c.storages[1].Save(HardState{Term: 1, Commit: 3}, recoveryTestLog(1, 1)))
	require.NoError(t, c.storages[2].Save(HardState{Term: 1, Commit: 4}, recoveryTestLog(1, 1, 1)))
	require.NoError(t, RecoverCluster(c.storages[1], []Member{{ID: 1}, {ID: 2}}))
	c.start(1)
	c.start(2)
	require.Eventually(t, func() bool { return errors.Is(c.nodes[2].Status().Err, ErrCorrupt) },
		10*time.Second, time.Millisecond, "node 2 did not detect that its committed entry was replaced")
}
