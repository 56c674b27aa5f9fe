package raft

// MessageType names the kind of a Message. The values are part of the wire
// format (see codec.go): never renumber them.
type MessageType uint8

// The messages of the protocol. Section numbers refer to the Raft paper
// (Ongaro and Ousterhout, 2014) and the Raft dissertation (Ongaro, 2014).
const (
	// MsgAppend is AppendEntries (§5.3): Index and LogTerm name the entry
	// that precedes Entries in the leader's log, Commit is the leader's
	// commit index.
	MsgAppend MessageType = iota + 1
	// MsgAppendResp answers MsgAppend. On success Index is the highest index
	// the follower has checked to match the leader's log. On rejection Index
	// is the rejected previous index, and HintIndex/HintTerm name the
	// follower's last entry at or before it whose term is at most the
	// rejected LogTerm: the leader retries from where its own log can still
	// match that (§5.3, the "fast backup" optimization).
	MsgAppendResp
	// MsgVote is RequestVote (§5.2): Index and LogTerm describe the
	// candidate's last entry, for the up-to-date check of §5.4.1. Context
	// says what started the campaign (1: a pre-election, 2: an election
	// timeout, 3: a leadership transfer); voters within the follower lease
	// answer a transfer's campaign when the candidate holds every entry they
	// do (dissertation §3.10, §4.2.3).
	MsgVote
	// MsgVoteResp answers MsgVote; Reject is false when the vote is granted.
	MsgVoteResp
	// MsgPreVote asks whether a vote would be granted at Term without anyone
	// changing its term (dissertation §9.6). Index, LogTerm and Context are
	// as for MsgVote.
	MsgPreVote
	// MsgPreVoteResp answers MsgPreVote.
	MsgPreVoteResp
	// MsgHeartbeat is an AppendEntries without entries and without the log
	// consistency check: it asserts leadership, carries the commit index (never
	// beyond what the follower is known to store) and, in Context, the number
	// of the ReadIndex round it confirms (dissertation §6.4). Between Hosts,
	// Done set makes it a quiesce notice: the leader rests until woken
	// (quiesce.go); a receiver that does not know it takes a plain heartbeat.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat, echoing Context. With Done set
	// it also reports the follower's InstallSnapshot transfer from the
	// heartbeat's sender, so that the leader resumes or restarts a transfer
	// whose chunk or acknowledgment was lost: Index is the snapshot the
	// follower is receiving or installing (0: none) and HintIndex the bytes
	// of its data stored so far (all of them once it is being installed).
	// Followers of earlier versions leave Done clear and report nothing.
	MsgHeartbeatResp
	// MsgReadIndex is sent by a follower or learner to the leader to obtain a
	// read index for a linearizable read; Context identifies the request.
	MsgReadIndex
	// MsgReadIndexResp answers MsgReadIndex: Index is the read index, or Reject
	// is set when the receiver cannot serve it (it is not the leader).
	MsgReadIndexResp
	// MsgTimeoutNow tells the receiver to start an election at once;
	// leadership transfer uses it (dissertation §3.10). Index and LogTerm
	// name the leader's last entry and Commit is its commit index: the
	// receiver campaigns only if its log ends at that entry and its
	// configuration is committed, and only after a PreVote round whose
	// Context is the transfer kind (docs/protocol.md).
	MsgTimeoutNow
	// MsgSnapshot is one chunk of InstallSnapshot (Raft §7): Index and
	// LogTerm name the last entry the snapshot covers, Context is the offset
	// of Data in the snapshot's data, Done marks the last chunk, whose
	// HintIndex carries the CRC-32C (Castagnoli) of the whole data. The
	// first chunk (offset 0) carries the configuration at Index as its one
	// EntryConfChange entry.
	MsgSnapshot
	// MsgSnapshotResp acknowledges chunks: Index names the snapshot, Context
	// is the number of bytes received so far. Reject asks the leader to start
	// the transfer again from Context.
	MsgSnapshotResp

	msgTypeEnd // one past the last valid type; keep last
)

// MsgUnreachable is a report from a Transport to its own Node, never sent
// over the network (the codec refuses it): a message to From could not be
// sent, or was lost with a broken connection. Build it with Unreachable.
const MsgUnreachable MessageType = 128

var msgTypeNames = [...]string{
	MsgAppend:        "MsgAppend",
	MsgAppendResp:    "MsgAppendResp",
	MsgVote:          "MsgVote",
	MsgVoteResp:      "MsgVoteResp",
	MsgPreVote:       "MsgPreVote",
	MsgPreVoteResp:   "MsgPreVoteResp",
	MsgHeartbeat:     "MsgHeartbeat",
	MsgHeartbeatResp: "MsgHeartbeatResp",
	MsgReadIndex:     "MsgReadIndex",
	MsgReadIndexResp: "MsgReadIndexResp",
	MsgTimeoutNow:    "MsgTimeoutNow",
	MsgSnapshot:      "MsgSnapshot",
	MsgSnapshotResp:  "MsgSnapshotResp",
}

// String returns the type's name, e.g. "MsgAppend".
func (t MessageType) String() string {
	if t > 0 && t < msgTypeEnd {
		return msgTypeNames[t]
	}
	if t == MsgUnreachable {
		return "MsgUnreachable"
	}
	return "MsgUnknown"
}

// Message is the unit of communication between nodes. A Transport carries
// Messages between Nodes without looking inside them; MarshalBinary and
// UnmarshalBinary give a compact, versioned encoding for transports that
// cross process boundaries.
//
// The meaning of the generic fields depends on Type; see the MessageType
// constants.
type Message struct {
	Type MessageType
	From uint64 // sender's node ID
	To   uint64 // receiver's node ID
	Term uint64 // sender's current term (for MsgPreVote: the term it would campaign in)

	LogTerm uint64  // term of the entry at Index (MsgAppend, MsgVote, MsgPreVote, MsgTimeoutNow)
	Index   uint64  // an index whose meaning depends on Type
	Entries []Entry // log entries (MsgAppend); their Data is never modified after sending
	Commit  uint64  // sender's commit index (MsgAppend, MsgHeartbeat, MsgTimeoutNow)

	Reject bool // the request was refused
	// HintIndex: on a rejected MsgAppendResp, the follower's last entry at
	// or before Index whose term is at most the rejected LogTerm; on the
	// last MsgSnapshot chunk, the CRC-32C of the whole snapshot data; on a
	// MsgHeartbeatResp with Done set, the snapshot bytes the follower holds.
	HintIndex uint64
	HintTerm  uint64 // on a rejected MsgAppendResp: the term of the entry at HintIndex; zero on other types (see codec.go)

	// Context: the ReadIndex round or request number (MsgHeartbeat*,
	// MsgReadIndex*); the campaign kind (MsgVote, MsgPreVote); the byte
	// offset (MsgSnapshot*).
	Context uint64

	Data []byte // a snapshot chunk (MsgSnapshot); never modified after sending
	Done bool   // the last chunk of a snapshot (MsgSnapshot); a snapshot status is included (MsgHeartbeatResp); a lease answer will do (MsgReadIndex, see Node.LeaseRead); the leader quiesces (MsgHeartbeat, between Hosts)

	// Origin is the sender's cluster origin (Status.Origin), 0 if it does
	// not know it; every message carries it. A node refuses a message of
	// another origin than its own (ErrClusterMismatch). A refused request
	// is answered with a rejection of its response type whose Index is the
	// refusing node's last index. A Transport that does not use the codec
	// must carry it too; one that drops it turns the check off.
	Origin uint64
}

// Transport carries Messages between the nodes of one cluster. A Transport
// is handed to exactly one Node; the Node calls Attach once when it starts
// and Detach once when it closes. The Node never closes the Transport: its
// creator does.
//
// Delivery is best effort: a Transport may drop, delay, duplicate or
// reorder messages, and Raft tolerates all of that. What it must never do is
// corrupt a message or deliver one to the wrong node.
//
// A Transport that knows a message was lost (the peer cannot be dialed, a
// write failed, the connection carrying it broke, its queue was full)
// should say so: deliver(Unreachable(m)) hands the Node a report it acts on
// at once, resending a lost snapshot chunk rather than waiting for a
// timeout, and probing a follower whose appends were lost. Reporting is
// optional: without it the Node recovers by its timers and heartbeats,
// only later.
type Transport interface {
	// Attach starts delivery of inbound messages addressed to node id: the
	// Transport calls deliver for each one, and for each report built with
	// Unreachable. deliver is safe for concurrent use, may be called from
	// inside Send, and never blocks for long (the Node queues the message,
	// or drops it when its inbound queue is full). Attach is called before
	// any Send.
	Attach(id uint64, deliver func(Message)) error
	// Send queues msgs for delivery to each message's To. It is called only
	// from the Node's event loop and must not block on the network: a slow or
	// unreachable peer must not delay messages to the others. The Transport
	// must not modify msgs or the entries they carry, and may keep references
	// to them after Send returns.
	Send(msgs []Message)
	// SetPeers gives the Transport the nodes to send to and their
	// addresses; it is called from the Node's event loop when the Node
	// starts and whenever the set changes. The set is the union of the
	// members of the last committed configuration and of every later one,
	// the latest included, with the latest address of each: a member that
	// is being removed stays in it until its removal commits (on the
	// leader, until the member knows it committed), so that the leader
	// keeps sending it the log and the followers keep answering a leader
	// that removes itself (dissertation §4.2.2-4.2.3). It may hold this
	// node itself.
	//
	// A Transport must also deliver a message to a node outside the set
	// that has sent it one (a node being added answers the leader it does
	// not know yet; a removed node is told it is not a voter): the Node
	// only sends to such a node in answer to it. TCPTransport answers at
	// the address the sender advertised when it connected; InmemNetwork at
	// any node it received a message from.
	SetPeers(members []Member)
	// Detach stops delivery: after it returns, deliver is not called again.
	Detach()
}

// Unreachable returns the report a Transport passes to its Node's deliver
// callback when it could not send lost, one of the Node's own messages: a
// MsgUnreachable from lost.To. When lost is a snapshot chunk (MsgSnapshot),
// the report names it by Index and Context, and the Node sends it again
// without waiting for a timeout. One report per failure is enough: a
// Transport that drops a whole queue reports its snapshot chunks and one
// other message, not each message.
func Unreachable(lost Message) Message {
	r := Message{Type: MsgUnreachable, From: lost.To, To: lost.From, Term: lost.Term}
	if lost.Type == MsgSnapshot {
		r.Index, r.Context = lost.Index, lost.Context
	}
	return r
}

// lossReports thins out the reports of one batch of lost messages: every
// snapshot chunk is reported, and one other message per peer (per group
// and peer on a Host, whose batches carry the messages of many groups).
type lossReports struct {
	seen [4]lossKey // reported already, the first few
	n    int
	more map[lossKey]struct{} // reported already, beyond the first few
}

type lossKey struct{ group, peer uint64 }

// wants reports whether the loss of m is to be reported.
func (r *lossReports) wants(m *Message) bool { return r.wantsIn(0, m) }

// wantsIn reports whether the loss of m, a message of group (0 outside a
// Host), is to be reported.
func (r *lossReports) wantsIn(group uint64, m *Message) bool {
	if m.Type == MsgSnapshot {
		return true
	}
	key := lossKey{group: group, peer: m.To}
	for _, k := range r.seen[:r.n] {
		if k == key {
			return false
		}
	}
	if r.n < len(r.seen) {
		r.seen[r.n] = key
		r.n++
		return true
	}
	if _, ok := r.more[key]; ok {
		return false
	}
	if r.more == nil {
		r.more = make(map[lossKey]struct{})
	}
	r.more[key] = struct{}{}
	return true
}

// commandLimited is implemented by the transports that cannot carry an
// entry above some size (TCPTransport: one append must fit in a frame).
type commandLimited interface {
	maxCommandSize() int
}

// maxCommandSize is the largest command t carries, or 0 for no limit.
func maxCommandSize(t Transport) int {
	if l, ok := t.(commandLimited); ok {
		return max(l.maxCommandSize(), 0)
	}
	return 0
}
