package raft

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRandomized_SafetyInvariants runs many seeded random schedules of five
// cores: random ticks, message drops, duplicates and reordering, node
// isolation and proposals. After every step it checks Election Safety (one
// leader per term, Raft §5.2), State Machine Safety (no two nodes commit
// different entries at an index, §5.4.3) and that commit indexes never go
// back. A failing seed is printed; replay it with RAFT_SEED=<seed>.
func TestRandomized_SafetyInvariants(t *testing.T) {
	seeds := 200
	base := int64(1)
	if s := os.Getenv("RAFT_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
		base, seeds = v, 1
	}
	var total scheduleStats
	for i := 0; i < seeds; i++ {
		seed := base + int64(i)
		st, err := runRandomScheduleStats(seed, 1500, coreHooks{})
		if err != nil {
			t.Fatalf("seed %d (replay with RAFT_SEED=%d): %v", seed, seed, err)
		}
		total.terms += st.terms
		total.committed += st.committed
	}
	t.Logf("%d seeds: %d terms with a leader, %d entries committed", seeds, total.terms, total.committed)
	require.Greater(t, total.terms, seeds, "the schedules elect leaders")
	require.Greater(t, total.committed, 5*seeds, "the schedules commit entries")
}

// TestRandomized_CatchesBrokenRules proves the invariant checks bite: with a
// rule of the protocol switched off, some seed must violate them.
func TestRandomized_CatchesBrokenRules(t *testing.T) {
	for name, hooks := range map[string]coreHooks{
		// Breaking Figure 8 needs crashes and restarts to show; the
		// simulator (docs/testing.md) covers it, TestCommit_5_4_2_Figure8 here.
		"two votes per term": {grantEveryVote: true},
	} {
		caught := false
		for seed := int64(1); seed <= 1000 && !caught; seed++ {
			caught = runRandomSchedule(seed, 1500, hooks) != nil
		}
		require.True(t, caught, "%s: no seed caught the broken rule", name)
	}
}

// scheduleStats says how much a schedule exercised, so tests can assert
// that the random runs are not vacuous.
type scheduleStats struct {
	terms, committed int
}

func runRandomSchedule(seed int64, steps int, hooks coreHooks) error {
	_, err := runRandomScheduleStats(seed, steps, hooks)
	return err
}

func runRandomScheduleStats(seed int64, steps int, hooks coreHooks) (scheduleStats, error) {
	rng := rand.New(rand.NewSource(seed))
	ids := []uint64{1, 2, 3, 4, 5}
	cores := map[uint64]*core{}
	saved := map[uint64]HardState{}
	for _, id := range ids {
		members := make([]Member, len(ids))
		for i, m := range ids {
			members[i] = Member{ID: m}
		}
		c, err := newCore(coreConfig{
			id: id, electionTicks: 6, heartbeatTicks: 1, preVote: rng.Intn(2) == 0, checkQuorum: rng.Intn(2) == 0,
			maxInflight: 4, maxAppendBytes: 64, maxUncommittedEntries: 1000, maxUncommittedBytes: 1 << 20,
			seed: rng.Int63(), hardState: HardState{Term: 1, Commit: 1},
			entries: []Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers(members)}},
		})
		if err != nil {
			return scheduleStats{}, err
		}
		c.hooks = hooks
		cores[id] = c
	}
	var queue []Message
	leaders := map[uint64]uint64{}  // term -> leader
	committed := map[uint64]Entry{} // index -> the entry committed there
	lastCommit := map[uint64]uint64{}
	isolated := map[uint64]bool{}

	collect := func(id uint64) {
		c := cores[id]
		for {
			rd := c.ready(saved[id])
			if rd.empty() {
				return
			}
			saved[id] = rd.hardState
			if k := len(rd.entries); k > 0 {
				c.persisted(rd.entries[k-1].Index, rd.entries[k-1].Term)
			}
			queue = append(queue, rd.messages...)
		}
	}
	check := func(step int) error {
		for _, id := range ids {
			c := cores[id]
			if c.role == Leader {
				if prev, ok := leaders[c.term]; ok && prev != id {
					return fmt.Errorf("step %d: two leaders in term %d: %d and %d", step, c.term, prev, id)
				}
				leaders[c.term] = id
			}
			if c.log.committed < lastCommit[id] {
				return fmt.Errorf("step %d: node %d commit went back from %d to %d", step, id, lastCommit[id], c.log.committed)
			}
			lastCommit[id] = c.log.committed
			for i := c.log.offset + 1; i <= c.log.committed; i++ {
				e := *c.log.entry(i)
				if prev, ok := committed[i]; ok && (prev.Term != e.Term || string(prev.Data) != string(e.Data)) {
					return fmt.Errorf("step %d: node %d committed %d/%d %q at %d where %d/%q was committed", step, id, e.Term, e.Index, e.Data, i, prev.Term, prev.Data)
				}
				committed[i] = e
			}
		}
		return nil
	}
	for step := 0; step < steps; step++ {
		switch r := rng.Intn(100); {
		case r < 30:
			cores[ids[rng.Intn(len(ids))]].tick()
		case r < 35:
			id := ids[rng.Intn(len(ids))]
			isolated[id] = !isolated[id]
		case r < 45:
			for _, id := range ids {
				if cores[id].role == Leader {
					_, _, _ = cores[id].propose([]byte(fmt.Sprint(seed, "/", step)))
				}
			}
		default:
			// Deliver (or drop, or duplicate) a random queued message.
			for k := 0; k < 5 && len(queue) > 0; k++ {
				i := rng.Intn(len(queue))
				m := queue[i]
				if rng.Intn(10) != 0 { // keep a duplicate 10% of the time
					queue = append(queue[:i], queue[i+1:]...)
				}
				if rng.Intn(10) == 0 || isolated[m.From] || isolated[m.To] {
					continue
				}
				cores[m.To].step(m)
			}
		}
		for _, id := range ids {
			collect(id)
		}
		if err := check(step); err != nil {
			return scheduleStats{}, err
		}
	}
	return scheduleStats{terms: len(leaders), committed: len(committed)}, nil
}
