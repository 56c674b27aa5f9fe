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

// snapBench is a 3-voter cluster for the snapshot benchmarks, with one
// follower isolated.
type snapBench struct {
	nw              *InmemNetwork
	nodes           map[uint64]*Node
	stores          []Storage
	leader, lagging uint64
}

func newSnapBench(b *testing.B, newSM func(id uint64) StateMachine, newStorage func(id uint64) Storage, cfg Config) *snapBench {
	b.Helper()
	sb := &snapBench{nw: NewInmemNetwork(), nodes: map[uint64]*Node{}}
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	var list []*Node
	for _, m := range members {
		c := cfg
		c.ID, c.InitialMembers, c.Seed = m.ID, members, int64(m.ID)
		st := newStorage(m.ID)
		sb.stores = append(sb.stores, st)
		n, err := NewNode(c, newSM(m.ID), st, sb.nw.Transport(m.ID))
		if err != nil {
			b.Fatal(err)
		}
		sb.nodes[m.ID] = n
		list = append(list, n)
	}
	l := waitBenchLeader(list)
	if l == nil {
		sb.close()
		b.Fatal("no leader")
	}
	sb.leader, sb.lagging = l.cfg.ID, 1
	if sb.lagging == sb.leader {
		sb.lagging = 2
	}
	sb.nw.Isolate(sb.lagging)
	return sb
}

func (sb *snapBench) close() {
	for _, n := range sb.nodes {
		n.Close()
	}
	sb.nw.Close()
	for _, st := range sb.stores {
		if c, ok := st.(io.Closer); ok {
			c.Close()
		}
	}
}

// BenchmarkSnapshot_CatchUp1M: a follower misses 1,000,000 proposals of 128
// bytes (the leader snapshots every 16,384 entries by default and compacts);
// the benchmark times how long it takes, once the network heals, to have
// the follower's state machine equal the leader's. 3 voters, in memory.
//
//	go test -run '^$' -bench BenchmarkSnapshot_CatchUp1M -benchtime 1x -count 3
func BenchmarkSnapshot_CatchUp1M(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sms := map[uint64]*hashSM{}
		sb := newSnapBench(b, func(id uint64) StateMachine { sms[id] = &hashSM{}; return sms[id] },
			func(uint64) Storage { return NewMemoryStorage() }, Config{ElectionTimeout: time.Second})
		cmd := make([]byte, 128)
		var wg sync.WaitGroup
		const total, workers = 1_000_000, 64
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < total/workers; k++ {
					if _, err := sb.nodes[sb.leader].Propose(context.Background(), cmd); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		target := sb.nodes[sb.leader].Status().AppliedIndex
		b.StartTimer()
		start := time.Now()
		sb.nw.Heal()
		for sb.nodes[sb.lagging].Status().AppliedIndex < target {
			time.Sleep(time.Millisecond) // polling interval
		}
		took := time.Since(start)
		b.StopTimer()
		b.ReportMetric(took.Seconds()*1000, "catchup-ms")
		sms[sb.lagging].mu.Lock()
		same := sms[sb.lagging].sum == sms[sb.leader].sum
		sms[sb.lagging].mu.Unlock()
		if !same {
			b.Error("the caught-up state differs from the leader's")
		}
		sb.close()
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
		sms := map[uint64]*bigSM{}
		sb := newSnapBench(b, func(id uint64) StateMachine { sms[id] = &bigSM{size: size}; return sms[id] },
			func(uint64) Storage {
				st, err := OpenFileStorage(b.TempDir(), WithNoSync())
				if err != nil {
					b.Fatal(err)
				}
				return st
			}, Config{ElectionTimeout: 200 * time.Millisecond, SnapshotThreshold: 1 << 30, TrailingEntries: 1})
		leader := sb.nodes[sb.leader]
		for k := 0; k < 10; k++ {
			if _, err := leader.Propose(context.Background(), []byte("x")); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := leader.Snapshot(context.Background()); err != nil {
			b.Fatal(err)
		}
		sb.nw.Heal()
		if _, err := leader.Propose(context.Background(), []byte("y")); err != nil {
			b.Fatal(err)
		}
		for sms[sb.lagging].restored.Load() == 0 {
			time.Sleep(time.Millisecond) // polling interval
		}
		b.StopTimer()
		sb.close()
	}
}
