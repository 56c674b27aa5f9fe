// Command kvcompare compares the kvstore example with etcd's own server, in
// the same run: three processes of each on loopback, fsync on, driven by
// the same load (puts, then linearizable gets) from the same number of
// concurrent clients. It prints each round, then the medians across rounds
// and the kvstore/etcd ratios. See bench/compare/README.md.
//
//	cd bench/compare && go run ./cmd/kvcompare -rounds 5
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
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
	bins     kvbench.Binaries // prebuilt binaries; built when empty
	cpuprof  string
}

// sample is one system's figures in one round.
type sample struct {
	puts, gets kvbench.Result
	// CPU time per operation, of the three members together and of this
	// process (the clients), in µs: less noisy than throughput on a shared
	// machine.
	putServerCPU, putClientCPU float64
	getServerCPU, getClientCPU float64
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
	flag.StringVar(&o.bins.KVStore, "kvstore-bin", "", "a kvstore binary to run instead of building examples/kvstore")
	flag.StringVar(&o.bins.Etcd, "etcd-bin", "", "an etcd binary to run instead of building etcdserver/")
	flag.StringVar(&o.cpuprof, "cpuprofile", "", "write the load generator's CPU profile (clients included) to this file")
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
	bins := o.bins
	if bins.KVStore == "" || bins.Etcd == "" {
		fmt.Println("# building kvstore and etcd ...")
		built, err := kvbench.Build(ctx, tmp)
		if err != nil {
			return err
		}
		bins.KVStore = cmp.Or(bins.KVStore, built.KVStore)
		bins.Etcd = cmp.Or(bins.Etcd, built.Etcd)
	}
	if o.cpuprof != "" {
		f, err := os.Create(o.cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
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
			fmt.Printf("round %d %-8s puts/s %6.0f p50 %6.2f ms p99 %6.2f ms cpu/op %4.0f+%3.0f µs | gets/s %6.0f p50 %6.2f ms p99 %6.2f ms cpu/op %4.0f+%3.0f µs | load %s\n",
				r+1, sys, s.puts.PerSec(), ms(s.puts.P50), ms(s.puts.P99), s.putServerCPU, s.putClientCPU,
				s.gets.PerSec(), ms(s.gets.P50), ms(s.gets.P99), s.getServerCPU, s.getClientCPU, loadAvg())
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
	// phase runs op for the warm-up or the measured time, and returns the
	// result and the server and client CPU time per operation in µs.
	phase := func(op kvbench.Op, measured bool) (r kvbench.Result, server, client float64, err error) {
		d := o.warmup
		if measured {
			d = o.duration
		}
		if d <= 0 {
			return r, 0, 0, nil
		}
		sc, cc := c.CPUTime(), kvbench.SelfCPUTime()
		r, err = kvbench.Run(ctx, clients, d, op)
		if err == nil {
			err = c.Check()
		}
		if r.Ops > 0 {
			server = float64((c.CPUTime() - sc).Microseconds()) / float64(r.Ops)
			client = float64((kvbench.SelfCPUTime() - cc).Microseconds()) / float64(r.Ops)
		}
		return r, server, client, err
	}
	r, _, _, err := phase(put, false)
	if err != nil {
		return s, err
	}
	written += int64(r.Ops)
	if s.puts, s.putServerCPU, s.putClientCPU, err = phase(put, true); err != nil {
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
	if _, _, _, err = phase(get, false); err != nil {
		return s, err
	}
	s.gets, s.getServerCPU, s.getClientCPU, err = phase(get, true)
	return s, err
}

// metric is one column of the report.
type metric struct {
	name   string
	format string
	f      func(sample) float64
}

var metrics = []metric{
	{"puts/s", "%.0f", func(s sample) float64 { return s.puts.PerSec() }},
	{"put p50 ms", "%.2f", func(s sample) float64 { return ms(s.puts.P50) }},
	{"put p99 ms", "%.2f", func(s sample) float64 { return ms(s.puts.P99) }},
	{"put cpu µs", "%.0f+%.0f", nil},
	{"gets/s", "%.0f", func(s sample) float64 { return s.gets.PerSec() }},
	{"get p50 ms", "%.2f", func(s sample) float64 { return ms(s.gets.P50) }},
	{"get p99 ms", "%.2f", func(s sample) float64 { return ms(s.gets.P99) }},
	{"get cpu µs", "%.0f+%.0f", nil},
}

// report prints the medians across rounds, and the kvstore/etcd ratios two
// ways: the median of the per-round ratios (which pairs runs made close
// together in time) and the ratio of the medians. The CPU columns are the
// CPU time per operation of the servers + of the clients, in µs.
func report(o options, res map[string][]sample) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "median of %d rounds\t", o.rounds)
	for _, m := range metrics {
		fmt.Fprintf(tw, "%s\t", m.name)
	}
	fmt.Fprintln(tw)
	cpu := map[string][2]func(sample) float64{
		"put cpu µs": {func(s sample) float64 { return s.putServerCPU }, func(s sample) float64 { return s.putClientCPU }},
		"get cpu µs": {func(s sample) float64 { return s.getServerCPU }, func(s sample) float64 { return s.getClientCPU }},
	}
	for _, sys := range o.systems {
		fmt.Fprintf(tw, "%s\t", sys)
		for _, m := range metrics {
			if m.f == nil {
				fmt.Fprintf(tw, m.format+"\t", median(res[sys], cpu[m.name][0]), median(res[sys], cpu[m.name][1]))
				continue
			}
			fmt.Fprintf(tw, m.format+"\t", median(res[sys], m.f))
		}
		fmt.Fprintln(tw)
	}
	kv, etcd := res[kvbench.KVStore], res[kvbench.Etcd]
	if len(kv) > 0 && len(kv) == len(etcd) {
		ratio := func(f func(sample) float64) (perRound, ofMedians float64) {
			var ratios []float64
			for i := range kv {
				ratios = append(ratios, f(kv[i])/f(etcd[i]))
			}
			slices.Sort(ratios)
			return ratios[len(ratios)/2], median(kv, f) / median(etcd, f)
		}
		total := func(m metric) func(sample) float64 {
			if m.f != nil {
				return m.f
			}
			return func(s sample) float64 { return cpu[m.name][0](s) + cpu[m.name][1](s) }
		}
		for k, title := range []string{"kvstore/etcd, median of per-round ratios", "kvstore/etcd, ratio of medians"} {
			fmt.Fprintf(tw, "%s\t", title)
			for _, m := range metrics {
				pr, om := ratio(total(m))
				fmt.Fprintf(tw, "%.2f\t", []float64{pr, om}[k])
			}
			fmt.Fprintln(tw)
		}
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
