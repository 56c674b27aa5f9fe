package raft

// Tests of back-up and restore: Node.Backup on a follower of a TCP cluster
// on FileStorage, a new cluster restored from it that holds exactly the
// backed-up state and goes on; a back-up is the node's newest snapshot
// file; a stored snapshot damaged on disk is not backed up; a back-up does
// not stall the node; and RestoreBackup's refusals of damaged back-ups,
// non-empty storage and bad member lists.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// fileTCPCluster runs Nodes over TCPTransports on loopback, each on a
// FileStorage in a directory of its own and with a listSM, as processes
// would: stopping a node closes its node, transport and storage. It reuses
// testCluster's helpers (waitLeader, follower, propose, waitApplied).
type fileTCPCluster struct {
	*testCluster
	clusterID  string
	members    []Member
	dirs       map[uint64]string
	files      map[uint64]*FileStorage
	transports map[uint64]*TCPTransport
	lists      map[uint64]*listSM
}

// newFileTCPCluster starts nodes ids with ClusterID clusterID. Each listens
// first, so that the member list has every address; then prepare, if set,
// fills each node's empty directory (a restore); then every node starts,
// with the member list as InitialMembers.
func newFileTCPCluster(t *testing.T, clusterID string, ids []uint64, prepare func(id uint64, dir string, members []Member)) *fileTCPCluster {
	t.Helper()
	c := &fileTCPCluster{
		testCluster: &testCluster{t: t, ids: ids, nodes: map[uint64]*Node{}},
		clusterID:   clusterID,
		dirs:        map[uint64]string{},
		files:       map[uint64]*FileStorage{},
		transports:  map[uint64]*TCPTransport{},
		lists:       map[uint64]*listSM{},
	}
	t.Cleanup(c.stopAll)
	for _, id := range ids {
		c.dirs[id] = filepath.Join(t.TempDir(), fmt.Sprint(id))
		addr := c.listen(id, "127.0.0.1:0")
		c.members = append(c.members, Member{ID: id, Addr: addr})
	}
	c.cfg = func(id uint64) Config {
		cfg := fastConfig(t, id, c.members)
		cfg.SnapshotThreshold = 20
		cfg.TrailingEntries = 5
		return cfg
	}
	for _, id := range ids {
		if prepare != nil {
			prepare(id, c.dirs[id], c.members)
		}
		c.start(id)
	}
	return c
}

// listen starts node id's transport on addr, retrying while a restarted
// node's port is still held; it returns the bound address.
func (c *fileTCPCluster) listen(id uint64, addr string) string {
	c.t.Helper()
	cfg := TCPConfig{ListenAddr: addr, ClusterID: c.clusterID, DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 100 * time.Millisecond,
		Logger: zaptest.NewLogger(c.t, zaptest.Level(zap.InfoLevel)).Named(fmt.Sprint("tcp", id))}
	require.Eventually(c.t, func() bool {
		tr, err := NewTCPTransport(cfg)
		if err == nil {
			c.transports[id] = tr
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "cannot listen on %s", addr)
	return c.transports[id].Addr()
}

// start opens node id's storage and starts the node on its transport.
func (c *fileTCPCluster) start(id uint64) {
	c.t.Helper()
	st, err := OpenFileStorage(c.dirs[id], WithNoSync())
	require.NoError(c.t, err)
	c.files[id] = st
	c.lists[id] = &listSM{}
	n, err := NewNode(c.cfg(id), c.lists[id], st, c.transports[id])
	require.NoError(c.t, err)
	c.nodes[id] = n
}

// stopAll stops every node with its transport and storage.
func (c *fileTCPCluster) stopAll() {
	for id, n := range c.nodes {
		assert.NoError(c.t, n.Close())
		delete(c.nodes, id)
	}
	for id, tr := range c.transports {
		assert.NoError(c.t, tr.Close())
		delete(c.transports, id)
	}
	for id, st := range c.files {
		assert.NoError(c.t, st.Close())
		delete(c.files, id)
	}
}

// restartAll starts every node again on its directory and address.
func (c *fileTCPCluster) restartAll() {
	c.t.Helper()
	for _, m := range c.members {
		c.listen(m.ID, m.Addr)
		c.start(m.ID)
	}
}

// requireLists waits until every node's state machine holds want.
func (c *fileTCPCluster) requireLists(want []string) {
	c.t.Helper()
	for _, id := range c.ids {
		require.Eventually(c.t, func() bool { return slices.Equal(c.lists[id].list(), want) }, 10*time.Second, time.Millisecond,
			"node %d holds %d items, want %d", id, len(c.lists[id].list()), len(want))
	}
}

// TestBackupRestore_TCPFileStorageNewClusterFromAFollowersBackup is the
// operations guide's back-up and restore: a follower of a running cluster
// backs up; the cluster goes on and stops; three new nodes, with other IDs,
// addresses and ClusterID, are restored from the back-up. They hold exactly
// the backed-up state, elect a leader, take writes, and restart.
func TestBackupRestore_TCPFileStorageNewClusterFromAFollowersBackup(t *testing.T) {
	old := newFileTCPCluster(t, "old-cluster", []uint64{1, 2, 3}, nil)
	var backedUp []string
	var last uint64
	for i := range 50 {
		backedUp = append(backedUp, fmt.Sprint("before-", i))
		last = old.propose(backedUp[i])
	}
	follower := old.follower(old.waitLeader())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The follower's state covers every acknowledged write once a
	// linearizable read returns on it.
	require.NoError(t, old.nodes[follower].LinearizableRead(ctx))
	var backup bytes.Buffer
	meta, err := old.nodes[follower].Backup(ctx, &backup)
	require.NoError(t, err)
	require.GreaterOrEqual(t, meta.Index, last, "the back-up covers every write acknowledged before it")
	require.Equal(t, []uint64{1, 2, 3}, idsOf(meta.Members))
	require.Equal(t, backedUp, old.lists[follower].list(), "nothing was written since the back-up")

	// Writes after the back-up must not reach the restored cluster.
	for i := range 10 {
		last = old.propose(fmt.Sprint("after-", i))
	}
	old.waitAllApplied(last)
	old.stopAll()

	var restored SnapshotMeta
	fresh := newFileTCPCluster(t, "restored-cluster", []uint64{11, 12, 13}, func(id uint64, dir string, members []Member) {
		m, err := RestoreBackupDir(dir, bytes.NewReader(backup.Bytes()), members)
		require.NoError(t, err)
		restored = m
	})
	assert.Equal(t, meta.Index, restored.Index)
	assert.Zero(t, restored.Term%recoveryTermStep, "the restored history has terms of its own")
	assert.Greater(t, restored.Term, meta.Term+recoveryTermStep)
	for _, id := range fresh.ids {
		// NewNode restored the state machine from the back-up.
		assert.Equal(t, backedUp, fresh.lists[id].list(), "node %d starts with exactly the backed-up state", id)
		assert.Equal(t, 1, fresh.lists[id].restored)
		st := fresh.nodes[id].Status()
		assert.Equal(t, []uint64{11, 12, 13}, idsOf(st.Members))
		assert.Equal(t, meta.Index, st.SnapshotIndex)
	}

	leader := fresh.waitLeader()
	assert.Greater(t, fresh.nodes[leader].Status().Term, restored.Term)
	want := slices.Clone(backedUp)
	for i := range 10 {
		want = append(want, fmt.Sprint("new-", i))
		last = fresh.propose(want[len(want)-1])
	}
	assert.Greater(t, last, meta.Index, "new writes continue the back-up's index")
	fresh.requireLists(want)

	fresh.stopAll()
	fresh.restartAll()
	fresh.waitLeader()
	fresh.requireLists(want)
	want = append(want, "after-restart")
	fresh.propose(want[len(want)-1])
	fresh.requireLists(want)
}

// TestRestoreBackup_OldClusterHistoryNeverEntersTheRestoredCluster mixes
// the two clusters by mistake: two nodes restored from a back-up reuse the
// IDs of the old cluster and run beside the third old node, on its old
// storage, which holds writes made after the back-up. Because the restored
// history has terms of its own, the old node cannot lead the restored
// nodes, and its later writes never reach them; with the back-up's term
// kept, the old node's longer log of higher terms wins an election and its
// writes are applied on the restored nodes as if they followed the back-up.
func TestRestoreBackup_OldClusterHistoryNeverEntersTheRestoredCluster(t *testing.T) {
	sc := newSnapCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 1000 // the old node keeps its log
	})
	for i := range 10 {
		sc.propose(fmt.Sprint("before-", i))
	}
	leader := sc.waitLeader()
	backedUp := sc.lists[leader].list()
	var backup bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := sc.nodes[leader].Backup(ctx, &backup)
	require.NoError(t, err)
	// Elections raise the old cluster's terms past the back-up's.
	for round := range 3 {
		require.NoError(t, sc.nodes[sc.waitLeader()].TransferLeadership(ctx, 0))
		sc.propose(fmt.Sprint("after-", round))
	}
	for _, id := range sc.ids {
		sc.stop(id)
	}

	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	for _, id := range []uint64{1, 2} {
		sc.storages[id] = NewMemoryStorage()
		_, err := RestoreBackup(sc.storages[id], bytes.NewReader(backup.Bytes()), members)
		require.NoError(t, err)
	}
	for _, id := range sc.ids {
		sc.start(id)
	}
	// The restored cluster has an origin of its own, so the old node and
	// the restored ones refuse each other's messages (origin.go). The
	// restored nodes elect one of them and commit.
	o1, o2, o3 := sc.nodes[1].Status().Origin, sc.nodes[2].Status().Origin, sc.nodes[3].Status().Origin
	require.NotZero(t, o1)
	require.Equal(t, o1, o2, "every node restored from the back-up has the same origin")
	require.NotEqual(t, o3, o1, "the restored cluster's origin is not the old one's")
	restoredLeader := sc.waitLeader(1, 2)
	_, err = sc.nodes[restoredLeader].Propose(ctx, []byte("new"))
	require.NoError(t, err)
	// Give the old node time to campaign on its longer log: for four
	// election timeouts, the restored nodes hold only the back-up and the
	// new write, and the old node does not lead.
	want := append(slices.Clone(backedUp), "new")
	n1, n2, n3 := sc.nodes[1], sc.nodes[2], sc.nodes[3]
	l1, l2 := sc.lists[1], sc.lists[2]
	require.Eventually(t, func() bool { return slices.Equal(l1.list(), want) && slices.Equal(l2.list(), want) },
		10*time.Second, time.Millisecond, "the restored nodes applied the old cluster's history: %q, %q", l1.list(), l2.list())
	require.Never(t, func() bool {
		return !slices.Equal(l1.list(), want) || !slices.Equal(l2.list(), want) || n3.Status().Role == Leader ||
			n1.Status().Err != nil || n2.Status().Err != nil
	}, 4*sc.cfg(1).ElectionTimeout, 5*time.Millisecond, "the old node took over the restored nodes")
}

// makeBackup writes a back-up of data with meta, as Node.Backup does.
func makeBackup(t *testing.T, meta SnapshotMeta, data listSnapshot) []byte {
	t.Helper()
	var buf, raw bytes.Buffer
	_, err := data.WriteTo(&raw)
	require.NoError(t, err)
	require.NoError(t, writeBackup(context.Background(), &buf, meta, &raw))
	return buf.Bytes()
}

// flipped returns a copy of b with the byte at i changed.
func flipped(b []byte, i int) []byte {
	b = slices.Clone(b)
	b[i] ^= 0xff
	return b
}

func TestRestoreBackup_RefusesDamagedOrTruncatedBackups(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	good := makeBackup(t, SnapshotMeta{Index: 7, Term: 3, Members: members}, listSnapshot{"a", "b", "c"})
	dataOff := 12 + int(binary.LittleEndian.Uint32(good[8:12])) + 4
	require.Greater(t, len(good)-backupTrailerLen, dataOff+2)
	cases := []struct {
		name   string
		backup []byte
	}{
		{"empty", nil},
		{"truncated header", good[:5]},
		{"truncated metadata", good[:14]},
		{"truncated data", good[:len(good)-backupTrailerLen-2]},
		{"no trailer", good[:len(good)-backupTrailerLen]},
		{"truncated trailer", good[:len(good)-1]},
		{"a byte too many", append(slices.Clone(good), 0)},
		{"not a back-up", flipped(good, 0)},
		{"metadata length", flipped(good, 8)},
		{"metadata", flipped(good, 13)},
		{"metadata checksum", flipped(good, dataOff-1)},
		{"data", flipped(good, dataOff+1)},
		{"data length", flipped(good, len(good)-backupTrailerLen)},
		{"data checksum", flipped(good, len(good)-1)},
		{"index 0", makeBackup(t, SnapshotMeta{Index: 0, Term: 3, Members: members}, listSnapshot{"a"})},
		{"no room for the restored terms", makeBackup(t, SnapshotMeta{Index: 7, Term: math.MaxUint64 - 1, Members: members}, listSnapshot{"a"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A directory that does not exist is not left behind.
			dir := filepath.Join(t.TempDir(), "new")
			_, err := RestoreBackupDir(dir, bytes.NewReader(tc.backup), members, WithNoSync())
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), "back-up")
			_, statErr := os.Stat(dir)
			require.ErrorIs(t, statErr, fs.ErrNotExist, "a failed restore left %s behind", dir)

			// An empty directory is left empty, and usable.
			empty := t.TempDir()
			_, err = RestoreBackupDir(empty, bytes.NewReader(tc.backup), members, WithNoSync())
			require.ErrorIs(t, err, ErrCorrupt)
			entries, err := os.ReadDir(empty)
			require.NoError(t, err)
			require.Empty(t, entries)
			_, err = RestoreBackupDir(empty, bytes.NewReader(good), members, WithNoSync())
			require.NoError(t, err)

			// Storage is left empty.
			ms := NewMemoryStorage()
			_, err = RestoreBackup(ms, bytes.NewReader(tc.backup), members)
			require.ErrorIs(t, err, ErrCorrupt)
			require.NoError(t, requireEmptyStorage(ms))
		})
	}
}

func TestRestoreBackup_RefusesStorageThatHoldsState(t *testing.T) {
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	backup := makeBackup(t, SnapshotMeta{Index: 7, Term: 3, Members: members}, listSnapshot{"a"})

	// A directory with anything in it.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644))
	_, err := RestoreBackupDir(dir, bytes.NewReader(backup), members)
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "not empty")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the restore wrote into a directory it refused")
	notes, err := os.ReadFile(filepath.Join(dir, "notes.txt"))
	require.NoError(t, err)
	assert.Equal(t, "mine", string(notes))

	// A node's directory: restoring twice into it.
	dir = t.TempDir()
	_, err = RestoreBackupDir(dir, bytes.NewReader(backup), members, WithNoSync())
	require.NoError(t, err)
	_, err = RestoreBackupDir(dir, bytes.NewReader(backup), members, WithNoSync())
	require.ErrorIs(t, err, ErrInvalidConfig)

	// Storage with a term, a log or a snapshot.
	withTerm := NewMemoryStorage()
	require.NoError(t, withTerm.Save(HardState{Term: 2}, nil))
	withLog := NewMemoryStorage()
	require.NoError(t, withLog.Save(HardState{Term: 1, Commit: 1},
		[]Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(members)}}))
	restored := NewMemoryStorage()
	_, err = RestoreBackup(restored, bytes.NewReader(backup), members)
	require.NoError(t, err)
	for name, s := range map[string]*MemoryStorage{"a term": withTerm, "a log": withLog, "a snapshot": restored} {
		_, err := RestoreBackup(s, bytes.NewReader(backup), members)
		require.ErrorIs(t, err, ErrInvalidConfig, "storage with %s", name)
	}
}

func TestRestoreBackup_RefusesBadMemberLists(t *testing.T) {
	backup := makeBackup(t, SnapshotMeta{Index: 7, Term: 3, Members: []Member{{ID: 1}}}, listSnapshot{"a"})
	for name, members := range map[string][]Member{
		"none":                        nil,
		"ID 0":                        {{ID: 1}, {ID: 0}},
		"an ID twice":                 {{ID: 1}, {ID: 2}, {ID: 1}},
		"no voter":                    {{ID: 1, Learner: true}},
		"an address missing":          {{ID: 1, Addr: "a:1"}, {ID: 2}},
		"no voter, with the learners": {{ID: 1, Addr: "a:1", Learner: true}, {ID: 2, Addr: "b:1", Learner: true}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new")
			_, err := RestoreBackupDir(dir, bytes.NewReader(backup), members)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), "RestoreBackupDir")
			_, statErr := os.Stat(dir)
			require.ErrorIs(t, statErr, fs.ErrNotExist)
			ms := NewMemoryStorage()
			_, err = RestoreBackup(ms, bytes.NewReader(backup), members)
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.NoError(t, requireEmptyStorage(ms))
		})
	}
}

// newFileNode starts a one-node cluster on a FileStorage in a directory of
// its own, with a listSM; it returns the cluster and the directory.
func newFileNode(t *testing.T) (*snapCluster, string) {
	dir := t.TempDir()
	var file *FileStorage
	sc := &snapCluster{lists: map[uint64]*listSM{}}
	sc.testCluster = newTestCluster(t, 1,
		withStorages(func(uint64) Storage {
			s, err := OpenFileStorage(dir, WithNoSync())
			require.NoError(t, err)
			file = s
			return s
		}),
		withStateMachines(func(id uint64) StateMachine {
			sc.lists[id] = &listSM{}
			return sc.lists[id]
		}))
	// Registered after newTestCluster's cleanup, so it runs first: the node
	// stops before its storage closes.
	t.Cleanup(func() {
		sc.stop(1)
		file.Close()
	})
	return sc, dir
}

// newestSnapFile returns the path of the newest snapshot file in dir.
func newestSnapFile(t *testing.T, dir string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	slices.Sort(paths)
	return paths[len(paths)-1]
}

func TestBackup_IsTheNewestSnapshotFile(t *testing.T) {
	sc, dir := newFileNode(t)
	for i := range 30 {
		sc.propose(fmt.Sprint(i))
	}
	var backup bytes.Buffer
	meta, err := sc.nodes[1].Backup(context.Background(), &backup)
	require.NoError(t, err)
	assert.Equal(t, sc.nodes[1].Status().AppliedIndex, meta.Index)
	file, err := os.ReadFile(newestSnapFile(t, dir))
	require.NoError(t, err)
	require.Equal(t, file, backup.Bytes(), "the back-up is byte for byte the snapshot file")

	// And it restores the state it says.
	ms := NewMemoryStorage()
	restored, err := RestoreBackup(ms, bytes.NewReader(backup.Bytes()), []Member{{ID: 5}})
	require.NoError(t, err)
	assert.Equal(t, meta.Index, restored.Index)
	_, rc, err := ms.Snapshot()
	require.NoError(t, err)
	defer rc.Close()
	var sm listSM
	require.NoError(t, sm.Restore(rc))
	assert.Equal(t, sc.lists[1].list(), sm.list())
	hs, err := ms.InitialState()
	require.NoError(t, err)
	assert.Equal(t, HardState{Term: restored.Term, Commit: meta.Index, Origin: restoredOrigin(restored)}, hs)
	first, err := ms.FirstIndex()
	require.NoError(t, err)
	assert.Equal(t, meta.Index+1, first, "the log starts after the snapshot")
}

func TestBackup_RefusesASnapshotDamagedOnDisk(t *testing.T) {
	sc, dir := newFileNode(t)
	for i := range 10 {
		sc.propose(fmt.Sprint(i))
	}
	_, err := sc.nodes[1].Backup(context.Background(), io.Discard)
	require.NoError(t, err)
	// Rot one byte of the stored snapshot's data, after the storage
	// checked it on open.
	path := newestSnapFile(t, dir)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, flipped(b, len(b)-backupTrailerLen-1), 0o644))

	var backup bytes.Buffer
	_, err = sc.nodes[1].Backup(context.Background(), &backup)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = RestoreBackup(NewMemoryStorage(), bytes.NewReader(backup.Bytes()), []Member{{ID: 1}})
	require.ErrorIs(t, err, ErrCorrupt, "what the failed back-up wrote restores")
}

func TestBackup_NothingToBackUpOnANodeThatAppliedNothingOrIsClosed(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	n, err := NewNode(fastConfig(t, 9, nil), &listSM{}, NewMemoryStorage(), nw.Transport(9))
	require.NoError(t, err)
	defer n.Close()
	_, err = n.Backup(context.Background(), io.Discard)
	require.ErrorIs(t, err, ErrNoSnapshot)
	require.NoError(t, n.Close())
	_, err = n.Backup(context.Background(), io.Discard)
	require.ErrorIs(t, err, ErrClosed)
}

// stuckWriter passes its first Write (the back-up's header) and blocks the
// next ones until released.
type stuckWriter struct {
	writes  int
	stuck   chan struct{} // closed when a Write blocks
	release chan struct{}
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	if w.writes++; w.writes > 1 {
		if w.writes == 2 {
			close(w.stuck)
		}
		<-w.release
	}
	return len(p), nil
}

func TestBackup_DoesNotStallTheNodeAndStopsWhenCancelled(t *testing.T) {
	sc := newSnapCluster(t, 3, nil)
	var last uint64
	for i := range 10 {
		last = sc.propose(fmt.Sprint("before-", i))
	}
	follower := sc.follower(sc.waitLeader())
	// The back-up has data to write (and get stuck in).
	sc.waitApplied(follower, last)
	w := &stuckWriter{stuck: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(w.release) }) }
	t.Cleanup(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := sc.nodes[follower].Backup(ctx, w)
		done <- err
	}()
	select {
	case <-w.stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the back-up never wrote its data")
	}

	// While the back-up is stuck in a Write, the follower applies new
	// writes and serves reads.
	for i := range 5 {
		last = sc.propose(fmt.Sprint("during-", i))
	}
	sc.waitApplied(follower, last)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	require.NoError(t, sc.nodes[follower].LinearizableRead(rctx))

	cancel()
	release()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Backup did not return after its context was cancelled")
	}
}

func TestReadBackup_RoundTripsAnySizeThroughAnyReader(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := envSeed(); s != 0 {
		seed = s
	}
	t.Logf("seed %d (RAFT_SEED replays it)", seed)
	rng := rand.New(rand.NewSource(seed))
	meta := SnapshotMeta{Index: 42, Term: 7, Members: []Member{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1", Learner: true}}}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":                   func(r io.Reader) io.Reader { return r },
		"one byte":                iotest.OneByteReader,
		"halves":                  iotest.HalfReader,
		"EOF with the last bytes": iotest.DataErrReader,
	}
	for _, size := range []int{0, 1, 11, 12, 13, 64<<10 - 12, 64 << 10, 64<<10 + 1, 1<<20 + 7} {
		data := make([]byte, size)
		rng.Read(data)
		var buf bytes.Buffer
		require.NoError(t, writeBackup(context.Background(), &buf, meta, bytes.NewReader(data)))
		for name, wrap := range readers {
			if size > 64<<10 && name == "one byte" {
				continue // slow, and no different
			}
			got, r, err := readBackup(wrap(bytes.NewReader(buf.Bytes())))
			require.NoError(t, err, "%d bytes, %s", size, name)
			assert.Equal(t, meta, got)
			back, err := io.ReadAll(r)
			require.NoError(t, err, "%d bytes, %s", size, name)
			require.True(t, bytes.Equal(data, back), "%d bytes, %s: the data differs", size, name)
		}
		// Any cut is refused.
		cut := rng.Intn(buf.Len())
		_, r, err := readBackup(bytes.NewReader(buf.Bytes()[:cut]))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		require.ErrorIs(t, err, ErrCorrupt, "%d bytes cut at %d", size, cut)
	}
}

// BenchmarkBackup_64MiB measures Node.Backup of a 64 MiB state (a one-node
// cluster on FileStorage without fsync; the snapshot is taken once, so each
// run copies and checks it) and RestoreBackupDir of it into a new
// directory, with fsync. MB/s is of the state's size.
func BenchmarkBackup_64MiB(b *testing.B) {
	const size = 64 << 20
	st, err := OpenFileStorage(b.TempDir(), WithNoSync())
	require.NoError(b, err)
	defer st.Close()
	nw := NewInmemNetwork()
	defer nw.Close()
	n, err := NewNode(Config{ID: 1, InitialMembers: []Member{{ID: 1}}, ElectionTimeout: 50 * time.Millisecond},
		&bigSM{size: size}, st, nw.Transport(1))
	require.NoError(b, err)
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var proposeErr error
	require.Eventually(b, func() bool { _, proposeErr = n.Propose(ctx, []byte("x")); return proposeErr == nil },
		10*time.Second, 10*time.Millisecond, "no write: %v", proposeErr)
	var backup bytes.Buffer
	_, err = n.Backup(ctx, &backup)
	require.NoError(b, err)

	b.Run("Backup", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if _, err := n.Backup(ctx, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RestoreBackupDir", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if _, err := RestoreBackupDir(filepath.Join(b.TempDir(), "restored"), bytes.NewReader(backup.Bytes()), []Member{{ID: 1}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
