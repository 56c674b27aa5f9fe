// Command median reads `go test -bench` output of the compare benchmarks on
// standard input and prints, per benchmark, the median of ops/s, p50-µs and
// p99-µs across the runs, then the ratio of raftkit to each anchor library:
// in memory (Raftkit against Hashicorp, Etcd and Dragonboat), durable
// (RaftkitFile against HashicorpWAL, EtcdWAL and DragonboatFile) and over TCP
// with fsync (RaftkitTCP against HashicorpTCP and DragonboatTCP).
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

var (
	suites = []suite{
		{"in memory", []string{"Raftkit", "Hashicorp", "Etcd", "Dragonboat"}},
		{"durable (fsync)", []string{"RaftkitFile", "HashicorpWAL", "EtcdWAL", "DragonboatFile"}},
		{"TCP + fsync", []string{"RaftkitTCP", "HashicorpTCP", "DragonboatTCP"}},
	}
	workloads = []string{"64Proposers", "Sequential"}
)

// results maps "Library_Workload" and unit to the values of the runs, in
// input order.
type results map[string]map[string][]float64

func main() {
	res, failed, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "median:", err)
		os.Exit(1)
	}
	if len(res) == 0 {
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
func parse(r io.Reader) (res results, failed map[string]int, err error) {
	res = make(results)
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
		if res[name] == nil {
			res[name] = make(map[string][]float64)
		}
		// f[1] is the iteration count; then value/unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %v", sc.Text(), err)
			}
			res[name][f[i+1]] = append(res[name][f[i+1]], v)
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

func report(w io.Writer, res results) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\truns\tops/s\tp50-µs\tp99-µs\t")
	for _, su := range suites {
		for _, wl := range workloads {
			for _, lib := range su.libraries {
				name := lib + "_" + wl
				m := res[name]
				if m == nil {
					continue
				}
				fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t\n", name, len(m["ops/s"]),
					median(m["ops/s"]), median(m["p50-µs"]), median(m["p99-µs"]))
			}
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, "raftkit / anchor (ops/s: >1 means raftkit is faster; latency: <1 means raftkit is faster)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "raftkit\tworkload\tanchor\tops/s\tops/s (per round)\tp50\tp99\t")
	for _, su := range suites {
		for _, wl := range workloads {
			rk := res[su.libraries[0]+"_"+wl]
			if rk == nil {
				continue
			}
			for _, lib := range su.libraries[1:] {
				an := res[lib+"_"+wl]
				if an == nil {
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", su.libraries[0], wl, lib,
					ratio(median(rk["ops/s"]), median(an["ops/s"])),
					pairedRatio(rk["ops/s"], an["ops/s"]),
					ratio(median(rk["p50-µs"]), median(an["p50-µs"])),
					ratio(median(rk["p99-µs"]), median(an["p99-µs"])))
			}
		}
	}
	tw.Flush()
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
