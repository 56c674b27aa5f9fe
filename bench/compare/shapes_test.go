package compare

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Benchmarks of other shapes than the default one (README.md, "Command sizes
// and five voters"); run.sh runs them with SUITE=sizes and SUITE=voters5.
//
//   - BenchmarkSizes/<system>/cmd=<size>/proposers=<n>: the durable systems,
//     three voters, larger commands. MB/s is the command payload committed
//     per second.
//   - BenchmarkSizes/Disk/cmd=<size>/write=<w>: what the disk alone does in
//     the same temp file system: b.N commands' worth of bytes appended to a
//     new file in writes of w bytes, each followed by fsync. With the same
//     -benchtime as the systems it writes the bytes they commit.
//   - BenchmarkVoters/<system>/voters=<n>/<64Proposers|Sequential>: every
//     system, 128-byte commands, three and five voters.

// sizeWorkloads are the command sizes of BenchmarkSizes and the proposers
// that propose them: 64 as in the default workload, and fewer for 64 KiB,
// where 64 proposers put 4 MiB in flight.
var sizeWorkloads = []struct{ cmdSize, proposers int }{
	{4 << 10, 64},
	{64 << 10, 64},
	{64 << 10, 16},
	{64 << 10, 8},
}

// durableSystems are the systems of BenchmarkSizes.
var durableSystems = []string{"RaftkitFile", "HashicorpWAL", "EtcdWAL", "DragonboatFile",
	"RaftkitTCP", "HashicorpTCP", "DragonboatTCP"}

// diskWrites are the write sizes of BenchmarkSizes/Disk besides the command
// size itself (one fsync per command): from the batch of 16 commands of
// 64 KiB that raftkit's 1 MiB MaxAppendBytes allows to several MiB.
var diskWrites = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// voterCounts are the cluster sizes of BenchmarkVoters.
var voterCounts = []int{3, 5}

func BenchmarkSizes(b *testing.B) {
	for _, name := range durableSystems {
		b.Run(name, func(b *testing.B) {
			for _, w := range sizeWorkloads {
				b.Run(fmt.Sprintf("cmd=%s/proposers=%d", sizeName(w.cmdSize), w.proposers), func(b *testing.B) {
					benchSystem(b, name, shape{voters: defaultShape.voters, cmdSize: w.cmdSize}, w.proposers)
				})
			}
		})
	}
	b.Run("Disk", func(b *testing.B) {
		var cmdSizes []int
		for _, w := range sizeWorkloads {
			if !slices.Contains(cmdSizes, w.cmdSize) {
				cmdSizes = append(cmdSizes, w.cmdSize)
			}
		}
		for _, cmd := range cmdSizes {
			writes := []int{cmd}
			for _, w := range diskWrites {
				if w > cmd {
					writes = append(writes, w)
				}
			}
			for _, w := range writes {
				b.Run(fmt.Sprintf("cmd=%s/write=%s", sizeName(cmd), sizeName(w)), func(b *testing.B) {
					benchDisk(b, cmd, w)
				})
			}
		}
	})
}

func BenchmarkVoters(b *testing.B) {
	for _, name := range slices.Sorted(maps.Keys(systems)) {
		b.Run(name, func(b *testing.B) {
			for _, voters := range voterCounts {
				s := shape{voters: voters, cmdSize: defaultShape.cmdSize}
				b.Run(fmt.Sprintf("voters=%d/64Proposers", voters), func(b *testing.B) {
					benchSystem(b, name, s, proposers)
				})
				b.Run(fmt.Sprintf("voters=%d/Sequential", voters), func(b *testing.B) {
					benchSystem(b, name, s, 1)
				})
			}
		})
	}
}

// benchDisk appends b.N*cmdSize bytes to a new file in the benchmark's temp
// dir, in writes of write bytes, each followed by fsync (os.File.Sync, as
// raftkit's FileStorage, hashicorp's raft-wal and the etcd harness sync;
// like FileStorage it does not preallocate). It reports MB/s through
// b.SetBytes(cmdSize), ops/s as commands' worth of bytes per second, and
// the latency of one write+fsync as p50-µs and p99-µs.
func benchDisk(b *testing.B, cmdSize, write int) {
	f, err := os.Create(filepath.Join(b.TempDir(), "disk"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, write)
	for i := range buf {
		buf[i] = byte(i) // not zeros, in case the file system treats them apart
	}
	total := int64(b.N) * int64(cmdSize)
	lat := make([]time.Duration, 0, total/int64(write)+1)
	b.SetBytes(int64(cmdSize))
	b.ResetTimer()
	start := time.Now()
	for done := int64(0); done < total; {
		n := min(int64(write), total-done)
		t0 := time.Now()
		if _, err := f.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		done += n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// sizeName writes a size in bytes as the benchmarks name it: 4KiB, 1MiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
