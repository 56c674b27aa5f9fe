package raft_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/raftkit/raft"
)

// ExampleHost runs three hosts in one process, each with a replica of
// three Raft groups, over the in-memory network (give each host a
// raft.TCPConfig instead to run them over TCP, one process per host). A
// group's members are hosts: the replica on host 2 has node ID 2. Each
// group is used as any Node is: here a write to each group, then a
// linearizable read on every replica.
func ExampleHost() {
	network := raft.NewInmemNetwork()
	defer network.Close()
	hostIDs := []uint64{1, 2, 3}
	hosts := map[uint64]*raft.Host{}
	for _, id := range hostIDs {
		host, err := raft.NewHost(raft.HostConfig{ID: id, Network: network})
		// Over TCP: raft.HostConfig{ID: id, TCP: &raft.TCPConfig{ListenAddr: "10.0.0.1:7000", ClusterID: "orders"}}
		if err != nil {
			panic(err)
		}
		defer host.Close() // closes the host's groups too
		hosts[id] = host
	}
	// Over TCP, Addr is each host's address (host.Addr()).
	members := []raft.Member{{ID: 1}, {ID: 2}, {ID: 3}}
	groups := []uint64{10, 20, 30}
	counters := map[[2]uint64]*counter{} // by group and host
	for _, group := range groups {
		for _, id := range hostIDs {
			sm := &counter{}
			counters[[2]uint64{group, id}] = sm
			// Config.ID may be left 0: it is the host's ID.
			_, err := hosts[id].StartGroup(group, raft.Config{InitialMembers: members, ElectionTimeout: 100 * time.Millisecond},
				sm, raft.NewMemoryStorage())
			if err != nil {
				panic(err)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, group := range groups {
		// Propose on any replica; a follower names the leader's host.
		node, _ := hosts[1].Group(group)
		cmd := make([]byte, i+1) // group 10 adds 1, group 20 adds 2, ...
		for {
			result, err := node.Propose(ctx, cmd)
			var notLeader *raft.NotLeaderError
			if errors.As(err, &notLeader) {
				if notLeader.Leader != 0 {
					node, _ = hosts[notLeader.Leader].Group(group)
				}
				time.Sleep(10 * time.Millisecond) // an election may be under way
				continue
			}
			if err != nil {
				panic(err)
			}
			fmt.Printf("group %d: sum = %d\n", group, result)
			break
		}
	}

	// Every replica of every group reads its group's write, and only it.
	for _, group := range groups {
		for _, id := range hostIDs {
			node, _ := hosts[id].Group(group)
			for err := node.LinearizableRead(ctx); err != nil; err = node.LinearizableRead(ctx) {
				if !errors.Is(err, raft.ErrNotLeader) {
					panic(err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			c := counters[[2]uint64{group, id}]
			c.mu.Lock()
			fmt.Printf("group %d on host %d reads sum = %d\n", group, id, c.sum)
			c.mu.Unlock()
		}
	}
	// Output:
	// group 10: sum = 1
	// group 20: sum = 2
	// group 30: sum = 3
	// group 10 on host 1 reads sum = 1
	// group 10 on host 2 reads sum = 1
	// group 10 on host 3 reads sum = 1
	// group 20 on host 1 reads sum = 2
	// group 20 on host 2 reads sum = 2
	// group 20 on host 3 reads sum = 2
	// group 30 on host 1 reads sum = 3
	// group 30 on host 2 reads sum = 3
	// group 30 on host 3 reads sum = 3
}
