package raft

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHost_Load measures a Host under load; it runs only when
// RAFT_HOST_LOAD names how long each measurement lasts:
//
//	RAFT_HOST_LOAD=3s go test -run TestHost_Load -v .
//
// Three hosts in this process over TCP on loopback, MemoryStorage, the
// default Config. First one group, then sixteen, each with 64 proposers
// that propose 16-byte commands one after the other on its leader. It
// reports the proposals committed and applied per second (all groups
// together), the process's CPU time per proposal (the three hosts, the
// proposers included) and the 99th percentile of a proposal's latency.
func TestHost_Load(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("RAFT_HOST_LOAD"))
	if err != nil || d <= 0 {
		t.Skip("set RAFT_HOST_LOAD to the duration of each measurement to run it")
	}
	proposers := 64
	if n, err := strconv.Atoi(os.Getenv("RAFT_HOST_PROPOSERS")); err == nil && n > 0 {
		proposers = n
	}
	t.Logf("load average at start: %s", loadAverage())
	for _, groups := range []int{1, 16} {
		measureHostLoad(t, groups, proposers, d)
	}
	t.Logf("load average at end: %s", loadAverage())
}

func measureHostLoad(t *testing.T, groups, proposers int, d time.Duration) {
	var hs []*Host
	for id := uint64(1); id <= 3; id++ {
		h, err := NewHost(HostConfig{ID: id, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "load"}})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	defer func() {
		for _, h := range hs {
			require.NoError(t, h.Close())
		}
	}()
	members := []Member{{ID: 1, Addr: hs[0].Addr()}, {ID: 2, Addr: hs[1].Addr()}, {ID: 3, Addr: hs[2].Addr()}}
	for g := uint64(1); g <= uint64(groups); g++ {
		for _, h := range hs {
			_, err := h.StartGroup(g, Config{InitialMembers: members}, discardSM{}, NewMemoryStorage())
			require.NoError(t, err)
		}
	}
	replicas := func(g uint64) []*Node {
		var nodes []*Node
		for _, h := range hs {
			n, _ := h.Group(g)
			nodes = append(nodes, n)
		}
		return nodes
	}
	waitAllElected(t, groups, replicas)
	leaders := make([]*Node, groups)
	for g := range groups {
		for _, n := range replicas(uint64(g + 1)) {
			if n.Status().Role == Leader {
				leaders[g] = n
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	lats := make([][]time.Duration, groups*proposers)
	var measuring atomic.Bool
	cmd := make([]byte, 16)
	for g := range groups {
		for p := range proposers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					t0 := time.Now()
					_, err := leaders[g].Propose(ctx, cmd)
					if !measuring.Load() {
						continue
					}
					if err != nil {
						failed.Add(1)
						continue
					}
					done.Add(1)
					lats[g*proposers+p] = append(lats[g*proposers+p], time.Since(t0))
				}
			}()
		}
	}
	time.Sleep(d / 3) // warm-up: a span of load before the measurement, not a wait for a condition
	cpu0, wall0 := cpuTime(t), time.Now()
	measuring.Store(true)
	time.Sleep(d) // the measurement itself
	measuring.Store(false)
	n, wall, cpu := done.Load(), time.Since(wall0), cpuTime(t)-cpu0
	cancel()
	wg.Wait()
	all := slices.Concat(lats...)
	slices.Sort(all)
	p99 := time.Duration(0)
	if len(all) > 0 {
		p99 = all[len(all)*99/100]
	}
	t.Logf("%d groups x %d proposers: %.0f proposals/s, %.1f µs CPU per proposal, p99 %v, %.2f cores, %d failed",
		groups, proposers, float64(n)/wall.Seconds(), float64(cpu.Microseconds())/float64(max(n, 1)),
		p99.Round(10*time.Microsecond), float64(cpu)/float64(wall), failed.Load())
}
