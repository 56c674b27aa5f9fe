package compare

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hashicorp/raft v1.8.0: raft.DefaultConfig() with LocalID set and a null
// logger; everything else is the library default (HeartbeatTimeout and
// ElectionTimeout 1s, CommitTimeout 50ms, MaxAppendEntries 64, BatchApplyCh
// off, SnapshotThreshold 8192 checked every SnapshotInterval 120s, i.e. not
// during a run). Each node has an InmemStore (log and stable store), an
// InmemSnapshotStore and an InmemTransport connected to the other two; the
// cluster is bootstrapped with the same three-voter configuration on every
// node.

type hashicorpFSM struct{}

func (hashicorpFSM) Apply(*raft.Log) any                 { return nil }
func (hashicorpFSM) Snapshot() (raft.FSMSnapshot, error) { return hashicorpSnapshot{}, nil }
func (hashicorpFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type hashicorpSnapshot struct{}

func (hashicorpSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (hashicorpSnapshot) Release()                             {}

// hashicorpCluster starts three nodes and returns the leader once a Barrier
// (which commits an entry of the leader's term) has gone through, and a
// function that stops everything.
func hashicorpCluster(tb testing.TB) (*raft.Raft, func()) {
	tb.Helper()
	const n = 3
	addrs := make([]raft.ServerAddress, n)
	trans := make([]*raft.InmemTransport, n)
	var configuration raft.Configuration
	for i := range n {
		addrs[i], trans[i] = raft.NewInmemTransport(raft.ServerAddress(fmt.Sprint(i + 1)))
		configuration.Servers = append(configuration.Servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(addrs[i]),
			Address:  addrs[i],
		})
	}
	for i := range n {
		for j := range n {
			if i != j {
				trans[i].Connect(addrs[j], trans[j])
			}
		}
	}
	var nodes []*raft.Raft
	stop := func() {
		for _, r := range nodes {
			r.Shutdown().Error()
		}
		for _, t := range trans {
			t.Close()
		}
	}
	for i := range n {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(addrs[i])
		conf.Logger = hclog.NewNullLogger()
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, trans[i], configuration); err != nil {
			stop()
			tb.Fatal(err)
		}
		r, err := raft.NewRaft(conf, hashicorpFSM{}, store, store, snaps, trans[i])
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

func hashicorpProposer(leader *raft.Raft) func() proposeFunc {
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
	defer checkLeaks(b)()
	leader, stop := hashicorpCluster(b)
	defer stop()
	runConcurrent(b, hashicorpProposer(leader))
}

func BenchmarkHashicorp_Sequential(b *testing.B) {
	defer checkLeaks(b)()
	leader, stop := hashicorpCluster(b)
	defer stop()
	runSequential(b, hashicorpProposer(leader))
}
