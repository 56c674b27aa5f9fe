package compare

import (
	"testing"

	"github.com/raftkit/raft"
)

// The TCP variant of the durable raftkit harness: the main module's
// BenchmarkTCPCluster_64Proposers (tcp_cluster_test.go, benchTCPCluster)
// through the public API. Each node has its own FileStorage with fsync on
// (raftkitFileStorage) and its own TCPTransport listening on 127.0.0.1 on a
// port the kernel picks (TCPConfig{ListenAddr, ClusterID}, every other field
// default, no TLS); the members' addresses are the transports' Addr.

// raftkitTCPSystem is raftkit over TCPTransport, each node on the storage
// newStorage makes.
func raftkitTCPSystem(newStorage func(testing.TB, uint64) (raft.Storage, error)) system {
	return func(tb testing.TB, s shape) cluster {
		leader, stop := raftkitTCPCluster(tb, s.voters, newStorage)
		return raftkitRunning(leader, s, stop)
	}
}

// raftkitTCPCluster starts voters nodes over TCP, each on the storage
// newStorage makes, and returns the leader once it has committed an entry of
// its term, and a function that stops everything (nodes, transports, then
// storages).
func raftkitTCPCluster(tb testing.TB, voters int, newStorage func(testing.TB, uint64) (raft.Storage, error)) (*raft.Node, func()) {
	tb.Helper()
	transports := map[uint64]*raft.TCPTransport{}
	closeNet := func() {
		for _, tr := range transports {
			if err := tr.Close(); err != nil {
				tb.Error(err)
			}
		}
	}
	var members []raft.Member
	for id := uint64(1); id <= uint64(voters); id++ {
		tr, err := raft.NewTCPTransport(raft.TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"})
		if err != nil {
			closeNet()
			tb.Fatal(err)
		}
		transports[id] = tr
		members = append(members, raft.Member{ID: id, Addr: tr.Addr()})
	}
	return startRaftkit(tb, members, newStorage, func(id uint64) raft.Transport { return transports[id] }, closeNet)
}

// BenchmarkRaftkitTCP_64Proposers: FileStorage with fsync, TCPTransport on
// loopback.
func BenchmarkRaftkitTCP_64Proposers(b *testing.B) {
	benchSystem(b, "RaftkitTCP", defaultShape, proposers)
}

func BenchmarkRaftkitTCP_Sequential(b *testing.B) { benchSystem(b, "RaftkitTCP", defaultShape, 1) }
