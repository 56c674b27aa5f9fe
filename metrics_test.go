package raft

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Tests of the metrics (metrics.go, docs/observability.md): what a host's
// OpenTelemetry SDK reads from a cluster in memory and over TCP with
// FileStorage, that nodes with their own providers do not mix, that no
// provider means no instrument and nothing global, and that recording does
// not allocate.

// metricsReader is an SDK MeterProvider with a ManualReader, as a host
// would wire one (with an exporter instead of the manual reader).
type metricsReader struct {
	t        *testing.T
	reader   *sdkmetric.ManualReader
	provider *sdkmetric.MeterProvider
}

func newMetricsReader(t *testing.T) *metricsReader {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	return &metricsReader{t: t, reader: reader, provider: provider}
}

// metricPoint is one data point: a gauge's or sum's value, a histogram's
// count.
type metricPoint struct {
	attrs attribute.Set
	value float64
	count uint64
}

// collect returns every data point, by metric name.
func (r *metricsReader) collect() map[string][]metricPoint {
	r.t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(r.t, r.reader.Collect(context.Background(), &rm))
	out := map[string][]metricPoint{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var points []metricPoint
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					points = append(points, metricPoint{attrs: p.Attributes, value: float64(p.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					points = append(points, metricPoint{attrs: p.Attributes, value: p.Value})
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					points = append(points, metricPoint{attrs: p.Attributes, value: float64(p.Value)})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					points = append(points, metricPoint{attrs: p.Attributes, value: p.Sum, count: p.Count})
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					points = append(points, metricPoint{attrs: p.Attributes, value: float64(p.Sum), count: p.Count})
				}
			default:
				r.t.Fatalf("metric %s has unexpected data %T", m.Name, m.Data)
			}
			out[m.Name] = append(out[m.Name], points...)
		}
	}
	return out
}

// nodeAttr and peerAttr are the attributes of node and peer IDs.
func nodeAttr(id uint64) attribute.KeyValue { return attrNodeID.String(strconv.FormatUint(id, 10)) }
func peerAttr(id uint64) attribute.KeyValue { return attrPeerID.String(strconv.FormatUint(id, 10)) }

// sumOf adds up the values (for histograms, the counts when counts is set)
// of the points that carry every one of attrs; found is false when none does.
func sumOf(points []metricPoint, counts bool, attrs ...attribute.KeyValue) (total float64, found bool) {
	for _, p := range points {
		match := true
		for _, kv := range attrs {
			if v, ok := p.attrs.Value(kv.Key); !ok || v != kv.Value {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		found = true
		if counts {
			total += float64(p.count)
		} else {
			total += p.value
		}
	}
	return total, found
}

// value is the value of name for node id (summed over other attributes).
func value(all map[string][]metricPoint, name string, id uint64, attrs ...attribute.KeyValue) float64 {
	v, _ := sumOf(all[name], false, append(attrs, nodeAttr(id))...)
	return v
}

// samples is the number of samples of histogram name for node id.
func samples(all map[string][]metricPoint, name string, id uint64, attrs ...attribute.KeyValue) uint64 {
	v, _ := sumOf(all[name], true, append(attrs, nodeAttr(id))...)
	return uint64(v)
}

// eventuallyMetric waits until cond holds of a fresh collection.
func (r *metricsReader) eventually(cond func(all map[string][]metricPoint) bool, msg string, args ...any) {
	r.t.Helper()
	require.Eventually(r.t, func() bool { return cond(r.collect()) }, 10*time.Second, 5*time.Millisecond, append([]any{msg}, args...)...)
}

// TestMetrics_InmemClusterRecordsWhatHappens runs a 3-node cluster in
// memory with one provider for all three, and checks each kind of metric
// against what the test did and against Status.
func TestMetrics_InmemClusterRecordsWhatHappens(t *testing.T) {
	mr := newMetricsReader(t)
	sc := newSnapCluster(t, 3, func(c *Config) {
		c.MeterProvider = mr.provider
		c.SnapshotThreshold = 1 << 20 // snapshots only when the test asks
		c.TrailingEntries = NoTrailingEntries
	})
	leader := sc.waitLeader()
	for i := range 10 {
		_, err := sc.nodes[leader].Propose(context.Background(), []byte(fmt.Sprint("cmd ", i)))
		require.NoError(t, err)
	}
	follower := sc.follower(leader)
	_, err := sc.nodes[follower].Propose(context.Background(), []byte("refused"))
	require.ErrorIs(t, err, ErrNotLeader)
	require.NoError(t, sc.nodes[follower].LinearizableRead(context.Background()))
	last := sc.nodes[leader].Status().LastIndex
	sc.waitAllApplied(last)

	all := mr.collect()
	leaders := 0
	for _, id := range sc.ids {
		st := sc.nodes[id].Status()
		isLeader := value(all, "raft.is_leader", id)
		if isLeader == 1 {
			leaders++
			assert.Equal(t, leader, id, "raft.is_leader is 1 on a node that does not lead")
		}
		assert.Equal(t, 1.0, value(all, "raft.has_leader", id), "node %d", id)
		assert.Equal(t, float64(st.Term), value(all, "raft.term", id), "node %d's term", id)
		assert.Equal(t, float64(last), value(all, "raft.log.last_index", id), "node %d", id)
		assert.Equal(t, float64(last), value(all, "raft.log.applied_index", id), "node %d", id)
		assert.Positive(t, samples(all, "raft.apply.duration", id), "node %d applied", id)
		if id == leader {
			_, found := sumOf(all["raft.leader.last_contact"], false, nodeAttr(id))
			assert.False(t, found, "the leader reports no last contact with a leader")
		} else {
			contact, found := sumOf(all["raft.leader.last_contact"], false, nodeAttr(id))
			assert.True(t, found, "follower %d reports its last contact with the leader", id)
			assert.Less(t, contact, 1.0, "follower %d heard from the leader recently", id)
		}
	}
	assert.Equal(t, 1, leaders, "raft.is_leader is 1 on exactly one node")
	assert.Equal(t, 10.0, value(all, "raft.proposals.committed", leader), "proposals committed on the leader")
	// The applier counts a batch's proposals once it has answered them all.
	mr.eventually(func(all map[string][]metricPoint) bool { return value(all, "raft.proposals.applied", leader) == 10 },
		"proposals applied on the leader")
	assert.Equal(t, 0.0, value(all, "raft.proposals.pending", leader))
	assert.Equal(t, 1.0, value(all, "raft.proposals.failed", follower, attrErrorType.String("not_leader")))
	assert.Equal(t, 1, int(samples(all, "raft.linearizable_read.duration", follower)))
	for _, peer := range sc.others(leader) {
		assert.Positive(t, value(all, "raft.transport.messages.sent", leader, peerAttr(peer)), "leader sent to %d", peer)
	}

	// A partitioned follower: what the leader sends it is dropped, and
	// counted. It falls behind a snapshot, which it is then sent.
	lagging, others := sc.isolateFollower(leader)
	lastIdx := sc.proposeAmong(others, 20, func(i int) string { return fmt.Sprint("more ", i) })
	leader = sc.waitLeader(others...)
	require.NoError(t, sc.nodes[leader].Snapshot(context.Background()))
	all = mr.collect()
	assert.Positive(t, value(all, "raft.transport.messages.dropped", leader, peerAttr(lagging), attrDropReason.String("partition")),
		"messages to the partitioned follower are counted as dropped")
	assert.Equal(t, 1, int(samples(all, "raft.snapshot.take.duration", leader)), "the forced snapshot")
	assert.Equal(t, 1, int(samples(all, "raft.snapshot.take.size", leader)))
	assert.Positive(t, value(all, "raft.snapshot.take.size", leader), "the snapshot holds 30 commands")
	assert.Equal(t, float64(sc.nodes[leader].Status().SnapshotIndex), value(all, "raft.snapshot.index", leader))

	sc.net.Heal()
	sc.waitSame(lastIdx)
	mr.eventually(func(all map[string][]metricPoint) bool {
		return samples(all, "raft.snapshot.send.duration", leader, peerAttr(lagging)) == 1 &&
			samples(all, "raft.snapshot.restore.duration", lagging) == 1
	}, "the snapshot was sent to %d and restored there", lagging)
	all = mr.collect()
	assert.Positive(t, value(all, "raft.snapshot.send.size", leader, peerAttr(lagging)))
	assert.Positive(t, value(all, "raft.snapshot.restore.size", lagging))

	// A transfer is a leader change every node counts.
	before := map[uint64]float64{}
	for _, id := range sc.ids {
		before[id] = value(all, "raft.leader.changes", id)
		assert.Positive(t, before[id], "node %d counted the first leader", id)
	}
	target := sc.follower(leader)
	require.NoError(t, sc.nodes[leader].TransferLeadership(context.Background(), target))
	require.Equal(t, target, sc.waitLeader())
	mr.eventually(func(all map[string][]metricPoint) bool {
		for _, id := range sc.ids {
			if value(all, "raft.leader.changes", id) <= before[id] || value(all, "raft.is_leader", id) != boolFloat(id == target) {
				return false
			}
		}
		return true
	}, "every node counted the new leader %d", target)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// TestMetrics_RestartRestoresFromSnapshot: a node restarted on storage
// that holds a snapshot records the restore, with the snapshot's size; and
// the restarted node reports through its provider again, the stopped one
// no more.
func TestMetrics_RestartRestoresFromSnapshot(t *testing.T) {
	mr := newMetricsReader(t)
	sc := newSnapCluster(t, 3, func(c *Config) { c.MeterProvider = mr.provider })
	leader := sc.waitLeader()
	sc.proposeAmong(sc.ids, 5, func(i int) string { return fmt.Sprint("cmd ", i) })
	follower := sc.follower(leader)
	sc.waitApplied(follower, sc.nodes[leader].Status().CommitIndex)
	_, data := sc.snapshotNow(follower)
	require.NotEmpty(t, data)
	require.Zero(t, samples(mr.collect(), "raft.snapshot.restore.duration", follower))

	sc.stop(follower)
	_, found := sumOf(mr.collect()["raft.term"], false, nodeAttr(follower))
	assert.False(t, found, "a closed node's callback is unregistered")
	sc.start(follower)
	all := mr.collect()
	assert.Equal(t, 1, int(samples(all, "raft.snapshot.restore.duration", follower)))
	assert.Equal(t, float64(len(data)), value(all, "raft.snapshot.restore.size", follower))
	_, found = sumOf(all["raft.term"], false, nodeAttr(follower))
	assert.True(t, found, "the restarted node reports")
}

// TestMetrics_TCPFileStorageCluster runs 3 nodes over TCPTransport on
// FileStorage: the storage's fsyncs and bytes, and the transport's messages
// and bytes per peer, are recorded through the node's provider, and
// messages to a stopped peer are counted as dropped.
func TestMetrics_TCPFileStorageCluster(t *testing.T) {
	mr := newMetricsReader(t)
	dir := t.TempDir()
	const n = 3
	transports := map[uint64]*TCPTransport{}
	stores := map[uint64]*FileStorage{}
	nodes := map[uint64]*Node{}
	var members []Member
	for id := uint64(1); id <= n; id++ {
		tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: tcpTestCluster,
			DialBackoff: 10 * time.Millisecond, MaxDialBackoff: 100 * time.Millisecond,
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))})
		require.NoError(t, err)
		transports[id] = tr
		members = append(members, Member{ID: id, Addr: tr.Addr()})
	}
	t.Cleanup(func() {
		for _, node := range nodes {
			node.Close()
		}
		for _, tr := range transports {
			tr.Close()
		}
		for _, s := range stores {
			s.Close()
		}
	})
	for id := uint64(1); id <= n; id++ {
		s, err := OpenFileStorage(filepath.Join(dir, fmt.Sprint(id)))
		require.NoError(t, err)
		stores[id] = s
		cfg := fastConfig(t, id, members)
		cfg.MeterProvider = mr.provider
		node, err := NewNode(cfg, &recordingSM{}, s, transports[id])
		require.NoError(t, err)
		nodes[id] = node
	}
	var leader uint64
	require.Eventually(t, func() bool {
		for id, node := range nodes {
			if node.Status().Role == Leader {
				leader = id
				return node.LinearizableRead(context.Background()) == nil
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "no leader")
	for i := range 5 {
		_, err := nodes[leader].Propose(context.Background(), []byte(fmt.Sprint("cmd ", i)))
		require.NoError(t, err)
	}

	all := mr.collect()
	leaders := 0
	for id := uint64(1); id <= n; id++ {
		leaders += int(value(all, "raft.is_leader", id))
		assert.Equal(t, float64(nodes[id].Status().Term), value(all, "raft.term", id))
		assert.Positive(t, samples(all, "raft.storage.write.duration", id), "node %d's writes", id)
		assert.Positive(t, samples(all, "raft.storage.fsync.duration", id), "node %d's fsyncs", id)
		assert.Positive(t, value(all, "raft.storage.data.written", id), "node %d's bytes written", id)
	}
	assert.Equal(t, 1, leaders, "raft.is_leader is 1 on exactly one node")
	assert.Equal(t, 5.0, value(all, "raft.proposals.committed", leader))
	var stopped uint64
	for id := uint64(1); id <= n; id++ {
		if id == leader {
			continue
		}
		stopped = id
		assert.Positive(t, value(all, "raft.transport.messages.sent", leader, peerAttr(id)), "leader to %d", id)
		assert.Positive(t, value(all, "raft.transport.data.sent", leader, peerAttr(id)), "leader to %d", id)
		assert.Positive(t, value(all, "raft.transport.messages.sent", id, peerAttr(leader)), "%d to the leader", id)
	}
	// Heartbeats go on meanwhile: the two agree but for those.
	assert.InEpsilon(t, float64(transports[leader].Stats().Sent), value(all, "raft.transport.messages.sent", leader), 0.2,
		"the counter agrees with TCPStats.Sent")

	// A stopped follower: the leader's messages to it are dropped.
	require.NoError(t, nodes[stopped].Close())
	delete(nodes, stopped)
	require.NoError(t, transports[stopped].Close())
	delete(transports, stopped)
	_, err := nodes[leader].Propose(context.Background(), []byte("without one follower"))
	require.NoError(t, err)
	mr.eventually(func(all map[string][]metricPoint) bool {
		return value(all, "raft.transport.messages.dropped", leader, peerAttr(stopped), attrDropReason.String("unreachable")) > 0
	}, "messages to the stopped follower %d counted as dropped", stopped)
}

// TestMetrics_NodesWithTheirOwnProvidersDoNotMix gives each node of a
// cluster its own provider: each sees its own node only, and the same
// instruments in several providers of one process are fine.
func TestMetrics_NodesWithTheirOwnProvidersDoNotMix(t *testing.T) {
	readers := map[uint64]*metricsReader{}
	c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
		if readers[cfg.ID] == nil {
			readers[cfg.ID] = newMetricsReader(t)
		}
		cfg.MeterProvider = readers[cfg.ID].provider
	}))
	leader := c.waitLeader()
	c.propose("x")
	c.waitAllApplied(c.nodes[leader].Status().CommitIndex)
	for id, r := range readers {
		all := r.collect()
		require.NotEmpty(t, all)
		for name, points := range all {
			for _, p := range points {
				v, ok := p.attrs.Value(attrNodeID)
				require.True(t, ok, "%s has a raft.node.id", name)
				assert.Equal(t, strconv.FormatUint(id, 10), v.AsString(), "node %d's provider got a point of another node in %s", id, name)
			}
		}
		assert.Equal(t, boolFloat(id == leader), value(all, "raft.is_leader", id))
	}
}

// TestMetrics_NoProviderRecordsNothingAndRegistersNothingGlobal: without
// Config.MeterProvider a node creates no instrument, leaves the global
// provider alone, and its storage and transport record nothing; a provider
// set globally by the host is not used either.
func TestMetrics_NoProviderRecordsNothingAndRegistersNothingGlobal(t *testing.T) {
	global := otel.GetMeterProvider()
	mr := newMetricsReader(t)
	otel.SetMeterProvider(mr.provider)
	t.Cleanup(func() { otel.SetMeterProvider(noop.NewMeterProvider()) })

	dir := t.TempDir()
	stores := map[uint64]*FileStorage{}
	c := newTestCluster(t, 3, withStorages(func(id uint64) Storage {
		if stores[id] == nil {
			s, err := OpenFileStorage(filepath.Join(dir, fmt.Sprint(id)), WithNoSync())
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			stores[id] = s
		}
		return stores[id]
	}))
	leader := c.waitLeader()
	_, err := c.nodes[leader].Propose(context.Background(), []byte("x"))
	require.NoError(t, err)
	for id, n := range c.nodes {
		assert.Nil(t, n.metrics, "node %d has no instruments", id)
		assert.Nil(t, stores[id].metrics.Load(), "node %d's storage records nothing", id)
	}
	assert.Empty(t, mr.collect(), "nothing recorded to the global provider")
	assert.Same(t, mr.provider, otel.GetMeterProvider(), "the global provider is untouched")
	assert.NotNil(t, global)

	// A storage used by a node with metrics, then by one without, stops
	// recording to the first one's provider.
	withMetrics := newMetricsReader(t)
	s, err := OpenFileStorage(filepath.Join(dir, "reused"), WithNoSync())
	require.NoError(t, err)
	defer s.Close()
	nw := NewInmemNetwork()
	defer nw.Close()
	for _, mp := range []*sdkmetric.MeterProvider{withMetrics.provider, nil} {
		cfg := fastConfig(t, 9, []Member{{ID: 9}})
		if mp != nil {
			cfg.MeterProvider = mp
		}
		n, err := NewNode(cfg, &recordingSM{}, s, nw.Transport(9))
		require.NoError(t, err)
		assert.Equal(t, mp != nil, s.metrics.Load() != nil)
		require.NoError(t, n.Close())
	}
}

// TestMetrics_RecordingDoesNotAllocate: with an SDK provider, what the
// hot path records (proposals committed and applied, an apply, a read, a
// storage write and fsync, messages sent and dropped, a failed proposal)
// allocates nothing once a peer's attributes exist.
func TestMetrics_RecordingDoesNotAllocate(t *testing.T) {
	mr := newMetricsReader(t)
	m, err := newNodeMetrics(mr.provider, 1, 0)
	require.NoError(t, err)
	t0 := m.start()
	record := func() {
		m.committed(3)
		m.timeApply.Store(true)
		t1, timed := m.applyStart()
		m.applyDone(t1, timed, 3)
		m.readDone(t0)
		m.storage.wrote(4096, t0, m.storage.now(), true)
		m.transport.sentTo(2, 5, 600)
		m.transport.sentTo(3, 5, 600)
		m.transport.droppedTo(3, dropPartition, 1, 0)
		m.proposalsFailedBy(ErrBusy, 1)
	}
	record()                                     // first use of each series and peer
	allocs := testing.AllocsPerRun(1000, record) // runs it once more to warm up
	assert.Zero(t, allocs, "allocations per recording")
	assert.Equal(t, int64(3*1002), m.committedCount.Load())
	assert.Equal(t, int64(5*1002), m.peers.get(2).sentMessages.Load())
	all := mr.collect()
	assert.Equal(t, 1002.0, value(all, "raft.proposals.failed", 1, attrErrorType.String("busy")))
	assert.Equal(t, 1002, int(samples(all, "raft.storage.fsync.duration", 1)))
}

// TestMetrics_ProposalLoopAllocatesNoMoreWithMetrics compares the
// allocations of sequential proposals on a leader with and without a
// provider. AllocsPerRun counts every goroutine's allocations, the
// followers' and the ticks' included, so the two are compared with a
// margin well below one allocation per proposal.
func TestMetrics_ProposalLoopAllocatesNoMoreWithMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("measures two clusters")
	}
	perProposal := func(mp *sdkmetric.MeterProvider) float64 {
		// MemoryStorage written inline: with the storage writer goroutine,
		// how many writes coalesce (and so the allocations) depends on
		// timing, which would blur the difference measured here.
		c := newTestCluster(t, 3, withConfig(func(cfg *Config) {
			if mp != nil {
				cfg.MeterProvider = mp
			}
			cfg.Logger = zap.NewNop()
			cfg.ElectionTimeout = time.Second // no elections while measuring
			cfg.HeartbeatInterval = 100 * time.Millisecond
		}), withStorages(func(uint64) Storage { return NewMemoryStorage() }))
		defer c.close()
		leader := c.nodes[c.waitLeader()]
		cmd := make([]byte, 128)
		propose := func() {
			if _, err := leader.Propose(context.Background(), cmd); err != nil && !errors.Is(err, ErrClosed) {
				t.Error(err)
			}
		}
		for range 200 {
			propose() // warm up: queues, maps and series
		}
		return testing.AllocsPerRun(2000, propose)
	}
	// AllocsPerRun counts the whole process's allocations, the followers'
	// and the timers' too, and how many of those land in a run depends on
	// timing (heartbeats, idle commit flushes): on a loaded machine a run
	// can count one more. Timing only adds, so the least of a few
	// alternated runs of each is what the proposal path itself costs.
	off, on := math.Inf(1), math.Inf(1)
	for range 3 {
		off = min(off, perProposal(nil))
		on = min(on, perProposal(newMetricsReader(t).provider))
	}
	t.Logf("allocations per proposal (least of 3 runs): %.2f without metrics, %.2f with", off, on)
	assert.Less(t, on, off+0.5, "metrics add allocations to the proposal path")
}

// BenchmarkClusterMetrics_* are BenchmarkCluster_* (bench_test.go) with
// metrics on: the three nodes record to an SDK MeterProvider with a
// ManualReader (collected once, at the end, as a host's exporter would
// every few seconds). Run both interleaved to compare (docs/benchmarks.md):
//
//	go test -run '^$' -bench 'BenchmarkCluster(Metrics)?_(64Proposers|SequentialProposer)$' -benchtime 100000x -count 1
func BenchmarkClusterMetrics_64Proposers(b *testing.B) {
	benchClusterMetrics(b, 64)
}

func BenchmarkClusterMetrics_SequentialProposer(b *testing.B) {
	benchClusterMetrics(b, 1)
}

func benchClusterMetrics(b *testing.B, proposers int) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	leader, stop := benchCluster(b, memStorage, func(c *Config) { c.MeterProvider = provider })
	defer stop()
	benchProposeFrom(b, leader, proposers, benchDefault.cmdSize)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil || len(rm.ScopeMetrics) == 0 {
		b.Fatalf("nothing recorded: %v", err)
	}
}
