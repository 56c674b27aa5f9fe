// Package kvbench compares the kvstore example (examples/kvstore) with
// etcd's own server as services: each runs as three separate processes on
// loopback with fsync on, and the same load generator drives both through
// their Go clients, with the same number of concurrent clients, value size
// and key space. cmd/kvcompare runs it; see bench/compare/README.md.
package kvbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	kvclient "github.com/raftkit/raft/examples/kvstore/client"
)

// The systems compared.
const (
	KVStore = "kvstore"
	Etcd    = "etcd"
)

// Binaries are the built server binaries.
type Binaries struct {
	KVStore string // examples/kvstore
	Etcd    string // etcd's etcdmain, through the etcdserver wrapper module
}

// Build builds the kvstore example (the working tree, through the compare
// module's replace directive) and etcd's server (the etcdserver wrapper
// module next to this package's module) into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/raftkit/raft/bench/compare").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("locating the compare module: %w", err)
	}
	compareDir := strings.TrimSpace(string(out))
	b := Binaries{KVStore: filepath.Join(dir, "kvstore"), Etcd: filepath.Join(dir, "etcd")}
	for _, c := range [][]string{
		{compareDir, "go", "build", "-o", b.KVStore, "github.com/raftkit/raft/examples/kvstore"},
		{filepath.Join(compareDir, "etcdserver"), "go", "build", "-o", b.Etcd, "."},
	} {
		cmd := exec.CommandContext(ctx, c[1], c[2:]...)
		cmd.Dir = c[0]
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("%s (in %s): %w\n%s", strings.Join(c[1:], " "), c[0], err, out)
		}
	}
	return b, nil
}

// Client is one client of a cluster, used by one load goroutine.
type Client interface {
	Put(ctx context.Context, key string, value []byte) error
	// Get is a linearizable read; it returns nil for a missing key.
	Get(ctx context.Context, key string) ([]byte, error)
	Close() error
}

// Cluster is three server processes of one system on loopback.
type Cluster struct {
	System    string
	Endpoints []string // the members' client addresses, host:port
	Dir       string   // the members' data and logs

	procs []*proc
}

// proc is one server process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // its exit status, once done
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartKVStore starts three kvstore processes, each with its own data
// directory under dir (FileStorage, fsync on), and waits until the cluster
// takes a write. On error nothing is left running.
func StartKVStore(ctx context.Context, bin, dir string) (*Cluster, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	c := &Cluster{System: KVStore, Dir: dir}
	var members []string
	for i := range 3 {
		raftAddr, httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[2*i]), fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])
		members = append(members, fmt.Sprintf("%d=%s=%s", i+1, raftAddr, httpAddr))
		c.Endpoints = append(c.Endpoints, httpAddr)
	}
	for i := range 3 {
		id := fmt.Sprint(i + 1)
		raftAddr := strings.Split(members[i], "=")[1]
		err := c.start("kvstore-"+id, bin,
			"-id", id, "-data", filepath.Join(dir, "kvstore-"+id),
			"-raft", raftAddr, "-http", c.Endpoints[i],
			"-members", strings.Join(members, ","))
		if err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// StartEtcd starts three etcd members with etcd's default settings (fsync
// on, snapshot every 10000 entries, info logging) and their data under dir,
// and waits until the cluster takes a write. On error nothing is left
// running.
func StartEtcd(ctx context.Context, bin, dir string) (*Cluster, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	c := &Cluster{System: Etcd, Dir: dir}
	var initial, peerURLs []string
	for i := range 3 {
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		peerURLs = append(peerURLs, peer)
		initial = append(initial, fmt.Sprintf("m%d=%s", i+1, peer))
		c.Endpoints = append(c.Endpoints, fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]))
	}
	for i := range 3 {
		name := fmt.Sprintf("m%d", i+1)
		clientURL := "http://" + c.Endpoints[i]
		err := c.start("etcd-"+name, bin,
			"--name", name, "--data-dir", filepath.Join(dir, "etcd-"+name),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURLs[i], "--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "kvbench")
		if err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// start starts one member process, with its output in dir/name.log.
func (c *Cluster) start(name, bin string, args ...string) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return nil
}

// PIDs returns the members' process IDs.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// Stop stops every member: SIGTERM, then SIGKILL for one still running
// after a few seconds. It returns once every process has exited and been
// reaped.
func (c *Cluster) Stop() {
	for _, p := range c.procs {
		p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // may have exited
	}
	deadline := time.After(5 * time.Second)
	for _, p := range c.procs {
		select {
		case <-p.done:
			continue
		case <-deadline:
		}
		p.cmd.Process.Kill() //nolint:errcheck // may have exited meanwhile
		<-p.done
	}
}

// exited reports an error naming a member that has exited, if one has.
func (c *Cluster) exited() error {
	for _, p := range c.procs {
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.log.Name())
			if len(log) > 2000 {
				log = log[len(log)-2000:]
			}
			return fmt.Errorf("%s exited: %v; end of its log:\n%s", p.name, p.err, log)
		default:
		}
	}
	return nil
}

// NewClient returns the client of load goroutine i. Each goroutine has its
// own client (its own connections); its endpoint list starts at member
// i%3, so that reads, which the kvstore client sends to the first endpoint
// that answers, are spread across the members as the etcd client's
// round-robin balancer spreads them.
func (c *Cluster) NewClient(i int) (Client, error) {
	eps := append(slices.Clone(c.Endpoints[i%len(c.Endpoints):]), c.Endpoints[:i%len(c.Endpoints)]...)
	switch c.System {
	case KVStore:
		return kvClient{kvclient.New(eps...)}, nil
	case Etcd:
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		return etcdClient{cli}, nil
	}
	return nil, fmt.Errorf("unknown system %q", c.System)
}

// waitReady waits until one write through a client succeeds and every
// member answers a linearizable read.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var clients []Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := range c.Endpoints {
		cl, err := c.NewClient(i)
		if err != nil {
			return err
		}
		clients = append(clients, cl)
	}
	var lastErr error
	for ready := 0; ready < len(clients); {
		if err := c.exited(); err != nil {
			return err
		}
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		if ready == 0 {
			lastErr = clients[0].Put(actx, "ready", []byte("ready"))
		} else {
			var v []byte
			if v, lastErr = clients[ready].Get(actx, "ready"); lastErr == nil && string(v) != "ready" {
				lastErr = fmt.Errorf("read %q, not \"ready\"", v)
			}
		}
		acancel()
		if lastErr == nil {
			ready++
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s cluster not ready: %w (last error: %v)", c.System, ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

type kvClient struct{ c *kvclient.Client }

func (k kvClient) Put(ctx context.Context, key string, value []byte) error {
	_, err := k.c.Put(ctx, key, value)
	return err
}

func (k kvClient) Get(ctx context.Context, key string) ([]byte, error) {
	v, _, err := k.c.Get(ctx, key, kvclient.Linearizable)
	if errors.Is(err, kvclient.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

func (k kvClient) Close() error { k.c.Close(); return nil }

type etcdClient struct{ c *clientv3.Client }

func (e etcdClient) Put(ctx context.Context, key string, value []byte) error {
	_, err := e.c.Put(ctx, key, string(value))
	return err
}

// Get is linearizable: clientv3's default (no WithSerializable).
func (e etcdClient) Get(ctx context.Context, key string) ([]byte, error) {
	resp, err := e.c.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return resp.Kvs[0].Value, nil
}

func (e etcdClient) Close() error { return e.c.Close() }

// Result is one measured phase.
type Result struct {
	Ops      int
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// PerSec is the throughput.
func (r Result) PerSec() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// Op is one operation, the i-th of its phase (numbered across all the
// goroutines), made with the calling goroutine's client.
type Op func(ctx context.Context, cl Client, i int64) error

// Run runs op from one goroutine per client for d, and measures the
// latency of each call from its start to its return. The first error stops
// the phase and is returned.
func Run(ctx context.Context, clients []Client, d time.Duration, op Op) (Result, error) {
	start := time.Now()
	end := start.Add(d)
	// One deadline for the phase rather than one per operation: a context
	// with a timer per call would add to the clients' CPU time per
	// operation. An operation still running 30s after the end fails.
	ctx, cancel := context.WithDeadline(ctx, end.Add(30*time.Second))
	defer cancel()
	var next atomic.Int64
	lats := make([][]time.Duration, len(clients))
	var (
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for w, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for t0 := time.Now(); t0.Before(end) && ctx.Err() == nil; t0 = time.Now() {
				if err := op(ctx, cl, next.Add(1)-1); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					break
				}
				lat = append(lat, time.Since(t0))
			}
			lats[w] = lat
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return Result{}, firstErr
	}
	all := slices.Concat(lats...)
	if len(all) == 0 {
		return Result{}, errors.New("no operation completed")
	}
	slices.Sort(all)
	return Result{Ops: len(all), Elapsed: elapsed, P50: all[len(all)/2], P99: all[len(all)*99/100]}, nil
}

// Key is the i-th key of a key space of n keys.
func Key(i int64, n int) string { return fmt.Sprintf("key%06d", i%int64(n)) }

// Value returns a value of size bytes, different for each seed.
func Value(size int, seed int) []byte {
	v := bytes.Repeat([]byte{'a' + byte(seed%26)}, size)
	copy(v, fmt.Sprint(seed))
	return v
}

// Check reports an error if a member of the cluster has exited. It is
// cheap: call it after each phase.
func (c *Cluster) Check() error { return c.exited() }

// CPUTime returns the CPU time (user and system) the members have used so
// far, from /proc; 0 where there is no /proc.
func (c *Cluster) CPUTime() time.Duration {
	var total time.Duration
	for _, pid := range c.PIDs() {
		total += procCPU(fmt.Sprintf("/proc/%d/stat", pid))
	}
	return total
}

// SelfCPUTime returns the CPU time this process (the load generator and its
// clients) has used so far; 0 where there is no /proc.
func SelfCPUTime() time.Duration { return procCPU("/proc/self/stat") }

// procCPU reads utime and stime from a /proc/<pid>/stat file, in clock
// ticks of 10ms (USER_HZ is 100 on Linux).
func procCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may contain spaces: skip past it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
