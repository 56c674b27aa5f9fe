package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"sync"
	"testing"
	"time"
)

// hashSM's state is a count and a running hash of every command: a small
// snapshot however long the log, like a compacted key-value store.
type hashSM struct {
	mu    sync.Mutex
	count uint64
	sum   uint64
}

func (s *hashSM) Apply(e Entry) any {
	h := fnv.New64a()
	h.Write(e.Data)
	s.mu.Lock()
	s.count++
	s.sum = s.sum*31 + h.Sum64()
	s.mu.Unlock()
	return nil
}

func (s *hashSM) Snapshot() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return hashSnapshot{s.count, s.sum}, nil
}

func (s *hashSM) Restore(r io.Reader) error {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return errors.New("short hashSM snapshot")
	}
	s.mu.Lock()
	s.count, s.sum = binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
	s.mu.Unlock()
	return nil
}

type hashSnapshot [2]uint64

func (h hashSnapshot) WriteTo(w io.Writer) (int64, error) {
	b := binary.LittleEndian.AppendUint64(nil, h[0])
	b = binary.LittleEndian.AppendUint64(b, h[1])
	n, err := w.Write(b)
	return int64(n), err
}
func (hashSnapshot) Release() {}

// BenchmarkSnapshot_CatchUp1M: a follower misses 1,000,000 proposals of 128
// bytes (the leader snapshots every 16,384 entries by default and compacts);
// the benchmark times how long it takes, once the network heals, to have
// the follower's state machine equal the leader's. 3 voters, in memory.
//
//	go test -run '^$' -bench BenchmarkSnapshot_CatchUp1M -benchtime 1x -count 3
func BenchmarkSnapshot_CatchUp1M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nw := NewInmemNetwork()
		members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
		nodes := map[uint64]*Node{}
		sms := map[uint64]*hashSM{}
		for _, m := range members {
			sms[m.ID] = &hashSM{}
			n, err := NewNode(Config{ID: m.ID, InitialMembers: members, ElectionTimeout: time.Second, Seed: int64(m.ID)},
				sms[m.ID], NewMemoryStorage(), nw.Transport(m.ID))
			if err != nil {
				b.Fatal(err)
			}
			nodes[m.ID] = n
		}
		var leader uint64
		for leader == 0 {
			for id, n := range nodes {
				if n.Status().Role == Leader && n.LinearizableRead(context.Background()) == nil {
					leader = id
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		lagging := uint64(1)
		if lagging == leader {
			lagging = 2
		}
		nw.Isolate(lagging)
		cmd := make([]byte, 128)
		var wg sync.WaitGroup
		const total, workers = 1_000_000, 64
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < total/workers; k++ {
					if _, err := nodes[leader].Propose(context.Background(), cmd); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		target := nodes[leader].Status().AppliedIndex
		b.StartTimer()
		start := time.Now()
		nw.Heal()
		for nodes[lagging].Status().AppliedIndex < target {
			time.Sleep(time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		b.ReportMetric(took.Seconds()*1000, "catchup-ms")
		if sms[lagging].sum != sms[leader].sum && sms[lagging].count == sms[leader].count {
			b.Fatal("the caught-up state differs from the leader's")
		}
		for _, n := range nodes {
			n.Close()
		}
		nw.Close()
	}
}

// BenchmarkSnapshot_Transfer64MiB measures taking a 64 MiB snapshot on the
// leader (FileStorage without fsync), streaming it in 256 KiB chunks and
// restoring it on a lagging follower; MB/s is of the snapshot's size.
func BenchmarkSnapshot_Transfer64MiB(b *testing.B) {
	const size = 64 << 20
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nw := NewInmemNetwork()
		members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
		nodes := map[uint64]*Node{}
		sms := map[uint64]*bigSM{}
		var stores []*FileStorage
		for _, m := range members {
			st, err := OpenFileStorage(b.TempDir(), WithNoSync())
			if err != nil {
				b.Fatal(err)
			}
			stores = append(stores, st)
			sms[m.ID] = &bigSM{size: size}
			n, err := NewNode(Config{ID: m.ID, InitialMembers: members, ElectionTimeout: 200 * time.Millisecond, Seed: int64(m.ID),
				SnapshotThreshold: 1 << 30, TrailingEntries: 1}, sms[m.ID], st, nw.Transport(m.ID))
			if err != nil {
				b.Fatal(err)
			}
			nodes[m.ID] = n
		}
		var leader uint64
		for leader == 0 {
			for id, n := range nodes {
				if n.Status().Role == Leader && n.LinearizableRead(context.Background()) == nil {
					leader = id
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		lagging := uint64(1)
		if lagging == leader {
			lagging = 2
		}
		nw.Isolate(lagging)
		for k := 0; k < 10; k++ {
			if _, err := nodes[leader].Propose(context.Background(), []byte("x")); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := nodes[leader].Snapshot(context.Background()); err != nil {
			b.Fatal(err)
		}
		nw.Heal()
		if _, err := nodes[leader].Propose(context.Background(), []byte("y")); err != nil {
			b.Fatal(err)
		}
		for sms[lagging].restored.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		for _, n := range nodes {
			n.Close()
		}
		for _, st := range stores {
			st.Close()
		}
		nw.Close()
	}
}
