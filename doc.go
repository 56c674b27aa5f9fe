// Package raft is an embeddable implementation of the Raft consensus
// algorithm: a replicated log that a group of nodes agree on, even when
// nodes crash and the network drops, delays, duplicates or partitions
// messages.
//
// A Node runs one member of a cluster. The application gives it three
// things: a StateMachine (the replicated state, to which the Node applies
// every committed command in log order), a Storage (where the log and the
// node's term and vote are made durable; MemoryStorage for tests) and a
// Transport (how Messages reach the other nodes; InmemNetwork for tests).
// The Node runs its own goroutines; the application calls Propose to
// replicate a command and LinearizableRead before serving a read.
//
//	members := []raft.Member{{ID: 1}, {ID: 2}, {ID: 3}}
//	node, err := raft.NewNode(raft.Config{ID: 1, InitialMembers: members},
//		myStateMachine, raft.NewMemoryStorage(), network.Transport(1))
//	...
//	result, err := node.Propose(ctx, []byte("set x 1")) // on the leader
//
// Inside, a pure protocol core (no goroutines, clocks or I/O) makes every
// decision, and the Node runtime carries them out in a safe order: see
// docs/design.md, docs/io-ordering.md and docs/protocol.md in the
// repository. Defaults follow the Raft dissertation's recommendations:
// PreVote and CheckQuorum are on, a new leader commits a no-op before it
// serves reads or membership changes, and reads use ReadIndex.
//
// Errors are sentinel values (ErrNotLeader, ErrLeadershipLost, ErrClosed,
// ...) to compare with errors.Is; a *NotLeaderError names the leader to
// retry on.
package raft
