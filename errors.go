package raft

import (
	"errors"
	"fmt"
)

// Errors returned by the Node. Compare with errors.Is; every error a caller
// can act on is one of these or wraps one.
var (
	// ErrNotLeader: the call needs the leader and this node is not it.
	// A *NotLeaderError carries the known leader and matches ErrNotLeader.
	ErrNotLeader = errors.New("raft: not the leader")
	// ErrLeadershipLost: leadership was lost after the proposal was
	// appended, so it may or may not be committed later; or, for a read,
	// before the leader could confirm it (retry the read).
	ErrLeadershipLost = errors.New("raft: leadership lost before the operation completed (a proposal's outcome is unknown)")
	// ErrClosed: the node, or the FileStorage or HostStorage, is closed; or
	// the HostStorage group was removed.
	ErrClosed = errors.New("raft: closed")
	// ErrMembershipChange: another membership change is still in progress.
	ErrMembershipChange = errors.New("raft: another membership change is in progress")
	// ErrCorrupt: storage or a message holds a checksum mismatch or an
	// impossible record, or an entry this node counts as committed differs
	// from the leader's (its storage lost data). A node refuses to start on
	// corrupt storage; a running node that finds it stops (ErrStopped
	// wrapping ErrCorrupt); a message that fails to decode is dropped.
	ErrCorrupt = errors.New("raft: corrupt data")
	// ErrNewerVersion: stored data or a message is in a format version
	// newer than this build reads (docs/protocol.md, "Formats and
	// versions"): it was written by a newer version of the library. Nothing
	// is damaged; run a build that reads it. FileStorage refuses to open
	// such a directory with it; a message of a newer version is dropped with
	// an error that also wraps ErrCorrupt.
	ErrNewerVersion = errors.New("raft: written by a newer version of the library")
	// ErrBusy: the leader already holds as many uncommitted entries or bytes
	// as Config.MaxUncommittedEntries / MaxUncommittedBytes allow, or as
	// many wait to be applied by its state machine; retry on the same node
	// after earlier proposals commit and apply.
	ErrBusy = errors.New("raft: too many uncommitted or unapplied entries")
	// ErrTransferInProgress: the leader is handing leadership to another
	// node (TransferLeadership) and refuses proposals and membership changes
	// meanwhile. Nothing was appended: retry after a moment, on the new
	// leader if the transfer succeeds (a *NotLeaderError will name it).
	ErrTransferInProgress = errors.New("raft: leadership transfer in progress")
	// ErrTransferFailed: TransferLeadership ended without the target taking
	// over (another node leads, or the target did not campaign within an
	// election timeout and can no longer do so); the wrapping error says which.
	ErrTransferFailed = errors.New("raft: leadership transfer failed")
	// ErrRemoved: this node applied a configuration that removed it from the
	// cluster; it no longer takes part, and calls that need the cluster fail
	// at once. Status().Removed reports it (see there for a restart from a
	// snapshot taken after the removal).
	ErrRemoved = errors.New("raft: this node was removed from the cluster")
	// ErrInvalidConfig: a Config field is invalid; the wrapping error names it.
	ErrInvalidConfig = errors.New("raft: invalid config")
	// ErrOutOfRange: Storage.Entries or Storage.Term was asked for indexes
	// outside the stored log: compacted away, or not written yet.
	ErrOutOfRange = errors.New("raft: log index out of range")
	// ErrNoSnapshot: Storage.Snapshot found no snapshot.
	ErrNoSnapshot = errors.New("raft: no snapshot")
	// ErrLocked: the FileStorage or HostStorage directory is in use by
	// another process or another storage in this one.
	ErrLocked = errors.New("raft: storage directory is locked")
	// ErrNotSupported: the feature is not available in this version.
	ErrNotSupported = errors.New("raft: not supported")
	// ErrClusterMismatch: this node and a peer belong to clusters founded
	// with different configurations (their origins differ, see
	// Status.Origin): a node was bootstrapped with InitialMembers that differ
	// from its peers', or two separately bootstrapped clusters reach each
	// other. Messages between them are refused. A node that holds nothing
	// but its founding configuration and meets a member of it with history
	// stops with it (Status().Err): start it on empty storage without
	// InitialMembers to join the cluster, or give every founder the same
	// InitialMembers.
	ErrClusterMismatch = errors.New("raft: the peer belongs to another cluster (different founding configuration)")
	// ErrStopped: the node stopped itself after a fatal error (for instance a
	// failed write to storage); Status().Err says which.
	ErrStopped = errors.New("raft: node stopped after a fatal error")
	// ErrGroupExists: Host.StartGroup was given the ID of a group that
	// already runs on the host (Host.Group returns its Node).
	ErrGroupExists = errors.New("raft: the group already runs on this host")
	// ErrTooLarge: Propose refused a command larger than the node's
	// transport can carry (for TCPTransport, one entry must fit in
	// TCPConfig.MaxFrameSize); nothing was appended. Raise the limit or
	// split the command.
	ErrTooLarge = errors.New("raft: command too large for the transport")
	// ErrUnknownGroup: Host.StopGroup was given the ID of a group that does
	// not run on the host (never started, or stopped already).
	ErrUnknownGroup = errors.New("raft: no such group on this host")
)

// NotLeaderError is returned by calls that only the leader serves. Leader
// and Addr name the leader this node knows of, 0 and "" when it knows none.
type NotLeaderError struct {
	Leader uint64
	Addr   string
	// Member is the leader as the configuration describes it, with its
	// metadata (for example the address its clients use), so that a client
	// can be redirected without an address book of its own; zero when no
	// leader is known.
	Member Member
}

// Error describes the error, naming the leader if one is known.
func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return "raft: not the leader; no leader is known"
	}
	return fmt.Sprintf("raft: not the leader; the leader is %d (%q)", e.Leader, e.Addr)
}

// Is makes errors.Is(err, ErrNotLeader) true for a *NotLeaderError.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
