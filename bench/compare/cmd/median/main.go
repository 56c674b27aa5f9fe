// Command median reads `go test -bench` output of the compare benchmarks on
// standard input and prints, per benchmark, the median of ops/s, MB/s,
// p50-µs, p99-µs and cpu-µs/op across the runs, then the ratio of raftkit to each
// anchor library: in memory (Raftkit against Hashicorp, Etcd and
// Dragonboat), durable (RaftkitFile against HashicorpWAL, EtcdWAL and
// DragonboatFile) and over TCP with fsync (RaftkitTCP against HashicorpTCP
// and DragonboatTCP).
//
// Benchmarks are named Library_Workload (BenchmarkRaftkitTCP_64Proposers) or
// Group/Library/Workload (BenchmarkSizes/RaftkitTCP/cmd=4KiB/proposers=64,
// BenchmarkVoters/Hashicorp/voters=5/Sequential); raftkit is compared with
// the anchors of the same group and workload. More tables follow when
// the input has them: for a workload with voters=N, the ratio of each
// library to itself with voters=3; for a workload with groups=N
// (BenchmarkGroups/RaftkitHost/groups=16), the ratio of each library to
// itself with groups=1; for a group with a Disk library
// (BenchmarkSizes/Disk/cmd=4KiB/write=1MiB), the MB/s of each library
// against the best MB/s the disk gave for the same command size.
//
// Ratios are given two ways: the ratio of the medians, and the median of the
// per-round ratios (the i-th run of raftkit against the i-th run of the
// anchor). run.sh runs the libraries interleaved, round by round, so the
// second form pairs runs made close together in time.
package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// A suite is a set of benchmarks of the same setup: the first library is
// raftkit, the others are its anchors.
type suite struct {
	name      string
	libraries []string
}

var suites = []suite{
	{"in memory", []string{"Raftkit", "Hashicorp", "Etcd", "Dragonboat"}},
	{"durable (fsync)", []string{"RaftkitFile", "HashicorpWAL", "EtcdWAL", "DragonboatFile"}},
	{"TCP + fsync", []string{"RaftkitTCP", "HashicorpTCP", "DragonboatTCP"}},
	{"many groups, TCP + fsync", []string{"RaftkitHost", "DragonboatHost"}},
}

// diskLibrary is the library name of the disk baseline.
const diskLibrary = "Disk"

// A key names a benchmark: Group/Library/Workload, or Library_Workload with
// an empty group.
type key struct {
	group, lib, workload string
}

func (k key) String() string {
	if k.group == "" {
		return k.lib + "_" + k.workload
	}
	return k.group + "/" + k.lib + "/" + k.workload
}

// splitName splits a benchmark name (without "Benchmark" and the
// -GOMAXPROCS suffix) into its key.
func splitName(name string) key {
	if parts := strings.SplitN(name, "/", 3); len(parts) == 3 && !strings.Contains(parts[0], "_") {
		return key{parts[0], parts[1], parts[2]}
	}
	lib, workload, _ := strings.Cut(name, "_")
	return key{lib: lib, workload: workload}
}

// results holds, per benchmark, the values of each unit in input order, and
// the benchmarks in the order they first appear.
type results struct {
	runs  map[key]map[string][]float64
	order []key
}

func (r *results) get(k key, unit string) []float64 { return r.runs[k][unit] }

func (r *results) has(k key) bool { return r.runs[k] != nil }

func main() {
	res, failed, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "median:", err)
		os.Exit(1)
	}
	if len(res.order) == 0 {
		fmt.Fprintln(os.Stderr, "median: no benchmark results on stdin")
		os.Exit(1)
	}
	report(os.Stdout, res)
	if len(failed) > 0 {
		names := slices.Sorted(maps.Keys(failed))
		fmt.Fprintln(os.Stdout)
		for _, name := range names {
			fmt.Fprintf(os.Stdout, "failed runs, left out: %s %d\n", name, failed[name])
		}
	}
}

// parse reads the benchmark lines; a run that failed ("--- FAIL" on its
// line) is counted in failed instead.
func parse(r io.Reader) (res *results, failed map[string]int, err error) {
	res = &results{runs: make(map[key]map[string][]float64)}
	failed = make(map[string]int)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the -GOMAXPROCS suffix
		}
		if strings.Contains(sc.Text(), "--- FAIL") {
			failed[name]++
			continue
		}
		if len(f) < 4 {
			continue
		}
		k := splitName(name)
		if res.runs[k] == nil {
			res.runs[k] = make(map[string][]float64)
			res.order = append(res.order, k)
		}
		// f[1] is the iteration count; then value/unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %v", sc.Text(), err)
			}
			res.runs[k][f[i+1]] = append(res.runs[k][f[i+1]], v)
		}
	}
	return res, failed, sc.Err()
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// suiteOf returns the index of the suite lib belongs to and its place in
// it; libraries of no suite (the disk) come last.
func suiteOf(lib string) (int, int) {
	for i, su := range suites {
		if j := slices.Index(su.libraries, lib); j >= 0 {
			return i, j
		}
	}
	return len(suites), 0
}

// sorted returns the benchmarks grouped as the tables read best: by group
// (in input order), suite, workload (in input order), then library (raftkit
// first).
func (r *results) sorted() []key {
	groups, workloads := map[string]int{}, map[string]int{}
	for _, k := range r.order {
		if _, ok := groups[k.group]; !ok {
			groups[k.group] = len(groups)
		}
		if _, ok := workloads[k.workload]; !ok {
			workloads[k.workload] = len(workloads)
		}
	}
	keys := slices.Clone(r.order)
	slices.SortStableFunc(keys, func(a, b key) int {
		if c := groups[a.group] - groups[b.group]; c != 0 {
			return c
		}
		sa, la := suiteOf(a.lib)
		sb, lb := suiteOf(b.lib)
		if c := sa - sb; c != 0 {
			return c
		}
		if c := workloads[a.workload] - workloads[b.workload]; c != 0 {
			return c
		}
		return la - lb
	})
	return keys
}

func report(w io.Writer, res *results) {
	keys := res.sorted()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\truns\tops/s\tMB/s\tp50-µs\tp99-µs\tcpu-µs/op\t")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%.0f\t%.0f\t%s\t\n", k, len(res.get(k, "ops/s")), median(res.get(k, "ops/s")),
			optional(res.get(k, "MB/s")), median(res.get(k, "p50-µs")), median(res.get(k, "p99-µs")),
			optional(res.get(k, "cpu-µs/op")))
	}
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, "raftkit / anchor (ops/s: >1 means raftkit is faster; latency and CPU per op: <1 means raftkit is faster)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "raftkit\tworkload\tanchor\tops/s\tops/s (per round)\tp50\tp99\tcpu/op\t")
	for _, k := range keys {
		si, li := suiteOf(k.lib)
		if si == len(suites) || li != 0 {
			continue // not a raftkit benchmark
		}
		for _, lib := range suites[si].libraries[1:] {
			an := key{k.group, lib, k.workload}
			if !res.has(an) {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", prefixed(k.group, k.lib), k.workload, lib, ratios(res, k, an))
		}
	}
	tw.Flush()

	reportVoters(w, res, keys)
	reportGroups(w, res, keys)
	reportDisk(w, res, keys)
}

// reportVoters prints, for each benchmark of a workload with voters=N (N not
// 3), its ratio to the same benchmark with voters=3.
func reportVoters(w io.Writer, res *results, keys []key) {
	reportAgainst(w, res, keys, "voters", "3",
		"N voters / 3 voters, each library against itself (ops/s: <1 means slower with N)")
}

// reportGroups prints, for each benchmark of a workload with groups=N (N not
// 1), its ratio to the same benchmark with groups=1: what running N groups
// on the same hosts gives over one.
func reportGroups(w io.Writer, res *results, keys []key) {
	reportAgainst(w, res, keys, "groups", "1",
		"N groups / 1 group, each library against itself (ops/s: all groups together; >1 means more with N)")
}

// reportAgainst prints, under title, for each benchmark of a workload with
// an element param=V (V not base), its ratio to the same benchmark with
// param=base.
func reportAgainst(w io.Writer, res *results, keys []key, param, base, title string) {
	var rows []string
	for _, k := range keys {
		elems := strings.Split(k.workload, "/")
		i := slices.IndexFunc(elems, func(e string) bool { return strings.HasPrefix(e, param+"=") })
		if i < 0 || elems[i] == param+"="+base {
			continue
		}
		elems[i] = param + "=" + base
		baseKey := key{k.group, k.lib, strings.Join(elems, "/")}
		if !res.has(baseKey) {
			continue
		}
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t", prefixed(k.group, k.lib), k.workload, ratios(res, k, baseKey)))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "library\tworkload\tops/s\tops/s (per round)\tp50\tp99\tcpu/op\t")
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	tw.Flush()
}

// reportDisk prints, for each benchmark of a group that has a Disk library
// and a workload that starts with cmd=S, its MB/s against the best the disk
// gave for cmd=S: the write size whose median MB/s is highest, and per
// round the highest of that round. Every byte is written by every voter,
// all on this one disk, so the last column multiplies by the voters (3
// unless the workload says voters=N).
func reportDisk(w io.Writer, res *results, keys []key) {
	type best struct {
		workload string
		median   float64
		rounds   []float64 // per round, the best of the write sizes
	}
	disk := map[[2]string]*best{} // group, cmd=S
	for _, k := range keys {
		if k.lib != diskLibrary {
			continue
		}
		cmd, _, _ := strings.Cut(k.workload, "/")
		id := [2]string{k.group, cmd}
		mb := res.get(k, "MB/s")
		b := disk[id]
		if b == nil {
			b = &best{rounds: slices.Clone(mb)}
			disk[id] = b
		} else if len(b.rounds) == len(mb) {
			for i := range mb {
				b.rounds[i] = max(b.rounds[i], mb[i])
			}
		} else {
			b.rounds = nil // run counts differ: no per-round ratio
		}
		if m := median(mb); m > b.median {
			b.median, b.workload = m, k.workload
		}
	}
	if len(disk) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MB/s of command payload against the disk's best MB/s for the same command size (write+fsync, same bytes)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "library\tworkload\tMB/s\tdisk best\tdisk MB/s\tratio\tratio (per round)\tratio x voters\t")
	for _, k := range keys {
		cmd, _, _ := strings.Cut(k.workload, "/")
		b := disk[[2]string{k.group, cmd}]
		mb := res.get(k, "MB/s")
		if k.lib == diskLibrary || b == nil || len(mb) == 0 {
			continue
		}
		n := float64(voters(k.workload))
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t%s\t\n", prefixed(k.group, k.lib), k.workload, median(mb),
			strings.TrimPrefix(b.workload, cmd+"/"), b.median, ratio(median(mb), b.median), pairedRatio(mb, b.rounds),
			ratio(n*median(mb), b.median))
	}
	tw.Flush()
}

// voters returns N of a voters=N element of workload, or 3.
func voters(workload string) int {
	for e := range strings.SplitSeq(workload, "/") {
		if n, ok := strings.CutPrefix(e, "voters="); ok {
			if v, err := strconv.Atoi(n); err == nil {
				return v
			}
		}
	}
	return 3
}

func prefixed(group, lib string) string {
	if group == "" {
		return lib
	}
	return group + "/" + lib
}

// ratios formats a/b for ops/s (of the medians and per round), p50, p99
// and the CPU time per op.
func ratios(res *results, a, b key) string {
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s",
		ratio(median(res.get(a, "ops/s")), median(res.get(b, "ops/s"))),
		pairedRatio(res.get(a, "ops/s"), res.get(b, "ops/s")),
		ratio(median(res.get(a, "p50-µs")), median(res.get(b, "p50-µs"))),
		ratio(median(res.get(a, "p99-µs")), median(res.get(b, "p99-µs"))),
		ratio(median(res.get(a, "cpu-µs/op")), median(res.get(b, "cpu-µs/op"))))
}

// optional formats the median of a unit that not every benchmark reports.
func optional(vs []float64) string {
	if len(vs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", median(vs))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// pairedRatio is the median of a[i]/b[i], or "-" when the run counts differ.
func pairedRatio(a, b []float64) string {
	if len(a) != len(b) || len(a) == 0 {
		return "-"
	}
	rs := make([]float64, 0, len(a))
	for i := range a {
		if b[i] == 0 {
			return "-"
		}
		rs = append(rs, a[i]/b[i])
	}
	return fmt.Sprintf("%.2fx", median(rs))
}
