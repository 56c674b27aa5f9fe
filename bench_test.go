package raft

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
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
// and compare medians (docs/benchmarks.md).

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
	leader, _, stop := benchClusterSM(b, newStorage, func(uint64) StateMachine { return discardSM{} }, tune...)
	return leader, stop
}

// benchClusterSM is benchCluster with the state machines newSM makes; it
// also returns the network.
func benchClusterSM(b *testing.B, newStorage func(id uint64) Storage, newSM func(id uint64) StateMachine, tune ...func(*Config)) (*Node, *InmemNetwork, func()) {
	b.Helper()
	nw := NewInmemNetwork()
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
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
	benchProposers(b, memStorage, 64)
}

func BenchmarkCluster_SequentialProposer(b *testing.B) {
	benchProposers(b, memStorage, 1)
}

// BenchmarkClusterFile_64Proposers is the same workload with every node on
// its own FileStorage, fsync on.
func BenchmarkClusterFile_64Proposers(b *testing.B) {
	benchProposers(b, fileStorage(b), 64)
}

func BenchmarkClusterFile_SequentialProposer(b *testing.B) {
	benchProposers(b, fileStorage(b), 1)
}

func benchProposers(b *testing.B, newStorage func(uint64) Storage, proposers int) {
	sms := make([]*applyTimes, 3)
	leader, nw, stop := benchClusterSM(b, newStorage, func(id uint64) StateMachine {
		sms[id-1] = &applyTimes{at: map[uint64]time.Time{}}
		return sms[id-1]
	})
	defer stop()
	lid := leader.Status().ID
	sent := countSent(nw, lid)
	benchProposeFrom(b, leader, proposers)
	nw.setFilter(nil)
	sent.report(b)
	reportApplyLag(b, sms, lid)
}

// sentCounts counts the appends with entries, the appends without (which
// carry the commit index) and the heartbeats that a leader sends.
type sentCounts struct {
	withEntries, commitOnly, heartbeats atomic.Int64
}

func (c *sentCounts) count(m *Message) {
	switch {
	case m.Type == MsgAppend && len(m.Entries) > 0:
		c.withEntries.Add(1)
	case m.Type == MsgAppend:
		c.commitOnly.Add(1)
	case m.Type == MsgHeartbeat:
		c.heartbeats.Add(1)
	}
}

func (c *sentCounts) reset() {
	c.withEntries.Store(0)
	c.commitOnly.Store(0)
	c.heartbeats.Store(0)
}

// report reports the counts per operation of b.
func (c *sentCounts) report(b *testing.B) {
	n := float64(b.N)
	b.ReportMetric(float64(c.withEntries.Load())/n, "appends/op")
	b.ReportMetric(float64(c.commitOnly.Load())/n, "commit-appends/op")
	b.ReportMetric(float64(c.heartbeats.Load())/n, "heartbeats/op")
}

// countSent counts, from now on, what leader sends over nw.
func countSent(nw *InmemNetwork, leader uint64) *sentCounts {
	c := new(sentCounts)
	nw.setFilter(func(from uint64, m *Message) inmemVerdict {
		if from == leader {
			c.count(m)
		}
		return inmemPass
	})
	return c
}

// countingTransport counts what its node sends.
type countingTransport struct {
	Transport
	sent sentCounts
}

func (t *countingTransport) Send(msgs []Message) {
	for i := range msgs {
		t.sent.count(&msgs[i])
	}
	t.Transport.Send(msgs)
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
	sms := make([]*applyTimes, 3)
	leader, nw, stop := benchClusterSM(b, newStorage, func(id uint64) StateMachine {
		sms[id-1] = &applyTimes{at: map[uint64]time.Time{}, applied: make(chan uint64, 1)}
		return sms[id-1]
	})
	defer stop()
	lid := leader.Status().ID
	sent := countSent(nw, lid)
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
	sent.report(b)
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

// benchProposeFrom is the measuring loop: proposers goroutines share b.N
// proposals of 128 bytes on leader.
func benchProposeFrom(b *testing.B, leader *Node, proposers int) {
	cmd := make([]byte, 128)
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	stopHeap, peakHeap := sampleHeap()
	b.ResetTimer()
	start := time.Now()
	for range proposers {
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
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	stopHeap()
	reportLatency(b, lat, elapsed)
	b.ReportMetric(float64(*peakHeap)/(1<<20), "peak-heap-MiB")
}

// sampleHeap records the largest live heap seen every 50 ms until stop
// returns (the heap under load: what waits for the disk must stay bounded).
func sampleHeap() (stop func(), peak *uint64) {
	peak = new(uint64)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			*peak = max(*peak, ms.HeapAlloc)
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-exited }, peak
}
