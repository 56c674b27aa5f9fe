// Package compare measures raftkit against two anchor Raft libraries,
// hashicorp/raft and etcd's raft, on the same workload in the same run, so
// that the docs can quote ratios instead of absolute numbers measured on a
// noisy machine. See README.md.
//
// It is a separate Go module on purpose: the main module must never depend on
// the anchor libraries.
package compare

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The workload of the main module's BenchmarkCluster_* (bench_test.go): the
// voters of one cluster in one process, commands applied to a state machine
// that does nothing; either 64 concurrent proposers or one sequential
// proposer. Latency is measured from the call until the apply result is back
// on the proposer.
const proposers = 64

// A shape is what the benchmarks vary besides the library and its setup:
// how many voters the cluster has and how large a command is.
type shape struct {
	voters  int
	cmdSize int
}

// defaultShape is the workload of every Lib_Workload benchmark: three
// voters, 128-byte commands.
var defaultShape = shape{voters: 3, cmdSize: 128}

// A system is one library in one of its setups (README.md, "The setups"):
// it starts a cluster of s.voters voters whose proposers propose
// s.cmdSize-byte commands, and returns once the cluster has a leader that
// has committed an entry of its term.
type system func(tb testing.TB, s shape) cluster

// A cluster is a running system.
type cluster struct {
	// newProposer makes a proposer; a benchmark makes one per proposing
	// goroutine, before the timer starts.
	newProposer func() proposeFunc
	// voters returns how many voters the leader's configuration holds.
	voters func() (int, error)
	// stop stops every node and closes what the cluster opened.
	stop func()
}

// systems names every system as its benchmarks do: BenchmarkRaftkitTCP_*
// runs systems["RaftkitTCP"].
var systems = map[string]system{
	"Raftkit":        raftkitSystem(raftkitMemStorage),
	"RaftkitFile":    raftkitSystem(raftkitFileStorage),
	"RaftkitTCP":     raftkitTCPSystem(raftkitFileStorage),
	"Hashicorp":      hashicorpSystem(hashicorpInmemTransports, hashicorpInmemStores),
	"HashicorpWAL":   hashicorpSystem(hashicorpInmemTransports, hashicorpWALStores),
	"HashicorpTCP":   hashicorpSystem(hashicorpTCPTransports, hashicorpWALStores),
	"Etcd":           etcdSystem(false),
	"EtcdWAL":        etcdSystem(true),
	"Dragonboat":     dragonboatSystem(false, false),
	"DragonboatFile": dragonboatSystem(true, false),
	"DragonboatTCP":  dragonboatSystem(true, true),
}

// benchSystem is what every benchmark of the package runs: it starts the
// system named name with shape s and has n goroutines make b.N proposals
// between them (n 1: one proposal after the other). Besides ops/s and the
// latencies it reports the command payload committed per second (MB/s,
// through b.SetBytes).
func benchSystem(b *testing.B, name string, s shape, n int) {
	defer checkLeaks(b)()
	c := systems[name](b, s)
	defer c.stop()
	b.SetBytes(int64(s.cmdSize))
	if n == 1 {
		runSequential(b, c.newProposer)
	} else {
		runConcurrent(b, n, c.newProposer)
	}
}

// proposeFunc proposes one command and returns once its apply result is back.
// A benchmark makes one per proposing goroutine (before the timer starts), so
// that a library that needs per-proposer state (the etcd harness) can keep it
// in the closure.
type proposeFunc func() error

// checkLeaks fails the benchmark if it leaves goroutines or open files
// behind. Call it first and defer the result, so that it runs after the
// cluster is stopped.
func checkLeaks(tb testing.TB) func() {
	opt := goleak.IgnoreCurrent()
	files := openFiles()
	return func() {
		goleak.VerifyNone(tb, opt)
		for fd, target := range openFiles() {
			if files[fd] != target {
				tb.Errorf("file left open: fd %s -> %s", fd, target)
			}
		}
	}
}

// openFiles maps the process's open file descriptors to what they point to
// (Linux /proc; empty elsewhere). The descriptor that reads /proc/self/fd is
// left out.
func openFiles() map[string]string {
	dir := "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	files := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		files[e.Name()] = target
	}
	return files
}

// TestHarnesses runs a few thousand proposals through each library's harness,
// in memory and durable, with 64 proposers and checks that none fails and
// that the cluster stops without leaking goroutines.
func TestHarnesses(t *testing.T) {
	for _, name := range []string{"Raftkit", "Hashicorp", "Etcd", "RaftkitFile", "HashicorpWAL", "EtcdWAL"} {
		t.Run(name, func(t *testing.T) {
			defer checkLeaks(t)()
			c := systems[name](t, defaultShape)
			defer c.stop()
			proposeConcurrently(t, proposers, c.newProposer, 3000)
		})
	}
}

// TestHarnessShapes checks that every system takes the shapes of
// BenchmarkVoters and BenchmarkSizes: a cluster of five voters (its leader's
// configuration says five) commits 128-byte commands from 64 proposers, and
// a cluster of three commits 64 KiB commands, without error; each stops
// without leaking goroutines or files. It proposes few commands, and the
// 64 KiB ones one at a time: under the race detector on a busy 2-core
// machine, more make the libraries whose leader steps down after a short
// silence (etcd's 100-200 ms election timeout, hashicorp's 500 ms leader
// lease) lose their leader.
func TestHarnessShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts twenty-two clusters")
	}
	for _, c := range []struct {
		s                shape
		proposers, total int
	}{
		{shape{voters: 5, cmdSize: defaultShape.cmdSize}, proposers, 300},
		{shape{voters: defaultShape.voters, cmdSize: 64 << 10}, 1, 16},
	} {
		for _, name := range slices.Sorted(maps.Keys(systems)) {
			t.Run(fmt.Sprintf("%s/voters=%d/cmd=%s", name, c.s.voters, sizeName(c.s.cmdSize)), func(t *testing.T) {
				defer checkLeaks(t)()
				cl := systems[name](t, c.s)
				defer cl.stop()
				n, err := cl.voters()
				if err != nil {
					t.Fatal(err)
				}
				if n != c.s.voters {
					t.Fatalf("the leader's configuration has %d voters, want %d", n, c.s.voters)
				}
				proposeConcurrently(t, c.proposers, cl.newProposer, c.total)
			})
		}
	}
}

// reportLatency is bench_test.go's reportLatency.
func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// startCPU notes the CPU time this process has used; the function it
// returns reports the CPU time used since, per proposal (cpu-µs/op: every
// node of the cluster runs in this process). On a machine shared with other
// jobs this is a steadier figure than the throughput: they take CPU time
// from the cluster but do not add to its own. Nothing is reported where
// /proc/self/stat is missing.
func startCPU() func(*testing.B) {
	cpu0, ok := processCPU()
	return func(b *testing.B) {
		if cpu1, ok1 := processCPU(); ok && ok1 {
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}

// processCPU is bench_test.go's: the CPU time, user and system, that this
// process has used, from /proc/self/stat (Linux), to a tick of 10 ms.
func processCPU() (cpu time.Duration, ok bool) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: f[0] is field 3, so utime and stime (fields 14 and 15, in
	// ticks of 1/100 s) are f[11] and f[12].
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, false
	}
	user, err1 := strconv.ParseUint(f[11], 10, 64)
	system, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(user+system) * 10 * time.Millisecond, true
}

// runConcurrent is the body of bench_test.go's BenchmarkCluster_64Proposers:
// n goroutines (64 there) take proposal numbers from a shared counter until
// b.N proposals are done.
func runConcurrent(b *testing.B, n int, newProposer func() proposeFunc) {
	props := make([]proposeFunc, n)
	for i := range props {
		props[i] = newProposer()
	}
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu := startCPU()
	start := time.Now()
	for w := range n {
		wg.Add(1)
		go func(propose proposeFunc) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := propose(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}(props[w])
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu(b)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

// runSequential is the body of bench_test.go's
// BenchmarkCluster_SequentialProposer.
func runSequential(b *testing.B, newProposer func() proposeFunc) {
	propose := newProposer()
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	cpu := startCPU()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := propose(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	elapsed := time.Since(start)
	cpu(b)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

// proposeConcurrently has n goroutines, each with its own newProposer(),
// make total proposals between them; a failed one fails t.
func proposeConcurrently(t *testing.T, n int, newProposer func() proposeFunc, total int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func(propose proposeFunc) {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if err := propose(); err != nil {
					t.Error(err)
					return
				}
			}
		}(newProposer())
	}
	wg.Wait()
}
