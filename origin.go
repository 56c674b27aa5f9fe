package raft

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"go.uber.org/zap"
)

// The cluster's origin: a 64-bit fingerprint of its founding configuration,
// which tells two clusters apart that were bootstrapped separately.
//
// Raft matches logs by index and term only (Log Matching, §5.3): the
// founding configuration of every cluster is entry 1 of term 1, and the
// first leaders of two clusters both lead term 2, so nothing in the
// protocol notices that a node's log comes from another cluster. A node
// bootstrapped by mistake (an operator starts a new node, or a member whose
// disk was wiped, with InitialMembers that differ from the founding ones),
// or two clusters bootstrapped apart and then pointed at each other, would
// mix histories that never had a common leader.
//
// So every node keeps the origin: a founder computes it from
// InitialMembers; a joiner learns it from the first leader that reaches it;
// it is stored in the HardState, so that it survives compaction and
// restarts, and RecoverCluster keeps it. A node whose storage was written
// before origins existed does not derive one from its founding entry: the
// founders of such a cluster may have written that entry differently
// (addresses spelled differently, say), and would then refuse each other
// after an upgrade. It learns the origin from a leader that knows it, like
// a joiner; a cluster founded before origins existed has none, and goes
// unchecked.
//
// Every message carries its sender's origin (Message.Origin), and a node
// refuses a message whose origin differs from its own (both known): it does
// not step it, so its term, vote and log stay as they were, logs the
// refusal once per peer, and answers a request with a rejection carrying
// its own origin, so that the sender learns it too. A node that holds nothing but its founding configuration and finds that a
// member of its configuration with history (a leader, or a node whose log
// goes beyond index 1) belongs to another cluster was bootstrapped by
// mistake: it stops with ErrClusterMismatch. Nodes with history never stop
// for it: they go on refusing, so a stray node cannot stop a healthy
// cluster, and two clusters that meet stay apart.

// clusterOrigin returns the origin of a cluster founded with members: a hash
// of the canonical (sorted by ID) founding configuration, so that founders
// that list the same members in different orders agree. It is never 0,
// which means "unknown".
func clusterOrigin(members []Member) uint64 {
	return originOf(append([]byte("raftkit cluster origin\x00"), encodeMembers(canonicalMembers(members))...))
}

// restoredOrigin is the origin of a cluster restored from a back-up
// (RestoreBackup): a fingerprint of the restored snapshot's index, term and
// members, the same on every node restored from the same back-up with the
// same members, and another than the backed-up cluster's, since it is a
// new history that must not mix with the old one.
func restoredOrigin(meta SnapshotMeta) uint64 {
	b := append([]byte("raftkit restored origin\x00"), encodeMembers(canonicalMembers(meta.Members))...)
	b = binary.BigEndian.AppendUint64(b, meta.Index)
	b = binary.BigEndian.AppendUint64(b, meta.Term)
	return originOf(b)
}

func originOf(b []byte) uint64 {
	sum := sha256.Sum256(b)
	if o := binary.BigEndian.Uint64(sum[:8]); o != 0 {
		return o
	}
	return 1
}

// originRefused reports whether m comes from another cluster than this
// node's (both origins known), and if so handles it: see refuseOrigin.
func (c *core) originRefused(m Message) bool {
	if m.Origin == 0 || c.origin == 0 || m.Origin == c.origin {
		return false
	}
	c.refuseOrigin(m)
	return true
}

// refuseOrigin handles a message from another cluster: it is not stepped
// (no term, vote or entry of another cluster's history gets in), the first
// refusal from each peer is logged, a request is answered with a rejection
// carrying this node's origin and whether it has history (in Index, its
// last index), and this node stops if it is the one bootstrapped by
// mistake (see mismatchStops).
func (c *core) refuseOrigin(m Message) {
	if c.refusedOrigins == nil {
		c.refusedOrigins = make(map[uint64]uint64)
	}
	if c.refusedOrigins[m.From] != m.Origin {
		if len(c.refusedOrigins) >= maxRefusedOrigins {
			clear(c.refusedOrigins) // bounded, whatever IDs strangers claim
		}
		c.refusedOrigins[m.From] = m.Origin
		c.logger.Warn("refusing messages from a node of another cluster (its founding configuration differs from this cluster's)",
			zap.Uint64("from", m.From), zap.Stringer("msg", m.Type), zap.String("origin", formatOrigin(c.origin)),
			zap.String("peerOrigin", formatOrigin(m.Origin)))
	}
	if resp, ok := refusalType(m.Type); ok {
		c.send(Message{Type: resp, To: m.From, Reject: true, Index: c.log.lastIndex()})
	}
	if c.originErr == nil && c.mismatchStops(m) {
		c.originErr = fmt.Errorf("%w: this node (ID %d) holds only its founding configuration, and node %d, a member of it, "+
			"belongs to a cluster with another founding configuration (origin %s, this node's %s): this node was "+
			"bootstrapped with InitialMembers that differ from its peers'. To join their cluster, start it on empty "+
			"storage without InitialMembers and add it from the leader; to found a new cluster, start every founder "+
			"with the same InitialMembers", ErrClusterMismatch, c.id, m.From, formatOrigin(m.Origin), formatOrigin(c.origin))
		c.logger.Error("stopping: bootstrapped into another cluster's members", zap.Error(c.originErr))
	}
}

// mismatchStops reports whether meeting m, from another cluster, shows that
// this node is the one that was bootstrapped by mistake: its log holds
// nothing but its founding configuration (no leader of its own cluster ever
// reached it), the sender is a member of its configuration, and the sender
// has history (a leader's message, or a candidate or a refusing node whose
// log goes beyond index 1). Between nodes that all lack history (founders
// that disagree, before any leader) nobody stops: each refuses the others
// until one side elects a leader.
func (c *core) mismatchStops(m Message) bool {
	if c.log.lastIndex() > 1 {
		return false
	}
	if _, ok := c.member(m.From); !ok {
		return false
	}
	switch m.Type {
	case MsgAppend, MsgHeartbeat, MsgSnapshot, MsgTimeoutNow:
		return true // only a leader sends these, and a leader has its no-op
	case MsgReadIndex:
		return false // tells nothing of the sender's log
	}
	return m.Index > 1 // a vote request's last index, or a refusal's
}

// refusalType is the type of the answer to a refused request; responses are
// never answered, so two nodes never refuse each other in a loop.
func refusalType(t MessageType) (MessageType, bool) {
	switch t {
	case MsgAppend:
		return MsgAppendResp, true
	case MsgHeartbeat:
		return MsgHeartbeatResp, true
	case MsgVote:
		return MsgVoteResp, true
	case MsgPreVote:
		return MsgPreVoteResp, true
	case MsgReadIndex:
		return MsgReadIndexResp, true
	case MsgSnapshot:
		return MsgSnapshotResp, true
	}
	return 0, false
}

// adoptOrigin lets a node that does not know its cluster's origin (a
// joiner, or a node whose storage was written before origins existed)
// learn it from its leader: m is a message of the current term's leader.
func (c *core) adoptOrigin(m Message) {
	if c.origin != 0 || m.Origin == 0 {
		return
	}
	c.origin = m.Origin
	c.logger.Info("learned the cluster's origin from the leader", zap.Uint64("leader", m.From), zap.String("origin", formatOrigin(m.Origin)))
}

// maxRefusedOrigins bounds the peers whose refusal was logged.
const maxRefusedOrigins = 64

// formatOrigin writes an origin as the 16 hex digits Status and the logs show.
func formatOrigin(o uint64) string { return fmt.Sprintf("%016x", o) }
