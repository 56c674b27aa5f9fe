package raft

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkHost_Groups measures what sharing a host buys active groups:
// three Hosts in this process (over the in-memory network or over TCP on
// loopback), G groups with a replica on each host, 64 proposers per group
// proposing 128-byte commands on the group's leader, b.N proposals in all
// taken from one shared counter. Each host keeps all its groups in one
// HostStorage with fsync on (storage=host); storage=files gives every
// replica its own FileStorage instead, the way to run many groups without a
// shared log. The groups' leaders are spread over the hosts with
// TransferLeadership (group i's on host i mod 3 + 1) before the timer
// starts.
//
// It reports the aggregate proposals per second, the latency of a proposal
// (p50, p99), the process's CPU time per proposal, the cores it kept busy
// on average (CPU time over wall time), runq-wait/cpu (how long its threads
// waited for a core while ready to run, per unit of CPU time they got: near
// 0 when cores are free, above 1 when other jobs' threads, or more than two
// of its own (some blocked in fsync), kept them waiting longer than they
// ran; with the cores, whether the run was CPU-bound), the fsyncs
// of all hosts per proposal, fsync-busy/host (the time spent in fsync per
// host over the wall time: a HostStorage has one fsync in flight at a time,
// so near 1 its log is the bound, though on a loaded machine the time also
// holds the wait for a core once the fsync returns; with a FileStorage per
// replica, the 16 of a host can add up to more), the peak heap, and leaders-max/host: the most
// leaders any one host held at the end (6 for 16 groups spread over 3
// hosts). The figures to read are ratios within one run: groups=16 against
// groups=1, and storage=host against storage=files (docs/multigroup.md,
// "Measured").
//
//	go test -run '^$' -bench BenchmarkHost_Groups -benchtime 60000x -count 5
func BenchmarkHost_Groups(b *testing.B) {
	for _, tcp := range []bool{false, true} {
		for _, c := range []struct {
			storage string
			groups  int
		}{{"host", 1}, {"host", 16}, {"files", 16}} {
			name := fmt.Sprintf("net=%s/storage=%s/groups=%d", map[bool]string{false: "inmem", true: "tcp"}[tcp], c.storage, c.groups)
			b.Run(name, func(b *testing.B) {
				benchHostGroups(b, tcp, c.storage == "host", c.groups, benchDefault.proposers, benchDefault.cmdSize)
			})
		}
	}
}

// benchHostCluster is three hosts running groups groups, the replicas'
// leaders spread over the hosts.
type benchHostCluster struct {
	hosts   []*Host
	leaders []*Node      // by group, group i+1 at i
	syncs   atomic.Int64 // fsyncs of all the hosts' storages
	syncNs  atomic.Int64 // nanoseconds spent in them
	closers []func() error
}

func (c *benchHostCluster) close() {
	for _, h := range c.hosts {
		h.Close()
	}
	for _, f := range c.closers {
		f()
	}
}

// countSyncsOption makes a FileStorage or HostStorage count its fsyncs in
// n and the time they took in ns.
func countSyncsOption(n, ns *atomic.Int64) FileOption {
	return func(o *fileOptions) {
		o.syncHook = func(f *os.File) error {
			t0 := time.Now()
			err := f.Sync()
			ns.Add(int64(time.Since(t0)))
			n.Add(1)
			return err
		}
	}
}

// startBenchHosts starts three hosts and groups groups of three replicas,
// each replica on a HostStorage of its host (shared) or on a FileStorage of
// its own, and returns once every group's leader is on its host and has
// committed an entry of its term.
func startBenchHosts(b *testing.B, tcp, shared bool, groups int) *benchHostCluster {
	b.Helper()
	const hostsN = 3
	c := &benchHostCluster{}
	var nw *InmemNetwork
	if !tcp {
		nw = NewInmemNetwork()
		c.closers = append(c.closers, func() error { nw.Close(); return nil })
	}
	fail := func(err error) {
		c.close()
		b.Fatal(err)
	}
	var wals []*HostStorage
	members := make([]Member, hostsN)
	for i := range hostsN {
		cfg := HostConfig{ID: uint64(i + 1)}
		if tcp {
			cfg.TCP = &TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"}
		} else {
			cfg.Network = nw
		}
		h, err := NewHost(cfg)
		if err != nil {
			fail(err)
		}
		c.hosts = append(c.hosts, h)
		members[i] = Member{ID: h.ID(), Addr: h.Addr()}
		if shared {
			w, err := OpenHostStorage(b.TempDir(), countSyncsOption(&c.syncs, &c.syncNs))
			if err != nil {
				fail(err)
			}
			wals = append(wals, w)
			// Closed after the hosts, whose groups write to it.
			c.closers = append(c.closers, w.Close)
		}
	}
	replicas := make([][]*Node, groups)
	for g := range groups {
		gid := uint64(g + 1)
		for i, h := range c.hosts {
			var st Storage
			var err error
			if shared {
				st, err = wals[i].Group(gid)
			} else {
				var fs *FileStorage
				fs, err = OpenFileStorage(b.TempDir(), countSyncsOption(&c.syncs, &c.syncNs))
				if err == nil {
					c.closers = append(c.closers, fs.Close)
					st = fs
				}
			}
			if err != nil {
				fail(err)
			}
			n, err := h.StartGroup(gid, Config{InitialMembers: members, ElectionTimeout: time.Second,
				Seed: int64(gid<<8 | h.ID())}, discardSM{}, st)
			if err != nil {
				fail(err)
			}
			replicas[g] = append(replicas[g], n)
		}
	}
	for g := range groups {
		l, err := spreadLeader(replicas[g], uint64(g%hostsN+1))
		if err != nil {
			fail(fmt.Errorf("group %d: %w", g+1, err))
		}
		c.leaders = append(c.leaders, l)
	}
	return c
}

// spreadLeader waits for the group's leader, moves the leadership to the
// replica on host want if another one leads, and returns the leader once it
// has committed an entry of its term. A transfer that does not go through
// within its deadline is retried; after 20 s the group's leader stays where
// it is.
func spreadLeader(replicas []*Node, want uint64) (*Node, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		leader := waitBenchLeader(replicas)
		if leader == nil {
			return nil, fmt.Errorf("no leader")
		}
		if leader.Status().ID == want || time.Now().After(deadline) {
			return leader, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		leader.TransferLeadership(ctx, want) // retried below if it failed
		cancel()
	}
}

func benchHostGroups(b *testing.B, tcp, shared bool, groups, proposers, cmdSize int) {
	c := startBenchHosts(b, tcp, shared, groups)
	defer c.close()
	cmd := make([]byte, cmdSize)
	b.SetBytes(int64(cmdSize))
	lat := make([]time.Duration, b.N)
	stopHeap, peakHeap := sampleHeap()
	b.ResetTimer()
	syncs0, syncNs0 := c.syncs.Load(), c.syncNs.Load()
	wait0, waitOK := runQueueWait()
	cpu0, cpuOK := processCPU()
	start := time.Now()
	proposeConcurrently(b, c.leaders, proposers, cmd, lat)
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	wait1, _ := runQueueWait()
	syncs, syncNs := c.syncs.Load()-syncs0, c.syncNs.Load()-syncNs0
	b.StopTimer()
	stopHeap()
	reportLatency(b, lat, elapsed)
	if cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		b.ReportMetric((cpu1-cpu0).Seconds()/elapsed.Seconds(), "cores")
		if waitOK && cpu1 > cpu0 {
			b.ReportMetric(float64(wait1-wait0)/float64(cpu1-cpu0), "runq-wait/cpu")
		}
	}
	b.ReportMetric(float64(syncs)/float64(b.N), "fsyncs/op")
	b.ReportMetric(float64(syncNs)/float64(elapsed)/float64(len(c.hosts)), "fsync-busy/host")
	b.ReportMetric(float64(peakHeap.alloc)/(1<<20), "peak-heap-MiB")
	perHost := map[uint64]int{}
	for _, l := range c.leaders {
		st := l.Status()
		if st.Role != Leader {
			b.Errorf("group leader on host %d lost its leadership during the run", st.ID)
		}
		perHost[st.ID]++
	}
	b.ReportMetric(float64(slices.Max(slices.Collect(maps.Values(perHost)))), "leaders-max/host")
	if testing.Verbose() {
		var where []string
		for h := uint64(1); h <= 3; h++ {
			where = append(where, fmt.Sprintf("host %d: %d", h, perHost[h]))
		}
		b.Logf("leaders: %s", strings.Join(where, ", "))
	}
}

// runQueueWait returns how long the threads of this process have waited on
// a run queue, ready to run, summed over the threads (Linux
// /proc/self/task/*/schedstat, the second field; ok is false elsewhere).
// Threads that exit meanwhile drop out of the sum, which the Go runtime's
// threads rarely do.
func runQueueWait() (wait time.Duration, ok bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, false
	}
	for _, t := range tasks {
		stat, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(stat))
		if len(f) < 2 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, false
		}
		wait += time.Duration(ns)
	}
	return wait, true
}
