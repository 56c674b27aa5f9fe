package raft

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Membership changes (dissertation chapter 4). One change of the voter set
// at a time takes the single-server path (§4.1): the leader appends a
// configuration entry holding the whole new member list, every node uses it
// as soon as it is in its log, and a new change may start only once the
// previous one has committed. Adding or removing a single voter keeps every
// majority of the old configuration overlapping every majority of the new
// one, so no two leaders can be elected in one term meanwhile.
//
// Several voter changes at once go through a joint configuration (§4.3):
// the leader appends an entry holding both the new member list and the old
// one (outgoing); from the moment a node has it, elections and commitment
// need a majority of each. Once the joint entry commits, the leader appends
// the new configuration alone (see leaveJoint), and a leader elected while
// the cluster is joint does the same once it has committed an entry of its
// term. Neither configuration can decide alone at any point, so no two
// leaders can be elected in one term across the whole change.

// membershipEdit makes a new member list from the current one (which it
// may modify: it gets a copy); ok=false says the change is in effect
// already, and an error that it cannot be made.
type membershipEdit func(members []Member) (next []Member, ok bool, err error)

// changeMembers proposes the configuration that the edits, applied in
// order, make of the current one: through a joint configuration when they
// change more than one voter, directly otherwise. changed is false when the
// configuration is already so.
func (c *core) changeMembers(edits ...membershipEdit) (index, term uint64, changed bool, err error) {
	if c.role != Leader {
		return 0, 0, false, c.notLeader()
	}
	if c.configIndex > c.log.committed || c.outgoing != nil {
		// Checked before the edits: a change that is already in the pending
		// configuration is not done until that configuration commits, and a
		// joint configuration is not done until the cluster has left it.
		return 0, 0, false, ErrMembershipChange
	}
	next := slices.Clone(c.members)
	for _, edit := range edits {
		n, ok, err := edit(next)
		if err != nil {
			return 0, 0, false, err
		}
		if ok {
			next = n
		}
	}
	if sameMembers(next, c.members) {
		return 0, 0, false, nil
	}
	if len(voterIDs(next)) == 0 {
		return 0, 0, false, fmt.Errorf("%w: the change would leave no voter", ErrInvalidConfig)
	}
	var outgoing []Member
	if votersChanged(c.members, next) > 1 {
		outgoing = c.members
	}
	index, term, err = c.proposeConfig(next, outgoing)
	return index, term, err == nil, err
}

// voterIDs returns the IDs of the voters among members.
func voterIDs(members []Member) majority {
	var ids majority
	for _, m := range members {
		if !m.Learner {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// votersChanged counts the nodes that are a voter in one of a and b but not
// in the other.
func votersChanged(a, b []Member) int {
	va, vb := voterIDs(a), voterIDs(b)
	n := 0
	for _, id := range va {
		if !vb.contains(id) {
			n++
		}
	}
	for _, id := range vb {
		if !va.contains(id) {
			n++
		}
	}
	return n
}

// leaveJoint appends the configuration that ends the joint one in effect:
// its incoming half alone (dissertation §4.3). The leader calls it once the
// joint configuration has committed and it has committed an entry of its
// own term (as for any configuration change, §4.1), and not while a
// leadership transfer may still take effect: the target then finishes the
// change.
func (c *core) leaveJoint() {
	c.logger.Info("joint configuration committed; leaving it",
		zap.Stringer("members", memberList(c.members)), zap.Stringer("outgoing", memberList(c.outgoing)))
	c.appendLeaderEntries(Entry{Type: EntryConfChange, Data: encodeConfig(c.members, nil)})
	c.pendingBroadcast = true
}

// maybeLeaveJoint leaves a committed joint configuration (see leaveJoint).
func (c *core) maybeLeaveJoint() {
	if c.role == Leader && c.outgoing != nil && c.configIndex <= c.log.committed && c.committedInTerm() && !c.transferring() {
		c.leaveJoint()
	}
}

// addMember returns an edit that adds id as a voter or a learner, or changes
// the role or address of the member id:
//   - a new member needs an address if the other members have one (then the
//     transport dials members, and a member without an address would be
//     unreachable);
//   - for an existing member, an empty addr keeps its address, and one that
//     already has this role and address is left as it is (ok=false);
//   - a learner made a voter is promoted, a voter made a learner is demoted;
//     either is one change of the voter set, like adding or removing a
//     voter (dissertation §4.1), and a leader that demotes itself steps down
//     once the change commits, as when it removes itself;
//   - another address is an address change, which takes effect when the
//     configuration is appended, as any other;
//   - an existing member keeps its metadata (see setMember to change it).
func addMember(id uint64, addr string, learner bool) membershipEdit {
	return editMember(Member{ID: id, Addr: addr, Learner: learner}, false)
}

// setMember returns an edit that makes m a member, or changes the member
// m.ID to m: its role, address (an empty one keeps the current address) and
// metadata (nil or empty clears it).
func setMember(m Member) membershipEdit {
	return editMember(m, true)
}

func editMember(want Member, setMeta bool) membershipEdit {
	return func(members []Member) ([]Member, bool, error) {
		if want.ID == 0 {
			return nil, false, fmt.Errorf("%w: member ID 0", ErrInvalidConfig)
		}
		next := want
		next.Meta = maps.Clone(want.Meta)
		i := slices.IndexFunc(members, func(m Member) bool { return m.ID == want.ID })
		if i < 0 {
			if want.Addr == "" && slices.ContainsFunc(members, func(m Member) bool { return m.Addr != "" }) {
				return nil, false, fmt.Errorf("%w: member %d has no address, but the other members have addresses for the transport to dial", ErrInvalidConfig, want.ID)
			}
			return append(members, next), true, nil
		}
		if want.Addr == "" {
			next.Addr = members[i].Addr
		}
		if !setMeta {
			next.Meta = members[i].Meta
		}
		if members[i].Equal(next) {
			return nil, false, nil // already so
		}
		members[i] = next
		return members, true, nil
	}
}

// sameMembers reports whether a and b list the same members, in any order.
func sameMembers(a, b []Member) bool {
	if len(a) != len(b) {
		return false
	}
	for _, m := range a {
		if !slices.ContainsFunc(b, m.Equal) {
			return false
		}
	}
	return true
}

// memberList formats members for logs: "1@addr, 2@addr (learner)".
type memberList []Member

func (l memberList) String() string {
	var b strings.Builder
	for i, m := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d@%s", m.ID, m.Addr)
		if m.Learner {
			b.WriteString(" (learner)")
		}
	}
	return b.String()
}

// removeMember returns an edit that removes id.
func removeMember(id uint64) membershipEdit {
	return func(members []Member) ([]Member, bool, error) {
		i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
		if i < 0 {
			return nil, false, nil
		}
		return slices.Delete(members, i, i+1), true, nil
	}
}

// reloadConfig makes the last configuration entry in the log the one in
// effect; it runs at start and after a truncation removed such an entry.
func (c *core) reloadConfig() error {
	c.members, c.outgoing, c.configIndex = nil, nil, 0
	for i := c.log.lastIndex(); i > c.log.offset; i-- {
		if e := c.log.entry(i); e.Type == EntryConfChange {
			return c.applyConfig(*e)
		}
	}
	// No configuration entry after the compaction point: the configuration
	// has not changed since the snapshot, which records it.
	c.configIndex = c.log.offset
	c.setMembers(c.snap.Members, c.snap.Outgoing)
	return nil
}

// applyConfig puts the configuration held by e into effect.
func (c *core) applyConfig(e Entry) error {
	members, outgoing, err := decodeConfig(e.Data)
	if err != nil {
		return fmt.Errorf("entry %d: %w", e.Index, err)
	}
	c.configIndex = e.Index
	c.setMembers(members, outgoing)
	return nil
}

// setMembers puts a configuration into effect: members, and outgoing while
// it is joint (nil otherwise).
func (c *core) setMembers(members, outgoing []Member) {
	if len(outgoing) == 0 {
		// An empty outgoing half (a Storage may decode SnapshotMeta.Outgoing
		// as an empty list) is no joint configuration.
		outgoing = nil
	}
	old := c.allMembers()
	c.members, c.outgoing = members, outgoing
	if outgoing == nil {
		c.voters = voterIDs(members)
	} else {
		c.voters = joint{incoming: voterIDs(members), outgoing: voterIDs(outgoing)}
	}
	if c.role != Leader {
		return
	}
	// Track progress of new members. Removed ones keep being sent the log
	// until they know their removal committed, so that they stop
	// campaigning (dissertation §4.2.3) and say they were removed, instead
	// of waiting forever (see maybeRetireLeaving).
	all := c.allMembers()
	next := make(map[uint64]*progress, len(all))
	for _, m := range all {
		pr := c.progress[m.ID]
		if pr == nil {
			pr = c.newProgress(m.ID)
		}
		pr.learner = !c.voters.contains(m.ID)
		next[m.ID] = pr
	}
	var leaving []leavingMember
	for _, l := range c.leaving {
		if _, ok := next[l.ID]; !ok {
			next[l.ID] = c.progress[l.ID]
			leaving = append(leaving, l)
		}
	}
	for _, m := range old {
		if _, ok := next[m.ID]; !ok && m.ID != c.id && c.progress[m.ID] != nil {
			next[m.ID] = c.progress[m.ID]
			leaving = append(leaving, leavingMember{Member: m, removedAt: c.configIndex})
		}
	}
	slices.SortFunc(leaving, func(a, b leavingMember) int { return cmp.Compare(a.ID, b.ID) })
	c.progress, c.leaving = next, leaving
}

// allMembers returns the members of the configuration in effect, both
// halves while it is joint: the incoming members, then those that are only
// in the outgoing half.
func (c *core) allMembers() []Member {
	if c.outgoing == nil {
		return c.members
	}
	return unionMembers(c.members, c.outgoing)
}

// unionMembers returns a's members, then those of b's whose ID is not in a.
func unionMembers(a, b []Member) []Member {
	all := slices.Clone(a)
	for _, m := range b {
		if !slices.ContainsFunc(all, func(o Member) bool { return o.ID == m.ID }) {
			all = append(all, m)
		}
	}
	return all
}

// leavingMember is a member that a configuration entry removed, which the
// leader still sends the log and heartbeats (see maybeRetireLeaving).
type leavingMember struct {
	Member
	removedAt uint64 // the index of the configuration entry that removed it
	ticks     int    // ticks since its removal committed
}

// maybeRetireLeaving stops replicating to the leaving member id once it
// reports a commit index that covers its removal: it then applies its
// removal and knows it (Status.Removed, ErrRemoved). Until then the leader
// keeps sending it the log and heartbeats, also after the removal commits,
// since the message carrying the new commit index may be lost, and the
// transport keeps it as a peer (see peerMembers).
func (c *core) maybeRetireLeaving(id, commit uint64) {
	for i, l := range c.leaving {
		if l.ID == id && commit >= l.removedAt && c.log.committed >= l.removedAt {
			c.retireLeaving(i)
			return
		}
	}
}

// tickLeaving gives up on leaving members that have not confirmed their
// removal two election timeouts after it committed: they are down or cut
// off, and a leader must not keep a removed node's lane open for ever.
func (c *core) tickLeaving() {
	for i := 0; i < len(c.leaving); i++ {
		l := &c.leaving[i]
		if c.log.committed < l.removedAt {
			continue
		}
		if l.ticks++; l.ticks >= 2*c.electionTicks {
			c.logger.Info("removed member did not confirm its removal; no longer sending to it", zap.Uint64("member", l.ID))
			c.retireLeaving(i)
			i--
		}
	}
}

func (c *core) retireLeaving(i int) {
	delete(c.progress, c.leaving[i].ID)
	c.leaving = slices.Delete(c.leaving, i, i+1)
}

// replicaIDs lists the nodes the leader sends the log to: the other
// members, then those whose removal has not committed yet.
func (c *core) replicaIDs() []uint64 {
	all := c.allMembers()
	ids := make([]uint64, 0, len(all)+len(c.leaving))
	for _, m := range all {
		if m.ID != c.id {
			ids = append(ids, m.ID)
		}
	}
	for _, l := range c.leaving {
		ids = append(ids, l.ID)
	}
	return ids
}

// peerMembers returns the nodes this node exchanges messages with: the
// members of every configuration from the last committed one to the latest,
// with the latest address of each, and on a leader the leaving members it
// still replicates to. A member that is leaving stays in it until its
// removal commits, and on the leader until it knows of it, so that the
// leader keeps sending it the log and it learns of its removal
// (dissertation §4.2.2-4.2.3), and so that the followers can answer a
// leader that is removing itself until then.
func (c *core) peerMembers() []Member {
	peers := slices.Clone(c.allMembers())
	for _, l := range c.leaving {
		peers = unionMembers(peers, []Member{l.Member})
	}
	c.earlierConfigs(func(members, outgoing []Member) bool {
		peers = unionMembers(unionMembers(peers, members), outgoing)
		return true
	})
	return peers
}

// earlierConfigs calls visit with each configuration before the one in
// effect, newest first, down to the last one this node knows committed,
// while visit returns true; none when the one in effect has committed.
// Until then, any of them may still be the cluster's (the latest may be
// overwritten).
func (c *core) earlierConfigs(visit func(members, outgoing []Member) bool) {
	if c.configIndex <= c.log.committed {
		return
	}
	for i := c.configIndex - 1; i > c.log.offset; i-- {
		e := c.log.entry(i)
		if e.Type != EntryConfChange {
			continue
		}
		// It decoded when it was appended; a failure here cannot happen.
		if members, outgoing, err := decodeConfig(e.Data); err == nil && !visit(members, outgoing) {
			return
		}
		if i <= c.log.committed {
			return
		}
	}
	visit(c.snap.Members, c.snap.Outgoing)
}

// member returns the member with id, if it is one (of either half of a
// joint configuration; the incoming half's record first).
func (c *core) member(id uint64) (Member, bool) {
	for _, members := range [][]Member{c.members, c.outgoing} {
		if i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id }); i >= 0 {
			return members[i], true
		}
	}
	return Member{}, false
}
