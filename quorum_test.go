package raft

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestQuorumMajorityCommitted(t *testing.T) {
	cases := []struct {
		voters majority
		acks   map[uint64]uint64
		want   uint64
	}{
		{majority{1}, map[uint64]uint64{1: 5}, 5},
		{majority{1, 2, 3}, map[uint64]uint64{1: 5, 2: 3, 3: 1}, 3},
		{majority{1, 2, 3}, map[uint64]uint64{1: 5}, 0},
		{majority{1, 2, 3, 4}, map[uint64]uint64{1: 9, 2: 8, 3: 7, 4: 1}, 7},
		{majority{1, 2, 3, 4, 5}, map[uint64]uint64{1: 9, 2: 8, 3: 1, 4: 1, 5: 7}, 7},
		{majority{}, map[uint64]uint64{}, 0},
	}
	for _, tc := range cases {
		got := tc.voters.committed(func(id uint64) uint64 { return tc.acks[id] })
		assert.Equal(t, tc.want, got, "voters %v acks %v", tc.voters, tc.acks)
	}
}

func TestQuorumMajorityVote(t *testing.T) {
	q := majority{1, 2, 3, 4, 5}
	assert.Equal(t, votePending, q.vote(map[uint64]bool{1: true, 2: true}))
	assert.Equal(t, voteWon, q.vote(map[uint64]bool{1: true, 2: true, 3: true}))
	assert.Equal(t, voteLost, q.vote(map[uint64]bool{1: true, 2: false, 3: false, 4: false}))
	assert.Equal(t, votePending, q.vote(map[uint64]bool{1: true, 9: true, 8: true}), "non-voters do not count")
}
