package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/client"
)

// The black-box test: the kvstore binary, built by the test, runs as three
// processes on loopback, then as five; clients use the HTTP API through
// the client package while faults are injected; then every node is killed
// and restarted, the keys are read back, and porcupine checks the whole
// history (puts, deletes, compare-and-swaps, linearizable and lease reads
// on any node) against a sequential key-value store. The nodes run with
// -lease-reads; the test's processes share one clock, so the lease's drift
// bound holds.
//
// The faults (nemesis_test.go): first a follower is cut off until the
// others have compacted their logs past its last entry, so that it must be
// sent a snapshot over TCP when it is reconnected, which the test checks
// from outside (the node's GET /metrics, /status and log). Then, one at a
// time: SIGKILL and restart, SIGSTOP and SIGCONT, and partitions of the
// Raft network made by a proxy in front of each Raft port
// (faultnet_test.go): a node isolated, the leader with a minority against
// a majority that elects a new leader, a bridge, one-way cuts; each
// dropping connections or stalling them and delivering late. Nodes cut off
// in a minority are sent writes and reads directly: they must acknowledge
// no write and serve no ReadIndex read, and no lease read once the
// majority knows a new leader.
//
// Which outcomes are definite follows the client package: a write that
// failed with an *UnknownOutcomeError stays in the history, open-ended (it
// may linearize anywhere after its call, or never be observed); a write
// that failed otherwise was not applied, and is dropped; so is a failed
// read. Every written value is unique, so a key's revision and its value
// name each other, and a compare-and-swap on a revision is, in the model, a
// compare-and-swap on the value read with that revision.
//
// The nodes snapshot every 200 entries and keep 50 behind a snapshot, so
// restarted nodes restore snapshots from their own disk, and lagging ones
// get one from the leader.
//
// The default run is 8 s of load on 3 nodes, then 6 s on 5. KVSTORE_SOAK=3m
// runs each longer and KVSTORE_NODES=5 on five nodes only, for instance:
//
//	KVSTORE_SOAK=3m KVSTORE_NODES=5 go test -run TestBlackBox -timeout 0 -v ./examples/kvstore
//
// KVSTORE_SEED=<seed> replays the nemesis's and the clients' choices (not
// the timing), with KVSTORE_NODES to pick the run. On failure the test
// keeps its directory, with the nodes' logs and data and the porcupine
// visualization, and prints its path.

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvstore-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kvBinary.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// kvBinary is the kvstore binary, built once for all the tests.
var kvBinary struct {
	dir  string // made by TestMain, removed after the tests
	once sync.Once
	path string
	err  error
}

// buildBinary builds the kvstore binary the first time it is called, and
// returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	kvBinary.once.Do(func() {
		path := filepath.Join(kvBinary.dir, "kvstore")
		if out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput(); err != nil {
			kvBinary.err = fmt.Errorf("go build: %w: %s", err, out)
			return
		}
		kvBinary.path = path
	})
	require.NoError(t, kvBinary.err)
	return kvBinary.path
}

func TestBlackBox_LinearizableThroughKillsAndRestarts(t *testing.T) {
	// The default run: 3 nodes, then 5.
	runs := []struct {
		nodes int
		load  time.Duration
	}{{3, 8 * time.Second}, {5, 6 * time.Second}}
	if v := os.Getenv("KVSTORE_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "KVSTORE_NODES")
		require.GreaterOrEqual(t, n, 3, "KVSTORE_NODES: the faults need at least 3 nodes")
		runs = runs[:1]
		runs[0].nodes = n
	}
	if v := os.Getenv("KVSTORE_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "KVSTORE_SOAK")
		for i := range runs {
			runs[i].load = d
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KVSTORE_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "KVSTORE_SEED")
		seed = s
	}
	for _, run := range runs {
		t.Run(fmt.Sprintf("%d nodes", run.nodes), func(t *testing.T) {
			t.Logf("seed %d (replay with KVSTORE_SEED=%d KVSTORE_NODES=%d), %v of load", seed, seed, run.nodes, run.load)
			blackBox(t, run.nodes, seed, run.load)
		})
	}
}

// The nodes snapshot every snapshotThreshold applied entries and keep
// trailingEntries behind each snapshot.
const (
	snapshotThreshold = 200
	trailingEntries   = 50
)

func blackBox(t *testing.T, nodes int, seed uint64, load time.Duration) {
	rng := rand.New(rand.NewPCG(seed, uint64(nodes)<<32|1))
	c := newTestCluster(t, nodes)
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)

	h := &history{start: time.Now()}
	keys := []string{"a", "b", "c"}
	ctx, cancel := context.WithTimeout(context.Background(), load)
	defer cancel()
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+2))
		wg.Go(func() { runWorker(ctx, w, wrng, c, keys, h) })
	}
	// First, under the workers' load, a follower falls behind the others'
	// compaction and is sent a snapshot; then the random faults.
	lagged := lagBehindSnapshot(t, rng, c, h, trailingEntries)
	t.Logf("snapshot over the network: %s", lagged)
	rec := &nemesisRecord{}
	wg.Go(func() { nemesis(ctx, rng, c, h, keys, rec) })
	wg.Wait()
	t.Logf("nemesis: %s", strings.Join(rec.actions, "; "))
	t.Logf("nemesis: %s", rec.summary())
	for _, v := range rec.violations {
		t.Errorf("seed %d: %s; logs in %s", seed, v, c.dir)
	}

	// Every node restarts: what was acknowledged must have been durable.
	for id := range c.nodes {
		c.kill(id)
	}
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 30*time.Second)
	final := client.New(c.httpAddrs()...)
	defer final.Close()
	for _, key := range append(keys, "fill") {
		fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
		call := h.now()
		value, rev, err := final.Get(fctx, key, client.Linearizable)
		fcancel()
		if errors.Is(err, client.ErrNotFound) {
			err = nil
		}
		require.NoError(t, err, "seed %d: final read of %s; logs in %s", seed, key, c.dir)
		h.add(porcupine.Operation{ClientId: workers, Input: kvIn{op: opGet, key: key}, Output: kvOut{value: string(value)},
			Call: call, Return: h.now(), Metadata: fmt.Sprintf("final read, revision %d", rev)})
		if acked := h.maxAcked(key); value != nil && rev < acked {
			t.Errorf("seed %d: key %s is at revision %d after the restarts, but a write at revision %d was acknowledged; logs in %s",
				seed, key, rev, acked, c.dir)
		}
	}

	ops := h.finish()
	t.Logf("history: %d operations (%s); nodes' logs: %s", len(ops), h.counts(),
		c.logCounts("snapshot taken", "snapshot sent", "snapshot received", "snapshot restored"))
	require.Greater(t, h.okWrites, 10, "seed %d: too few writes succeeded to check anything; logs in %s", seed, c.dir)
	// A history porcupine cannot decide in time proves nothing: that is a
	// failure too, not a pass. Keys are checked independently, so the
	// time grows with the run's length.
	checkFor := max(time.Minute, 2*load)
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, checkFor)
	switch res {
	case porcupine.Illegal:
		viz := filepath.Join(c.dir, "linearizability.html")
		if err := porcupine.VisualizePath(kvModel, info, viz); err != nil {
			t.Logf("writing the visualization: %v", err)
		}
		t.Fatalf("seed %d: the history is NOT linearizable; visualization %s, nodes' logs in %s", seed, viz, c.dir)
	case porcupine.Unknown:
		t.Fatalf("seed %d: porcupine could not decide within %v whether the history of %d operations is linearizable; nodes' logs in %s",
			seed, checkFor, len(ops), c.dir)
	}
}

// A fourth process joins a running cluster with -join (as a learner,
// promoting itself once caught up), serves linearizable reads, and is
// removed through the admin API.
func TestBlackBox_JoinPromoteAndRemove(t *testing.T) {
	c := newTestCluster(t, 3)
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := client.New(c.httpAddrs()...)
	defer cl.Close()
	_, err := cl.Put(ctx, "k", []byte("before the join"))
	require.NoError(t, err)

	joiner := c.addJoiner(t, 4, c.nodes[2].http)
	c.start(4)
	require.Eventually(t, func() bool {
		st, err := joiner.tryStatus()
		if err != nil {
			return false
		}
		i := slices.IndexFunc(st.Members, func(m raft.Member) bool { return m.ID == 4 })
		return i >= 0 && !st.Members[i].Learner && st.Members[i].Meta["http"] == joiner.http
	}, 20*time.Second, 20*time.Millisecond, "node 4 did not become a voter; logs in %s", c.dir)

	at4 := client.New(joiner.http)
	defer at4.Close()
	v, _, err := at4.Get(ctx, "k", client.Linearizable)
	require.NoError(t, err)
	assert.Equal(t, "before the join", string(v))

	require.NoError(t, cl.RemoveMember(ctx, 4))
	require.Eventually(t, func() bool {
		st, err := joiner.tryStatus()
		return err == nil && st.Removed
	}, 10*time.Second, 20*time.Millisecond, "node 4 does not know it was removed; logs in %s", c.dir)
	_, err = cl.Put(ctx, "k", []byte("after the removal"))
	require.NoError(t, err, "three voters go on")
}

// Three processes whose Raft connections use mutual TLS, with certificates
// that name their node IDs, elect a leader and replicate.
func TestBlackBox_MutualTLS(t *testing.T) {
	c := newTestCluster(t, 3)
	ca := c.useMutualTLS(t)
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := client.New(c.httpAddrs()...)
	defer cl.Close()
	rev, err := cl.Put(ctx, "k", []byte("over TLS"))
	require.NoError(t, err)
	for _, addr := range c.httpAddrs() {
		at := client.New(addr)
		v, r, err := at.Get(ctx, "k", client.Linearizable)
		at.Close()
		require.NoError(t, err, addr)
		assert.Equal(t, "over TLS", string(v))
		assert.Equal(t, rev, r)
	}

	// The Raft port speaks TLS, with the node's certificate.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conn, err := tls.Dial("tcp", c.nodes[1].raft, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	defer conn.Close()
	peer := conn.ConnectionState().PeerCertificates[0]
	require.Len(t, peer.URIs, 1)
	assert.Equal(t, raft.NodeIdentityURI("kvstore", 1).String(), peer.URIs[0].String())
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvstore test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return ca, key
}

// newNodeCert returns a certificate for node id on 127.0.0.1, for server and
// client authentication, naming the node (raft://kvstore/node/<id>), and its
// key, both DER.
func newNodeCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, id uint64) (cert, key []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(id) + 1), Subject: pkix.Name{CommonName: fmt.Sprintf("node %d", id)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		URIs:        []*url.URL{raft.NodeIdentityURI("kvstore", id)},
	}
	cert, err = x509.CreateCertificate(crand.Reader, tmpl, ca, &k.PublicKey, caKey)
	require.NoError(t, err)
	key, err = x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	return cert, key
}

func writePEM(t *testing.T, path, typ string, der []byte) string {
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

// runWorker runs random operations until ctx ends.
func runWorker(ctx context.Context, id int, rng *rand.Rand, c *testCluster, keys []string, h *history) {
	writer := client.New(c.httpAddrs()...)
	defer writer.Close()
	// One reader per node, each pinned to its node (it never writes, so it
	// never follows a redirect): reads are served by followers too.
	var readers []*client.Client
	for _, addr := range c.httpAddrs() {
		r := client.New(addr)
		defer r.Close()
		readers = append(readers, r)
	}
	for seq := 0; ctx.Err() == nil; seq++ {
		key := keys[rng.IntN(len(keys))]
		value := fmt.Sprintf("w%d-%d", id, seq)
		opCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		// A reader is pinned to its node: when the node is down, paused
		// or cut off, the read is given up sooner than a write.
		readCtx, readCancel := context.WithTimeout(opCtx, time.Second)
		consistency := client.Linearizable
		if rng.IntN(2) == 0 {
			consistency = client.Lease
		}
		switch p := rng.Float64(); {
		case p < 0.4:
			read(readCtx, id, readers[rng.IntN(len(readers))], consistency, key, h)
		case p < 0.7:
			call := h.now()
			rev, err := writer.Put(opCtx, key, []byte(value))
			h.write(id, kvIn{op: opPut, key: key, value: value}, call, rev, err)
		case p < 0.8:
			call := h.now()
			rev, err := writer.Delete(opCtx, key)
			h.write(id, kvIn{op: opDelete, key: key}, call, rev, err)
		default:
			// A compare-and-swap on what a linearizable read returned.
			got, rev, ok := read(readCtx, id, readers[rng.IntN(len(readers))], consistency, key, h)
			if !ok {
				break
			}
			call := h.now()
			newRev, err := writer.PutIf(opCtx, key, []byte(value), rev)
			h.write(id, kvIn{op: opCAS, key: key, value: value, expect: got}, call, newRev, err)
		}
		readCancel()
		cancel()
	}
}

// read does a linearizable or lease read and records it if it succeeded.
func read(ctx context.Context, clientID int, r *client.Client, consistency client.Consistency, key string, h *history) (value string, rev uint64, ok bool) {
	call := h.now()
	v, rev, err := r.Get(ctx, key, consistency)
	switch {
	case errors.Is(err, client.ErrNotFound):
	case err != nil:
		return "", 0, false // a failed read had no effect
	}
	h.add(porcupine.Operation{ClientId: clientID, Input: kvIn{op: opGet, key: key}, Output: kvOut{value: string(v)},
		Call: call, Return: h.now(), Metadata: fmt.Sprintf("%s read, revision %d", consistency, rev)})
	return string(v), rev, true
}

// testCluster is the kvstore processes.
type testCluster struct {
	t     *testing.T
	bin   string
	dir   string    // kept on failure: data, logs, visualization
	net   *faultNet // the Raft network between the founding nodes
	nodes map[uint64]*testNode
}

type testNode struct {
	proxy      *raftProxy // in front of the Raft port: peers dial it (founding nodes)
	id         uint64
	raft, http string
	args       []string
	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	log        *os.File
}

// newTestCluster builds the binary and chooses the nodes' ports.
func newTestCluster(t *testing.T, n int) *testCluster {
	dir, err := os.MkdirTemp("", "kvstore-blackbox-*")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s (the nodes' logs and data)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	bin := buildBinary(t)

	c := &testCluster{t: t, bin: bin, dir: dir, net: newFaultNet(t), nodes: map[uint64]*testNode{}}
	var members []string
	for id := uint64(1); id <= uint64(n); id++ {
		nd := &testNode{id: id, raft: freeAddr(t), http: freeAddr(t)}
		nd.proxy = newRaftProxy(t, c.net, id, nd.raft)
		c.nodes[id] = nd
		members = append(members, fmt.Sprintf("%d=%s=%s", id, nd.proxy.addr(), nd.http))
	}
	for id, nd := range c.nodes {
		nd.args = []string{"-id", strconv.FormatUint(id, 10), "-data", filepath.Join(dir, fmt.Sprintf("node%d", id)),
			"-raft", nd.raft, "-raft-advertise", nd.proxy.addr(), "-http", nd.http, "-members", strings.Join(members, ","),
			"-election-timeout", "300ms", "-snapshot-threshold", strconv.Itoa(snapshotThreshold),
			"-trailing-entries", strconv.Itoa(trailingEntries), "-lease-reads", "-log-level", "info"}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("node%d.log", id)))
		require.NoError(t, err)
		nd.log = f
	}
	t.Cleanup(func() {
		for id, nd := range c.nodes {
			c.kill(id)
			nd.log.Close()
		}
	})
	return c
}

// addJoiner adds node id, which joins through the member at joinHTTP.
func (c *testCluster) addJoiner(t *testing.T, id uint64, joinHTTP string) *testNode {
	nd := &testNode{id: id, raft: freeAddr(t), http: freeAddr(t)}
	nd.args = []string{"-id", strconv.FormatUint(id, 10), "-data", filepath.Join(c.dir, fmt.Sprintf("node%d", id)),
		"-raft", nd.raft, "-http", nd.http, "-join", joinHTTP, "-election-timeout", "300ms", "-lease-reads", "-log-level", "info"}
	f, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("node%d.log", id)))
	require.NoError(t, err)
	nd.log = f
	c.nodes[id] = nd
	return nd
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func (c *testCluster) httpAddrs() []string {
	var addrs []string
	for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
		addrs = append(addrs, c.nodes[id].http)
	}
	return addrs
}

// start starts node id's process.
func (c *testCluster) start(id uint64) {
	nd := c.nodes[id]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	fmt.Fprintf(nd.log, "=== test: starting node %d\n", id)
	cmd := exec.Command(c.bin, nd.args...)
	cmd.Stdout, cmd.Stderr = nd.log, nd.log
	if err := cmd.Start(); err != nil {
		c.t.Errorf("starting node %d: %v", id, err)
		return
	}
	nd.cmd, nd.exited = cmd, make(chan struct{})
	exited := nd.exited
	go func() {
		cmd.Wait() //nolint:errcheck // killed on purpose
		close(exited)
	}()
}

// signal sends sig to node id's process.
func (c *testCluster) signal(id uint64, sig syscall.Signal) {
	nd := c.nodes[id]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		nd.cmd.Process.Signal(sig) //nolint:errcheck // it may have exited
	}
}

// kill kills node id's process with SIGKILL and waits for it to exit.
func (c *testCluster) kill(id uint64) {
	nd := c.nodes[id]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited
	<-nd.exited
	fmt.Fprintf(nd.log, "=== test: killed node %d\n", id)
	nd.cmd = nil
}

// leader returns the leader as some node reports it, 0 if none knows.
func (c *testCluster) leader() uint64 { return c.leaderAmong(c.ids()) }

// logCounts counts the lines of the nodes' logs that contain each phrase.
func (c *testCluster) logCounts(phrases ...string) string {
	var out []string
	for _, phrase := range phrases {
		n := 0
		for _, nd := range c.nodes {
			b, err := os.ReadFile(nd.log.Name())
			if err == nil {
				n += strings.Count(string(b), phrase)
			}
		}
		out = append(out, fmt.Sprintf("%q %d", phrase, n))
	}
	return strings.Join(out, ", ")
}

// useMutualTLS gives every node of c a certificate naming its node ID,
// signed by a new CA that every node trusts (-tls-cert, -tls-key, -tls-ca),
// and returns the CA's certificate.
func (c *testCluster) useMutualTLS(t *testing.T) *x509.Certificate {
	t.Helper()
	ca, caKey := newCA(t)
	caFile := writePEM(t, filepath.Join(c.dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	for id, nd := range c.nodes {
		cert, key := newNodeCert(t, ca, caKey, id)
		nd.args = append(nd.args,
			"-tls-cert", writePEM(t, filepath.Join(c.dir, fmt.Sprintf("node%d.crt", id)), "CERTIFICATE", cert),
			"-tls-key", writePEM(t, filepath.Join(c.dir, fmt.Sprintf("node%d.key", id)), "PRIVATE KEY", key),
			"-tls-ca", caFile)
	}
	return ca
}

// status returns the node's /status.
func (nd *testNode) status(t *testing.T) raft.Status {
	t.Helper()
	st, err := nd.tryStatus()
	require.NoError(t, err)
	return st
}

func (nd *testNode) tryStatus() (raft.Status, error) { return fetchStatus[raft.Status](nd) }

// fetchStatus decodes the node's /status into a T: a raft.Status, or a
// server.ShardedStatus with -groups.
func fetchStatus[T any](nd *testNode) (T, error) {
	var st T
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + nd.http + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// waitHealthy waits until every node answers /healthz with 200.
func (c *testCluster) waitHealthy(t *testing.T, within time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for id, nd := range c.nodes {
		require.Eventually(t, func() bool {
			resp, err := hc.Get("http://" + nd.http + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, within, 20*time.Millisecond, "node %d is not healthy; logs in %s", id, c.dir)
	}
}

// The model: a map of keys to values, partitioned by key; "" is an absent
// key.

type kvOp uint8

const (
	opGet kvOp = iota + 1
	opPut
	opDelete
	opCAS
)

type kvIn struct {
	op         kvOp
	key, value string
	expect     string // opCAS: the value read with the revision given
}

type kvOut struct {
	value   string // opGet
	ok      bool   // opCAS: it swapped
	unknown bool   // a write whose outcome is unknown
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvIn).key
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, k := range slices.Sorted(maps.Keys(byKey)) {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(kvIn), output.(kvOut)
		switch in.op {
		case opGet:
			return out.value == st, st
		case opPut:
			return true, in.value
		case opDelete:
			return true, ""
		case opCAS:
			switch {
			case out.unknown && st == in.expect, out.ok && st == in.expect:
				return true, in.value
			case out.unknown:
				return true, st
			default:
				return !out.ok && st != in.expect, st
			}
		}
		return false, st
	},
	Equal: func(a, b any) bool { return a == b },
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvIn), output.(kvOut)
		var s string
		switch in.op {
		case opGet:
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case opPut:
			s = fmt.Sprintf("put(%s, %q)", in.key, in.value)
		case opDelete:
			s = fmt.Sprintf("delete(%s)", in.key)
		case opCAS:
			s = fmt.Sprintf("cas(%s, %q -> %q) -> %v", in.key, in.expect, in.value, out.ok)
		}
		if out.unknown {
			s += " ?"
		}
		return s
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
	DescribeOperationMetadata: func(info any) string {
		if info == nil {
			return ""
		}
		return fmt.Sprint(info)
	},
}

// history collects the operations.
type history struct {
	start time.Time

	mu       sync.Mutex
	ops      []porcupine.Operation
	open     []porcupine.Operation // writes with an unknown outcome
	acked    map[string]uint64     // per key, the highest revision of an acknowledged write
	okWrites int
	failed   int // writes that certainly failed: dropped
	fills    int // values written to "fill" so far: each is unique
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// write records a write's outcome.
func (h *history) write(clientID int, in kvIn, call int64, rev uint64, err error) {
	ret := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	op := porcupine.Operation{ClientId: clientID, Input: in, Call: call, Return: ret}
	switch {
	case err == nil, errors.Is(err, client.ErrConflict):
		op.Output = kvOut{ok: err == nil}
		op.Metadata = fmt.Sprintf("revision %d", rev)
		h.ops = append(h.ops, op)
		if err == nil {
			h.okWrites++
			if h.acked == nil {
				h.acked = map[string]uint64{}
			}
			h.acked[in.key] = max(h.acked[in.key], rev)
		}
	case errors.Is(err, client.ErrUnknownOutcome):
		op.Output = kvOut{unknown: true}
		op.Metadata = err.Error()
		h.open = append(h.open, op)
	default:
		h.failed++
	}
}

// nextFill returns a number not used before for a value of "fill".
func (h *history) nextFill() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fills++
	return h.fills
}

func (h *history) maxAcked(key string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acked[key]
}

func (h *history) counts() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprintf("%d writes acknowledged, %d unknown, %d failed and dropped", h.okWrites, len(h.open), h.failed)
}

// finish returns the history, the writes of unknown outcome returning
// after everything else: they may take effect at any time, or never.
func (h *history) finish() []porcupine.Operation {
	end := h.now() + 1
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := slices.Clone(h.ops)
	for _, op := range h.open {
		op.Return = end
		ops = append(ops, op)
	}
	return ops
}
