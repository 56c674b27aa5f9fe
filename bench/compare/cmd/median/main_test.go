package main

import (
	"bytes"
	"strings"
	"testing"
)

// Two rounds of each benchmark, as run.sh interleaves them.
const input = `goos: linux
BenchmarkRaftkit_64Proposers-2 100 10 ns/op 2.0 MB/s 200 ops/s 10 p50-µs 20 p99-µs 6 cpu-µs/op
BenchmarkHashicorp_64Proposers-2 100 10 ns/op 1.0 MB/s 100 ops/s 20 p50-µs 40 p99-µs 12 cpu-µs/op
BenchmarkSizes/RaftkitTCP/cmd=4KiB/proposers=64-2 100 10 ns/op 40 MB/s 10000 ops/s 5000 p50-µs 9000 p99-µs
BenchmarkSizes/HashicorpTCP/cmd=4KiB/proposers=64-2 100 10 ns/op 20 MB/s 5000 ops/s 9000 p50-µs 18000 p99-µs
BenchmarkSizes/Disk/cmd=4KiB/write=4KiB-2 100 10 ns/op 10 MB/s 2500 ops/s 400 p50-µs 800 p99-µs
BenchmarkSizes/Disk/cmd=4KiB/write=1MiB-2 100 10 ns/op 400 MB/s 100000 ops/s 2500 p50-µs 5000 p99-µs
BenchmarkVoters/RaftkitTCP/voters=3/64Proposers-2 100 10 ns/op 1 MB/s 300 ops/s 10 p50-µs 20 p99-µs
BenchmarkVoters/RaftkitTCP/voters=5/64Proposers-2 100 10 ns/op 1 MB/s 150 ops/s 20 p50-µs 30 p99-µs
BenchmarkRaftkit_64Proposers-2 100 10 ns/op 2.0 MB/s 200 ops/s 10 p50-µs 20 p99-µs 6 cpu-µs/op
BenchmarkHashicorp_64Proposers-2 100 10 ns/op 1.0 MB/s 100 ops/s 20 p50-µs 40 p99-µs 12 cpu-µs/op
BenchmarkSizes/RaftkitTCP/cmd=4KiB/proposers=64-2 100 10 ns/op 40 MB/s 10000 ops/s 5000 p50-µs 9000 p99-µs
BenchmarkSizes/HashicorpTCP/cmd=4KiB/proposers=64-2 100 10 ns/op 20 MB/s 5000 ops/s 9000 p50-µs 18000 p99-µs
BenchmarkSizes/Disk/cmd=4KiB/write=4KiB-2 100 10 ns/op 10 MB/s 2500 ops/s 400 p50-µs 800 p99-µs
BenchmarkSizes/Disk/cmd=4KiB/write=1MiB-2 100 10 ns/op 400 MB/s 100000 ops/s 2500 p50-µs 5000 p99-µs
BenchmarkVoters/RaftkitTCP/voters=3/64Proposers-2 100 10 ns/op 1 MB/s 300 ops/s 10 p50-µs 20 p99-µs
BenchmarkVoters/RaftkitTCP/voters=5/64Proposers-2 100 10 ns/op 1 MB/s 150 ops/s 20 p50-µs 30 p99-µs
BenchmarkGroups/RaftkitHost/groups=1-2 100 10 ns/op 1 MB/s 1000 ops/s 10 p50-µs 20 p99-µs 40 cpu-µs/op
BenchmarkGroups/RaftkitHost/groups=16-2 100 10 ns/op 1 MB/s 3000 ops/s 80 p50-µs 200 p99-µs 20 cpu-µs/op
BenchmarkGroups/DragonboatHost/groups=1-2 100 10 ns/op 1 MB/s 500 ops/s 20 p50-µs 40 p99-µs 80 cpu-µs/op
BenchmarkGroups/DragonboatHost/groups=16-2 100 10 ns/op 1 MB/s 1000 ops/s 160 p50-µs 400 p99-µs 80 cpu-µs/op
BenchmarkGroups/RaftkitHost/groups=1-2 100 10 ns/op 1 MB/s 1000 ops/s 10 p50-µs 20 p99-µs 40 cpu-µs/op
BenchmarkGroups/RaftkitHost/groups=16-2 100 10 ns/op 1 MB/s 3000 ops/s 80 p50-µs 200 p99-µs 20 cpu-µs/op
BenchmarkGroups/DragonboatHost/groups=1-2 100 10 ns/op 1 MB/s 500 ops/s 20 p50-µs 40 p99-µs 80 cpu-µs/op
BenchmarkGroups/DragonboatHost/groups=16-2 100 10 ns/op 1 MB/s 1000 ops/s 160 p50-µs 400 p99-µs 80 cpu-µs/op
BenchmarkEtcd_Sequential-2 --- FAIL: BenchmarkEtcd_Sequential
`

func TestReport(t *testing.T) {
	res, failed, err := parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	if failed["Etcd_Sequential"] != 1 {
		t.Errorf("failed runs: %v, want Etcd_Sequential once", failed)
	}
	var out bytes.Buffer
	report(&out, res)
	lines := map[string]bool{}
	for l := range strings.SplitSeq(out.String(), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		// Medians.
		"Raftkit_64Proposers 2 200 2.00 10 20 6.00",
		"Sizes/Disk/cmd=4KiB/write=1MiB 2 100000 400.00 2500 5000 -",
		// raftkit against the anchor of the same group and workload.
		"Raftkit 64Proposers Hashicorp 2.00x 2.00x 0.50x 0.50x 0.50x",
		"Sizes/RaftkitTCP cmd=4KiB/proposers=64 HashicorpTCP 2.00x 2.00x 0.56x 0.50x -",
		// Five voters against three.
		"Voters/RaftkitTCP voters=5/64Proposers 0.50x 0.50x 2.00x 1.50x -",
		// Many groups: raftkit against dragonboat, and each against itself
		// with one group.
		"Groups/RaftkitHost groups=16 DragonboatHost 3.00x 3.00x 0.50x 0.50x 0.25x",
		"Groups/RaftkitHost groups=16 3.00x 3.00x 8.00x 10.00x 0.50x",
		"Groups/DragonboatHost groups=16 2.00x 2.00x 8.00x 10.00x 1.00x",
		// Against the disk's best write size for 4 KiB commands, and that
		// times the three voters that write every byte.
		"Sizes/RaftkitTCP cmd=4KiB/proposers=64 40.0 write=1MiB 400.0 0.10x 0.10x 0.30x",
		"Sizes/HashicorpTCP cmd=4KiB/proposers=64 20.0 write=1MiB 400.0 0.05x 0.05x 0.15x",
	} {
		if !lines[want] {
			t.Errorf("no line %q in the report:\n%s", want, out.String())
		}
	}
}
