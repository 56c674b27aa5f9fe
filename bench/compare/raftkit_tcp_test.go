package compare

import (
	"io"
	"testing"
	"time"

	"github.com/raftkit/raft"
)

// The TCP variant of the durable raftkit harness: the main module's
// BenchmarkTCPCluster_64Proposers (tcp_cluster_test.go, benchTCPCluster)
// through the public API. Each node has its own FileStorage with fsync on
// (raftkitFileStorage) and its own TCPTransport listening on 127.0.0.1 on a
// port the kernel picks (TCPConfig{ListenAddr, ClusterID}, every other field
// default, no TLS); the members' addresses are the transports' Addr.

// raftkitTCPCluster starts three nodes over TCP, each on the storage
// newStorage makes, and returns the leader once it has committed an entry of
// its term, and a function that stops everything (nodes, transports, then
// storages).
func raftkitTCPCluster(tb testing.TB, newStorage func(testing.TB, uint64) (raft.Storage, error)) (*raft.Node, func()) {
	tb.Helper()
	var transports []*raft.TCPTransport
	var nodes []*raft.Node
	var stores []raft.Storage
	stop := func() {
		for _, n := range nodes {
			n.Close()
		}
		for _, tr := range transports {
			if err := tr.Close(); err != nil {
				tb.Error(err)
			}
		}
		for _, st := range stores {
			if c, ok := st.(io.Closer); ok {
				if err := c.Close(); err != nil {
					tb.Error(err)
				}
			}
		}
	}
	var members []raft.Member
	for id := uint64(1); id <= 3; id++ {
		tr, err := raft.NewTCPTransport(raft.TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "bench"})
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		transports = append(transports, tr)
		members = append(members, raft.Member{ID: id, Addr: tr.Addr()})
	}
	for i, m := range members {
		st, err := newStorage(tb, m.ID)
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		stores = append(stores, st)
		n, err := raft.NewNode(raft.Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)},
			raftkitSM{}, st, transports[i])
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

// BenchmarkRaftkitTCP_64Proposers: FileStorage with fsync, TCPTransport on
// loopback.
func BenchmarkRaftkitTCP_64Proposers(b *testing.B) {
	defer checkLeaks(b)()
	leader, stop := raftkitTCPCluster(b, raftkitFileStorage)
	defer stop()
	runConcurrent(b, raftkitProposer(leader))
}

func BenchmarkRaftkitTCP_Sequential(b *testing.B) {
	defer checkLeaks(b)()
	leader, stop := raftkitTCPCluster(b, raftkitFileStorage)
	defer stop()
	runSequential(b, raftkitProposer(leader))
}
