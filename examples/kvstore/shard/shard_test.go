package shard

import (
	"fmt"
	"math"
	"math/big"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The mapping of keys to groups is part of the data's format: a change
// would look for existing keys in the wrong groups. These values were
// computed apart from this code (fmix64 of FNV-1a 64, in Python).
func TestGroupOf_Pinned(t *testing.T) {
	for _, tc := range []struct {
		key              string
		hash             uint64
		of4, of7, of1000 uint64
	}{
		{"", 0xefd01f60ba992926, 4, 7, 937},
		{"a", 0x82a2a958a9bece5b, 3, 4, 511},
		{"b", 0x6e673288764ad2d0, 2, 4, 432},
		{"hello", 0xe9c562c0fdb23244, 4, 7, 914},
		{"key-0", 0x18137ad031db6589, 1, 1, 95},
		{"key-1", 0xa002e14b20bb64ec, 3, 5, 626},
		{"user/42", 0xab51e013121d86fd, 3, 5, 670},
	} {
		assert.Equal(t, tc.hash, Hash(tc.key), "%q", tc.key)
		assert.Equal(t, tc.of4, GroupOf(tc.key, 4), "%q among 4", tc.key)
		assert.Equal(t, tc.of7, GroupOf(tc.key, 7), "%q among 7", tc.key)
		assert.Equal(t, tc.of1000, GroupOf(tc.key, 1000), "%q among 1000", tc.key)
		assert.Equal(t, uint64(1), GroupOf(tc.key, 1), "one group holds every key")
	}
}

// HashRange splits [0, 2^64) into n ranges that follow each other, of equal
// sizes (to one), and GroupOf puts a hash in the group whose range holds it.
func TestHashRange_SplitsTheHashSpaceEqually(t *testing.T) {
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	for _, n := range []int{1, 2, 3, 4, 7, 16, 1000, 1024} {
		var next uint64
		for g := uint64(1); g <= uint64(n); g++ {
			first, last := HashRange(g, n)
			require.Equal(t, next, first, "n %d: group %d starts where group %d ends", n, g, g-1)
			size := new(big.Int).Sub(new(big.Int).SetUint64(last), new(big.Int).SetUint64(first))
			size.Add(size, big.NewInt(1))
			ideal := new(big.Int).Div(two64, big.NewInt(int64(n)))
			diff := new(big.Int).Sub(size, ideal)
			assert.True(t, diff.IsInt64() && diff.Int64() >= 0 && diff.Int64() <= 1, "n %d: group %d holds %v hashes, not 2^64/n", n, g, size)
			for _, h := range []uint64{first, last, first + (last-first)/2} {
				hi, _ := mulHi(h, n)
				assert.Equal(t, g, hi+1, "n %d: hash %x is in group %d's range", n, h, g)
			}
			next = last + 1
		}
		_, last := HashRange(uint64(n), n)
		assert.Equal(t, uint64(math.MaxUint64), last, "n %d: the last group ends the hash space", n)
	}
}

func mulHi(h uint64, n int) (uint64, uint64) {
	p := new(big.Int).Mul(new(big.Int).SetUint64(h), big.NewInt(int64(n)))
	return new(big.Int).Rsh(p, 64).Uint64(), 0
}

// Keys that differ in their last characters spread over the groups: the
// reason for fmix64 after FNV-1a (sharded.go).
func TestGroupOf_SpreadsSimilarKeys(t *testing.T) {
	for _, format := range []string{"k%d", "user-%05d", "%d"} {
		count := map[uint64]int{}
		for i := range 1000 {
			count[GroupOf(fmt.Sprintf(format, i), 4)]++
		}
		for g := uint64(1); g <= 4; g++ {
			assert.InDelta(t, 250, count[g], 50, "%s: group %d holds %d of 1000 keys", format, g, count[g])
		}
	}
}
