package raft

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// Helpers that drive pure cores in tests, with no goroutines and no clock.

type coreOption func(*coreConfig)

func withEntries(ents ...Entry) coreOption {
	return func(c *coreConfig) { c.entries = ents }
}

func withHardState(hs HardState) coreOption {
	return func(c *coreConfig) { c.hardState = hs }
}

func withoutPreVote() coreOption { return func(c *coreConfig) { c.preVote = false } }

// configEntry is the founding configuration entry with the given voters.
func configEntry(index, term uint64, voters ...uint64) Entry {
	members := make([]Member, len(voters))
	for i, id := range voters {
		members[i] = Member{ID: id}
	}
	return Entry{Index: index, Term: term, Type: EntryConfChange, Data: encodeMembers(members)}
}

// newTestCore returns a core whose log starts with a configuration entry of
// voters at index 1, term 1, followed by any withEntries entries.
func newTestCore(t *testing.T, id uint64, voters []uint64, opts ...coreOption) *core {
	t.Helper()
	cfg := coreConfig{
		id:                    id,
		electionTicks:         10,
		heartbeatTicks:        1,
		preVote:               true,
		checkQuorum:           true,
		maxInflight:           8,
		maxAppendBytes:        1 << 20,
		maxUncommittedEntries: 1 << 10,
		maxUncommittedBytes:   1 << 20,
		seed:                  int64(id),
		hardState:             HardState{Term: 1, Commit: 1},
	}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.entries = append([]Entry{configEntry(1, 1, voters...)}, cfg.entries...)
	c, err := newCore(cfg)
	require.NoError(t, err)
	return c
}

// threeCores returns cores 1, 2 and 3 of a three-voter cluster, connected.
func threeCores(t *testing.T, opts ...coreOption) (c1, c2, c3 *core, n *coreNet) {
	t.Helper()
	voters := []uint64{1, 2, 3}
	c1, c2, c3 = newTestCore(t, 1, voters, opts...), newTestCore(t, 2, voters, opts...), newTestCore(t, 3, voters, opts...)
	return c1, c2, c3, newCoreNet(t, c1, c2, c3)
}

// coreNet delivers messages between cores synchronously, persisting every
// ready at once, as a runtime with an instant disk would. It checks Raft's
// invariants (invariantChecker) after every ready and every round of
// deliveries, so every test that uses it checks them.
type coreNet struct {
	t       *testing.T
	cores   map[uint64]*core
	saved   map[uint64]HardState
	applied map[uint64][]Entry
	reads   map[uint64][]readResult
	// drop, if set, decides which messages are lost.
	drop  func(m Message) bool
	check *invariantChecker
	// report is given a broken invariant; it fails the test unless a test
	// of the checker itself replaces it.
	report func(err error)
}

func newCoreNet(t *testing.T, cores ...*core) *coreNet {
	n := &coreNet{t: t, cores: map[uint64]*core{}, saved: map[uint64]HardState{}, applied: map[uint64][]Entry{}, reads: map[uint64][]readResult{},
		check: newInvariantChecker()}
	n.report = func(err error) {
		t.Helper()
		t.Fatal(err)
	}
	for _, c := range cores {
		n.cores[c.id] = c
		n.saved[c.id] = c.hardState()
	}
	n.mustHold()
	return n
}

// checkInvariants runs the invariant checker over every core.
func (n *coreNet) checkInvariants() error {
	ids := n.ids()
	cores := make([]*core, len(ids))
	for i, id := range ids {
		cores[i] = n.cores[id]
	}
	return n.check.check(cores...)
}

// mustHold reports a broken invariant.
func (n *coreNet) mustHold() {
	n.t.Helper()
	if err := n.checkInvariants(); err != nil {
		n.report(err)
	}
}

func (n *coreNet) ids() []uint64 {
	ids := make([]uint64, 0, len(n.cores))
	for id := range n.cores {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// collect runs ready on one core, persists, and returns its messages.
func (n *coreNet) collect(id uint64) []Message {
	c := n.cores[id]
	var out []Message
	for {
		rd := c.ready(n.saved[id])
		if rd.empty() {
			return out
		}
		if err := n.check.writtenEntries(c, rd.entries); err != nil {
			n.report(err)
		}
		n.saved[id] = rd.hardState
		if k := len(rd.entries); k > 0 {
			c.persisted(rd.entries[k-1].Index, rd.entries[k-1].Term)
		}
		for i := range rd.committed {
			if err := n.check.applied(c, &rd.committed[i]); err != nil {
				n.report(err)
			}
		}
		n.applied[id] = append(n.applied[id], rd.committed...)
		n.reads[id] = append(n.reads[id], rd.reads...)
		out = append(out, rd.messages...)
		n.mustHold()
	}
}

// stabilize delivers messages until none is left.
func (n *coreNet) stabilize() {
	for round := 0; ; round++ {
		require.Less(n.t, round, 10000, "the cores never went quiet")
		var msgs []Message
		for _, id := range n.ids() {
			msgs = append(msgs, n.collect(id)...)
		}
		if len(msgs) == 0 {
			return
		}
		for _, m := range msgs {
			if c := n.cores[m.To]; c != nil && (n.drop == nil || !n.drop(m)) {
				c.step(m)
			}
		}
		n.mustHold()
	}
}

// tickUntil ticks core id until cond holds, delivering messages meanwhile.
func (n *coreNet) tickUntil(id uint64, cond func() bool) {
	n.t.Helper()
	for i := 0; !cond(); i++ {
		require.Less(n.t, i, 1000, "condition never held")
		n.cores[id].tick()
		n.stabilize()
	}
}

// elect makes id the leader and lets the cluster settle.
func (n *coreNet) elect(id uint64) {
	n.t.Helper()
	n.tickUntil(id, func() bool { return n.cores[id].role == Leader })
	n.stabilize()
}

func (n *coreNet) leaders() []uint64 {
	var ls []uint64
	for _, id := range n.ids() {
		if n.cores[id].role == Leader {
			ls = append(ls, id)
		}
	}
	return ls
}

// msgsOf filters messages by type.
func msgsOf(msgs []Message, t MessageType) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == t {
			out = append(out, m)
		}
	}
	return out
}

func cmd(s string) []byte { return []byte(s) }
