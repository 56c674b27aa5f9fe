package raft

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of the whole node: 3 voters in one process over the in-memory
// network, each on its own MemoryStorage, commands of 128 bytes applied to a
// state machine that does nothing. Each reports ops/s and the p50/p99 latency
// of Propose (from the call to the Apply result). Run with
//
//	go test -run '^$' -bench BenchmarkCluster -benchtime 200000x -count 5
//
// and compare medians (docs/benchmarks.md). BenchmarkSizes and
// BenchmarkVoters vary the command size and the number of voters.

// A benchShape is what the cluster benchmarks vary besides the storage and
// the network.
type benchShape struct {
	voters    int
	cmdSize   int
	proposers int // goroutines proposing at once
}

// benchDefault is the workload of BenchmarkCluster_64Proposers.
var benchDefault = benchShape{voters: 3, cmdSize: 128, proposers: 64}

// with returns s with proposers goroutines proposing.
func (s benchShape) with(proposers int) benchShape {
	s.proposers = proposers
	return s
}

type discardSM struct{}

func (discardSM) Apply(Entry) any             { return nil }
func (discardSM) Snapshot() (Snapshot, error) { return emptySnapshot{}, nil }
func (discardSM) Restore(r io.Reader) error   { return nil }

// emptySnapshot is the snapshot of a state machine without state.
type emptySnapshot struct{}

func (emptySnapshot) WriteTo(io.Writer) (int64, error) { return 0, nil }
func (emptySnapshot) Release()                         {}

// benchCluster starts three nodes, each on the storage newStorage makes,
// with their configs adjusted by tune, and returns the leader.
func benchCluster(b *testing.B, newStorage func(id uint64) Storage, tune ...func(*Config)) (*Node, func()) {
	b.Helper()
	leader, _, stop := benchClusterSM(b, benchDefault.voters, newStorage, func(uint64) StateMachine { return discardSM{} }, tune...)
	return leader, stop
}

// benchMembers are the voters 1 to n.
func benchMembers(n int) []Member {
	members := make([]Member, n)
	for i := range members {
		members[i] = Member{ID: uint64(i + 1)}
	}
	return members
}

// benchClusterSM is benchCluster with voters nodes and the state machines
// newSM makes; it also returns the network.
func benchClusterSM(b *testing.B, voters int, newStorage func(id uint64) Storage, newSM func(id uint64) StateMachine, tune ...func(*Config)) (*Node, *InmemNetwork, func()) {
	b.Helper()
	nw := NewInmemNetwork()
	members := benchMembers(voters)
	var nodes []*Node
	var stores []Storage
	for _, m := range members {
		st := newStorage(m.ID)
		stores = append(stores, st)
		cfg := Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)}
		for _, f := range tune {
			f(&cfg)
		}
		n, err := NewNode(cfg, newSM(m.ID), st, nw.Transport(m.ID))
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	stop := func() {
		for _, n := range nodes {
			n.Close()
		}
		nw.Close()
		for _, st := range stores {
			if c, ok := st.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}
	leader := waitBenchLeader(nodes)
	if leader == nil {
		stop()
		b.Fatal("no leader")
	}
	return leader, nw, stop
}

// waitBenchLeader returns the leader once it has committed its no-op, so
// that the first proposals do not pay for the election; nil after 20s.
func waitBenchLeader(nodes []*Node) *Node {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.Status().Role == Leader && n.LinearizableRead(context.Background()) == nil {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	return nil
}

func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func memStorage(uint64) Storage { return NewMemoryStorage() }

// fileStorage gives each node a FileStorage with fsync in a temp dir.
func fileStorage(b *testing.B) func(uint64) Storage {
	return func(id uint64) Storage {
		s, err := OpenFileStorage(filepath.Join(b.TempDir(), fmt.Sprint(id)))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
}

func BenchmarkCluster_64Proposers(b *testing.B) {
	benchProposers(b, memStorage, benchDefault)
}

func BenchmarkCluster_SequentialProposer(b *testing.B) {
	benchProposers(b, memStorage, benchDefault.with(1))
}

// BenchmarkClusterFile_64Proposers is the same workload with every node on
// its own FileStorage, fsync on.
func BenchmarkClusterFile_64Proposers(b *testing.B) {
	benchProposers(b, fileStorage(b), benchDefault)
}

func BenchmarkClusterFile_SequentialProposer(b *testing.B) {
	benchProposers(b, fileStorage(b), benchDefault.with(1))
}

// benchNetworks runs a cluster benchmark over the in-memory network
// (benchProposers, which also counts the leader's messages and the
// followers' apply lag) or over TCP on loopback (benchTCPProposers).
var benchNetworks = []struct {
	name string
	run  func(b *testing.B, newStorage func(uint64) Storage, s benchShape)
}{
	{"inmem", benchProposers},
	{"tcp", benchTCPProposers},
}

// BenchmarkSizes is BenchmarkClusterFile_64Proposers and
// BenchmarkTCPCluster_64Proposers with commands of 4 KiB and 64 KiB, and
// for 64 KiB also with fewer proposers (64 of them put 4 MiB in flight).
// MB/s is the command payload committed per second; the BenchmarkSizes of
// bench/compare sets it against the disk and the anchors in the same run.
func BenchmarkSizes(b *testing.B) {
	shapes := []benchShape{
		{voters: 3, cmdSize: 4 << 10, proposers: 64},
		{voters: 3, cmdSize: 64 << 10, proposers: 64},
		{voters: 3, cmdSize: 64 << 10, proposers: 16},
		{voters: 3, cmdSize: 64 << 10, proposers: 8},
	}
	for _, nw := range benchNetworks {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("net=%s/cmd=%dKiB/proposers=%d", nw.name, s.cmdSize>>10, s.proposers), func(b *testing.B) {
				nw.run(b, fileStorage(b), s)
			})
		}
	}
}

// BenchmarkVoters runs the default workloads (64 proposers and one,
// 128-byte commands) with 3 and 5 voters, on MemoryStorage and on
// FileStorage with fsync, over the in-memory network and over TCP.
func BenchmarkVoters(b *testing.B) {
	storages := []struct {
		name string
		make func(*testing.B) func(uint64) Storage
	}{
		{"mem", func(*testing.B) func(uint64) Storage { return memStorage }},
		{"file", fileStorage},
	}
	for _, nw := range benchNetworks {
		for _, st := range storages {
			for _, voters := range []int{3, 5} {
				for _, proposers := range []int{64, 1} {
					s := benchShape{voters: voters, cmdSize: benchDefault.cmdSize, proposers: proposers}
					b.Run(fmt.Sprintf("net=%s/storage=%s/voters=%d/proposers=%d", nw.name, st.name, voters, proposers), func(b *testing.B) {
						nw.run(b, st.make(b), s)
					})
				}
			}
		}
	}
}

func benchProposers(b *testing.B, newStorage func(uint64) Storage, s benchShape) {
	sms := make([]*applyTimes, s.voters)
	leader, nw, stop := benchClusterSM(b, s.voters, newStorage, func(id uint64) StateMachine {
		sms[id-1] = &applyTimes{at: map[uint64]time.Time{}}
		return sms[id-1]
	})
	defer stop()
	var counts messageCounts
	lid := leader.Status().ID
	counts.leader.Store(lid)
	nw.setFilter(func(from uint64, m *Message) inmemVerdict {
		counts.count(from, m)
		return inmemPass
	})
	benchProposeFrom(b, leader, s.proposers, s.cmdSize)
	nw.setFilter(nil)
	counts.report(b)
	reportApplyLag(b, sms, lid)
}

// messageCounts counts the messages of the cluster that tell how well the
// leader batches and whether it sends entries twice: what the leader sends,
// and the appends the followers reject (a follower rejects an append that
// does not follow its log, and the leader then sends the entries again).
type messageCounts struct {
	leader                                       atomic.Uint64 // 0: count nothing
	withEntries, entries, commitOnly, heartbeats atomic.Int64
	rejected                                     atomic.Int64
}

// count counts m, which node from sends.
func (c *messageCounts) count(from uint64, m *Message) {
	leader := c.leader.Load()
	switch {
	case leader == 0:
	case from == leader && m.Type == MsgAppend && len(m.Entries) > 0:
		c.withEntries.Add(1)
		c.entries.Add(int64(len(m.Entries)))
	case from == leader && m.Type == MsgAppend:
		c.commitOnly.Add(1)
	case from == leader && m.Type == MsgHeartbeat:
		c.heartbeats.Add(1)
	case m.To == leader && m.Type == MsgAppendResp && m.Reject:
		c.rejected.Add(1)
	}
}

// report reports the counts per proposal: entries/op is (voters - 1) when
// no entry is sent twice.
func (c *messageCounts) report(b *testing.B) {
	n := float64(b.N)
	b.ReportMetric(float64(c.withEntries.Load())/n, "appends/op")
	b.ReportMetric(float64(c.entries.Load())/n, "entries/op")
	b.ReportMetric(float64(c.commitOnly.Load())/n, "commit-appends/op")
	b.ReportMetric(float64(c.heartbeats.Load())/n, "heartbeats/op")
	b.ReportMetric(float64(c.rejected.Load())/n, "rejects/op")
}

// BenchmarkCluster_IdleApplyLag proposes one command at a time and waits
// until both followers have applied it before the next: the leader is idle
// once it has committed, so no later append carries the commit index, and
// the follower apply lag it reports is what an idle leader costs its
// followers.
func BenchmarkCluster_IdleApplyLag(b *testing.B) {
	benchIdleApplyLag(b, memStorage)
}

func BenchmarkClusterFile_IdleApplyLag(b *testing.B) {
	benchIdleApplyLag(b, fileStorage(b))
}

func benchIdleApplyLag(b *testing.B, newStorage func(uint64) Storage) {
	const voters = 3
	sms := make([]*applyTimes, voters)
	leader, nw, stop := benchClusterSM(b, voters, newStorage, func(id uint64) StateMachine {
		sms[id-1] = &applyTimes{at: map[uint64]time.Time{}, applied: make(chan uint64, 1)}
		return sms[id-1]
	})
	defer stop()
	var counts messageCounts
	lid := leader.Status().ID
	counts.leader.Store(lid)
	nw.setFilter(func(from uint64, m *Message) inmemVerdict {
		counts.count(from, m)
		return inmemPass
	})
	cmd := make([]byte, 128)
	b.ResetTimer()
	for range b.N {
		p, err := leader.ProposeAsync(cmd)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
		for i, f := range sms {
			if uint64(i+1) == lid {
				continue
			}
			timeout := time.After(10 * time.Second)
			for done := false; !done; {
				select {
				case idx := <-f.applied:
					done = idx >= p.Index
				case <-timeout:
					b.Fatalf("follower %d did not apply entry %d within 10s", i+1, p.Index)
				}
			}
		}
	}
	b.StopTimer()
	nw.setFilter(nil)
	counts.report(b)
	reportApplyLag(b, sms, lid)
}

// applyTimes is a state machine that records when it applied each entry;
// with applied set, it also reports the last index applied there, keeping
// only the newest if nobody reads it in time.
type applyTimes struct {
	discardSM
	mu      sync.Mutex
	at      map[uint64]time.Time
	applied chan uint64
}

func (a *applyTimes) Apply(e Entry) any {
	a.mu.Lock()
	a.at[e.Index] = time.Now()
	a.mu.Unlock()
	if a.applied != nil {
		for {
			select {
			case a.applied <- e.Index:
				return nil
			default:
			}
			select {
			case <-a.applied: // drop an older index
			default:
			}
		}
	}
	return nil
}

// reportApplyLag reports how much later than the leader the followers
// applied each entry (the leader applies right after it commits): the
// follower apply lag, which the commit index reaching followers bounds.
// It waits up to 2s for the followers to apply everything the leader did.
func reportApplyLag(b *testing.B, sms []*applyTimes, leader uint64) {
	l := sms[leader-1]
	l.mu.Lock()
	want := len(l.at)
	l.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	var lags []time.Duration
	for i, f := range sms {
		if uint64(i+1) == leader {
			continue
		}
		for {
			f.mu.Lock()
			n := len(f.at)
			f.mu.Unlock()
			if n >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond) // polling interval
		}
		l.mu.Lock()
		f.mu.Lock()
		for idx, t := range l.at {
			if ft, ok := f.at[idx]; ok {
				lags = append(lags, ft.Sub(t))
			}
		}
		f.mu.Unlock()
		l.mu.Unlock()
	}
	if len(lags) == 0 {
		return
	}
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "lag-p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "lag-p99-µs")
}

// proposeConcurrently shares b.N proposals of cmd among perLeader
// goroutines on each of leaders, and records the latency of proposal i
// (from the call to the Apply result) in lat[i].
func proposeConcurrently(b *testing.B, leaders []*Node, perLeader int, cmd []byte, lat []time.Duration) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for _, leader := range leaders {
		for range perLeader {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(b.N) {
						return
					}
					t0 := time.Now()
					if _, err := leader.Propose(context.Background(), cmd); err != nil {
						b.Error(err)
						return
					}
					lat[i] = time.Since(t0)
				}
			}()
		}
	}
	wg.Wait()
}

// benchProposeFrom is the measuring loop: proposers goroutines share b.N
// proposals of cmdSize bytes on leader. Besides ops/s and the latencies it
// reports the command payload committed per second (MB/s, through
// b.SetBytes) and the peak live heap.
func benchProposeFrom(b *testing.B, leader *Node, proposers, cmdSize int) {
	cmd := make([]byte, cmdSize)
	b.SetBytes(int64(cmdSize))
	lat := make([]time.Duration, b.N)
	stopHeap, peakHeap := sampleHeap()
	b.ResetTimer()
	cpu0, cpuOK := processCPU()
	start := time.Now()
	proposeConcurrently(b, []*Node{leader}, proposers, cmd, lat)
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	b.StopTimer()
	stopHeap()
	reportLatency(b, lat, elapsed)
	if cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
	b.ReportMetric(float64(peakHeap.alloc)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(peakHeap.live)/(1<<20), "peak-live-MiB")
}

// processCPU returns the CPU time, user and system, that this process has
// used, from /proc/self/stat (Linux; ok is false elsewhere), to a tick of
// 10 ms. The CPU time per proposal of a cluster in one process is a steadier
// figure than its throughput on a machine shared with other jobs: they take
// CPU time from it, but do not add to its own.
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

// heapPeaks are the largest heap sizes sampleHeap saw: alloc is the heap's
// allocated bytes, including garbage not yet collected; live is what the
// last garbage collection found reachable.
type heapPeaks struct {
	alloc, live uint64
}

// sampleHeap records the largest heap seen every 50 ms until stop returns
// (the heap under load: what waits for the disk must stay bounded).
func sampleHeap() (stop func(), peak *heapPeaks) {
	peak = new(heapPeaks)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(live)
			peak.alloc = max(peak.alloc, ms.HeapAlloc)
			peak.live = max(peak.live, live[0].Value.Uint64())
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-exited }, peak
}
