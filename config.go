package raft

import (
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
)

// Defaults for the zero values of Config.
const (
	DefaultElectionTimeout       = time.Second
	DefaultMaxInflight           = 256
	DefaultMaxAppendBytes        = 1 << 20
	DefaultMaxUncommittedEntries = 1 << 16
	DefaultMaxUncommittedBytes   = 64 << 20
	DefaultMaxInboundMessages    = 1 << 14
	DefaultSnapshotThreshold     = 16384
	DefaultTrailingEntries       = 4096
	DefaultSnapshotChunkSize     = 256 << 10
)

// Defaults for the zero values of Config.SnapshotThresholdBytes and
// Config.TrailingBytes.
const (
	DefaultSnapshotThresholdBytes = 64 << 20
	DefaultTrailingBytes          = 16 << 20
)

// minSnapshotThresholdBytes is the smallest Config.SnapshotThresholdBytes:
// below it a snapshot would follow almost every applied batch.
const minSnapshotThresholdBytes = 64 << 10

// NoTrailingEntries is the Config.TrailingEntries value that keeps no log
// entries behind a snapshot: the log is compacted up to the snapshot's last
// index, and a follower that lacks any entry it covers gets the snapshot.
// (TrailingEntries: 0 means the default, DefaultTrailingEntries.)
const NoTrailingEntries = math.MaxUint64

// Config configures a Node. The zero value of every field but ID means the
// documented default, so Config{ID: 1, InitialMembers: ...} is a complete
// configuration.
type Config struct {
	// ID is this node's ID; required, non-zero, unique in the cluster.
	ID uint64
	// InitialMembers are the founding members of a NEW cluster: the same list
	// on every founding node. It is ignored when the Storage already holds
	// state (a difference from the stored configuration is logged), so a
	// node can keep the same Config for its whole life, including a node
	// added later that is restarted with the founding list. On empty Storage
	// the list must include ID; leave it empty on a node that will be added
	// to an existing cluster later. The order does not matter. A node
	// started on empty Storage with a list that differs from its peers'
	// founding one belongs to another cluster: the peers refuse it and it
	// stops with ErrClusterMismatch (see Status.Origin).
	InitialMembers []Member

	// ElectionTimeout is the base election timeout (Raft §5.2); each timeout
	// is drawn at random from [ElectionTimeout, 2*ElectionTimeout). Default 1s.
	ElectionTimeout time.Duration
	// HeartbeatInterval is how often the leader sends heartbeats; it must be
	// shorter than ElectionTimeout. Default ElectionTimeout/10.
	HeartbeatInterval time.Duration
	// DisablePreVote turns PreVote (dissertation §9.6) off. PreVote keeps a
	// node that was partitioned away from disrupting the leader when it
	// returns; leave it on unless every node of the cluster has it off.
	DisablePreVote bool
	// DisableCheckQuorum turns CheckQuorum off: with it on, a leader that has
	// not heard from a quorum within an election timeout steps down, and a
	// follower that heard from a leader within the minimum election timeout
	// ignores vote requests (dissertation §6.2, §9.6).
	DisableCheckQuorum bool

	// SnapshotThreshold is the number of applied entries since the last
	// snapshot that triggers a new one. Default 16384.
	SnapshotThreshold uint64
	// TrailingEntries is the number of log entries kept behind a snapshot
	// for slow followers. Default 4096; NoTrailingEntries keeps none.
	TrailingEntries uint64
	// SnapshotThresholdBytes and TrailingBytes bound the same by the bytes
	// of the entries' data: a snapshot is also taken once the commands
	// applied since the last one hold SnapshotThresholdBytes, and of the
	// trailing entries only the newest that hold at most TrailingBytes are
	// kept. Every node holds its log since the last compaction in memory,
	// so with large commands these bound that memory: about
	// SnapshotThresholdBytes + TrailingBytes of applied entries per node,
	// besides those not yet applied (docs/snapshots.md). An application
	// whose snapshots are expensive and whose commands are large may raise
	// them. Defaults 64 MiB and 16 MiB; SnapshotThresholdBytes, when set,
	// must be at least 64 KiB (it counts bytes, not entries).
	SnapshotThresholdBytes uint64
	TrailingBytes          uint64

	// SnapshotChunkSize is the size of the chunks a snapshot is sent to a
	// follower in; one chunk at a time is in flight. Default 256 KiB.
	SnapshotChunkSize int

	// MaxInflight bounds the AppendEntries messages sent to one follower and
	// not yet acknowledged (pipelining). Default 256.
	MaxInflight int
	// MaxAppendBytes bounds the entry data carried by one AppendEntries
	// message; a single larger entry is still sent alone. Default 1 MiB.
	MaxAppendBytes uint64
	// MaxUncommittedEntries and MaxUncommittedBytes bound the proposals the
	// leader holds in its log before they commit; beyond them a proposal fails
	// at once with ErrBusy rather than growing memory without bound.
	// Both also bound what waits to be applied by this leader's
	// StateMachine (entries, and the bytes of its own proposals), so that a
	// slow Apply or a slow disk here pushes back on proposers too, even
	// while the followers commit. Defaults 65536 entries and 64 MiB.
	MaxUncommittedEntries uint64
	MaxUncommittedBytes   uint64
	// MaxInboundMessages bounds the messages queued for the event loop; when
	// the queue is full further messages are dropped (Raft retransmits).
	// Default 16384.
	MaxInboundMessages int

	// Seed seeds this node's randomized election timeout. 0 picks a random
	// seed. Tests set it to make runs repeatable; the in-memory network's
	// random faults have their own seed (WithSeed).
	Seed int64

	// Logger receives the node's logs, with the node ID as a field.
	// Default zap.NewNop().
	Logger *zap.Logger

	// MeterProvider receives the node's metrics (docs/observability.md lists
	// them), with the node ID as the raft.node.id attribute (and, for a
	// Host's group, the group ID as raft.group.id); the Storage and
	// Transport implementations of this package that the node is given
	// (FileStorage, TCPTransport, InmemNetwork's) record theirs through it
	// too. Nothing is registered globally: two nodes in one process may
	// share a provider or have their own. Default nil: no metrics, and no
	// cost (no instrument is created, nothing is recorded).
	MeterProvider metric.MeterProvider
	// LeaseReads lets this node, while it leads, answer Node.LeaseRead
	// from a read lease with no round of messages (docs/protocol.md, "Lease
	// reads"). It trusts clocks: it is safe only if no node's clock runs
	// faster than another's by more than LeaseDriftMargin, and only if every
	// voter runs with CheckQuorum, the same ElectionTimeout and LeaseReads
	// (a node with LeaseReads ignores candidates for an election timeout
	// after it starts, as it may have granted a lease before it stopped).
	// It requires CheckQuorum (DisableCheckQuorum false). With it, the node
	// counts its ticks by the monotonic clock, making up ticks its event
	// loop missed while busy. Off by default.
	LeaseReads bool
	// LeaseDriftMargin is the relative clock drift the lease allows for: the
	// lease lasts (ElectionTimeout - 2 ticks) / (1 + LeaseDriftMargin),
	// rounded down to whole ticks (a tick is the shorter of
	// HeartbeatInterval and ElectionTimeout/10). It must be in [0, 1);
	// 0 means the default, 0.1 (clocks that differ in rate by up to 10%).
	LeaseDriftMargin float64
}

// DefaultLeaseDriftMargin is the default Config.LeaseDriftMargin.
const DefaultLeaseDriftMargin = 0.1

// Validate returns an error naming the first invalid field, or nil. It
// checks the config as given; zero values are valid and mean the defaults.
// Every error wraps ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.ID == 0 {
		return bad("ID must be non-zero")
	}
	if c.ElectionTimeout < 0 {
		return bad("ElectionTimeout %v is negative", c.ElectionTimeout)
	}
	if c.HeartbeatInterval < 0 {
		return bad("HeartbeatInterval %v is negative", c.HeartbeatInterval)
	}
	election := c.ElectionTimeout
	if election == 0 {
		election = DefaultElectionTimeout
	}
	if election < time.Millisecond {
		return bad("ElectionTimeout %v is below 1ms", election)
	}
	if c.HeartbeatInterval >= election {
		return bad("HeartbeatInterval %v must be shorter than ElectionTimeout %v", c.HeartbeatInterval, election)
	}
	if c.MaxInflight < 0 {
		return bad("MaxInflight %d is negative", c.MaxInflight)
	}
	if c.SnapshotChunkSize < 0 || c.SnapshotChunkSize > 8<<20 {
		return bad("SnapshotChunkSize %d is outside [0, 8 MiB] (a chunk must fit in a transport frame)", c.SnapshotChunkSize)
	}
	if c.SnapshotThresholdBytes != 0 && c.SnapshotThresholdBytes < minSnapshotThresholdBytes {
		return bad("SnapshotThresholdBytes %d is below %d: it counts the bytes of applied commands, not entries (SnapshotThreshold counts entries)",
			c.SnapshotThresholdBytes, minSnapshotThresholdBytes)
	}
	if c.MaxInboundMessages < 0 {
		return bad("MaxInboundMessages %d is negative", c.MaxInboundMessages)
	}
	if c.LeaseDriftMargin < 0 || c.LeaseDriftMargin >= 1 || math.IsNaN(c.LeaseDriftMargin) {
		return bad("LeaseDriftMargin %v is outside [0, 1)", c.LeaseDriftMargin)
	}
	if c.LeaseReads && c.DisableCheckQuorum {
		return bad("LeaseReads requires CheckQuorum: without it, followers vote for a new leader while the old one still holds its lease (set DisableCheckQuorum false)")
	}
	if len(c.InitialMembers) > 0 {
		// Whether the list includes ID matters only on empty Storage:
		// NewNode checks it there.
		if err := checkMemberList("InitialMembers", c.InitialMembers); err != nil {
			return bad("%s", err)
		}
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = c.ElectionTimeout / 10
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingEntries == 0 {
		c.TrailingEntries = DefaultTrailingEntries
	}
	if c.SnapshotThresholdBytes == 0 {
		c.SnapshotThresholdBytes = DefaultSnapshotThresholdBytes
	}
	if c.TrailingBytes == 0 {
		c.TrailingBytes = DefaultTrailingBytes
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.SnapshotChunkSize == 0 {
		c.SnapshotChunkSize = DefaultSnapshotChunkSize
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = DefaultMaxAppendBytes
	}
	if c.MaxUncommittedEntries == 0 {
		c.MaxUncommittedEntries = DefaultMaxUncommittedEntries
	}
	if c.MaxUncommittedBytes == 0 {
		c.MaxUncommittedBytes = DefaultMaxUncommittedBytes
	}
	if c.MaxInboundMessages == 0 {
		c.MaxInboundMessages = DefaultMaxInboundMessages
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.LeaseDriftMargin == 0 {
		c.LeaseDriftMargin = DefaultLeaseDriftMargin
	}
	return c
}

// leaseTicks returns the read lease's length in ticks, once defaults are
// applied; 0 when LeaseReads is off. Why it is safe (docs/protocol.md,
// "Lease reads"): a follower that processed a heartbeat at time r ignores
// candidates until its electionTicks-th tick after r; the runtime's ticker
// may deliver one tick that fired before r just after it, so that tick
// comes at r + (electionTicks-2) ticks of the follower's clock or later.
// The leader uses a lease started by a round it sent at s only while its
// tick count is below the count at s plus leaseTicks, that is before
// s + leaseTicks ticks of its own clock (it makes up missed ticks from the
// monotonic clock, nodeClock). With ticks of the leader's clock at most
// 1+LeaseDriftMargin times as long as the follower's, leaseTicks <=
// (electionTicks-2)/(1+LeaseDriftMargin) ends the lease first.
func (c Config) leaseTicks() int {
	if !c.LeaseReads {
		return 0
	}
	_, electionTicks, _ := c.ticks()
	return int(float64(electionTicks-2) / (1 + c.LeaseDriftMargin))
}

// trailingEntries returns the number of entries to keep behind a snapshot,
// once defaults are applied.
func (c Config) trailingEntries() uint64 {
	if c.TrailingEntries == NoTrailingEntries {
		return 0
	}
	return c.TrailingEntries
}

// ticks converts the timeouts into the core's logical clock. The tick is
// the shorter of the heartbeat interval and a tenth of the election timeout,
// so that the randomized timeout has at least ten distinct values.
func (c Config) ticks() (tick time.Duration, electionTicks, heartbeatTicks int) {
	tick = c.HeartbeatInterval
	if t := c.ElectionTimeout / 10; t < tick {
		tick = t
	}
	if tick <= 0 {
		tick = time.Millisecond / 10
	}
	electionTicks = int(c.ElectionTimeout / tick)
	heartbeatTicks = int(c.HeartbeatInterval / tick)
	if heartbeatTicks < 1 {
		heartbeatTicks = 1
	}
	if electionTicks <= heartbeatTicks {
		electionTicks = heartbeatTicks + 1
	}
	return tick, electionTicks, heartbeatTicks
}

// checkMemberList applies the rules every member list given by the user
// must follow (InitialMembers, RecoverCluster's members): non-zero IDs, each
// listed once, at least one voter. name names the list in the error.
func checkMemberList(name string, members []Member) error {
	seen := make(map[uint64]bool, len(members))
	voters := 0
	for i, m := range members {
		if m.ID == 0 {
			return fmt.Errorf("%s[%d] has ID 0", name, i)
		}
		if seen[m.ID] {
			return fmt.Errorf("%s lists ID %d twice", name, m.ID)
		}
		seen[m.ID] = true
		if !m.Learner {
			voters++
		}
	}
	if voters == 0 {
		return fmt.Errorf("%s has no voter", name)
	}
	return nil
}
