package raft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
)

// Linearizability of the real runtime. Clients of a replicated
// key-value store (kv_test.go) run Put, Append and Get against real Nodes
// over an InmemNetwork while a nemesis partitions the network, isolates the
// leader, cuts links in one direction, crashes and restarts nodes, and drops,
// duplicates and delays messages. Every operation is recorded with its call
// and return times, and porcupine checks that the history is linearizable.
//
// Writes go through Node.ProposeAsync and Proposal.Wait. Which outcomes are
// definite (node.go, proposal.go):
//
//   - Any error from ProposeAsync means that the entry was never appended to
//     any log, so the write did not happen: a *NotLeaderError, ErrBusy and
//     ErrTransferInProgress come from core.propose or drainInbox, which
//     refused it; ErrRemoved comes from serving(); ErrClosed (or ErrStopped) comes
//     from usable() before the proposal was queued, from failPending for a
//     proposal still in the inbox when the event loop stopped, or from the
//     check after n.stopped closed, which reports an error only if the event
//     loop never closed p.appended (the loop closes it in drainInbox, before
//     it can exit). Such attempts are dropped from the history and the client
//     retries, on the leader named by the error if there is one; the
//     operation keeps the call time of its first attempt. A node that is down
//     counts as a refusal: nothing was sent to it.
//   - Once ProposeAsync returned a Proposal, the entry is in the leader's log
//     and may already be on followers (the leader sends before it writes),
//     so every error from Wait leaves the outcome unknown: ErrLeadershipLost
//     (a later leader may still commit it), ErrClosed or ErrStopped (the node
//     was crashed with the entry in flight), and the Wait context's deadline
//     (the proposal goes on). These operations stay in the history, open
//     ended: they return at the end of the test with an unknown output, so
//     porcupine may linearize them anywhere after their call, or never
//     observe them. (ErrLeadershipLost for an entry already overwritten by a
//     later leader is in fact definite; counting it unknown only weakens the
//     check, never makes it wrong.)
//
// Gets call Node.LinearizableRead on the node the client talks to (leader,
// follower, or a node that was just restarted and is still re-applying its
// log) and then read that node's map. A Get that fails had no effect and is
// dropped.
//
// Seeds: each run logs its seed; RAFT_SEED=<seed> replays the nemesis's and
// the clients' random choices (which fault, when, for how long; which node,
// key and operation) and seeds the network. Goroutine scheduling and timing
// are not replayable, and the network's drops, duplicates and delays follow
// the order of the sends, so a replay runs the same plan, not the same
// interleaving.
//
// The default run is TestLinearizability_Short (3 s of load). For a long soak
// run, for instance, RAFT_SOAK=10m go test -race -run TestLinearizability_Soak -timeout 0 .

// linConfig sizes one run.
type linConfig struct {
	nodes, clients, keys int
	load                 time.Duration // how long clients and the nemesis run
	opTimeout            time.Duration // per Wait and per LinearizableRead
	checkTimeout         time.Duration // for porcupine
	durable              bool          // nodes on FileStorage, reopened from disk after each crash
	leaseReads           bool          // Config.LeaseReads on every node, and gets through LeaseRead
}

var linShort = linConfig{nodes: 5, clients: 6, keys: 4, load: 3 * time.Second, opTimeout: 500 * time.Millisecond, checkTimeout: 20 * time.Second}

// linSeed returns RAFT_SEED, or a new seed, and logs it.
func linSeed(t *testing.T) int64 {
	seed := envSeed()
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay the nemesis and client choices with RAFT_SEED=%d; goroutine timing is not replayable)", seed, seed)
	return seed
}

// TestLinearizability_FileStorage is the same check with every node on a
// FileStorage: a crash closes the node and its storage, and the restart
// reopens the log from its files.
func TestLinearizability_FileStorage(t *testing.T) {
	seed := linSeed(t)
	cfg := linShort
	cfg.durable = true
	r := runLinearizability(t, seed, cfg)
	t.Logf("seed %d: %s", seed, r)
	t.Logf("nemesis: %s", strings.Join(r.actions, "; "))
	require.Greater(t, r.writesOK, 100, "seed %d: too few writes completed: %s", seed, r)
	require.Greater(t, r.readsOK, 50, "seed %d: too few reads completed: %s", seed, r)
}

func TestLinearizability_Short(t *testing.T) {
	seed := linSeed(t)
	r := runLinearizability(t, seed, linShort)
	t.Logf("seed %d: %s", seed, r)
	t.Logf("nemesis: %s", strings.Join(r.actions, "; "))
	require.Greater(t, r.writesOK, 100, "seed %d: too few writes completed for the check to mean anything: %s", seed, r)
	require.Greater(t, r.readsOK, 50, "seed %d: too few reads completed for the check to mean anything: %s", seed, r)
	require.GreaterOrEqual(t, len(r.actions), 3, "seed %d: the nemesis did too little: %s", seed, r)
	require.Positive(t, r.snapshots, "seed %d: no snapshot was taken: %s", seed, r)
}

// TestLinearizability_LeaseReads is TestLinearizability_Short with every
// node on Config.LeaseReads and every get through LeaseRead: the nemesis's
// partitions, crashes and message faults must not make a lease read stale
// (the nodes' clocks are the same machine's, so drift is within the bound).
func TestLinearizability_LeaseReads(t *testing.T) {
	seed := linSeed(t)
	cfg := linShort
	cfg.leaseReads = true
	r := runLinearizability(t, seed, cfg)
	t.Logf("seed %d: %s", seed, r)
	t.Logf("nemesis: %s", strings.Join(r.actions, "; "))
	require.Greater(t, r.writesOK, 100, "seed %d: too few writes completed: %s", seed, r)
	require.Greater(t, r.readsOK, 50, "seed %d: too few reads completed: %s", seed, r)
	require.GreaterOrEqual(t, len(r.actions), 3, "seed %d: the nemesis did too little: %s", seed, r)
	t.Logf("seed %d: %d reads answered from a lease by the nodes running at the end", seed, r.leaseServed)
	require.Positive(t, r.leaseServed, "seed %d: no read was answered from a lease", seed)
}

// TestLinearizability_Soak runs back-to-back rounds of 20 s of load, each on
// a fresh cluster of 3 or 5 nodes with its own seed, for RAFT_SOAK (a
// duration such as 10m).
// Pass -timeout 0 (or a timeout above RAFT_SOAK) to go test.
func TestLinearizability_Soak(t *testing.T) {
	env := os.Getenv("RAFT_SOAK")
	if env == "" {
		t.Skip("opt-in soak: set RAFT_SOAK=<duration>, e.g. RAFT_SOAK=10m (with -timeout 0)")
	}
	total, err := time.ParseDuration(env)
	require.NoError(t, err, "RAFT_SOAK")
	seed := linSeed(t)
	cfg := linShort
	cfg.load = 20 * time.Second
	cfg.checkTimeout = 5 * time.Minute
	deadline := time.Now().Add(total)
	var sum linResult
	for round := 1; ; round++ {
		// Round k runs seed+k-1, so that RAFT_SEED=<its seed> RAFT_SOAK=1ns
		// replays it alone (a soak runs at least one round).
		// The seed also picks 3 or 5 nodes.
		roundSeed := seed + int64(round-1)
		cfg.nodes = 3 + 2*int(roundSeed&1)
		r := runLinearizability(t, roundSeed, cfg)
		t.Logf("round %d, seed %d, %d nodes (replay it alone with RAFT_SEED=%d RAFT_SOAK=1ns): %s", round, roundSeed, cfg.nodes, roundSeed, r)
		sum.add(r)
		if t.Failed() || !time.Now().Before(deadline) {
			break
		}
	}
	t.Logf("soak: %s", &sum)
}

// TestLinearizability_CatchesStaleReads proves that the check bites: a Get
// served from a partitioned follower's state machine WITHOUT LinearizableRead
// returns a value overwritten through the majority, and porcupine must call
// that history Illegal. The scenario is built step by step, not left to a
// race. As a control, the same follower's read through LinearizableRead once
// the partition heals makes a history porcupine accepts.
func TestLinearizability_CatchesStaleReads(t *testing.T) {
	lc := newLinCluster(t, 3, 1, false)
	h := newLinHistory()
	leader := lc.waitLeader()
	follower := lc.follower(leader)
	const key = "k"
	ln, _ := lc.node(leader)
	fn, fkv := lc.node(follower)

	// put writes key=value through the leader; reached says whether the
	// follower must apply it (true) or must not have (false).
	put := func(value string, reached bool) porcupine.Operation {
		t.Helper()
		call := h.now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p, err := ln.ProposeAsync(encodeKV(kvPut, key, value))
		require.NoError(t, err)
		_, err = p.Wait(ctx)
		require.NoError(t, err)
		op := porcupine.Operation{ClientId: 0, Input: kvInput{kind: kvPut, key: key, value: value}, Output: kvOutput{}, Call: call, Return: h.now(), Metadata: fmt.Sprintf("node %d, index %d", leader, p.Index)}
		if reached {
			lc.waitApplied(follower, p.Index)
		} else {
			require.Less(t, fn.Status().AppliedIndex, p.Index, "the isolated follower must not have applied %q", value)
		}
		return op
	}

	// 1. v1 is written and reaches the follower.
	put1 := put("v1", true)
	// 2. The follower is cut off; v2 commits on the leader and the third
	//    node, a majority.
	lc.net.Isolate(follower)
	put2 := put("v2", false)
	// 3. A stale read: the follower's own map, without LinearizableRead,
	//    called after v2's write returned.
	call := h.now()
	stale := fkv.get(key)
	staleRead := porcupine.Operation{ClientId: 1, Input: kvInput{kind: kvGet, key: key}, Output: kvOutput{value: stale}, Call: call, Return: h.now(), Metadata: fmt.Sprintf("node %d, local read without LinearizableRead", follower)}
	require.Equal(t, "v1", stale, "the partitioned follower must still hold the old value")

	// The real read path refuses to answer on the partitioned follower.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := fn.LinearizableRead(ctx)
	cancel()
	require.Error(t, err, "LinearizableRead on a partitioned follower must not succeed")

	res, info := porcupine.CheckOperationsVerbose(kvModel, []porcupine.Operation{put1, put2, staleRead}, 10*time.Second)
	require.Equal(t, porcupine.Illegal, res, "porcupine must reject a stale read")
	viz := filepath.Join(t.TempDir(), "stale.html")
	require.NoError(t, porcupine.VisualizePath(kvModel, info, viz))
	t.Logf("stale read rejected as expected; the visualization renders (%s, removed after the test)", viz)

	// Control: after the heal, a read through LinearizableRead on the same
	// follower sees v2, and that history is linearizable.
	lc.net.Heal()
	var good porcupine.Operation
	require.Eventually(t, func() bool {
		call := h.now()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if fn.LinearizableRead(ctx) != nil {
			return false
		}
		good = porcupine.Operation{ClientId: 1, Input: kvInput{kind: kvGet, key: key}, Output: kvOutput{value: fkv.get(key)}, Call: call, Return: h.now()}
		return true
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, "v2", good.Output.(kvOutput).value)
	res = porcupine.CheckOperationsTimeout(kvModel, []porcupine.Operation{put1, put2, good}, 10*time.Second)
	require.Equal(t, porcupine.Ok, res, "the history with a LinearizableRead must be accepted")
}

// linCluster is a testCluster whose nodes run kvSMs, and whose nodes can be
// crashed and restarted while clients use them.
type linCluster struct {
	*testCluster
	mu       sync.Mutex // guards testCluster.nodes, testCluster.sms, kvs and files while clients and the nemesis run
	kvs      map[uint64]*kvSM
	restores int // snapshots restored by state machines no longer running
	// With durable storage: each node's log directory, and its open FileStorage.
	dirs  map[uint64]string
	files map[uint64]*FileStorage
}

// newLinCluster starts n nodes that run kvSMs, on MemoryStorage or, if
// durable, on FileStorage.
func newLinCluster(t *testing.T, n int, seed int64, durable bool, tune ...func(*Config)) *linCluster {
	t.Helper()
	lc := &linCluster{kvs: map[uint64]*kvSM{}}
	lc.testCluster = newTestCluster(t, n, withNetwork(WithSeed(seed)), withoutStarting(),
		// Frequent snapshots, so that restarted and lagging nodes often
		// catch up by InstallSnapshot.
		withConfig(func(cfg *Config) {
			cfg.SnapshotThreshold, cfg.TrailingEntries, cfg.SnapshotChunkSize = 200, 50, 1024
			for _, f := range tune {
				f(cfg)
			}
		}))
	if durable {
		lc.dirs, lc.files = map[uint64]string{}, map[uint64]*FileStorage{}
		for _, id := range lc.ids {
			lc.dirs[id] = t.TempDir()
		}
		t.Cleanup(lc.close)
	}
	for _, id := range lc.ids {
		require.NoError(t, lc.start(id))
	}
	return lc
}

// start (re)starts node id on its storage with a fresh kvSM, which the node
// fills by re-applying its committed log.
func (lc *linCluster) start(id uint64) error {
	kv := newKVSM()
	var storage Storage = lc.storages[id]
	var file *FileStorage
	if lc.dirs != nil {
		// No fsync: the crashes here are of processes, not machines.
		var err error
		if file, err = OpenFileStorage(lc.dirs[id], WithNoSync()); err != nil {
			return fmt.Errorf("reopening node %d's log: %w", id, err)
		}
		storage = file
	}
	n, err := NewNode(lc.cfg(id), kv, storage, lc.net.Transport(id))
	if err != nil {
		if file != nil {
			file.Close()
		}
		return fmt.Errorf("restarting node %d: %w", id, err)
	}
	lc.mu.Lock()
	lc.nodes[id], lc.sms[id], lc.kvs[id] = n, &kv.rec, kv
	if file != nil {
		lc.files[id] = file
	}
	lc.mu.Unlock()
	return nil
}

// close stops every node, then closes their FileStorages.
func (lc *linCluster) close() {
	lc.testCluster.close()
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for id, f := range lc.files {
		f.Close()
		delete(lc.files, id)
	}
}

// crash closes node id, as a crash after which every Save had reached the
// disk; its storage stays for the restart.
func (lc *linCluster) crash(id uint64) {
	lc.mu.Lock()
	n, file := lc.nodes[id], lc.files[id]
	if kv := lc.kvs[id]; kv != nil {
		kv.mu.Lock()
		lc.restores += kv.restores
		kv.mu.Unlock()
	}
	delete(lc.nodes, id)
	delete(lc.kvs, id)
	delete(lc.files, id)
	lc.mu.Unlock()
	if n != nil {
		n.Close()
	}
	if file != nil {
		file.Close()
	}
}

// node returns node id and its state machine, or nil if it is down.
func (lc *linCluster) node(id uint64) (*Node, *kvSM) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.nodes[id], lc.kvs[id]
}

// leaderID returns the running node that leads in the highest term, or 0.
func (lc *linCluster) leaderID() uint64 {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var leader, term uint64
	for id, n := range lc.nodes {
		if s := n.Status(); s.Role == Leader && s.Term >= term {
			leader, term = id, s.Term
		}
	}
	return leader
}

// linHistory collects the operations of a run.
type linHistory struct {
	start time.Time

	mu   sync.Mutex
	ops  []porcupine.Operation // completed: output known
	open []porcupine.Operation // writes with an unknown outcome; Return set by finish
	linCounts
}

// linCounts counts what the clients saw.
type linCounts struct {
	writesOK, readsOK   int
	writesUnknown       int
	writeAttemptsFailed int // definite failures, dropped and retried
	readsFailed         int // dropped
}

func newLinHistory() *linHistory { return &linHistory{start: time.Now()} }

// now is the history's clock: monotonic nanoseconds since the start.
func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) done(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	if op.Input.(kvInput).kind == kvGet {
		h.readsOK++
	} else {
		h.writesOK++
	}
}

func (h *linHistory) unknown(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Output = kvOutput{unknown: true}
	h.open = append(h.open, op)
	h.writesUnknown++
}

func (h *linHistory) count(f func(*linCounts)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.linCounts)
}

// finish closes the open operations at end, which must be later than every
// recorded return, and returns the whole history.
func (h *linHistory) finish(end int64) []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := slices.Clone(h.ops)
	for _, op := range h.open {
		op.Return = end
		ops = append(ops, op)
	}
	return ops
}

// linResult summarizes a run.
type linResult struct {
	linCounts
	restores  int    // snapshots installed from the leader or restored at restart
	snapshots uint64 // highest snapshot index among the nodes at the end
	// leaseServed counts the reads answered from a read lease by the nodes
	// running at the end (a crash loses a node's count).
	leaseServed uint64
	ops         int
	actions     []string
	loadTime    time.Duration
	checkTime   time.Duration
	check       porcupine.CheckResult
}

func (r *linResult) String() string {
	return fmt.Sprintf("%d ops: %d writes ok, %d reads ok, %d writes unknown (open-ended), %d write attempts and %d reads failed definitely (dropped); snapshots up to %d, %d restored; %d nemesis actions (%s); load %v, check %v: %s",
		r.ops, r.writesOK, r.readsOK, r.writesUnknown, r.writeAttemptsFailed, r.readsFailed, r.snapshots, r.restores,
		len(r.actions), r.actionKinds(), r.loadTime.Round(time.Millisecond), r.checkTime.Round(time.Millisecond), r.check)
}

// actionKinds counts the nemesis actions by kind.
func (r *linResult) actionKinds() string {
	counts := map[string]int{}
	for _, a := range r.actions {
		for part := range strings.SplitSeq(a, " + ") {
			counts[strings.Fields(part)[0]]++
		}
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(kinds, ", ")
}

func (r *linResult) add(o *linResult) {
	r.ops += o.ops
	r.writesOK += o.writesOK
	r.readsOK += o.readsOK
	r.writesUnknown += o.writesUnknown
	r.writeAttemptsFailed += o.writeAttemptsFailed
	r.readsFailed += o.readsFailed
	r.restores += o.restores
	r.snapshots = max(r.snapshots, o.snapshots)
	r.actions = append(r.actions, o.actions...)
	r.loadTime += o.loadTime
	r.checkTime += o.checkTime
	r.check = o.check
}

// linWorkload is one run: the cluster, the clients, the nemesis and the
// history they write.
type linWorkload struct {
	t    *testing.T
	cfg  linConfig
	lc   *linCluster
	h    *linHistory
	keys []string

	actionsMu sync.Mutex
	actions   []string
}

// runLinearizability runs cfg.load of clients and nemesis on a fresh
// cluster, heals it, reads every key on every node, checks the history and
// closes the cluster.
func runLinearizability(t *testing.T, seed int64, cfg linConfig) *linResult {
	t.Helper()
	var tune []func(*Config)
	if cfg.leaseReads {
		tune = append(tune, func(c *Config) { c.LeaseReads = true })
	}
	w := &linWorkload{t: t, cfg: cfg, lc: newLinCluster(t, cfg.nodes, seed, cfg.durable, tune...), h: newLinHistory()}
	defer w.lc.close()
	for i := range cfg.keys {
		w.keys = append(w.keys, fmt.Sprintf("k%d", i))
	}
	w.lc.waitLeader()

	rng := rand.New(rand.NewSource(seed))
	nemesisRng := rand.New(rand.NewSource(rng.Int63()))
	loadStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.load)
	defer cancel()
	var wg sync.WaitGroup
	for c := range cfg.clients {
		crng := rand.New(rand.NewSource(rng.Int63()))
		wg.Go(func() { w.client(ctx, c, crng) })
	}
	wg.Go(func() { w.nemesis(ctx, nemesisRng) })
	wg.Wait()
	loadTime := time.Since(loadStart)

	// The nemesis has undone its last action: everything is healed and every
	// node runs. Read every key on every node, through LinearizableRead.
	w.lc.net.Heal()
	w.lc.net.SetFaults(Faults{})
	require.Len(t, w.lc.running(), cfg.nodes)
	for _, id := range w.lc.ids {
		for _, key := range w.keys {
			require.Eventually(t, func() bool { return w.get(w.cfg.clients, id, key) }, 10*time.Second, time.Millisecond,
				"seed %d: no linearizable read of %s on node %d after the heal: %s", seed, key, id, lazyStatuses{w.lc.testCluster})
		}
	}
	ops := w.h.finish(w.h.now() + 1)
	w.lc.checkSameHistory()

	r := &linResult{ops: len(ops), actions: w.actions, loadTime: loadTime}
	w.lc.mu.Lock()
	r.restores = w.lc.restores
	for id, kv := range w.lc.kvs {
		kv.mu.Lock()
		r.restores += kv.restores
		kv.mu.Unlock()
		r.snapshots = max(r.snapshots, w.lc.nodes[id].Status().SnapshotIndex)
		n := w.lc.nodes[id]
		require.NoError(t, n.call(context.Background(), func() { r.leaseServed += n.core.lease.served }))
	}
	w.lc.mu.Unlock()
	w.h.count(func(c *linCounts) { r.linCounts = *c })
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, cfg.checkTimeout)
	r.checkTime, r.check = time.Since(checkStart), res
	switch res {
	case porcupine.Illegal:
		path := "(visualization not written)"
		if f, err := os.CreateTemp("", "raft-lin-*.html"); err != nil {
			t.Logf("creating the visualization: %v", err)
		} else {
			if err := porcupine.Visualize(kvModel, info, f); err != nil {
				t.Logf("writing the visualization: %v", err)
			}
			f.Close()
			path = f.Name()
		}
		t.Fatalf("seed %d (replay with RAFT_SEED=%d): the history is NOT linearizable; visualization: %s\n%s", seed, seed, path, r)
	case porcupine.Unknown:
		t.Logf("seed %d: porcupine timed out after %v; linearizability unknown (not a failure)", seed, cfg.checkTimeout)
	}
	return r
}

// linClient is one client's view.
type linClient struct {
	id     int
	rng    *rand.Rand
	leader uint64 // where it sends writes
}

func (w *linWorkload) client(ctx context.Context, id int, rng *rand.Rand) {
	cl := &linClient{id: id, rng: rng, leader: w.lc.ids[rng.Intn(len(w.lc.ids))]}
	for seq := 0; ctx.Err() == nil; seq++ {
		key := w.keys[rng.Intn(len(w.keys))]
		switch r := rng.Intn(100); {
		case r < 40:
			if !w.get(id, w.lc.ids[rng.Intn(len(w.lc.ids))], key) {
				pause(ctx, time.Duration(1+rng.Intn(5))*time.Millisecond) // backoff
			}
		case r < 85:
			w.write(ctx, cl, kvInput{kind: kvAppend, key: key, value: fmt.Sprintf("%d.%d;", id, seq)})
		default:
			w.write(ctx, cl, kvInput{kind: kvPut, key: key, value: fmt.Sprintf("p%d.%d;", id, seq)})
		}
	}
}

// write proposes in until it is appended somewhere, then records its
// outcome: known, or unknown and open-ended. Attempts refused before the
// append are definite failures and are retried (see the top of the file).
func (w *linWorkload) write(ctx context.Context, cl *linClient, in kvInput) {
	data := encodeKV(in.kind, in.key, in.value)
	call := w.h.now()
	hints := 0 // leader hints followed in a row without a backoff
	for ctx.Err() == nil {
		n, _ := w.lc.node(cl.leader)
		var p *Proposal
		err := ErrClosed // node down: as if it refused
		if n != nil {
			p, err = n.ProposeAsync(data)
		}
		if err != nil {
			w.h.count(func(c *linCounts) { c.writeAttemptsFailed++ })
			var nle *NotLeaderError
			if errors.As(err, &nle) && nle.Leader != 0 && nle.Leader != cl.leader && hints < 2 {
				cl.leader, hints = nle.Leader, hints+1
				continue
			}
			hints = 0
			cl.leader = w.otherNode(cl)
			pause(ctx, time.Duration(1+cl.rng.Intn(5))*time.Millisecond) // backoff
			continue
		}
		wctx, cancel := context.WithTimeout(context.Background(), w.cfg.opTimeout)
		res, err := p.Wait(wctx)
		cancel()
		op := porcupine.Operation{ClientId: cl.id, Input: in, Call: call, Metadata: fmt.Sprintf("node %d, index %d term %d", cl.leader, p.Index, p.Term)}
		if err != nil {
			op.Metadata = fmt.Sprintf("%s: %v", op.Metadata, err)
			w.h.unknown(op)
			if !errors.Is(err, context.DeadlineExceeded) {
				cl.leader = w.otherNode(cl)
			}
			return
		}
		op.Return = w.h.now()
		out := kvOutput{}
		if in.kind == kvAppend {
			out.value = res.(string)
		}
		op.Output = out
		w.h.done(op)
		return
	}
	// The load ended before an attempt was appended: the write never happened.
}

func (w *linWorkload) otherNode(cl *linClient) uint64 {
	for {
		if id := w.lc.ids[cl.rng.Intn(len(w.lc.ids))]; id != cl.leader {
			return id
		}
	}
}

// get reads key on node id after LinearizableRead and records it; a failed
// read is dropped. It reports whether the read succeeded.
func (w *linWorkload) get(client int, id uint64, key string) bool {
	n, kv := w.lc.node(id)
	if n == nil {
		return false // crashed
	}
	call := w.h.now()
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.opTimeout)
	var err error
	if w.cfg.leaseReads {
		err = n.LeaseRead(ctx)
	} else {
		err = n.LinearizableRead(ctx)
	}
	cancel()
	if err != nil {
		w.h.count(func(c *linCounts) { c.readsFailed++ })
		return false
	}
	value := kv.get(key)
	w.h.done(porcupine.Operation{ClientId: client, Input: kvInput{kind: kvGet, key: key}, Output: kvOutput{value: value}, Call: call, Return: w.h.now(), Metadata: fmt.Sprintf("node %d", id)})
	return true
}

// nemesis injects one fault at a time at random moments, holds it for a
// bounded time and undoes it, until ctx ends; then the cluster is healed and
// every node runs.
func (w *linWorkload) nemesis(ctx context.Context, rng *rand.Rand) {
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int63n(int64(hi-lo))) }
	for pause(ctx, between(30*time.Millisecond, 200*time.Millisecond)) {
		what, undo := w.fault(rng)
		if rng.Intn(3) == 0 && !strings.HasPrefix(what, "faults") {
			f := w.randomFaults(rng)
			w.lc.net.SetFaults(f)
			what += fmt.Sprintf(" + faults %+v", f)
			prev := undo
			undo = func() { w.lc.net.SetFaults(Faults{}); prev() }
		}
		w.actionsMu.Lock()
		w.actions = append(w.actions, what)
		w.actionsMu.Unlock()
		pause(ctx, between(100*time.Millisecond, 400*time.Millisecond)) // cut short when the load ends
		undo()
	}
}

// fault injects one random fault and returns what it did and how to undo it.
func (w *linWorkload) fault(rng *rand.Rand) (string, func()) {
	nw, ids := w.lc.net, w.lc.ids
	heal := nw.Heal
	leader := w.lc.leaderID()
	if leader == 0 {
		leader = ids[rng.Intn(len(ids))]
	}
	switch rng.Intn(5) {
	case 0: // majority / minority
		perm := rng.Perm(len(ids))
		k := 1 + rng.Intn((len(ids)-1)/2)
		var minority, majority []uint64
		for i, j := range perm {
			if i < k {
				minority = append(minority, ids[j])
			} else {
				majority = append(majority, ids[j])
			}
		}
		nw.Partition(minority, majority)
		return fmt.Sprintf("partition %v | %v", minority, majority), heal
	case 1:
		nw.Isolate(leader)
		return fmt.Sprintf("isolate leader %d", leader), heal
	case 2: // one direction of one link, at the leader or anywhere
		var from, to uint64
		switch rng.Intn(3) {
		case 0:
			from, to = leader, ids[rng.Intn(len(ids))]
		case 1:
			from, to = ids[rng.Intn(len(ids))], leader
		default:
			from, to = ids[rng.Intn(len(ids))], ids[rng.Intn(len(ids))]
		}
		if from == to {
			to = ids[(slices.Index(ids, from)+1)%len(ids)]
		}
		nw.Cut(from, to)
		return fmt.Sprintf("cut %d->%d", from, to), heal
	case 3: // crash the leader or any node, restart it on its storage
		victim := leader
		if rng.Intn(2) == 0 {
			victim = ids[rng.Intn(len(ids))]
		}
		w.lc.crash(victim)
		return fmt.Sprintf("crash %d", victim), func() {
			if err := w.lc.start(victim); err != nil {
				w.t.Errorf("nemesis: %v", err)
			}
		}
	default:
		f := w.randomFaults(rng)
		nw.SetFaults(f)
		return fmt.Sprintf("faults %+v", f), func() { nw.SetFaults(Faults{}) }
	}
}

func (w *linWorkload) randomFaults(rng *rand.Rand) Faults {
	return Faults{
		Drop:      float64(rng.Intn(21)) / 100,
		Duplicate: float64(rng.Intn(21)) / 100,
		MaxDelay:  time.Duration(rng.Intn(6)) * time.Millisecond,
	}
}

// pause waits d, or less if ctx ends first; it reports whether ctx is still
// live. It paces the nemesis and backs clients off; it never waits for a
// condition.
func pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
