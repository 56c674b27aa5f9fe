package compare

import (
	"testing"

	"github.com/lni/dragonboat/v4"
)

// TestHarnessesTCPAndDragonboat is TestHarnesses for the TCP harnesses and
// for dragonboat: 3000 proposals from 64 proposers complete without error,
// and the cluster stops without leaving goroutines or open files behind.
// For dragonboat it also checks that the leader's state machine applied every
// proposal (and the readiness check's one) exactly once.
func TestHarnessesTCPAndDragonboat(t *testing.T) {
	const total = 3000
	cases := map[string]func(testing.TB) (func() proposeFunc, func(testing.TB), func()){
		"raftkit-tcp": func(tb testing.TB) (func() proposeFunc, func(testing.TB), func()) {
			c := systems["RaftkitTCP"](tb, defaultShape)
			return c.newProposer, nil, c.stop
		},
		"hashicorp-tcp": func(tb testing.TB) (func() proposeFunc, func(testing.TB), func()) {
			c := systems["HashicorpTCP"](tb, defaultShape)
			return c.newProposer, nil, c.stop
		},
		"dragonboat-tcp": func(tb testing.TB) (func() proposeFunc, func(testing.TB), func()) {
			leader, stop := dragonboatCluster(tb, defaultShape, true, true)
			return dragonboatProposer(leader, defaultShape.cmdSize), dragonboatCheckApplied(leader, total+1), stop
		},
		"dragonboat-mem": func(tb testing.TB) (func() proposeFunc, func(testing.TB), func()) {
			leader, stop := dragonboatCluster(tb, defaultShape, false, false)
			return dragonboatProposer(leader, defaultShape.cmdSize), dragonboatCheckApplied(leader, total+1), stop
		},
		"dragonboat-file": func(tb testing.TB) (func() proposeFunc, func(testing.TB), func()) {
			leader, stop := dragonboatCluster(tb, defaultShape, true, false)
			return dragonboatProposer(leader, defaultShape.cmdSize), dragonboatCheckApplied(leader, total+1), stop
		},
	}
	for name, start := range cases {
		t.Run(name, func(t *testing.T) {
			defer checkLeaks(t)()
			newProposer, check, stop := start(t)
			defer stop()
			proposeConcurrently(t, proposers, newProposer, total)
			if check != nil {
				check(t)
			}
		})
	}
}

// dragonboatCheckApplied checks that the leader's state machine has applied
// want entries.
func dragonboatCheckApplied(leader *dragonboat.NodeHost, want uint64) func(testing.TB) {
	return func(tb testing.TB) {
		got, err := dragonboatApplied(leader)
		if err != nil {
			tb.Fatal(err)
		}
		if got != want {
			tb.Errorf("dragonboat: the leader applied %d entries, want %d", got, want)
		}
	}
}
