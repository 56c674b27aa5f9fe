package raft

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// invariantChecker checks what Raft guarantees at all times (the paper's
// Figure 3) over the cores of one test, after every step of it. The
// simulator (sim_test.go) and coreNet (core_helpers_test.go) run it, so
// every test that drives cores checks these, not only the tests written
// for them:
//
//   - Election Safety: at most one leader in a term (§5.2).
//   - Leader Append-Only: a leader never shortens its log in its term (§5.3).
//   - Log Matching: an index and a term name one entry, with one
//     predecessor term, wherever it is written (§5.3).
//   - Leader Completeness: a leader holds every committed entry when it
//     takes office (§5.4).
//   - State Machine Safety: no two cores commit or apply different entries
//     at an index (§5.4.3).
//
// and of each core (checkCore): its term and commit index never go back,
// and its log's indexes keep the order raftLog's invariant states.
//
// It costs little, since the simulator runs it after every microtick: the
// per-core checks are constant time, entries are checked once, as they are
// written, committed or applied, and a leader's log once, as it takes office.
type invariantChecker struct {
	leaders      map[uint64]uint64     // term -> its leader
	written      map[[2]uint64]entryID // (index, term) -> the one entry they name
	committed    map[uint64]entryID    // index -> the entry committed there
	maxCommitted uint64
	marks        map[*core]coreMark // what each core showed at its last check
	elections    int
	// onLeader, if set, is told of each leader as it is first seen.
	onLeader func(c *core)
}

// entryID identifies an entry by what Log Matching compares.
type entryID struct {
	term     uint64
	data     string
	prevTerm uint64 // zero where only term and data are compared
}

// coreMark is what a core showed at its last check.
type coreMark struct {
	term, commit uint64
	leading      bool   // it led in term
	last         uint64 // its last index then
}

func newInvariantChecker() *invariantChecker {
	return &invariantChecker{leaders: map[uint64]uint64{}, written: map[[2]uint64]entryID{}, committed: map[uint64]entryID{}, marks: map[*core]coreMark{}}
}

// checkCore checks what must hold of one core at any time, against what it
// showed at its last check. A restarted node is a new core: its term and
// commit may be below its previous incarnation's, which had not all reached
// the disk.
func (k *invariantChecker) checkCore(c *core) error {
	l := &c.log
	mark := k.marks[c]
	switch {
	case c.term < mark.term:
		return fmt.Errorf("node %d: term went back from %d to %d", c.id, mark.term, c.term)
	case l.committed < mark.commit:
		return fmt.Errorf("node %d: commit index went back from %d to %d", c.id, mark.commit, l.committed)
	case l.committed > l.lastIndex() || l.committed < l.offset:
		return fmt.Errorf("node %d: commit %d outside the log (%d, %d]", c.id, l.committed, l.offset, l.lastIndex())
	case l.applying > l.committed:
		return fmt.Errorf("node %d: applying %d beyond the commit index %d", c.id, l.applying, l.committed)
	case l.stable < l.offset || l.stable > l.handedOff || l.handedOff > l.lastIndex():
		return fmt.Errorf("node %d: stable %d / handed off %d out of order (offset %d, last %d)", c.id, l.stable, l.handedOff, l.offset, l.lastIndex())
	case l.lastTerm() > c.term:
		return fmt.Errorf("node %d: last entry's term %d above the current term %d", c.id, l.lastTerm(), c.term)
	case len(l.entries) > 0 && (l.entries[0].Index != l.offset+1 || l.entries[len(l.entries)-1].Index != l.lastIndex()):
		return fmt.Errorf("node %d: entries %d..%d after offset %d", c.id, l.entries[0].Index, l.entries[len(l.entries)-1].Index, l.offset)
	case mark.leading && c.role == Leader && c.term == mark.term && l.lastIndex() < mark.last:
		return fmt.Errorf("leader append-only: leader %d of term %d shortened its log from %d to %d", c.id, c.term, mark.last, l.lastIndex())
	}
	return nil
}

// checkLogShape checks every entry of c's log: indexes follow each other and
// terms never go down. checkCore and writtenEntries check this entry by
// entry as the log grows; the fuzz target, which feeds one core hostile
// messages, checks the whole log instead.
func checkLogShape(l *raftLog) error {
	prevTerm := l.offsetTerm
	for i, e := range l.entries {
		if e.Index != l.offset+1+uint64(i) {
			return fmt.Errorf("entry %d at position %d", e.Index, i)
		}
		if e.Term < prevTerm {
			return fmt.Errorf("entry %d has term %d below its predecessor's %d", e.Index, e.Term, prevTerm)
		}
		prevTerm = e.Term
	}
	return nil
}

// check runs every check over cores, which are the cores running now.
func (k *invariantChecker) check(cores ...*core) error {
	for _, c := range cores {
		if err := k.checkCore(c); err != nil {
			return err
		}
		if c.role == Leader {
			if err := k.leader(c); err != nil {
				return err
			}
		}
		if err := k.commits(c); err != nil {
			return err
		}
		k.marks[c] = coreMark{term: c.term, commit: c.log.committed, leading: c.role == Leader, last: c.log.lastIndex()}
	}
	return nil
}

// leader checks Election Safety and, for a leader first seen, Leader
// Completeness.
func (k *invariantChecker) leader(c *core) error {
	prev, ok := k.leaders[c.term]
	if ok && prev != c.id {
		return fmt.Errorf("election safety: %d and %d both lead term %d", prev, c.id, c.term)
	}
	if ok {
		return nil
	}
	k.leaders[c.term] = c.id
	k.elections++
	if k.onLeader != nil {
		k.onLeader(c)
	}
	for i := max(1, c.log.offset); i <= k.maxCommitted; i++ {
		want, ok := k.committed[i]
		if !ok {
			continue
		}
		if t, ok := c.log.term(i); !ok || t != want.term {
			return fmt.Errorf("leader completeness: leader %d of term %d lacks committed entry %d/%d", c.id, c.term, want.term, i)
		}
	}
	return nil
}

// commits records the entries c committed since its last check, and checks
// that every core commits the same entry at an index.
func (k *invariantChecker) commits(c *core) error {
	for i := max(k.marks[c].commit, c.log.offset) + 1; i <= c.log.committed; i++ {
		e := c.log.entry(i)
		if err := k.commit(c.id, "committed", e); err != nil {
			return err
		}
	}
	return nil
}

func (k *invariantChecker) commit(id uint64, what string, e *Entry) error {
	if prev, ok := k.committed[e.Index]; ok {
		if prev.term != e.Term || prev.data != string(e.Data) {
			return fmt.Errorf("state machine safety: node %d %s %d/%d %q where %d/%q was committed", id, what, e.Term, e.Index, e.Data, prev.term, prev.data)
		}
		return nil
	}
	k.committed[e.Index] = entryID{term: e.Term, data: string(e.Data)}
	k.maxCommitted = max(k.maxCommitted, e.Index)
	return nil
}

// writtenEntries checks entries c hands to its storage: they follow each
// other and c's log before them, and Log Matching holds for each.
func (k *invariantChecker) writtenEntries(c *core, ents []Entry) error {
	for i, e := range ents {
		var prevTerm uint64
		if i > 0 {
			prevTerm = ents[i-1].Term
			if e.Index != ents[i-1].Index+1 {
				return fmt.Errorf("node %d writes entry %d after %d", c.id, e.Index, ents[i-1].Index)
			}
		} else {
			prevTerm, _ = c.log.term(e.Index - 1)
		}
		if e.Term < prevTerm {
			return fmt.Errorf("node %d writes entry %d of term %d after one of term %d", c.id, e.Index, e.Term, prevTerm)
		}
		id := entryID{term: e.Term, data: string(e.Data), prevTerm: prevTerm}
		key := [2]uint64{e.Index, e.Term}
		if prev, ok := k.written[key]; ok && prev != id {
			return fmt.Errorf("log matching: node %d holds %d/%d as %+v, elsewhere %+v", c.id, e.Term, e.Index, id, prev)
		}
		k.written[key] = id
	}
	return nil
}

// applied checks an entry c's state machine applies: it is the entry
// committed there. Applied means committed, so it is recorded as such too: a
// snapshot may compact it away before the next check sees it committed.
func (k *invariantChecker) applied(c *core, e *Entry) error {
	return k.commit(c.id, "applied", e)
}

// The checker must fail a test whose cores break a rule: coreNet's run of
// it catches a rule switched off through a test-only hook (two votes in a
// term), and each check catches a state no correct core reaches.
func TestInvariantChecker_CatchesBrokenRules(t *testing.T) {
	t.Run("coreNet: two votes in a term (§5.2)", func(t *testing.T) {
		c1, c2, c3, n := threeCores(t, withoutPreVote())
		for _, c := range []*core{c1, c2, c3} {
			c.hooks.grantEveryVote = true
		}
		var caught []error
		n.report = func(err error) { caught = append(caught, err) }
		// Nodes 1 and 2 campaign in the same term; node 3 votes for both.
		for c1.role != Candidate {
			c1.tick()
		}
		for c2.role != Candidate {
			c2.tick()
		}
		require.Equal(t, c1.term, c2.term)
		n.stabilize()
		require.NotEmpty(t, caught, "the checker let two leaders of a term pass")
		assert.ErrorContains(t, caught[0], "election safety")
	})
	t.Run("commit index goes back", func(t *testing.T) {
		c1, _, _, n := threeCores(t)
		n.elect(1)
		require.NoError(t, n.checkInvariants())
		c1.log.committed--
		assert.ErrorContains(t, n.checkInvariants(), "commit index went back")
	})
	t.Run("another entry applied at a committed index", func(t *testing.T) {
		c1, c2, _, n := threeCores(t)
		n.elect(1)
		e := *c1.log.entry(c1.log.committed)
		e.Data = []byte("other")
		assert.ErrorContains(t, n.check.applied(c2, &e), "state machine safety")
	})
	t.Run("an index and term name two entries", func(t *testing.T) {
		c1, c2, _, n := threeCores(t)
		n.elect(1)
		next := c1.log.lastIndex() + 1
		require.NoError(t, n.check.writtenEntries(c1, []Entry{{Index: next, Term: c1.term, Data: []byte("a")}}))
		assert.ErrorContains(t, n.check.writtenEntries(c2, []Entry{{Index: next, Term: c1.term, Data: []byte("b")}}), "log matching")
	})
	t.Run("a new leader lacks a committed entry (§5.4)", func(t *testing.T) {
		c1, _, _, n := threeCores(t)
		n.elect(1)
		_, _, err := c1.propose([]byte("x"))
		require.NoError(t, err)
		n.stabilize()
		// Node 3 restarts with nothing but the founding entry and takes
		// office in a later term.
		c3 := newTestCore(t, 3, []uint64{1, 2, 3})
		c3.term, c3.role = c1.term+1, Leader
		err = n.check.check(c3)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "leader completeness")
	})
}
