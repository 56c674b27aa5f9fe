package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// raftkit: the same cluster as bench_test.go's benchCluster, through the
// public API only: InmemNetwork, MemoryStorage (or, for the durable variant,
// a FileStorage with fsync per node, as bench_test.go's fileStorage), the
// default Config apart from ElectionTimeout 1s (which is also the default)
// and a fixed Seed; members 1 to s.voters, all voters.

type raftkitSM struct{}

func (raftkitSM) Apply(raft.Entry) any             { return nil }
func (raftkitSM) Snapshot() (raft.Snapshot, error) { return nil, errors.New("no snapshots") }
func (raftkitSM) Restore(io.Reader) error          { return errors.New("no snapshots") }

func raftkitMemStorage(testing.TB, uint64) (raft.Storage, error) {
	return raft.NewMemoryStorage(), nil
}

// raftkitFileStorage gives each node a FileStorage with fsync on in its own
// temp dir, as bench_test.go's fileStorage.
func raftkitFileStorage(tb testing.TB, id uint64) (raft.Storage, error) {
	return raft.OpenFileStorage(filepath.Join(tb.TempDir(), fmt.Sprint(id)))
}

// raftkitSystem is raftkit over the in-memory network, each node on the
// storage newStorage makes.
func raftkitSystem(newStorage func(testing.TB, uint64) (raft.Storage, error)) system {
	return func(tb testing.TB, s shape) cluster {
		leader, stop := raftkitCluster(tb, s.voters, newStorage)
		return raftkitRunning(leader, s, stop)
	}
}

// raftkitRunning is the cluster of which leader leads.
func raftkitRunning(leader *raft.Node, s shape, stop func()) cluster {
	return cluster{
		newProposer: raftkitProposer(leader, s.cmdSize),
		voters: func() (int, error) {
			n := 0
			for _, m := range leader.Status().Members {
				if !m.Learner {
					n++
				}
			}
			return n, nil
		},
		stop: stop,
	}
}

// raftkitCluster starts voters nodes, each on the storage newStorage makes,
// and returns the leader once it has committed an entry of its term, and a
// function that stops everything (nodes, network, then storages).
func raftkitCluster(tb testing.TB, voters int, newStorage func(testing.TB, uint64) (raft.Storage, error)) (*raft.Node, func()) {
	tb.Helper()
	nw := raft.NewInmemNetwork()
	var members []raft.Member
	for id := uint64(1); id <= uint64(voters); id++ {
		members = append(members, raft.Member{ID: id})
	}
	return startRaftkit(tb, members, newStorage, func(id uint64) raft.Transport { return nw.Transport(id) },
		func() { nw.Close() })
}

// startRaftkit starts a node per member, each on the storage newStorage
// makes and the transport transportOf gives, and returns the leader once it
// has committed an entry of its term, and a function that stops everything:
// the nodes, then closeNet (the transports), then the storages.
func startRaftkit(tb testing.TB, members []raft.Member, newStorage func(testing.TB, uint64) (raft.Storage, error),
	transportOf func(id uint64) raft.Transport, closeNet func()) (*raft.Node, func()) {
	tb.Helper()
	var nodes []*raft.Node
	var stores []raft.Storage
	stop := func() {
		for _, n := range nodes {
			n.Close()
		}
		closeNet()
		for _, st := range stores {
			if c, ok := st.(io.Closer); ok {
				if err := c.Close(); err != nil {
					tb.Error(err)
				}
			}
		}
	}
	for _, m := range members {
		st, err := newStorage(tb, m.ID)
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		stores = append(stores, st)
		n, err := raft.NewNode(raft.Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)},
			raftkitSM{}, st, transportOf(m.ID))
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	leader := raftkitLeader(nodes)
	if leader == nil {
		stop()
		tb.Fatal("raftkit: no leader")
	}
	return leader, stop
}

func raftkitProposer(leader *raft.Node, cmdSize int) func() proposeFunc {
	cmd := make([]byte, cmdSize)
	return func() proposeFunc {
		return func() error {
			_, err := leader.Propose(context.Background(), cmd)
			return err
		}
	}
}

func BenchmarkRaftkit_64Proposers(b *testing.B) { benchSystem(b, "Raftkit", defaultShape, proposers) }
func BenchmarkRaftkit_Sequential(b *testing.B)  { benchSystem(b, "Raftkit", defaultShape, 1) }

// BenchmarkRaftkitFile_64Proposers is the durable variant: every
// node on its own FileStorage, fsync on.
func BenchmarkRaftkitFile_64Proposers(b *testing.B) {
	benchSystem(b, "RaftkitFile", defaultShape, proposers)
}

func BenchmarkRaftkitFile_Sequential(b *testing.B) { benchSystem(b, "RaftkitFile", defaultShape, 1) }

// raftkitLeader waits up to 20 s for one of nodes to lead and to have
// committed its no-op, so that the first proposals do not pay for the
// election; nil if none did.
func raftkitLeader(nodes []*raft.Node) *raft.Node {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.Status().Role == raft.Leader && n.LinearizableRead(context.Background()) == nil {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	return nil
}
