package compare

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// hashicorp/raft v1.8.0: raft.DefaultConfig() with LocalID set and a null
// logger; everything else is the library default (HeartbeatTimeout and
// ElectionTimeout 1s, CommitTimeout 50ms, MaxAppendEntries 64, BatchApplyCh
// off, SnapshotThreshold 8192 checked every SnapshotInterval 120s, i.e. not
// during a run). Each node has an InmemStore (log and stable store), an
// InmemSnapshotStore and an InmemTransport connected to the others; the
// cluster is bootstrapped with the same configuration of s.voters voters on
// every node.
//
// The durable variant differs only in the stores: each node opens
// github.com/hashicorp/raft-wal in its own temp dir and uses it as LogStore
// and StableStore (segment appends are fsynced on every StoreLogs, the stable
// store is the WAL's BoltDB meta store, which fsyncs each commit), with a
// FileSnapshotStore in another temp dir; no snapshot is taken during a run.
// The LogStore given to raft is the WAL behind a raft.LogCache of 512
// entries, as Consul and Vault set it up: without it the leader reads every
// entry it replicates back from the WAL (see README.md for the difference).

// hashicorpLogCacheSize is the LogCache of the durable variant: Consul's and
// Vault's raftLogCacheSize.
const hashicorpLogCacheSize = 512

type hashicorpFSM struct{}

func (hashicorpFSM) Apply(*raft.Log) any                 { return nil }
func (hashicorpFSM) Snapshot() (raft.FSMSnapshot, error) { return hashicorpSnapshot{}, nil }
func (hashicorpFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type hashicorpSnapshot struct{}

func (hashicorpSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (hashicorpSnapshot) Release()                             {}

// hashicorpStores are one node's stores; close, if set, is called after the
// node has shut down.
type hashicorpStores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	close  func() error
}

func hashicorpInmemStores(testing.TB) (hashicorpStores, error) {
	store := raft.NewInmemStore()
	return hashicorpStores{logs: store, stable: store, snaps: raft.NewInmemSnapshotStore()}, nil
}

// hashicorpWALStores opens raft-wal (log store, behind a LogCache, and stable
// store) in a fresh temp dir and a FileSnapshotStore in another. raft-wal
// v0.4.0's WAL.Close does not close its BoltDB meta store, so the harness
// passes its own and closes it after the WAL.
func hashicorpWALStores(tb testing.TB) (hashicorpStores, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(tb.TempDir(), wal.WithLogger(hclog.NewNullLogger()), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return hashicorpStores{}, err
	}
	closeAll := func() error {
		return errors.Join(w.Close(), meta.Close())
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(tb.TempDir(), 1, hclog.NewNullLogger())
	if err != nil {
		closeAll()
		return hashicorpStores{}, err
	}
	logs, err := raft.NewLogCache(hashicorpLogCacheSize, w)
	if err != nil {
		closeAll()
		return hashicorpStores{}, err
	}
	return hashicorpStores{logs: logs, stable: w, snaps: snaps, close: closeAll}, nil
}

// hashicorpTransport is a transport the harness can close: InmemTransport or
// NetworkTransport.
type hashicorpTransport interface {
	raft.Transport
	io.Closer
}

// hashicorpInmemTransports makes n InmemTransports connected to each other.
func hashicorpInmemTransports(tb testing.TB, n int) []hashicorpTransport {
	addrs := make([]raft.ServerAddress, n)
	trans := make([]*raft.InmemTransport, n)
	for i := range n {
		addrs[i], trans[i] = raft.NewInmemTransport(raft.ServerAddress(fmt.Sprint(i + 1)))
	}
	out := make([]hashicorpTransport, n)
	for i := range n {
		for j := range n {
			if i != j {
				trans[i].Connect(addrs[j], trans[j])
			}
		}
		out[i] = trans[i]
	}
	return out
}

// hashicorpSystem is hashicorp/raft over the transports newTransports makes,
// each node on the stores newStores makes.
func hashicorpSystem(newTransports func(testing.TB, int) []hashicorpTransport,
	newStores func(testing.TB) (hashicorpStores, error)) system {
	return func(tb testing.TB, s shape) cluster {
		leader, stop := hashicorpCluster(tb, s.voters, newTransports, newStores)
		return cluster{
			newProposer: hashicorpProposer(leader, s.cmdSize),
			voters: func() (int, error) {
				f := leader.GetConfiguration()
				if err := f.Error(); err != nil {
					return 0, err
				}
				n := 0
				for _, srv := range f.Configuration().Servers {
					if srv.Suffrage == raft.Voter {
						n++
					}
				}
				return n, nil
			},
			stop: stop,
		}
	}
}

// hashicorpCluster starts n nodes over the transports newTransports makes
// (a node's ID is its transport's address), each on the stores newStores
// makes, and returns the leader once a Barrier (which commits an entry of
// the leader's term) has gone through, and a function that stops everything.
func hashicorpCluster(tb testing.TB, n int, newTransports func(testing.TB, int) []hashicorpTransport,
	newStores func(testing.TB) (hashicorpStores, error)) (*raft.Raft, func()) {
	tb.Helper()
	trans := newTransports(tb, n)
	addrs := make([]raft.ServerAddress, n)
	var configuration raft.Configuration
	for i := range n {
		addrs[i] = trans[i].LocalAddr()
		configuration.Servers = append(configuration.Servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(addrs[i]),
			Address:  addrs[i],
		})
	}
	var nodes []*raft.Raft
	var stores []hashicorpStores
	stop := func() {
		for _, r := range nodes {
			r.Shutdown().Error()
		}
		for _, t := range trans {
			t.Close()
		}
		for _, s := range stores {
			if s.close != nil {
				if err := s.close(); err != nil {
					tb.Error(err)
				}
			}
		}
	}
	for i := range n {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(addrs[i])
		conf.Logger = hclog.NewNullLogger()
		s, err := newStores(tb)
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		stores = append(stores, s)
		if err := raft.BootstrapCluster(conf, s.logs, s.stable, s.snaps, trans[i], configuration); err != nil {
			stop()
			tb.Fatal(err)
		}
		r, err := raft.NewRaft(conf, hashicorpFSM{}, s.logs, s.stable, s.snaps, trans[i])
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		nodes = append(nodes, r)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range nodes {
			if r.State() == raft.Leader {
				if err := r.Barrier(5 * time.Second).Error(); err == nil {
					return r, stop
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	tb.Fatal("hashicorp: no leader")
	return nil, nil
}

func hashicorpProposer(leader *raft.Raft, cmdSize int) func() proposeFunc {
	cmd := make([]byte, cmdSize)
	return func() proposeFunc {
		return func() error {
			// Timeout 0: no limit on enqueueing, like the context.Background()
			// of the raftkit harness. Error waits for the FSM to apply the
			// entry; Response is then the FSM's return value.
			f := leader.Apply(cmd, 0)
			if err := f.Error(); err != nil {
				return err
			}
			_ = f.Response()
			return nil
		}
	}
}

func BenchmarkHashicorp_64Proposers(b *testing.B) {
	benchSystem(b, "Hashicorp", defaultShape, proposers)
}

func BenchmarkHashicorp_Sequential(b *testing.B) { benchSystem(b, "Hashicorp", defaultShape, 1) }

// BenchmarkHashicorpWAL_64Proposers is the durable variant: every
// node on its own raft-wal, fsync on.
func BenchmarkHashicorpWAL_64Proposers(b *testing.B) {
	benchSystem(b, "HashicorpWAL", defaultShape, proposers)
}

func BenchmarkHashicorpWAL_Sequential(b *testing.B) { benchSystem(b, "HashicorpWAL", defaultShape, 1) }
