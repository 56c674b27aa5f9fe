package raft

// Tests of the cluster origin (origin.go): a node bootstrapped with another
// founding configuration than its peers', or two clusters bootstrapped apart
// that reach each other, are refused rather than merged; founders that list
// their members in different orders form one cluster; joiners learn the
// origin and keep it across compaction and restarts, and RecoverCluster
// keeps it. The runtime tests run over TCPTransport with FileStorage and
// over an InmemNetwork with MemoryStorage.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// ---- The core ----

func TestOrigin_SameMembersInAnyOrderSameOrigin(t *testing.T) {
	a := []Member{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "a:2"}, {ID: 3, Addr: "a:3", Meta: map[string]string{"http": "x"}}}
	b := []Member{a[2], a[0], a[1]}
	assert.Equal(t, clusterOrigin(a), clusterOrigin(b), "the founders' order does not matter")
	assert.NotZero(t, clusterOrigin(a))
	assert.NotEqual(t, clusterOrigin(a), clusterOrigin(append(slices.Clone(a), Member{ID: 4, Addr: "a:4"})), "another member")
	moved := slices.Clone(a)
	moved[1].Addr = "b:2"
	assert.NotEqual(t, clusterOrigin(a), clusterOrigin(moved), "another address")
	learner := slices.Clone(a)
	learner[1].Learner = true
	assert.NotEqual(t, clusterOrigin(a), clusterOrigin(learner), "another role")
}

// originCore is a core of origin o: one with history (a leader's entry of
// term 2 after the founding configuration) unless fresh.
func originCore(t *testing.T, id uint64, voters []uint64, o uint64, fresh bool) *core {
	hs := HardState{Term: 2, Commit: 2, Origin: o}
	ents := []Entry{{Index: 2, Term: 2, Type: EntryNoop}}
	if fresh {
		hs, ents = HardState{Term: 1, Commit: 1, Origin: o}, nil
	}
	return newTestCore(t, id, voters, withHardState(hs), withEntries(ents...), withoutPreVote())
}

func TestOrigin_RefusedMessageIsNotSteppedAndIsAnswered(t *testing.T) {
	const ours, theirs = 0xa, 0xb
	c := originCore(t, 1, []uint64{1, 2, 3}, ours, false)
	before := c.hardState()
	for _, m := range []Message{
		{Type: MsgVote, From: 4, To: 1, Term: 9, Index: 1, LogTerm: 1, Origin: theirs},
		{Type: MsgPreVote, From: 4, To: 1, Term: 9, Index: 1, LogTerm: 1, Origin: theirs},
		{Type: MsgAppend, From: 2, To: 1, Term: 9, Index: 2, LogTerm: 2, Commit: 3, Origin: theirs,
			Entries: []Entry{{Index: 3, Term: 9, Data: []byte("other cluster")}}},
		{Type: MsgHeartbeat, From: 2, To: 1, Term: 9, Commit: 9, Origin: theirs},
	} {
		c.step(m)
		rd := c.ready(before)
		require.NoError(t, rd.err, "a node with history never stops for another cluster")
		assert.Equal(t, before, c.hardState(), "%v: nothing of another cluster changes the term, vote or commit", m.Type)
		assert.Equal(t, uint64(2), c.log.lastIndex(), "%v: no entry of another cluster", m.Type)
		assert.Zero(t, c.leader, "%v", m.Type)
		require.Len(t, rd.messages, 1, "%v is answered", m.Type)
		resp := rd.messages[0]
		want, _ := refusalType(m.Type)
		assert.Equal(t, Message{Type: want, From: 1, To: m.From, Term: 2, Reject: true, Index: 2, Origin: ours}, resp)
	}

	// Answers are not answered: two nodes never refuse each other in a loop.
	c.step(Message{Type: MsgVoteResp, From: 4, To: 1, Term: 9, Reject: true, Index: 7, Origin: theirs})
	assert.Empty(t, c.ready(before).messages)

	// Unknown origins (a joiner, a node of an earlier version) are not checked.
	c.step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 3, Commit: 2})
	assert.Equal(t, uint64(2), c.leader)
}

func TestOrigin_OnlyTheNodeBootstrappedByMistakeStops(t *testing.T) {
	const ours, theirs = 0xa, 0xb
	notice := func(from, index uint64) Message {
		return Message{Type: MsgPreVoteResp, From: from, To: 4, Term: 5, Reject: true, Index: index, Origin: theirs}
	}
	tests := []struct {
		name  string
		fresh bool
		voter []uint64
		msg   Message
		stops bool
	}{
		{"refused by a member with history", true, []uint64{1, 2, 3, 4}, notice(1, 10), true},
		{"a leader's heartbeat", true, []uint64{1, 2, 3, 4}, Message{Type: MsgHeartbeat, From: 1, To: 4, Term: 5, Origin: theirs}, true},
		{"a candidate with history", true, []uint64{1, 2, 3, 4}, Message{Type: MsgPreVote, From: 1, To: 4, Term: 5, Index: 9, LogTerm: 4, Origin: theirs}, true},
		{"a member without history (founders that disagree)", true, []uint64{1, 2, 3, 4}, notice(1, 1), false},
		{"not a member", true, []uint64{4, 5, 6}, notice(1, 10), false},
		{"this node has history", false, []uint64{1, 2, 3, 4}, notice(1, 10), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := originCore(t, 4, tt.voter, ours, tt.fresh)
			c.step(tt.msg)
			rd := c.ready(c.hardState())
			if !tt.stops {
				assert.NoError(t, rd.err)
				return
			}
			require.ErrorIs(t, rd.err, ErrClusterMismatch)
			assert.Contains(t, rd.err.Error(), "without InitialMembers", "the error says what to do")
		})
	}
}

func TestOrigin_JoinerLearnsItFromItsLeader(t *testing.T) {
	c, err := newCore(coreConfig{id: 4, electionTicks: 10, heartbeatTicks: 1, maxInflight: 8, maxAppendBytes: 1 << 20,
		maxUncommittedEntries: 1 << 10, maxUncommittedBytes: 1 << 20, fresh: true})
	require.NoError(t, err)
	c.step(Message{Type: MsgVote, From: 5, To: 4, Term: 3, Index: 1, LogTerm: 1, Origin: 0xb})
	assert.Zero(t, c.hardState().Origin, "a candidate does not teach it")
	c.step(Message{Type: MsgHeartbeat, From: 1, To: 4, Term: 4, Origin: 0xa})
	rd := c.ready(HardState{})
	assert.Equal(t, uint64(0xa), rd.hardState.Origin)
	assert.True(t, rd.saveState, "the learned origin is made durable")
	for _, m := range rd.messages {
		if m.To == 1 {
			assert.Equal(t, uint64(0xa), m.Origin, "and sent")
		}
	}
	c.step(Message{Type: MsgHeartbeat, From: 5, To: 4, Term: 9, Origin: 0xb})
	assert.Equal(t, uint64(4), c.term, "another cluster's leader is refused from then on")
}

// ---- Nodes over TCP with FileStorage, and over an InmemNetwork ----

// originEnv runs nodes that may belong to different clusters: over
// TCPTransports (all with the same ClusterID, as clusters whose operators
// did not name them apart) on FileStorage, or over one InmemNetwork on
// MemoryStorage.
type originEnv struct {
	t     *testing.T
	tcp   bool
	net   *InmemNetwork
	trs   map[uint64]*TCPTransport
	addrs map[uint64]string
	dirs  map[uint64]string
	fss   map[uint64]*FileStorage
	mems  map[uint64]*MemoryStorage
	nodes map[uint64]*Node
	lists map[uint64]*listSM
	logs  *observer.ObservedLogs
	// observe receives every node's log, for logs.
	observe zapcore.Core

	mu        sync.Mutex // guards lists and unstamped
	unstamped []Message  // messages a founder sent without its origin
}

// stampCheck is a founder's Transport, which records every message sent
// without an origin: a founder knows its origin from the start, and every
// message (snapshot chunks and acknowledgments, built by the runtime,
// included) must carry it.
type stampCheck struct {
	Transport
	e *originEnv
}

func (s stampCheck) Send(msgs []Message) {
	for _, m := range msgs {
		if m.Origin == 0 {
			s.e.mu.Lock()
			s.e.unstamped = append(s.e.unstamped, m)
			s.e.mu.Unlock()
		}
	}
	s.Transport.Send(msgs)
}

// runBoth runs f over TCP with FileStorage and over an InmemNetwork.
func runBoth(t *testing.T, f func(t *testing.T, e *originEnv)) {
	for _, tcp := range []bool{true, false} {
		name := "inmem"
		if tcp {
			name = "tcp+file"
		}
		t.Run(name, func(t *testing.T) { f(t, newOriginEnv(t, tcp)) })
	}
}

func newOriginEnv(t *testing.T, tcp bool) *originEnv {
	observe, logs := observer.New(zap.InfoLevel)
	e := &originEnv{t: t, tcp: tcp, trs: map[uint64]*TCPTransport{}, addrs: map[uint64]string{}, dirs: map[uint64]string{},
		fss: map[uint64]*FileStorage{}, mems: map[uint64]*MemoryStorage{}, nodes: map[uint64]*Node{}, lists: map[uint64]*listSM{},
		logs: logs, observe: observe}
	if !tcp {
		e.net = NewInmemNetwork()
	}
	t.Cleanup(func() {
		for id := range e.nodes {
			e.stop(id)
		}
		for id, tr := range e.trs {
			tr.Close() // listening for a node that never started
			delete(e.trs, id)
		}
		if e.net != nil {
			e.net.Close()
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		assert.Empty(t, e.unstamped, "messages sent without the sender's origin")
	})
	return e
}

// member returns node id as a member, listening first over TCP so that it
// has its address.
func (e *originEnv) member(id uint64) Member {
	if e.tcp && e.trs[id] == nil {
		e.listen(id)
	}
	return Member{ID: id, Addr: e.addrs[id]}
}

func (e *originEnv) members(ids ...uint64) []Member {
	var ms []Member
	for _, id := range ids {
		ms = append(ms, e.member(id))
	}
	return ms
}

func (e *originEnv) listen(id uint64) {
	addr := e.addrs[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := TCPConfig{ListenAddr: addr, ClusterID: tcpTestCluster, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 100 * time.Millisecond,
		Logger: zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel)).Named(fmt.Sprint("tcp", id))}
	var tr *TCPTransport
	require.Eventually(e.t, func() bool {
		var err error
		tr, err = NewTCPTransport(cfg)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	e.trs[id], e.addrs[id] = tr, tr.Addr()
}

// start starts node id on its storage (empty the first time) with
// initial as InitialMembers (nil: a joiner).
func (e *originEnv) start(id uint64, initial []Member, tune func(*Config)) *Node {
	e.t.Helper()
	e.member(id)
	cfg := fastConfig(e.t, id, initial)
	cfg.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(e.t).Core(), e.observe)).Named(fmt.Sprint(id))
	cfg.SnapshotThreshold, cfg.TrailingEntries, cfg.SnapshotChunkSize = 20, 5, 256
	if tune != nil {
		tune(&cfg)
	}
	var storage Storage
	var tr Transport
	if e.tcp {
		if e.dirs[id] == "" {
			e.dirs[id] = e.t.TempDir()
		}
		fs, err := OpenFileStorage(e.dirs[id], WithNoSync())
		require.NoError(e.t, err)
		e.fss[id], storage, tr = fs, fs, e.trs[id]
	} else {
		if e.mems[id] == nil {
			e.mems[id] = NewMemoryStorage()
		}
		storage, tr = e.mems[id], e.net.Transport(id)
	}
	sm := &listSM{}
	e.mu.Lock()
	e.lists[id] = sm
	e.mu.Unlock()
	if len(initial) > 0 {
		tr = stampCheck{Transport: tr, e: e}
	}
	n, err := NewNode(cfg, sm, storage, tr)
	require.NoError(e.t, err)
	e.nodes[id] = n
	return n
}

// stop stops node id, its transport and its storage, as a process that exits.
func (e *originEnv) stop(id uint64) {
	e.t.Helper()
	require.NoError(e.t, e.nodes[id].Close())
	delete(e.nodes, id)
	if e.tcp {
		require.NoError(e.t, e.trs[id].Close())
		delete(e.trs, id)
		require.NoError(e.t, e.fss[id].Close())
		delete(e.fss, id)
	}
}

// found starts a cluster of ids, each with the founding list ordered by
// order (nil: ids as given), and waits for its leader.
func (e *originEnv) found(ids []uint64, order func(id uint64, ms []Member) []Member) uint64 {
	e.t.Helper()
	ms := e.members(ids...)
	for _, id := range ids {
		initial := ms
		if order != nil {
			initial = order(id, slices.Clone(ms))
		}
		e.start(id, initial, nil)
	}
	return e.waitLeader(ids...)
}

func (e *originEnv) waitLeader(ids ...uint64) uint64 {
	e.t.Helper()
	var leader uint64
	require.Eventually(e.t, func() bool {
		leader = 0
		for _, id := range ids {
			if e.nodes[id].Status().Role == Leader {
				leader = id
			}
		}
		if leader == 0 {
			return false
		}
		for _, id := range ids {
			if e.nodes[id].Status().Leader != leader {
				return false
			}
		}
		return true
	}, 10*time.Second, 2*time.Millisecond, "no agreed leader among %v", ids)
	return leader
}

// write commits n commands prefix-i in the cluster of ids; it returns the
// index of the last.
func (e *originEnv) write(ids []uint64, prefix string, n int) uint64 {
	e.t.Helper()
	var last uint64
	for i := 0; i < n; i++ {
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			res, err := e.nodes[e.waitLeader(ids...)].Propose(ctx, []byte(fmt.Sprintf("%s-%d", prefix, i)))
			cancel()
			if err == nil {
				last = res.(uint64)
				break
			}
			require.True(e.t, time.Now().Before(deadline), "could not commit %s-%d: %v", prefix, i, err)
		}
	}
	return last
}

func (e *originEnv) list(id uint64) []string {
	e.mu.Lock()
	sm := e.lists[id]
	e.mu.Unlock()
	return sm.list()
}

func (e *originEnv) waitApplied(id, index uint64) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.nodes[id].Status().AppliedIndex >= index }, 10*time.Second, time.Millisecond,
		"node %d did not apply %d: %+v", id, index, e.nodes[id].Status())
}

// refusals counts the logged refusals of messages from node from by node by.
func (e *originEnv) refusals(by, from uint64) int {
	n := 0
	for _, entry := range e.logs.FilterMessageSnippet("refusing messages from a node of another cluster").All() {
		fields := entry.ContextMap()
		if fields["node"] == by && fields["from"] == from {
			n++
		}
	}
	return n
}

func terms(e *originEnv, ids ...uint64) []uint64 {
	var ts []uint64
	for _, id := range ids {
		ts = append(ts, e.nodes[id].Status().Term)
	}
	return ts
}

// A node started on empty storage with InitialMembers that differ from the
// cluster's founding ones (here: the founders plus itself, the usual mistake
// when adding a node) stops with ErrClusterMismatch, and the cluster does
// not notice: no term moves, no node stops, writes go on.
func TestOrigin_NodeBootstrappedNextToARunningClusterIsRefused(t *testing.T) {
	runBoth(t, func(t *testing.T, e *originEnv) {
		abc := []uint64{1, 2, 3}
		e.found(abc, nil)
		last := e.write(abc, "a", 5)
		before := terms(e, abc...)

		// Without PreVote, it campaigns with real votes at ever higher terms.
		n4 := e.start(4, e.members(1, 2, 3, 4), func(c *Config) { c.DisablePreVote = true })
		require.Eventually(t, func() bool { return n4.Status().Err != nil }, 10*time.Second, time.Millisecond, "node 4 did not stop")
		err := n4.Status().Err
		require.ErrorIs(t, err, ErrClusterMismatch)
		assert.Contains(t, err.Error(), "start it on empty storage without InitialMembers")
		_, perr := n4.Propose(context.Background(), []byte("x"))
		assert.ErrorIs(t, perr, ErrClusterMismatch, "calls say why")
		assert.Positive(t, e.refusals(1, 4)+e.refusals(2, 4)+e.refusals(3, 4), "the cluster logs the refusal")

		last = max(last, e.write(abc, "b", 3))
		assert.Equal(t, before, terms(e, abc...), "the cluster's term did not move")
		for _, id := range abc {
			assert.NoError(t, e.nodes[id].Status().Err)
			e.waitApplied(id, last)
		}
	})
}

// follower returns a node of ids that does not lead.
func (e *originEnv) follower(ids []uint64) uint64 {
	leader := e.waitLeader(ids...)
	for _, id := range ids {
		if id != leader {
			return id
		}
	}
	return 0
}

// A member whose disk was wiped, restarted with InitialMembers other than
// the founding ones, is told by the leader's heartbeats and stops.
func TestOrigin_WipedMemberRebootstrappedWithOtherMembersStops(t *testing.T) {
	runBoth(t, func(t *testing.T, e *originEnv) {
		abc := []uint64{1, 2, 3}
		leader := e.found(abc, nil)
		e.write(abc, "a", 3)
		wiped := e.follower(abc)
		e.stop(wiped)
		delete(e.dirs, wiped)
		delete(e.mems, wiped)

		n := e.start(wiped, e.members(3, 2, 1, 4), nil)
		require.Eventually(t, func() bool { return n.Status().Err != nil }, 10*time.Second, time.Millisecond, "the wiped node did not stop")
		require.ErrorIs(t, n.Status().Err, ErrClusterMismatch)
		assert.Equal(t, uint64(1), n.Status().LastIndex, "it took nothing from the cluster")
		assert.Equal(t, leader, e.waitLeader(leader, e.others(abc, wiped)[1]))
	})
}

func (e *originEnv) others(ids []uint64, id uint64) []uint64 {
	return slices.DeleteFunc(slices.Clone(ids), func(x uint64) bool { return x == id })
}

// Two clusters bootstrapped apart, each with history, are pointed at each
// other (each adds a node of the other): each refuses the other's messages,
// nothing of one reaches the other, both keep working, no term moves.
func TestOrigin_TwoClustersThatMeetStayApart(t *testing.T) {
	runBoth(t, func(t *testing.T, e *originEnv) {
		a, b := []uint64{1, 2, 3}, []uint64{4, 5, 6}
		e.found(a, nil)
		e.found(b, nil)
		e.write(a, "A", 3)
		e.write(b, "B", 3)
		oa, ob := e.nodes[1].Status().Origin, e.nodes[4].Status().Origin
		require.NotZero(t, oa)
		require.NotEqual(t, oa, ob)
		termsA, termsB := terms(e, a...), terms(e, b...)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		la, lb := e.waitLeader(a...), e.waitLeader(b...)
		require.NoError(t, e.nodes[la].AddVoter(ctx, 4, e.addrs[4]))
		require.NoError(t, e.nodes[lb].AddVoter(ctx, 1, e.addrs[1]))
		require.Eventually(t, func() bool {
			return e.refusals(4, la) > 0 && e.refusals(la, 4) > 0 && e.refusals(1, lb) > 0 && e.refusals(lb, 1) > 0
		}, 10*time.Second, time.Millisecond, "both sides refuse the other")

		lastA, lastB := e.write(a, "A2", 3), e.write(b, "B2", 3)
		for _, id := range a {
			e.waitApplied(id, lastA)
		}
		for _, id := range b {
			e.waitApplied(id, lastB)
		}
		for id, prefix := range map[uint64]string{1: "B", 2: "B", 3: "B", 4: "A", 5: "A", 6: "A"} {
			assert.NoError(t, e.nodes[id].Status().Err, "node %d", id)
			for _, item := range e.list(id) {
				assert.False(t, strings.HasPrefix(item, prefix), "node %d applied %q of the other cluster", id, item)
			}
		}
		assert.Equal(t, termsA, terms(e, a...))
		assert.Equal(t, termsB, terms(e, b...))
		assert.Equal(t, oa, e.nodes[1].Status().Origin)
		assert.Equal(t, ob, e.nodes[4].Status().Origin)
	})
}

// Founders that list the same members in different orders found one
// cluster, with one origin and byte-identical founding entries.
func TestOrigin_FoundersInDifferentOrdersFormOneCluster(t *testing.T) {
	runBoth(t, func(t *testing.T, e *originEnv) {
		ids := []uint64{1, 2, 3}
		e.found(ids, func(id uint64, ms []Member) []Member {
			for range id { // a different rotation on each founder
				ms = append(ms[1:], ms[0])
			}
			return ms
		})
		last := e.write(ids, "x", 3)
		want := clusterOrigin(e.members(ids...))
		var founding [][]byte
		for _, id := range ids {
			e.waitApplied(id, last)
			assert.Equal(t, want, e.nodes[id].Status().Origin, "node %d", id)
			assert.NoError(t, e.nodes[id].Status().Err)
			var s Storage = e.mems[id]
			if e.tcp {
				s = e.fss[id]
			}
			ents, err := s.Entries(1, 2)
			require.NoError(t, err)
			founding = append(founding, ents[0].Data)
		}
		assert.Equal(t, founding[0], founding[1], "the founders wrote the same entry")
		assert.Equal(t, founding[0], founding[2], "the founders wrote the same entry")
	})
}

// A joiner (no InitialMembers) learns the origin, by the log or by a
// snapshot once the log is compacted, keeps it across restarts, and a
// founder keeps it once its founding entry is compacted away.
func TestOrigin_JoinerLearnsAndKeepsTheOrigin(t *testing.T) {
	for _, bySnapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("bySnapshot=%v", bySnapshot), func(t *testing.T) {
			runBoth(t, func(t *testing.T, e *originEnv) {
				abc := []uint64{1, 2, 3}
				e.found(abc, nil)
				want := e.nodes[1].Status().Origin
				writes := 2
				if bySnapshot {
					writes = 60 // past SnapshotThreshold: the log no longer holds entry 1
				}
				last := e.write(abc, "a", writes)
				for _, id := range abc {
					e.waitApplied(id, last)
				}
				if bySnapshot {
					require.Eventually(t, func() bool { return e.nodes[1].Status().SnapshotIndex > 6 }, 10*time.Second, time.Millisecond)
				}

				n4 := e.start(4, nil, nil)
				assert.Zero(t, n4.Status().Origin, "a joiner does not know it yet")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, e.nodes[e.waitLeader(abc...)].AddVoter(ctx, 4, e.addrs[4]))
				last = e.write(abc, "b", 2)
				e.waitApplied(4, last)
				assert.Equal(t, want, n4.Status().Origin)
				if bySnapshot {
					assert.Positive(t, n4.Status().SnapshotIndex, "caught up by a snapshot")
				}

				// Restarted, it knows the origin before hearing from anyone,
				// and so does a founder whose founding entry is compacted.
				for _, id := range []uint64{4, 1} {
					e.stop(id)
					assert.Equal(t, want, e.start(id, e.members(abc...), nil).Status().Origin, "node %d after a restart", id)
				}
				last = e.write([]uint64{1, 2, 3, 4}, "c", 2)
				e.waitApplied(4, last)
				assert.NoError(t, e.nodes[4].Status().Err)
			})
		})
	}
}

// RecoverClusterDir keeps the origin, also when the founding entry was
// compacted away: the recovered cluster still refuses a node bootstrapped
// by mistake.
func TestOrigin_RecoverClusterDirKeepsIt(t *testing.T) {
	e := newOriginEnv(t, true)
	ids := []uint64{1, 2, 3}
	e.found(ids, nil)
	want := e.nodes[1].Status().Origin
	last := e.write(ids, "a", 60)
	for _, id := range ids {
		e.waitApplied(id, last)
	}
	require.Eventually(t, func() bool {
		return e.nodes[1].Status().SnapshotIndex > 6 && e.nodes[2].Status().SnapshotIndex > 6
	}, 10*time.Second, time.Millisecond)
	for _, id := range ids {
		e.stop(id)
	}
	survivors := e.members(1, 2)
	for _, id := range []uint64{1, 2} {
		require.NoError(t, RecoverClusterDir(e.dirs[id], survivors, WithNoSync()))
		s, err := OpenFileStorage(e.dirs[id], WithNoSync())
		require.NoError(t, err)
		first, err := s.FirstIndex()
		require.NoError(t, err)
		require.Greater(t, first, uint64(1), "the founding entry is compacted away")
		require.NoError(t, s.Close())
	}
	for _, id := range []uint64{1, 2} {
		assert.Equal(t, want, e.start(id, e.members(ids...), nil).Status().Origin, "node %d", id)
	}
	e.waitLeader(1, 2)
	e.write([]uint64{1, 2}, "b", 2)

	n4 := e.start(4, e.members(1, 2, 4), nil)
	require.Eventually(t, func() bool { return errors.Is(n4.Status().Err, ErrClusterMismatch) }, 10*time.Second, time.Millisecond)
}

// A cluster founded before origins existed keeps working after the upgrade
// even if its founders wrote their founding entries differently (here:
// metadata only some of them were given), which an origin derived from
// each node's own founding entry would have turned into refusals: such
// nodes have no origin and check nothing.
func TestOrigin_ClusterFoundedBeforeOriginsStaysUnchecked(t *testing.T) {
	c := newTestCluster(t, 3, withoutStarting())
	for _, id := range c.ids {
		members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
		members[id-1].Meta = map[string]string{"http": fmt.Sprint("10.0.0.", id)}
		founding := Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(members)}
		require.NoError(t, c.storages[id].Save(HardState{Term: 1, Commit: 1}, []Entry{founding}))
	}
	for _, id := range c.ids {
		c.start(id)
	}
	last := c.propose("after the upgrade")
	c.waitAllApplied(last)
	for _, id := range c.ids {
		assert.Zero(t, c.nodes[id].Status().Origin, "node %d", id)
	}
}

// Founders started with different lists: the two that agree elect a leader
// and go on; the odd one, which they refuse, stops once that leader or a
// refusal with history reaches it.
func TestOrigin_FounderWithAnotherListStops(t *testing.T) {
	runBoth(t, func(t *testing.T, e *originEnv) {
		agreed, odd := e.members(1, 2, 3), e.members(1, 2, 3, 4)
		e.start(1, agreed, nil)
		e.start(2, agreed, nil)
		n3 := e.start(3, odd, nil)
		last := e.write([]uint64{1, 2}, "x", 3)
		require.Eventually(t, func() bool { return n3.Status().Err != nil }, 10*time.Second, time.Millisecond, "node 3 did not stop")
		require.ErrorIs(t, n3.Status().Err, ErrClusterMismatch)
		for _, id := range []uint64{1, 2} {
			e.waitApplied(id, last)
			assert.NoError(t, e.nodes[id].Status().Err)
		}
		assert.Equal(t, clusterOrigin(agreed), e.nodes[1].Status().Origin)
	})
}
