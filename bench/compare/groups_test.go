package compare

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/raftkit/raft"
)

// Many groups on three hosts (README.md, "Many groups"; run.sh runs them with
// SUITE=groups): BenchmarkGroups/<system>/groups=<G>. Three hosts in this
// process over TCP on 127.0.0.1, G groups (shards) of three replicas, one
// replica of each on every host, fsync on; 64 proposers per group propose
// 128-byte commands on their group's leader, b.N proposals in all taken from
// one shared counter. The groups' leaders are spread over the hosts before
// the timer starts: group i's (from 0) on host i mod 3 + 1.
//
//   - RaftkitHost: three raft.Hosts (HostConfig{ID, TCP: {ListenAddr,
//     ClusterID}}, every other field default: 10 ms host tick, quiescence
//     after 3 s idle), each with one HostStorage (OpenHostStorage in a temp
//     dir of its own, fsync on) from which every group of the host takes its
//     Storage; Config{InitialMembers, ElectionTimeout 1s, Seed}, as the
//     single-group harnesses; leaders moved with Node.TransferLeadership.
//   - DragonboatHost: three dragonboat NodeHosts, each configured as in the
//     DragonboatTCP harness (its own NodeHostDir, the default log DB with
//     sync, the default TCP transport, RTTMillisecond 10), each starting a
//     replica of every shard (StartReplica with the shard's ID, replica IDs
//     1 to 3 = the NodeHosts) with the harness's Config; leaders moved with
//     NodeHost.RequestLeaderTransfer.
//
// Each reports what every benchmark here does (ops/s: all groups together;
// p50 and p99 of one proposal; cpu-µs/op), and besides: cores, the process's
// CPU time over the run's wall time), runq-wait/cpu (how long the process's
// threads waited for a core while ready to run, per unit of CPU time they
// got: near 0 when cores are free, above 1 when other jobs' threads, or more
// than two of its own, kept them waiting longer than they ran; with cores,
// whether the run was CPU-bound), and
// leaders-max/host, the most leaders any one host held at the end.

// groupCounts are the G of BenchmarkGroups.
var groupCounts = []int{1, 16}

// groupSystems are the systems of BenchmarkGroups.
var groupSystems = map[string]func(tb testing.TB, groups int) groupCluster{
	"RaftkitHost":    raftkitHostGroups,
	"DragonboatHost": dragonboatHostGroups,
}

// A groupCluster is a running multi-group system.
type groupCluster struct {
	// newProposer makes a proposer for group g (from 0), on its leader.
	newProposer func(g int) proposeFunc
	// leaderHosts returns the host (1 to 3) of each group's leader, now.
	leaderHosts func() []uint64
	stop        func()
}

const groupHosts = 3

func BenchmarkGroups(b *testing.B) {
	for _, name := range slices.Sorted(maps.Keys(groupSystems)) {
		b.Run(name, func(b *testing.B) {
			for _, g := range groupCounts {
				b.Run(fmt.Sprintf("groups=%d", g), func(b *testing.B) {
					benchGroups(b, name, g)
				})
			}
		})
	}
}

func benchGroups(b *testing.B, name string, groups int) {
	defer checkLeaks(b)()
	c := groupSystems[name](b, groups)
	defer c.stop()
	b.SetBytes(int64(defaultShape.cmdSize))
	props := make([]proposeFunc, 0, groups*proposers)
	for g := range groups {
		for range proposers {
			props = append(props, c.newProposer(g))
		}
	}
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	wait0, waitOK := runQueueWait()
	cpu0, cpuOK := processCPU()
	start := time.Now()
	for _, propose := range props {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := propose(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	wait1, _ := runQueueWait()
	b.StopTimer()
	reportLatency(b, lat, elapsed)
	if cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		b.ReportMetric((cpu1-cpu0).Seconds()/elapsed.Seconds(), "cores")
		if waitOK && cpu1 > cpu0 {
			b.ReportMetric(float64(wait1-wait0)/float64(cpu1-cpu0), "runq-wait/cpu")
		}
	}
	perHost := map[uint64]int{}
	for _, h := range c.leaderHosts() {
		perHost[h]++
	}
	most := 0
	for _, n := range perHost {
		most = max(most, n)
	}
	b.ReportMetric(float64(most), "leaders-max/host")
}

// wantLeader is the host (1 to 3) that leads group g (from 0).
func wantLeader(g int) uint64 { return uint64(g%groupHosts + 1) }

// raftkitHostGroups starts three raft.Hosts over TCP, each with one
// HostStorage, and groups groups with a replica on each, and returns once
// every group's leader is on the host wantLeader names (or, if a transfer
// did not go through in 20 s, wherever it is) and has committed an entry of
// its term.
func raftkitHostGroups(tb testing.TB, groups int) groupCluster {
	tb.Helper()
	var hosts []*raft.Host
	var wals []*raft.HostStorage
	stop := func() {
		for _, h := range hosts {
			if err := h.Close(); err != nil {
				tb.Error(err)
			}
		}
		for _, w := range wals {
			if err := w.Close(); err != nil {
				tb.Error(err)
			}
		}
	}
	fail := func(err error) {
		stop()
		tb.Fatal(err)
	}
	var members []raft.Member
	for id := uint64(1); id <= groupHosts; id++ {
		h, err := raft.NewHost(raft.HostConfig{ID: id, TCP: &raft.TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"}})
		if err != nil {
			fail(err)
		}
		hosts = append(hosts, h)
		members = append(members, raft.Member{ID: id, Addr: h.Addr()})
		w, err := raft.OpenHostStorage(tb.TempDir())
		if err != nil {
			fail(err)
		}
		wals = append(wals, w)
	}
	replicas := make([][]*raft.Node, groups)
	for g := range groups {
		gid := uint64(g + 1)
		for i, h := range hosts {
			st, err := wals[i].Group(gid)
			if err != nil {
				fail(err)
			}
			n, err := h.StartGroup(gid, raft.Config{InitialMembers: members, ElectionTimeout: time.Second,
				Seed: int64(gid<<8 | h.ID())}, raftkitSM{}, st)
			if err != nil {
				fail(err)
			}
			replicas[g] = append(replicas[g], n)
		}
	}
	leaders := make([]*raft.Node, groups)
	for g := range groups {
		deadline := time.Now().Add(20 * time.Second)
		for {
			l := raftkitLeader(replicas[g])
			if l == nil {
				fail(fmt.Errorf("raftkit: group %d has no leader", g+1))
			}
			leaders[g] = l
			if l.Status().ID == wantLeader(g) || time.Now().After(deadline) {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			l.TransferLeadership(ctx, wantLeader(g)) // retried if it failed
			cancel()
		}
	}
	cmd := make([]byte, defaultShape.cmdSize)
	return groupCluster{
		newProposer: func(g int) proposeFunc {
			return func() error {
				_, err := leaders[g].Propose(context.Background(), cmd)
				return err
			}
		},
		leaderHosts: func() []uint64 {
			var ids []uint64
			for _, l := range leaders {
				if st := l.Status(); st.Role == raft.Leader {
					ids = append(ids, st.ID)
				}
			}
			return ids
		},
		stop: stop,
	}
}

// dragonboatHostGroups starts three NodeHosts as dragonboatCluster does over
// TCP with its log DB on disk, and a replica of each of groups shards on
// every one, and returns once each shard's leader is on the NodeHost
// wantLeader names (or, if a transfer did not go through in 20 s, wherever
// it is) and a proposal has been applied on it.
func dragonboatHostGroups(tb testing.TB, groups int) groupCluster {
	tb.Helper()
	dragonboatQuiet()
	// Closing NodeHosts that hold connections for many shards makes the
	// transport log "send batch failed ... connection reset by peer" at
	// error level, on stdout, in the middle of the benchmark's result line.
	logger.GetLogger("transport").SetLevel(logger.CRITICAL)
	addrs, err := freeLoopbackAddrs(groupHosts)
	if err != nil {
		tb.Fatal(err)
	}
	members := make(map[uint64]dragonboat.Target, groupHosts)
	for i, a := range addrs {
		members[uint64(i+1)] = a
	}
	var hosts []*dragonboat.NodeHost
	stop := func() {
		for _, nh := range hosts {
			nh.Close()
		}
	}
	fail := func(err error) {
		stop()
		tb.Fatal(err)
	}
	for _, a := range addrs {
		nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
			NodeHostDir:    tb.TempDir(),
			RTTMillisecond: dragonboatRTT,
			RaftAddress:    a,
		})
		if err != nil {
			fail(err)
		}
		hosts = append(hosts, nh)
	}
	for g := range groups {
		for i, nh := range hosts {
			rc := config.Config{
				ReplicaID:    uint64(i + 1),
				ShardID:      uint64(g + 1),
				ElectionRTT:  100,
				HeartbeatRTT: 10,
				CheckQuorum:  true,
				PreVote:      true,
			}
			create := func(uint64, uint64) sm.IStateMachine { return &dragonboatSM{} }
			if err := nh.StartReplica(members, false, create, rc); err != nil {
				fail(err)
			}
		}
	}
	cmd := make([]byte, defaultShape.cmdSize)
	leaderOf := func(shard uint64) (uint64, bool) {
		id, _, ok, err := hosts[0].GetLeaderID(shard)
		return id, err == nil && ok && id >= 1 && id <= groupHosts
	}
	for g := range groups {
		shard := uint64(g + 1)
		deadline := time.Now().Add(20 * time.Second)
		transferDeadline := deadline
		for {
			if time.Now().After(deadline.Add(10 * time.Second)) {
				fail(fmt.Errorf("dragonboat: shard %d has no leader", shard))
			}
			id, ok := leaderOf(shard)
			if !ok {
				time.Sleep(5 * time.Millisecond) // polling interval
				continue
			}
			if id != wantLeader(g) && time.Now().Before(transferDeadline) {
				hosts[id-1].RequestLeaderTransfer(shard, wantLeader(g)) // retried while the leader is elsewhere
				time.Sleep(50 * time.Millisecond)                       // polling interval
				continue
			}
			nh := hosts[id-1]
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := nh.SyncPropose(ctx, nh.GetNoOPSession(shard), cmd)
			cancel()
			if err == nil {
				break
			}
		}
	}
	// The leaders as they were once every shard had one where wanted; a
	// proposer proposes on its shard's leader's NodeHost.
	leaders := make([]uint64, groups)
	for g := range groups {
		leaders[g], _ = leaderOf(uint64(g + 1))
	}
	return groupCluster{
		newProposer: func(g int) proposeFunc {
			shard := uint64(g + 1)
			nh := hosts[leaders[g]-1]
			session := nh.GetNoOPSession(shard)
			return func() error {
				ctx, cancel := context.WithTimeout(context.Background(), dragonboatProposeTO)
				defer cancel()
				res, err := nh.SyncPropose(ctx, session, cmd)
				if err != nil {
					return err
				}
				if res.Value == 0 { // Update counts from 1
					return errors.New("dragonboat: no result from Update")
				}
				return nil
			}
		},
		leaderHosts: func() []uint64 {
			var ids []uint64
			for g := range groups {
				if id, ok := leaderOf(uint64(g + 1)); ok {
					ids = append(ids, id)
				}
			}
			return ids
		},
		stop: stop,
	}
}

// TestHarnessGroups checks both multi-group harnesses: with four groups,
// every group's leader is where wantLeader puts it, 64 proposers per group
// commit a few hundred proposals in every group without error, and the
// hosts stop without leaking goroutines or files.
func TestHarnessGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six hosts")
	}
	const groups, perGroup = 4, 200
	for _, name := range []string{"RaftkitHost", "DragonboatHost"} {
		t.Run(name, func(t *testing.T) {
			defer checkLeaks(t)()
			c := groupSystems[name](t, groups)
			defer c.stop()
			var want []uint64
			for g := range groups {
				want = append(want, wantLeader(g))
			}
			if got := c.leaderHosts(); !slices.Equal(got, want) {
				t.Errorf("leaders on hosts %v, want %v", got, want)
			}
			var wg sync.WaitGroup
			for g := range groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					proposeConcurrently(t, proposers, func() proposeFunc { return c.newProposer(g) }, perGroup)
				}()
			}
			wg.Wait()
		})
	}
}

// runQueueWait is bench_host_test.go's: how long the threads of this
// process have waited on a run queue, ready to run, summed over the threads
// (Linux /proc/self/task/*/schedstat, the second field; ok is false
// elsewhere).
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
