package raft

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHost_Scale measures a Host at scale; it runs only when RAFT_HOST_SCALE
// names the number of groups (docs/multigroup.md has the figures):
//
//	RAFT_HOST_SCALE=1000 go test -run TestHost_Scale -v -timeout 30m .
//
// Three hosts in this process over TCP on loopback, each running a replica
// of every group on a MemoryStorage, with the default Config (election
// timeout 1s, heartbeats every 100ms) and the default host tick (10ms). It
// reports the time until every group has a leader that its replicas agree
// on, the CPU the idle hosts use over RAFT_HOST_IDLE (default 10s), the
// heap, stacks and goroutines per group replica, and the connections each
// host holds; first with quiescence off, then with the default
// QuiesceAfter once every group rests (docs/multigroup.md, "Quiescence"),
// and the ratios of the idle figures. The same figures for the groups run as single Nodes, each
// with a TCPTransport of its own (the baseline, with RAFT_HOST_BASELINE
// groups, default 100, fewer when RAFT_HOST_SCALE is lower), follow in the
// same run, and the per-group ratios.
func TestHost_Scale(t *testing.T) {
	groups, _ := strconv.Atoi(os.Getenv("RAFT_HOST_SCALE"))
	if groups <= 0 {
		t.Skip("set RAFT_HOST_SCALE to the number of groups to run this measurement")
	}
	idle := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RAFT_HOST_IDLE")); err == nil && d > 0 {
		idle = d
	}
	baseline := min(100, groups)
	if n, err := strconv.Atoi(os.Getenv("RAFT_HOST_BASELINE")); err == nil && n >= 0 {
		baseline = n
	}
	t.Logf("load average at start: %s", loadAverage())
	awake := measureHostScale(t, groups, idle, -1)
	t.Logf("hosts, %d groups x 3 replicas, quiescence off: %s", groups, awake)
	hosts := measureHostScale(t, groups, idle, 0)
	t.Logf("hosts, %d groups x 3 replicas, quiesced (all resting %v after the first start): %s", groups, hosts.quiesced.Round(time.Millisecond), hosts)
	t.Logf("quiesced / quiescence off: idle CPU %.3f, messages/s %.4f", hosts.idleCPU/awake.idleCPU, hosts.msgsPerSecond/awake.msgsPerSecond)
	if baseline > 0 {
		nodes := measureNodeScale(t, baseline, idle)
		t.Logf("single nodes, %d groups x 3 nodes, one TCPTransport each: %s", baseline, nodes)
		t.Logf("per group, hosts / single nodes: idle CPU %.2f, heap %.2f, stack %.2f, goroutines %.2f",
			hosts.cpuPerGroup()/nodes.cpuPerGroup(), hosts.heapPerReplica/nodes.heapPerReplica,
			hosts.stackPerReplica/nodes.stackPerReplica, hosts.goroutinesPerReplica/nodes.goroutinesPerReplica)
	}
	t.Logf("load average at end: %s", loadAverage())
}

type scaleFigures struct {
	groups               int
	start, elect         time.Duration // StartGroup of every replica; from the first start until every group has an agreed leader
	idleCPU              float64       // cores used, idle, by the whole process
	heapPerReplica       float64       // bytes
	stackPerReplica      float64       // bytes
	goroutinesPerReplica float64
	conns                []string      // per host or node: outbound/inbound
	msgsPerSecond        float64       // sent while idle, all hosts together
	quiesced             time.Duration // hosts: from the first start until every group rests
}

func (f scaleFigures) cpuPerGroup() float64 { return f.idleCPU / float64(f.groups) }

func (f scaleFigures) String() string {
	return fmt.Sprintf("started in %v, all elected %v after the first start; idle: %.1f%% of one core (%.3f%% per group), "+
		"%.0f messages/s; per replica: heap %.1f KiB, stacks %.1f KiB, %.1f goroutines; connections (out/in): %s",
		f.start.Round(time.Millisecond), f.elect.Round(time.Millisecond), 100*f.idleCPU, 100*f.cpuPerGroup(),
		f.msgsPerSecond, f.heapPerReplica/1024, f.stackPerReplica/1024, f.goroutinesPerReplica, strings.Join(f.conns, " "))
}

// memSample is the process's memory after a garbage collection.
type memSample struct {
	heap, stack uint64
	goroutines  int
}

func sampleMem() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

func (s memSample) perReplica(before memSample, replicas int) (heap, stack, goroutines float64) {
	r := float64(replicas)
	return (float64(s.heap) - float64(before.heap)) / r, (float64(s.stack) - float64(before.stack)) / r,
		float64(s.goroutines-before.goroutines) / r
}

// waitAllQuiesced waits until every group rests on every host.
func waitAllQuiesced(t *testing.T, groups int, hs []*Host) {
	require.Eventually(t, func() bool {
		for _, h := range hs {
			if h.Stats().Quiesced != groups {
				return false
			}
		}
		return true
	}, 5*time.Minute, 50*time.Millisecond, "the groups did not all quiesce")
}

// cpuTime is the CPU time the process used so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// idleCPU returns the cores the process uses over d.
func idleCPU(t *testing.T, d time.Duration) float64 {
	cpu0, wall0 := cpuTime(t), time.Now()
	time.Sleep(d) // the measurement itself: a span of idle time, not a wait for a condition
	return float64(cpuTime(t)-cpu0) / float64(time.Since(wall0))
}

// measureHostScale measures hosts whose HostConfig.QuiesceAfter is
// quiesceAfter; with quiescence on, the idle figures are taken once every
// group rests.
func measureHostScale(t *testing.T, groups int, idle, quiesceAfter time.Duration) scaleFigures {
	f := scaleFigures{groups: groups}
	before := sampleMem()
	var hs []*Host
	for id := uint64(1); id <= 3; id++ {
		h, err := NewHost(HostConfig{ID: id, TCP: &TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "scale"}, QuiesceAfter: quiesceAfter})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	defer func() {
		for _, h := range hs {
			require.NoError(t, h.Close())
		}
	}()
	members := []Member{{ID: 1, Addr: hs[0].Addr()}, {ID: 2, Addr: hs[1].Addr()}, {ID: 3, Addr: hs[2].Addr()}}
	start := time.Now()
	for g := uint64(1); g <= uint64(groups); g++ {
		for _, h := range hs {
			_, err := h.StartGroup(g, Config{InitialMembers: members}, discardSM{}, NewMemoryStorage())
			require.NoError(t, err)
		}
	}
	f.start = time.Since(start)
	waitAllElected(t, groups, func(g uint64) []*Node {
		var nodes []*Node
		for _, h := range hs {
			n, _ := h.Group(g)
			nodes = append(nodes, n)
		}
		return nodes
	})
	f.elect = time.Since(start)
	if quiesceAfter >= 0 {
		waitAllQuiesced(t, groups, hs)
		f.quiesced = time.Since(start)
	}
	sent0 := uint64(0)
	for _, h := range hs {
		sent0 += h.Stats().TCP.Sent
	}
	wall0 := time.Now()
	f.idleCPU = idleCPU(t, idle)
	sent := uint64(0)
	for _, h := range hs {
		st := h.Stats().TCP
		sent += st.Sent
		f.conns = append(f.conns, fmt.Sprintf("host %d: %d/%d", h.ID(), st.OutboundConns, st.InboundConns))
	}
	f.msgsPerSecond = float64(sent-sent0) / time.Since(wall0).Seconds()
	f.heapPerReplica, f.stackPerReplica, f.goroutinesPerReplica = sampleMem().perReplica(before, 3*groups)
	return f
}

func measureNodeScale(t *testing.T, groups int, idle time.Duration) scaleFigures {
	f := scaleFigures{groups: groups}
	before := sampleMem()
	var transports []*TCPTransport
	var nodes []*Node
	defer func() {
		for _, n := range nodes {
			require.NoError(t, n.Close())
		}
		for _, tr := range transports {
			require.NoError(t, tr.Close())
		}
	}()
	start := time.Now()
	byGroup := make([][]*Node, groups)
	for g := range groups {
		var trs []*TCPTransport
		var members []Member
		for id := uint64(1); id <= 3; id++ {
			tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "scale"})
			require.NoError(t, err)
			trs = append(trs, tr)
			transports = append(transports, tr)
			members = append(members, Member{ID: id, Addr: tr.Addr()})
		}
		for i, tr := range trs {
			n, err := NewNode(Config{ID: uint64(i + 1), InitialMembers: members}, discardSM{}, NewMemoryStorage(), tr)
			require.NoError(t, err)
			nodes = append(nodes, n)
			byGroup[g] = append(byGroup[g], n)
		}
	}
	f.start = time.Since(start)
	waitAllElected(t, groups, func(g uint64) []*Node { return byGroup[g-1] })
	f.elect = time.Since(start)
	sent0 := uint64(0)
	for _, tr := range transports {
		sent0 += tr.Stats().Sent
	}
	wall0 := time.Now()
	f.idleCPU = idleCPU(t, idle)
	sent, out, in := uint64(0), 0, 0
	for _, tr := range transports {
		st := tr.Stats()
		sent += st.Sent
		out += st.OutboundConns
		in += st.InboundConns
	}
	f.msgsPerSecond = float64(sent-sent0) / time.Since(wall0).Seconds()
	f.conns = []string{fmt.Sprintf("%d/%d in all, %.1f/%.1f per node", out, in, float64(out)/float64(len(transports)), float64(in)/float64(len(transports)))}
	f.heapPerReplica, f.stackPerReplica, f.goroutinesPerReplica = sampleMem().perReplica(before, 3*groups)
	return f
}

// waitAllElected waits until each of groups 1..n has a leader that its
// replicas agree on.
func waitAllElected(t *testing.T, n int, replicas func(g uint64) []*Node) {
	t.Helper()
	done := make([]bool, n+1)
	require.Eventually(t, func() bool {
		for g := uint64(1); g <= uint64(n); g++ {
			if done[g] {
				continue
			}
			var leader, term uint64
			nodes := replicas(g)
			for _, node := range nodes {
				if s := node.Status(); s.Role == Leader {
					leader, term = s.ID, s.Term
				}
			}
			if leader == 0 {
				return false
			}
			for _, node := range nodes {
				if s := node.Status(); s.Leader != leader || s.Term != term {
					return false
				}
			}
			done[g] = true
		}
		return true
	}, 5*time.Minute, 10*time.Millisecond)
}
