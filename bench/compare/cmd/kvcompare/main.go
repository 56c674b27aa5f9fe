// Command kvcompare compares the kvstore example with etcd's own server, in
// the same run: three processes of each on loopback, fsync on, driven by
// the same load (puts, then linearizable gets) from the same number of
// concurrent clients. It prints each round, then the medians across rounds
// and the kvstore/etcd ratios. See bench/compare/README.md.
//
//	cd bench/compare && go run ./cmd/kvcompare -rounds 5
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/raftkit/raft/bench/compare/kvbench"
)

type options struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	clients  int
	value    int
	keys     int
	systems  []string
	keep     bool
}

// sample is one system's figures in one round.
type sample struct {
	puts, gets kvbench.Result
}

func main() {
	log.SetFlags(0)
	var o options
	var systems string
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each starts a fresh cluster of each system, in alternating order")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each phase (puts, gets)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each phase")
	flag.IntVar(&o.clients, "clients", 64, "concurrent clients, each with its own connection(s)")
	flag.IntVar(&o.value, "value", 128, "value size in bytes")
	flag.IntVar(&o.keys, "keys", 10000, "key space: puts write keys 0, 1, ... modulo this, gets read the keys written")
	flag.StringVar(&systems, "systems", "kvstore,etcd", "systems to run, in the first round's order")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directories and the members' logs")
	flag.Parse()
	o.systems = strings.Split(systems, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Print("kvcompare: ", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	tmp, err := os.MkdirTemp("", "kvcompare-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("# data and logs kept in %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	fmt.Printf("# %s rounds=%d duration=%s warmup=%s clients=%d value=%dB keys=%d go=%s nproc=%d\n",
		time.Now().UTC().Format(time.RFC3339), o.rounds, o.duration, o.warmup, o.clients, o.value, o.keys,
		runtime.Version(), runtime.NumCPU())
	fs, dev := fileSystem(tmp)
	fmt.Printf("# data dir: %s (%s on %s)\n", tmp, fs, dev)
	if fs == "tmpfs" || fs == "ramfs" {
		fmt.Println("# WARNING: the data dir is in memory: fsync is free; set TMPDIR to a directory on a disk")
	}
	fmt.Println("# building kvstore and etcd ...")
	bins, err := kvbench.Build(ctx, tmp)
	if err != nil {
		return err
	}
	fmt.Printf("# load before: %s\n", loadAvg())
	res := map[string][]sample{}
	for r := range o.rounds {
		order := slices.Clone(o.systems)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, sys := range order {
			s, err := round(ctx, o, bins, filepath.Join(tmp, fmt.Sprintf("%s-%d", sys, r+1)), sys)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, sys, err)
			}
			res[sys] = append(res[sys], s)
			fmt.Printf("round %d %-8s puts/s %7.0f p50 %6.2f ms p99 %6.2f ms | gets/s %7.0f p50 %6.2f ms p99 %6.2f ms | load %s\n",
				r+1, sys, s.puts.PerSec(), ms(s.puts.P50), ms(s.puts.P99),
				s.gets.PerSec(), ms(s.gets.P50), ms(s.gets.P99), loadAvg())
		}
	}
	fmt.Printf("# load after: %s\n\n", loadAvg())
	report(o, res)
	return nil
}

// round starts a fresh cluster of sys in dir, measures puts then gets, and
// stops it.
func round(ctx context.Context, o options, bins kvbench.Binaries, dir, sys string) (s sample, err error) {
	var c *kvbench.Cluster
	switch sys {
	case kvbench.KVStore:
		c, err = kvbench.StartKVStore(ctx, bins.KVStore, dir)
	case kvbench.Etcd:
		c, err = kvbench.StartEtcd(ctx, bins.Etcd, dir)
	default:
		err = fmt.Errorf("unknown system %q (kvstore or etcd)", sys)
	}
	if err != nil {
		return s, err
	}
	defer func() {
		c.Stop()
		if !o.keep {
			os.RemoveAll(dir)
		}
	}()
	var clients []kvbench.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	values := make([][]byte, o.clients)
	for i := range o.clients {
		cl, err := c.NewClient(i)
		if err != nil {
			return s, err
		}
		clients = append(clients, cl)
		values[i] = kvbench.Value(o.value, i)
	}
	// Puts write keys 0, 1, 2, ... (modulo the key space) from a counter
	// shared by the phases, so that the gets can read keys that exist.
	var written int64
	put := func(ctx context.Context, cl kvbench.Client, i int64) error {
		return cl.Put(ctx, kvbench.Key(written+i, o.keys), values[(written+i)%int64(len(values))])
	}
	phase := func(op kvbench.Op, measured bool) (kvbench.Result, error) {
		d := o.warmup
		if measured {
			d = o.duration
		}
		if d <= 0 {
			return kvbench.Result{}, nil
		}
		r, err := kvbench.Run(ctx, clients, d, op)
		if err == nil {
			err = c.Check()
		}
		return r, err
	}
	var r kvbench.Result
	if r, err = phase(put, false); err != nil {
		return s, err
	}
	written += int64(r.Ops)
	if s.puts, err = phase(put, true); err != nil {
		return s, err
	}
	written += int64(s.puts.Ops)
	n := min(written, int64(o.keys))
	get := func(ctx context.Context, cl kvbench.Client, i int64) error {
		v, err := cl.Get(ctx, kvbench.Key(i%n, o.keys))
		if err == nil && len(v) != o.value {
			err = fmt.Errorf("get %s: %d bytes, want %d", kvbench.Key(i%n, o.keys), len(v), o.value)
		}
		return err
	}
	if _, err = phase(get, false); err != nil {
		return s, err
	}
	s.gets, err = phase(get, true)
	return s, err
}

func report(o options, res map[string][]sample) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "median of %d rounds\tputs/s\tput p50 ms\tput p99 ms\tgets/s\tget p50 ms\tget p99 ms\t\n", o.rounds)
	for _, sys := range o.systems {
		ss := res[sys]
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t\n", sys,
			median(ss, func(s sample) float64 { return s.puts.PerSec() }),
			median(ss, func(s sample) float64 { return ms(s.puts.P50) }),
			median(ss, func(s sample) float64 { return ms(s.puts.P99) }),
			median(ss, func(s sample) float64 { return s.gets.PerSec() }),
			median(ss, func(s sample) float64 { return ms(s.gets.P50) }),
			median(ss, func(s sample) float64 { return ms(s.gets.P99) }))
	}
	kv, etcd := res[kvbench.KVStore], res[kvbench.Etcd]
	if len(kv) > 0 && len(kv) == len(etcd) {
		// The median of the per-round ratios pairs runs made close together
		// in time; the ratio of the medians is given next to it.
		type metric struct {
			name string
			f    func(sample) float64
		}
		metrics := []metric{
			{"puts/s", func(s sample) float64 { return s.puts.PerSec() }},
			{"put p50", func(s sample) float64 { return ms(s.puts.P50) }},
			{"put p99", func(s sample) float64 { return ms(s.puts.P99) }},
			{"gets/s", func(s sample) float64 { return s.gets.PerSec() }},
			{"get p50", func(s sample) float64 { return ms(s.gets.P50) }},
			{"get p99", func(s sample) float64 { return ms(s.gets.P99) }},
		}
		fmt.Fprintf(tw, "kvstore/etcd, median of per-round ratios\t")
		for _, m := range metrics {
			var ratios []float64
			for i := range kv {
				ratios = append(ratios, m.f(kv[i])/m.f(etcd[i]))
			}
			slices.Sort(ratios)
			fmt.Fprintf(tw, "%.2f\t", ratios[len(ratios)/2])
		}
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "kvstore/etcd, ratio of medians\t")
		for _, m := range metrics {
			fmt.Fprintf(tw, "%.2f\t", median(kv, m.f)/median(etcd, m.f))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func median(ss []sample, f func(sample) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// fileSystem returns the file system type of dir and its device, from df.
func fileSystem(dir string) (fs, dev string) {
	out, err := exec.Command("df", "-PT", dir).Output()
	if err != nil {
		return "unknown", "?"
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if f := strings.Fields(lines[len(lines)-1]); len(lines) == 2 && len(f) > 1 {
		return f[1], f[0]
	}
	return "unknown", "?"
}
