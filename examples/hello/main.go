// Command hello runs a three-node raftkit cluster in one process over the
// in-memory network: it elects a leader, replicates a few commands, kills the
// leader, and shows the survivors electing a new one and carrying on with the
// same history.
//
//	go run ./examples/hello
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/raftkit/raft"
)

// journal is the replicated state machine: an append-only list of lines.
type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) Apply(e raft.Entry) any {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines = append(j.lines, string(e.Data))
	return len(j.lines) // the Propose call that made the entry gets this back
}

func (j *journal) Snapshot() (raft.Snapshot, error) { return nil, errors.New("not needed here") }
func (j *journal) Restore(io.Reader) error          { return errors.New("not needed here") }

func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, ", ")
}

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run() error {
	network := raft.NewInmemNetwork()
	defer network.Close()
	members := []raft.Member{{ID: 1}, {ID: 2}, {ID: 3}}
	nodes := map[uint64]*raft.Node{}
	journals := map[uint64]*journal{}
	for _, m := range members {
		journals[m.ID] = &journal{}
		node, err := raft.NewNode(raft.Config{
			ID:              m.ID,
			InitialMembers:  members,
			ElectionTimeout: 200 * time.Millisecond,
		}, journals[m.ID], raft.NewMemoryStorage(), network.Transport(m.ID))
		if err != nil {
			return err
		}
		nodes[m.ID] = node
		defer node.Close()
	}
	fmt.Println("started 3 nodes; waiting for an election...")

	leader, err := waitLeader(nodes)
	if err != nil {
		return err
	}
	fmt.Printf("node %d is the leader (term %d)\n", leader, nodes[leader].Status().Term)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cmd := range []string{"alpha", "beta", "gamma"} {
		n, err := nodes[leader].Propose(ctx, []byte(cmd))
		if err != nil {
			return fmt.Errorf("propose %q: %w", cmd, err)
		}
		fmt.Printf("committed %q as line %v\n", cmd, n)
	}

	fmt.Printf("killing the leader, node %d\n", leader)
	nodes[leader].Close()
	delete(nodes, leader)

	newLeader, err := waitLeader(nodes)
	if err != nil {
		return err
	}
	fmt.Printf("node %d is the new leader (term %d)\n", newLeader, nodes[newLeader].Status().Term)
	for _, cmd := range []string{"delta", "epsilon"} {
		n, err := nodes[newLeader].Propose(ctx, []byte(cmd))
		if err != nil {
			return fmt.Errorf("propose %q: %w", cmd, err)
		}
		fmt.Printf("committed %q as line %v\n", cmd, n)
	}

	// A linearizable read on each survivor: once it returns, the node's
	// journal holds every committed line.
	for id, node := range nodes {
		if err := node.LinearizableRead(ctx); err != nil {
			return fmt.Errorf("read on node %d: %w", id, err)
		}
		fmt.Printf("node %d reads: %s\n", id, journals[id])
	}
	return nil
}

// waitLeader polls until the running nodes agree on a leader.
func waitLeader(nodes map[uint64]*raft.Node) (uint64, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leader uint64
		agreed := true
		for _, n := range nodes {
			s := n.Status()
			if s.Leader == 0 || (leader != 0 && s.Leader != leader) {
				agreed = false
				break
			}
			leader = s.Leader
		}
		if agreed && leader != 0 && nodes[leader] != nil && nodes[leader].Status().Role == raft.Leader {
			return leader, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("no leader elected within 10s")
}
