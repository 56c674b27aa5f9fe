// Package shard maps the kvstore example's keys to Raft groups, for the
// sharded variant (kvstore -groups N), which keeps the keys in N Raft
// groups, with group IDs 1 to N, run by one raft.Host per process. A key
// belongs to the group whose range holds the key's hash:
//
//	hash  = fmix64(FNV-1a 64 of the key's bytes)
//	group = 1 + floor(hash × N / 2^64)
//
// that is, the hash space [0, 2^64) is split into N equal ranges, group 1
// holding the lowest (HashRange gives each group's). The mapping depends
// on the key and N only: every node computes the same group for a key,
// and N is fixed for the data's life (kvstore records it in the data
// directory and refuses another -groups).
//
// fmix64 is MurmurHash3's 64-bit finalizer. It is there because the ranges
// are read from the hash's high bits, which FNV-1a alone hardly changes
// with a key's last bytes: without it the keys "a" to "z" all fall in one
// of four groups, and "k0" to "k999" in three, 100/300/600/0; with it,
// 6 to 7 of "a" to "z" per group and 230 to 262 of the thousand.
package shard

import (
	"hash/fnv"
	"math/bits"
)

// GroupOf returns the ID, 1 to n, of the group that holds key among n
// groups. n must be at least 1.
func GroupOf(key string, n int) uint64 {
	// The high word of hash × n is floor(hash × n / 2^64), in [0, n).
	hi, _ := bits.Mul64(Hash(key), uint64(n))
	return hi + 1
}

// Hash is the 64-bit hash of key whose range names its group:
// fmix64(FNV-1a 64(key)).
func Hash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key)) //nolint:errcheck // hash.Hash never fails
	k := h.Sum64()
	// fmix64, MurmurHash3's finalizer: every bit of k reaches the high bits.
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// HashRange returns the hashes of the keys of group g among n groups: from
// first to last, both included. g must be 1 to n.
func HashRange(g uint64, n int) (first, last uint64) {
	// The smallest hash h with floor(h × n / 2^64) = g-1 is
	// ceil((g-1) × 2^64 / n).
	start := func(i uint64) uint64 {
		q, r := bits.Div64(i, 0, uint64(n)) // (i × 2^64) / n, for i < n
		if r != 0 {
			q++
		}
		return q
	}
	first = start(g - 1)
	if g == uint64(n) {
		return first, ^uint64(0)
	}
	return first, start(g) - 1
}
