package raft

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// Membership changes, one server at a time (dissertation §4.1): the leader
// appends a configuration entry holding the whole new member list, every
// node uses it as soon as it is in its log, and a new change may start only
// once the previous one has committed. Adding or removing a single voter
// keeps every majority of the old configuration overlapping every majority
// of the new one, so no two leaders can be elected in one term meanwhile.

// changeMembers proposes the configuration that edit makes of the current
// one. edit returns ok=false when the change is already in effect.
// membershipEdit makes a new member list from the current one (which it
// may modify: it gets a copy); ok=false says the change is in effect
// already, and an error that it cannot be made.
type membershipEdit func(members []Member) (next []Member, ok bool, err error)

func (c *core) changeMembers(edit membershipEdit) (index, term uint64, changed bool, err error) {
	if c.role != Leader {
		return 0, 0, false, c.notLeader()
	}
	if c.configIndex > c.log.committed {
		// Checked before the edit: a change that is already in the pending
		// configuration is not done until that configuration commits.
		return 0, 0, false, ErrMembershipChange
	}
	next, ok, err := edit(slices.Clone(c.members))
	if err != nil || !ok {
		return 0, 0, false, err
	}
	voters := 0
	for _, m := range next {
		if !m.Learner {
			voters++
		}
	}
	if voters == 0 {
		return 0, 0, false, fmt.Errorf("%w: the change would leave no voter", ErrInvalidConfig)
	}
	index, term, err = c.proposeConfig(next)
	return index, term, err == nil, err
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
	c.members, c.configIndex = nil, 0
	for i := c.log.lastIndex(); i > c.log.offset; i-- {
		if e := c.log.entry(i); e.Type == EntryConfChange {
			return c.applyConfig(*e)
		}
	}
	// No configuration entry after the compaction point: the configuration
	// has not changed since the snapshot, which records it.
	c.configIndex = c.log.offset
	c.setMembers(c.snap.Members)
	return nil
}

// applyConfig puts the configuration held by e into effect.
func (c *core) applyConfig(e Entry) error {
	members, err := decodeMembers(e.Data)
	if err != nil {
		return fmt.Errorf("entry %d: %w", e.Index, err)
	}
	c.configIndex = e.Index
	c.setMembers(members)
	return nil
}

func (c *core) setMembers(members []Member) {
	old := c.members
	c.members = members
	var voters majority
	for _, m := range members {
		if !m.Learner {
			voters = append(voters, m.ID)
		}
	}
	c.voters = voters
	if c.role != Leader {
		return
	}
	// Track progress of new members. Removed ones keep being sent the log
	// until they know their removal committed, so that they stop
	// campaigning (dissertation §4.2.3) and say they were removed, instead
	// of waiting forever (see maybeRetireLeaving).
	next := make(map[uint64]*progress, len(members))
	for _, m := range members {
		pr := c.progress[m.ID]
		if pr == nil {
			pr = c.newProgress(m.ID)
		}
		pr.learner = m.Learner
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
	ids := make([]uint64, 0, len(c.members)+len(c.leaving))
	for _, m := range c.members {
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
	peers := slices.Clone(c.members)
	add := func(members []Member) {
		for _, m := range members {
			if !slices.ContainsFunc(peers, func(p Member) bool { return p.ID == m.ID }) {
				peers = append(peers, m)
			}
		}
	}
	for _, l := range c.leaving {
		add([]Member{l.Member})
	}
	if c.configIndex <= c.log.committed {
		return peers
	}
	for i := c.configIndex - 1; i > c.log.offset; i-- {
		e := c.log.entry(i)
		if e.Type != EntryConfChange {
			continue
		}
		// It decoded when it was appended; a failure here cannot happen.
		if members, err := decodeMembers(e.Data); err == nil {
			add(members)
		}
		if i <= c.log.committed {
			return peers
		}
	}
	add(c.snap.Members)
	return peers
}

// member returns the member with id, if it is one.
func (c *core) member(id uint64) (Member, bool) {
	i := slices.IndexFunc(c.members, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return Member{}, false
	}
	return c.members[i], true
}
