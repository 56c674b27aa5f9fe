package raft

// The two-build test: a cluster of processes built from an older revision
// and from this tree, upgraded one node at a time while writes flow. It
// needs git history and a Go toolchain, so it runs only when asked:
//
//	RAFT_COMPAT_REF=c9e03b4 go test -run TestCompat_RollingUpgradeFromOlderBuild -v .

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// compatProc is one node process of the two-build test.
type compatProc struct {
	id        uint64
	build     string // "old" or "new"
	raft, web string // listen addresses
	cmd       *exec.Cmd
	exited    chan struct{}
}

// compatProcCluster runs the node program (testdata/compat/node) as
// separate processes over TCP on FileStorage.
type compatProcCluster struct {
	t       *testing.T
	tmp     string
	bins    map[string]string // build -> binary
	members string
	procs   map[uint64]*compatProc
	starts  int
	client  *http.Client

	mu      sync.Mutex
	acked   map[string]string // writes whose Propose returned nil
	lastAck time.Time
	maxGap  time.Duration // the longest time between two acknowledgments
}

// buildCompatNodes builds the node program from revision ref (in a git
// worktree of a temporary directory, removed afterwards) and from this tree.
func buildCompatNodes(t *testing.T, ref, tmp string) map[string]string {
	t.Helper()
	run := func(dir string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	}
	old := filepath.Join(tmp, "old-tree")
	run(".", "git", "worktree", "add", "--detach", old, ref)
	t.Cleanup(func() {
		out, err := exec.Command("git", "worktree", "remove", "--force", old).CombinedOutput()
		if err != nil {
			t.Errorf("removing the worktree %s: %v: %s", old, err, out)
		}
	})
	src, err := os.ReadFile(filepath.Join("testdata", "compat", "node", "main.go"))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(old, "compatnode"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(old, "compatnode", "main.go"), src, 0o644))
	bins := map[string]string{"old": filepath.Join(tmp, "node-old"), "new": filepath.Join(tmp, "node-new")}
	run(old, "go", "build", "-o", bins["old"], "./compatnode")
	run(".", "go", "build", "-o", bins["new"], "./testdata/compat/node")
	return bins
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func (c *compatProcCluster) start(id uint64, build string) {
	c.t.Helper()
	p := c.procs[id]
	c.starts++
	logf, err := os.Create(filepath.Join(c.tmp, fmt.Sprintf("node%d-%02d-%s.log", id, c.starts, build)))
	require.NoError(c.t, err)
	cmd := exec.Command(c.bins[build], "-id", fmt.Sprint(id), "-dir", filepath.Join(c.tmp, fmt.Sprintf("data%d", id)),
		"-raft", p.raft, "-http", p.web, "-members", c.members)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(c.t, cmd.Start())
	p.cmd, p.build, p.exited = cmd, build, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(exited)
	}(p.exited)
	require.Eventually(c.t, func() bool { _, err := c.status(id); return err == nil }, 10*time.Second, 10*time.Millisecond,
		"node %d (%s build) does not answer; see %s", id, build, logf.Name())
}

// stop sends SIGTERM and waits for the process to exit.
func (c *compatProcCluster) stop(id uint64) {
	c.t.Helper()
	p := c.procs[id]
	require.NoError(c.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("node %d did not stop within 15 s", id)
	}
	require.Equal(c.t, 0, p.cmd.ProcessState.ExitCode(), "node %d exit status", id)
}

type compatProcStatus struct {
	ID, Term, Leader          uint64
	Role                      string
	CommitIndex, AppliedIndex uint64
	LastIndex, SnapshotIndex  uint64
	Err                       string
}

func (c *compatProcCluster) get(id uint64, path string) ([]byte, int, error) {
	resp, err := c.client.Get("http://" + c.procs[id].web + path)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

func (c *compatProcCluster) status(id uint64) (compatProcStatus, error) {
	var st compatProcStatus
	b, code, err := c.get(id, "/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status %d", code)
	}
	return st, json.Unmarshal(b, &st)
}

// leader returns the node that says it leads, 0 if none.
func (c *compatProcCluster) leader() uint64 {
	for id := range c.procs {
		if st, err := c.status(id); err == nil && st.Role == "Leader" {
			return id
		}
	}
	return 0
}

// put writes k=v through the leader, following redirections; it reports
// whether the write was acknowledged.
func (c *compatProcCluster) put(to uint64, k, v string) (bool, uint64) {
	resp, err := c.client.Post("http://"+c.procs[to].web+"/put?k="+k+"&v="+v, "", nil)
	if err != nil {
		return false, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusNoContent:
		now := time.Now()
		c.mu.Lock()
		c.acked[k] = v
		if !c.lastAck.IsZero() {
			c.maxGap = max(c.maxGap, now.Sub(c.lastAck))
		}
		c.lastAck = now
		c.mu.Unlock()
		return true, to
	case http.StatusMisdirectedRequest:
		leader, _ := strconv.ParseUint(string(b), 10, 64)
		return false, leader
	}
	return false, 0
}

// takeMaxGap returns the longest gap between acknowledged writes since the
// last call.
func (c *compatProcCluster) takeMaxGap() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.maxGap
	c.maxGap = 0
	return g
}

func (c *compatProcCluster) ackedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked)
}

// writeLoop writes keys w00000, w00001, ... until ctx ends, each through
// the node it believes leads.
func (c *compatProcCluster) writeLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	to := uint64(1)
	for i := 0; ctx.Err() == nil; {
		k := fmt.Sprintf("w%05d", i)
		ok, hint := c.put(to, k, fmt.Sprint(i))
		switch {
		case ok:
			i++
		case hint != 0 && hint != to:
			to = hint
		default:
			to = to%uint64(len(c.procs)) + 1
			select { // pace retries while there is no leader
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// waitWrites waits until n more writes than now are acknowledged.
func (c *compatProcCluster) waitWrites(n int) {
	c.t.Helper()
	target := c.ackedCount() + n
	require.Eventually(c.t, func() bool { return c.ackedCount() >= target }, 30*time.Second, 10*time.Millisecond,
		"writes stopped at %d (want %d)", c.ackedCount(), target)
}

// checkAll checks that every node, read linearizably, holds every write
// acknowledged before the read began.
func (c *compatProcCluster) checkAll(step string) {
	c.t.Helper()
	for id := range c.procs {
		c.mu.Lock()
		want := make(map[string]string, len(c.acked))
		for k, v := range c.acked {
			want[k] = v
		}
		c.mu.Unlock()
		var got map[string]string
		require.Eventually(c.t, func() bool {
			b, code, err := c.get(id, "/dump")
			return err == nil && code == http.StatusOK && json.Unmarshal(b, &got) == nil
		}, 30*time.Second, 10*time.Millisecond, "%s: node %d serves no linearizable read", step, id)
		for k, v := range want {
			if got[k] != v {
				c.t.Fatalf("%s: node %d (%s build) lacks acknowledged write %s=%s (has %d keys, %d acknowledged)",
					step, id, c.procs[id].build, k, v, len(got), len(want))
			}
		}
		st, err := c.status(id)
		require.NoError(c.t, err)
		require.Empty(c.t, st.Err, "%s: node %d stopped", step, id)
	}
}

// transfer moves leadership to id and waits until id leads.
func (c *compatProcCluster) transfer(to uint64) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		if c.leader() == to {
			return true
		}
		l := c.leader()
		if l == 0 {
			return false
		}
		resp, err := c.client.Post(fmt.Sprintf("http://%s/transfer?to=%d", c.procs[l].web, to), "", nil)
		if err == nil {
			resp.Body.Close()
		}
		return c.leader() == to
	}, 30*time.Second, 50*time.Millisecond, "leadership does not move to node %d", to)
}

// TestCompat_RollingUpgradeFromOlderBuild: three node processes of the
// older build (RAFT_COMPAT_REF) over TCP on FileStorage are upgraded to
// this build one at a time, with writes flowing. Each node is restarted
// after 200 writes made while it was down, past the leader's snapshots and
// compaction, so that the leader sends it a snapshot: an old leader to a new
// node, a new leader to an old node. Leadership is moved so that a new node
// leads old ones and an old node leads new ones. After each step every node
// holds every acknowledged write.
func TestCompat_RollingUpgradeFromOlderBuild(t *testing.T) {
	ref := os.Getenv("RAFT_COMPAT_REF")
	if ref == "" {
		t.Skip("set RAFT_COMPAT_REF=<git revision> to run a cluster of that revision's build upgraded to this one (docs/testing.md)")
	}
	tmp := t.TempDir()
	c := &compatProcCluster{
		t: t, tmp: tmp, bins: buildCompatNodes(t, ref, tmp), procs: map[uint64]*compatProc{},
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, acked: map[string]string{},
	}
	var members []string
	for id := uint64(1); id <= 3; id++ {
		c.procs[id] = &compatProc{id: id, raft: freeAddr(t), web: freeAddr(t)}
		members = append(members, fmt.Sprintf("%d=%s", id, c.procs[id].raft))
	}
	c.members = strings.Join(members, ",")
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p.cmd != nil && p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(tmp, "node*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("---- %s\n%s", filepath.Base(l), b)
			}
		}
	})

	for id := uint64(1); id <= 3; id++ {
		c.start(id, "old")
	}
	require.Eventually(t, func() bool { return c.leader() != 0 }, 30*time.Second, 10*time.Millisecond, "no leader")
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go c.writeLoop(ctx, writerDone)
	defer func() {
		cancel()
		<-writerDone
	}()
	c.waitWrites(100)
	c.checkAll("all old")
	c.takeMaxGap()

	// Upgrade one node at a time, restarting an old one on the way.
	for _, step := range []struct {
		restart uint64
		build   string
		lead    uint64
		name    string
	}{
		{3, "new", 3, "2 old + 1 new (an old leader sent the new node a snapshot), the new one leading"},
		{2, "old", 3, "an old node restarted while the new one leads (and sends it a snapshot)"},
		{1, "new", 2, "1 old + 2 new, the old one leading"},
		{2, "new", 1, "all new"},
	} {
		before, err := c.status(step.restart)
		require.NoError(t, err)
		c.stop(step.restart)
		c.waitWrites(200)
		// The leader's log must start after the stopped node's (it keeps
		// 16 entries behind its snapshot; a margin for the writes in
		// flight when the node stopped), so that it sends a snapshot.
		require.Eventually(t, func() bool {
			l := c.leader()
			if l == 0 {
				return false
			}
			st, err := c.status(l)
			return err == nil && st.SnapshotIndex > before.LastIndex+16+8
		}, 30*time.Second, 10*time.Millisecond, "the leader does not compact past node %d's log", step.restart)
		c.start(step.restart, step.build)
		c.checkAll(step.name + ": restarted")
		c.transfer(step.lead)
		c.waitWrites(100)
		c.checkAll(step.name)
		t.Logf("%s: node %d restarted, node %d leads, %d writes acknowledged so far, longest gap between writes %v",
			step.name, step.restart, step.lead, c.ackedCount(), c.takeMaxGap().Round(time.Millisecond))
	}
	cancel()
	<-writerDone
	c.checkAll("after the writes")
	t.Logf("upgraded from %s: %d acknowledged writes, all on every node", ref, c.ackedCount())
}
