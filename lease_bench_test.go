package raft

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReads compares ReadIndex (LinearizableRead) with lease reads
// (LeaseRead) on the leader and on a follower: three voters over the
// in-memory network on MemoryStorage, default Config with LeaseReads on,
// 64 goroutines sharing b.N reads, no writes. Each round starts one cluster
// and runs the four cases on it one after the other, so that they are
// compared in the same run:
//
//	go test -run '^$' -bench BenchmarkReads -benchtime 200000x -count 5 .
//
// and compare medians (docs/benchmarks.md).
func BenchmarkReads(b *testing.B) {
	nw := NewInmemNetwork()
	defer nw.Close()
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	var nodes []*Node
	for _, m := range members {
		n, err := NewNode(Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID), LeaseReads: true},
			discardSM{}, NewMemoryStorage(), nw.Transport(m.ID))
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		nodes = append(nodes, n)
	}
	leader := waitBenchLeader(nodes)
	if leader == nil {
		b.Fatal("no leader")
	}
	var follower *Node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	// Wait until the leader holds a lease (a heartbeat round after its no-op
	// committed).
	deadline := time.Now().Add(10 * time.Second)
	for valid := false; !valid; {
		if time.Now().After(deadline) {
			b.Fatal("the leader never got a lease")
		}
		if err := leader.call(context.Background(), func() { valid = leader.core.leaseValid() }); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	for _, c := range []struct {
		name  string
		node  *Node
		lease bool
	}{
		{"ReadIndex/leader", leader, false},
		{"Lease/leader", leader, true},
		{"ReadIndex/follower", follower, false},
		{"Lease/follower", follower, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchReadsOn(b, c.node, c.lease, 64) })
	}
}

// benchReadsOn is the measuring loop: readers goroutines share b.N reads
// on n.
func benchReadsOn(b *testing.B, n *Node, lease bool, readers int) {
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range readers {
		wg.Go(func() {
			ctx := context.Background()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				var err error
				if lease {
					err = n.LeaseRead(ctx)
				} else {
					err = n.LinearizableRead(ctx)
				}
				if err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	reportLatency(b, lat, elapsed)
}
