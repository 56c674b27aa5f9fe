package raft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// counter is a replicated state machine: a sum of the commands' lengths.
type counter struct {
	mu  sync.Mutex
	sum int
}

func (c *counter) Apply(e raft.Entry) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sum += len(e.Data)
	return c.sum
}

func (c *counter) Snapshot() (raft.Snapshot, error) { return nil, errors.New("unsupported") }
func (c *counter) Restore(io.Reader) error          { return errors.New("unsupported") }

// Example runs a three-node cluster in one process over the in-memory
// network, proposes on the leader and reads on a follower.
func Example() {
	network := raft.NewInmemNetwork()
	defer network.Close()
	members := []raft.Member{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := map[uint64]*raft.Node{}
	counters := map[uint64]*counter{}
	for _, m := range members {
		counters[m.ID] = &counter{}
		node, err := raft.NewNode(raft.Config{ID: m.ID, InitialMembers: members, ElectionTimeout: 100 * time.Millisecond},
			counters[m.ID], raft.NewMemoryStorage(), network.Transport(m.ID))
		if err != nil {
			panic(err)
		}
		defer node.Close()
		nodes[m.ID] = node
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Propose on any node; a follower answers with a *NotLeaderError that
	// names the leader to retry on.
	var result any
	for id := uint64(1); ; {
		var err error
		result, err = nodes[id].Propose(ctx, []byte("hello"))
		var notLeader *raft.NotLeaderError
		if errors.As(err, &notLeader) {
			if notLeader.Leader != 0 {
				id = notLeader.Leader
			}
			time.Sleep(10 * time.Millisecond) // an election may be under way
			continue
		}
		if err != nil {
			panic(err)
		}
		break
	}
	fmt.Println("leader applied, sum =", result)

	// A linearizable read on every node sees the write.
	for id := uint64(1); id <= 3; id++ {
		// A node that does not know the leader yet fails fast: retry.
		for err := nodes[id].LinearizableRead(ctx); err != nil; err = nodes[id].LinearizableRead(ctx) {
			if !errors.Is(err, raft.ErrNotLeader) {
				panic(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		counters[id].mu.Lock()
		fmt.Printf("node %d reads sum = %d\n", id, counters[id].sum)
		counters[id].mu.Unlock()
	}
	// Output:
	// leader applied, sum = 5
	// node 1 reads sum = 5
	// node 2 reads sum = 5
	// node 3 reads sum = 5
}
