// Package compare measures raftkit against two anchor Raft libraries,
// hashicorp/raft and etcd's raft, on the same workload in the same run, so
// that the docs can quote ratios instead of absolute numbers measured on a
// noisy machine. See README.md.
//
// It is a separate Go module on purpose: the main module must never depend on
// the anchor libraries.
package compare

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The workload of the main module's BenchmarkCluster_* (bench_test.go): three
// voters in one process, in memory, commands of cmdSize bytes applied to a
// state machine that does nothing; either 64 concurrent proposers or one
// sequential proposer. Latency is measured from the call until the apply
// result is back on the proposer.
const (
	proposers = 64
	cmdSize   = 128
)

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
	start := map[string]func(testing.TB) (func() proposeFunc, func()){
		"raftkit": func(tb testing.TB) (func() proposeFunc, func()) {
			leader, stop := raftkitCluster(tb, raftkitMemStorage)
			return raftkitProposer(leader), stop
		},
		"hashicorp": func(tb testing.TB) (func() proposeFunc, func()) {
			leader, stop := hashicorpCluster(tb, hashicorpInmemStores)
			return hashicorpProposer(leader), stop
		},
		"etcd": func(tb testing.TB) (func() proposeFunc, func()) {
			c, leader, stop := etcdStart(tb, false)
			return etcdProposer(c, leader), stop
		},
		"raftkit-file": func(tb testing.TB) (func() proposeFunc, func()) {
			leader, stop := raftkitCluster(tb, raftkitFileStorage)
			return raftkitProposer(leader), stop
		},
		"hashicorp-wal": func(tb testing.TB) (func() proposeFunc, func()) {
			leader, stop := hashicorpCluster(tb, hashicorpWALStores)
			return hashicorpProposer(leader), stop
		},
		"etcd-wal": func(tb testing.TB) (func() proposeFunc, func()) {
			c, leader, stop := etcdStart(tb, true)
			return etcdProposer(c, leader), stop
		},
	}
	for name, start := range start {
		t.Run(name, func(t *testing.T) {
			defer checkLeaks(t)()
			newProposer, stop := start(t)
			defer stop()
			proposeConcurrently(t, newProposer, 3000)
		})
	}
}

// reportLatency is bench_test.go's reportLatency.
func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// runConcurrent is the body of bench_test.go's BenchmarkCluster_64Proposers:
// 64 goroutines take proposal numbers from a shared counter until b.N
// proposals are done.
func runConcurrent(b *testing.B, newProposer func() proposeFunc) {
	props := make([]proposeFunc, proposers)
	for i := range props {
		props[i] = newProposer()
	}
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < proposers; w++ {
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
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

// runSequential is the body of bench_test.go's
// BenchmarkCluster_SequentialProposer.
func runSequential(b *testing.B, newProposer func() proposeFunc) {
	propose := newProposer()
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := propose(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
}

// proposeConcurrently has proposers goroutines, each with its own
// newProposer(), make total proposals between them; a failed one fails t.
func proposeConcurrently(t *testing.T, newProposer func() proposeFunc, total int64) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range proposers {
		wg.Add(1)
		go func(propose proposeFunc) {
			defer wg.Done()
			for next.Add(1) <= total {
				if err := propose(); err != nil {
					t.Error(err)
					return
				}
			}
		}(newProposer())
	}
	wg.Wait()
}
