package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/client"
)

// The operator's back-up and restore, through the binary and its HTTP
// API only: GET /admin/backup on a follower, then -restore founds a new
// cluster with exactly the state acknowledged before the back-up.
// idempotently runs write, a write whose repetition leaves the same state
// (a Put of one value, a Delete), again while its outcome is unknown: a
// leader lost on a loaded machine must not fail a test that checks only
// the state written.
func idempotently(ctx context.Context, write func() error) error {
	for {
		err := write()
		if !errors.Is(err, client.ErrUnknownOutcome) || ctx.Err() != nil {
			return err
		}
	}
}

func TestBlackBox_BackupAndRestoreANewCluster(t *testing.T) {
	old := newTestCluster(t, 3)
	for id := range old.nodes {
		old.start(id)
	}
	old.waitHealthy(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client.New(old.httpAddrs()...)
	defer cl.Close()
	want := map[string]string{}
	for i := range 300 { // past -snapshot-threshold 200: the log was compacted
		k, v := fmt.Sprintf("key%03d", i), fmt.Sprintf("value %d", i)
		require.NoError(t, idempotently(ctx, func() error { _, err := cl.Put(ctx, k, []byte(v)); return err }))
		want[k] = v
	}
	require.NoError(t, idempotently(ctx, func() error { _, err := cl.Delete(ctx, "key007"); return err }))
	delete(want, "key007")

	// From a follower: a back-up needs no leader, and the linearizable
	// read before it makes it hold every write acknowledged above.
	leader := old.leader()
	require.NotZero(t, leader)
	follower := old.nodes[1+leader%3]
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get("http://" + follower.http + "/admin/backup")
	require.NoError(t, err)
	backup, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", backup)
	backupFile := filepath.Join(old.dir, "kvstore.backup")
	require.NoError(t, os.WriteFile(backupFile, backup, 0o600))

	resp, err = hc.Get("http://" + follower.http + "/admin/backup?consistency=eventual")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "an unknown consistency level is refused")

	require.NoError(t, idempotently(ctx, func() error { _, err := cl.Put(ctx, "after-the-backup", []byte("x")); return err }))

	// A damaged back-up is refused, and the data directory is left as it
	// was: absent, so a corrected run can use it.
	restored := newTestCluster(t, 3)
	damaged := filepath.Join(restored.dir, "damaged.backup")
	bad := bytes.Clone(backup)
	bad[len(bad)/2] ^= 0xff
	require.NoError(t, os.WriteFile(damaged, bad, 0o600))
	nd1 := restored.nodes[1]
	out, err := runBinary(restored.bin, append(slices.Clone(nd1.args), "-restore", damaged)...)
	require.Error(t, err, "a damaged back-up must be refused: %s", out)
	assert.Contains(t, out, "corrupt")
	_, statErr := os.Stat(filepath.Join(restored.dir, "node1"))
	assert.ErrorIs(t, statErr, os.ErrNotExist, "a failed restore leaves no data directory behind")

	for id, nd := range restored.nodes {
		nd.args = append(nd.args, "-restore", backupFile, "-cluster-id", "kvstore-restored")
		restored.start(id)
	}
	restored.waitHealthy(t, 20*time.Second)
	rc := client.New(restored.httpAddrs()...)
	defer rc.Close()
	for k, v := range want {
		got, _, err := rc.Get(ctx, k, client.Linearizable)
		require.NoError(t, err, k)
		require.Equal(t, v, string(got), k)
	}
	for _, k := range []string{"key007", "after-the-backup"} {
		_, _, err := rc.Get(ctx, k, client.Linearizable)
		require.ErrorIs(t, err, client.ErrNotFound, "%s must not be in the restored store", k)
	}
	_, err = rc.Put(ctx, "new", []byte("cluster"))
	require.NoError(t, err, "the restored cluster takes writes")
	assert.NotEqual(t, old.nodes[1].status(t).Origin, restored.nodes[1].status(t).Origin, "the restored cluster has an origin of its own")

	// Restarted with -restore still given, a node refuses to overwrite
	// its history with the back-up, and says what to do.
	restored.kill(1)
	out, err = runBinary(restored.bin, restored.nodes[1].args...)
	require.Error(t, err, "%s", out)
	assert.Contains(t, out, "drop -restore")
}

// The HTTP API over HTTPS with client certificates: the Go client follows
// redirects to https://, a joiner calls the cluster with its certificate,
// and clients without a certificate, or speaking plain HTTP, are refused.
func TestBlackBox_HTTPSWithClientCertificates(t *testing.T) {
	c := newTestCluster(t, 3)
	ca, caKey := newCA(t)
	caFile := writePEM(t, filepath.Join(c.dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	httpsArgs := func(id uint64) []string {
		cert, key := newNodeCert(t, ca, caKey, id)
		return []string{
			"-http-tls-cert", writePEM(t, filepath.Join(c.dir, fmt.Sprintf("http%d.crt", id)), "CERTIFICATE", cert),
			"-http-tls-key", writePEM(t, filepath.Join(c.dir, fmt.Sprintf("http%d.key", id)), "PRIVATE KEY", key),
			"-http-tls-ca", caFile,
		}
	}
	for id, nd := range c.nodes {
		nd.args = append(nd.args, httpsArgs(id)...)
		c.start(id)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	certDER, keyDER := newNodeCert(t, ca, caKey, 100)
	clientCert, err := tls.X509KeyPair(
		mustReadFile(t, writePEM(t, filepath.Join(c.dir, "client.crt"), "CERTIFICATE", certDER)),
		mustReadFile(t, writePEM(t, filepath.Join(c.dir, "client.key"), "PRIVATE KEY", keyDER)))
	require.NoError(t, err)
	tlsConfig := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client.NewTLS(tlsConfig, c.httpAddrs()...)
	defer cl.Close()
	rev, err := cl.Put(ctx, "k", []byte("over HTTPS")) // retried until a leader is elected
	require.NoError(t, err)
	for _, addr := range c.httpAddrs() {
		// A write on a follower is redirected to the leader's https://
		// address; a read is served where it is sent.
		at := client.NewTLS(tlsConfig, addr)
		_, err := at.Put(ctx, "k"+addr, []byte("x"))
		require.NoError(t, err, addr)
		v, r, err := at.Get(ctx, "k", client.Linearizable)
		at.Close()
		require.NoError(t, err, addr)
		assert.Equal(t, "over HTTPS", string(v))
		assert.Equal(t, rev, r)
	}

	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := noCert.Get("https://" + c.nodes[1].http + "/status")
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err, "a client without a certificate must be refused")
	plain := &http.Client{Timeout: 5 * time.Second}
	resp, err = plain.Get("http://" + c.nodes[1].http + "/status")
	require.NoError(t, err) // Go's TLS server answers plain HTTP with a 400
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// A fourth node joins over HTTPS, with its own certificate.
	joiner := c.addJoiner(t, 4, c.nodes[2].http)
	joiner.args = append(joiner.args, httpsArgs(4)...)
	c.start(4)
	at4 := client.NewTLS(tlsConfig, joiner.http)
	defer at4.Close()
	require.Eventually(t, func() bool {
		v, _, err := at4.Get(ctx, "k", client.Stale)
		return err == nil && string(v) == "over HTTPS"
	}, 30*time.Second, 50*time.Millisecond, "node 4 did not join over HTTPS; logs in %s", c.dir)
	withCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	require.Eventually(t, func() bool {
		resp, err := withCert.Get("https://" + joiner.http + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st raft.Status
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		i := slices.IndexFunc(st.Members, func(m raft.Member) bool { return m.ID == 4 })
		return i >= 0 && !st.Members[i].Learner
	}, 30*time.Second, 50*time.Millisecond, "node 4 did not become a voter; logs in %s", c.dir)
}

// runBinary runs the kvstore binary to its end (one that refuses to start)
// and returns its output.
func runBinary(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

func mustReadFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// Joins at once, an impostor that joins under a taken ID, and a removed
// node restarted with its usual command: the cluster ends with the
// members the operator made, and each refusal says why.
func TestBlackBox_JoinsAtOnceAnImpostorAndARemovedNodeRestarted(t *testing.T) {
	c := newTestCluster(t, 3)
	for id := range c.nodes {
		c.start(id)
	}
	c.waitHealthy(t, 20*time.Second)

	// Three joins at once: the library takes one membership change at a
	// time, and the others are retried, not failed.
	for id := uint64(4); id <= 6; id++ {
		c.addJoiner(t, id, c.nodes[1+id%3].http)
	}
	for id := uint64(4); id <= 6; id++ {
		c.start(id)
	}
	require.Eventually(t, func() bool {
		st, err := c.nodes[1].tryStatus()
		if err != nil || len(st.Members) != 6 {
			return false
		}
		for _, m := range st.Members {
			if m.Learner {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "nodes 4-6 did not all become voters; logs in %s", c.dir)

	// Another process given a taken ID is refused, and changes nothing.
	impostor := []string{"-id", "2", "-data", filepath.Join(c.dir, "impostor"), "-raft", freeAddr(t), "-http", freeAddr(t),
		"-join", c.nodes[1].http, "-election-timeout", "300ms"}
	out, err := runBinary(c.bin, impostor...)
	require.Error(t, err, "%s", out)
	assert.Contains(t, out, "member 2 already exists")
	st := c.nodes[1].status(t)
	i := slices.IndexFunc(st.Members, func(m raft.Member) bool { return m.ID == 2 })
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, c.nodes[2].proxy.addr(), st.Members[i].Addr, "member 2 must keep its address")

	// A removed node restarted with its usual -join does not come back.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := client.New(c.httpAddrs()...)
	defer cl.Close()
	require.NoError(t, cl.RemoveMember(ctx, 6))
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(c.dir, "node6", removedMarker))
		return err == nil && len(b) > 0
	}, 20*time.Second, 20*time.Millisecond, "node 6 did not record its removal; logs in %s", c.dir)
	c.kill(6)
	out, err = runBinary(c.bin, c.nodes[6].args...)
	require.Error(t, err, "%s", out)
	assert.Contains(t, out, "was removed from the cluster")
	st = c.nodes[1].status(t)
	assert.False(t, slices.ContainsFunc(st.Members, func(m raft.Member) bool { return m.ID == 6 }), "node 6 came back")
}

// Flags that cannot work are refused with a message, never a panic.
func TestBlackBox_BadStartsSayWhy(t *testing.T) {
	c := newTestCluster(t, 3)
	c.start(1)
	nd := c.nodes[1]
	require.Eventually(t, func() bool { _, err := nd.tryStatus(); return err == nil }, 20*time.Second, 20*time.Millisecond)
	withFlag := func(args []string, flag, value string) []string {
		args = slices.Clone(args)
		i := slices.Index(args, flag)
		require.GreaterOrEqual(t, i, 0, flag)
		args[i+1] = value
		return args
	}
	n2 := c.nodes[2].args
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"Raft port in use", withFlag(n2, "-raft", nd.raft), "address already in use"},
		{"data directory in use", withFlag(n2, "-data", filepath.Join(c.dir, "node1")), "lock"},
		{"advertises what -members does not say", withFlag(n2, "-raft-advertise", freeAddr(t)), "must agree"},
		{"not in -members", withFlag(n2, "-id", "9"), "does not list this node"},
		{"wildcard advertised", withFlag(withFlag(n2, "-raft-advertise", ":7999"), "-raft", ":0"), "others cannot dial"},
		{"stray argument", append(slices.Clone(n2), "extra"), "unexpected arguments"},
		{"negative election timeout", withFlag(n2, "-election-timeout", "-1s"), "ElectionTimeout"},
		{"negative max-inflight", append(slices.Clone(n2), "-max-inflight", "-1"), "MaxInflight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runBinary(c.bin, tc.args...)
			require.Error(t, err, "%s", out)
			assert.NotContains(t, out, "panic")
			assert.Contains(t, out, tc.says)
		})
	}
}

// The README's first command: with no -id, three nodes in one process,
// which take writes, stop on SIGINT, and find their data on a second run.
// (-raft and -http move its ports off the defaults, which a developer's
// own run may hold.)
func TestBlackBox_LocalClusterOneCommand(t *testing.T) {
	c := newTestCluster(t, 0) // the binary and a directory
	raftBase, httpBase := freePortRun(t), freePortRun(t)
	args := []string{"-data", filepath.Join(c.dir, "local"),
		"-raft", fmt.Sprintf("127.0.0.1:%d", raftBase), "-http", fmt.Sprintf("127.0.0.1:%d", httpBase)}
	http1, http2 := fmt.Sprintf("127.0.0.1:%d", httpBase), fmt.Sprintf("127.0.0.1:%d", httpBase+1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	run := func(wantOut string, do func()) {
		var out syncBuffer
		cmd := exec.CommandContext(ctx, c.bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may have exited
			select {
			case err := <-exited:
				require.NoError(t, err, "a SIGINT stops it cleanly: %s", out.String())
			case <-time.After(20 * time.Second):
				cmd.Process.Kill() //nolint:errcheck
				t.Fatalf("it did not stop on SIGINT: %s", out.String())
			}
		}()
		do()
		assert.Contains(t, out.String(), wantOut)
	}
	cl := client.New(http1)
	defer cl.Close()
	run("curl -L -X PUT -d world http://"+http1+"/kv/hello", func() {
		_, err := cl.Put(ctx, "hello", []byte("world")) // retried until a leader is elected
		require.NoError(t, err)
		at2 := client.New(http2)
		defer at2.Close()
		v, _, err := at2.Get(ctx, "hello", client.Linearizable)
		require.NoError(t, err)
		assert.Equal(t, "world", string(v))
	})
	run("(reused", func() {
		v, _, err := cl.Get(ctx, "hello", client.Linearizable)
		require.NoError(t, err)
		assert.Equal(t, "world", string(v), "the second run finds the first one's data")
	})
}

// freePortRun returns a port p of 127.0.0.1 such that p, p+1 and p+2 were
// free just now.
func freePortRun(t *testing.T) int {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p > 65000 {
			continue
		}
		free := true
		for q := p; q < p+3 && free; q++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no run of three free ports")
	return 0
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
