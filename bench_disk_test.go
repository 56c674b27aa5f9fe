package raft

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkFsyncFloor measures what the disk alone allows one durable
// proposal, so that BenchmarkClusterFile_SequentialProposer's p50 can be set
// against it in the same run (docs/benchmarks.md). Each operation appends a
// record of the size FileStorage writes for one 128-byte command to a file
// and fsyncs it:
//
//   - writers=1: one file; p50-µs is one write+fsync.
//   - writers=3: three files written and fsynced at the same time, as the
//     three nodes of the benchmark cluster do on this machine's one disk.
//     floor-p50-µs is the time until the leader's write (the first file) and
//     one follower's (either other file) are both durable: a leader applies
//     an entry once a quorum holds it and its own write is durable
//     (docs/io-ordering.md), so no durable proposal can be answered sooner.
//     all-p50-µs is the time until all three are durable.
//
// Run with
//
//	go test -run '^$' -bench 'BenchmarkFsyncFloor|BenchmarkClusterFile_SequentialProposer' -benchtime 2000x -count 5
func BenchmarkFsyncFloor(b *testing.B) {
	for _, writers := range []int{1, 3} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchFsyncFloor(b, writers)
		})
	}
}

func benchFsyncFloor(b *testing.B, writers int) {
	dir := b.TempDir()
	files := make([]*os.File, writers)
	for i := range files {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	// An entry of 128 bytes of data with its framing, as FileStorage writes
	// it (the exact size matters little below a page).
	record := make([]byte, 128+32)
	floor := make([]time.Duration, 0, b.N)
	all := make([]time.Duration, 0, b.N)
	done := make([]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for i, f := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.Write(record); err != nil {
					b.Error(err)
				}
				if err := f.Sync(); err != nil {
					b.Error(err)
				}
				done[i] = time.Since(start)
			}()
		}
		wg.Wait()
		f := done[0]
		if writers > 1 {
			f = max(done[0], min(done[1], done[2]))
		}
		floor = append(floor, f)
		all = append(all, slices.Max(done))
	}
	b.StopTimer()
	slices.Sort(floor)
	slices.Sort(all)
	if writers == 1 {
		b.ReportMetric(float64(floor[len(floor)/2].Microseconds()), "p50-µs")
		return
	}
	b.ReportMetric(float64(floor[len(floor)/2].Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "all-p50-µs")
}
