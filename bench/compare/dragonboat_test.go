package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	chantransport "github.com/lni/dragonboat/v4/plugin/chan"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"
)

// lni/dragonboat v4 (v4.0.0-20240618143154-6a1623140f27, the newest v4 the
// Go module proxy serves): one shard (ID 1) of three replicas (or the shape's
// voters), each on its own NodeHost in this process, written from the
// package documentation:
//
//   - NodeHostConfig: NodeHostDir a temp dir of its own (WALDir empty, so the
//     log DB lives there too), RTTMillisecond 10, RaftAddress 127.0.0.1 on a
//     free port; everything else default. So the log DB is the default one
//     (in this version the sharded pebble-based LogDB; every write of Raft
//     state is a pebble write with Sync set), the transport the default TCP
//     one, and the engine has its default worker counts.
//   - Config: ElectionRTT 100 and HeartbeatRTT 10 (1-2 s election timeout
//     and 100 ms heartbeats at RTTMillisecond 10, like the 1 s election
//     timeout of the others), CheckQuorum and PreVote on (raftkit's
//     defaults), SnapshotEntries 0 (no snapshots during a run); every other
//     field default.
//   - The state machine is an IStateMachine whose Update counts the entries
//     and returns the count as its Result; no snapshots.
//   - A proposal is NodeHost.SyncPropose on the leader's NodeHost with a
//     NO-OP session from GetNoOPSession (one per proposer) and a context with
//     a 10 s timeout (SyncPropose requires a deadline). It returns once the
//     leader has applied the entry, with Update's result.
//   - Ready when a proposal made this way has gone through on the node
//     GetLeaderID names.
//
// That is the TCP variant (BenchmarkDragonboatTCP_*). The variants on an
// in-memory network swap components through NodeHostConfig.Expert, the hooks
// dragonboat documents for tests: the transport is plugin/chan's
// ChanTransportFactory, which passes messages between the NodeHosts of one
// process over Go channels (each MessageBatch is still marshalled and
// unmarshalled, unlike the other libraries' in-memory transports; the harness
// wraps the factory, see dragonboatChanTransport), with the log DB on disk
// (BenchmarkDragonboatFile_*) or on github.com/lni/vfs's in-memory file
// system, vfs.NewMem(), one per NodeHost (BenchmarkDragonboat_*), where the
// log DB runs its usual code and fsync costs nothing.

const (
	dragonboatShardID   = 1
	dragonboatRTT       = 10 // RTTMillisecond
	dragonboatProposeTO = 10 * time.Second
)

// dragonboatLoggers are the names under which dragonboat's packages get
// their loggers; the harness turns them down to errors so that a run does not
// print dragonboat's informational log lines.
var dragonboatLoggers = []string{"config", "dragonboat", "gossip", "grpc", "logdb", "pebblekv",
	"raft", "raftpb", "registry", "rsm", "server", "settings", "tan", "tools", "transport"}

var dragonboatQuietOnce sync.Once

func dragonboatQuiet() {
	dragonboatQuietOnce.Do(func() {
		for _, name := range dragonboatLoggers {
			logger.GetLogger(name).SetLevel(logger.ERROR)
		}
	})
}

// dragonboatSM is the state machine: Update returns how many entries it has
// applied.
type dragonboatSM struct {
	applied uint64
}

func (s *dragonboatSM) Update(e sm.Entry) (sm.Result, error) {
	s.applied++
	return sm.Result{Value: s.applied}, nil
}

func (s *dragonboatSM) Lookup(any) (any, error) { return s.applied, nil }

func (s *dragonboatSM) SaveSnapshot(io.Writer, sm.ISnapshotFileCollection, <-chan struct{}) error {
	return errors.New("no snapshots")
}

func (s *dragonboatSM) RecoverFromSnapshot(io.Reader, []sm.SnapshotFile, <-chan struct{}) error {
	return errors.New("no snapshots")
}

func (s *dragonboatSM) Close() error { return nil }

// dragonboatChanTransport is plugin/chan's ChanTransportFactory with an
// address check: the plugin's own Validate panics ("not suppose to be
// called"), and NodeHostConfig.Validate calls it. Any name is a valid address
// on the channel transport.
type dragonboatChanTransport struct {
	chantransport.ChanTransportFactory
}

func (*dragonboatChanTransport) Validate(string) bool { return true }

// freeLoopbackAddrs returns n addresses on 127.0.0.1 that were free a moment
// ago: dragonboat needs every replica's address before its NodeHost starts
// listening.
func freeLoopbackAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// dragonboatSystem is dragonboat with its log DB on disk or in memory and
// over its TCP transport or the channel transport (dragonboatCluster).
func dragonboatSystem(disk, tcp bool) system {
	return func(tb testing.TB, s shape) cluster {
		leader, stop := dragonboatCluster(tb, s, disk, tcp)
		return cluster{
			newProposer: dragonboatProposer(leader, s.cmdSize),
			voters: func() (int, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				m, err := leader.SyncGetShardMembership(ctx, dragonboatShardID)
				if err != nil {
					return 0, err
				}
				return len(m.Nodes), nil
			},
			stop: stop,
		}
	}
}

// dragonboatCluster starts a NodeHost per replica of the shard (s.voters of
// them) and returns the leader's NodeHost once a proposal of s.cmdSize bytes
// has been applied on it, and a function that closes the NodeHosts. With
// disk, each NodeHost keeps its log DB in a temp dir of its own (fsync on),
// else in an in-memory file system; with tcp, the NodeHosts talk over
// dragonboat's TCP transport on loopback, else over the channel transport.
func dragonboatCluster(tb testing.TB, s shape, disk, tcp bool) (*dragonboat.NodeHost, func()) {
	tb.Helper()
	dragonboatQuiet()
	n := s.voters
	var addrs []string
	if !tcp {
		for i := range n {
			addrs = append(addrs, fmt.Sprintf("dragonboat-%d:1", i+1)) // names, not dialled
		}
	} else {
		var err error
		if addrs, err = freeLoopbackAddrs(n); err != nil {
			tb.Fatal(err)
		}
	}
	members := make(map[uint64]dragonboat.Target, n)
	for i, a := range addrs {
		members[uint64(i+1)] = a
	}
	var hosts []*dragonboat.NodeHost
	stop := func() {
		for _, nh := range hosts {
			nh.Close()
		}
	}
	for i, a := range addrs {
		nhc := config.NodeHostConfig{
			NodeHostDir:    tb.TempDir(),
			RTTMillisecond: dragonboatRTT,
			RaftAddress:    a,
		}
		if !disk {
			nhc.NodeHostDir = "/nodehost" // inside the in-memory file system
			nhc.Expert.FS = vfs.NewMem()
		}
		if !tcp {
			nhc.Expert.TransportFactory = &dragonboatChanTransport{}
		}
		nh, err := dragonboat.NewNodeHost(nhc)
		if err != nil {
			stop()
			tb.Fatal(err)
		}
		hosts = append(hosts, nh)
		rc := config.Config{
			ReplicaID:    uint64(i + 1),
			ShardID:      dragonboatShardID,
			ElectionRTT:  100,
			HeartbeatRTT: 10,
			CheckQuorum:  true,
			PreVote:      true,
		}
		create := func(uint64, uint64) sm.IStateMachine { return &dragonboatSM{} }
		if err := nh.StartReplica(members, false, create, rc); err != nil {
			stop()
			tb.Fatal(err)
		}
	}
	cmd := make([]byte, s.cmdSize)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		id, _, ok, err := hosts[0].GetLeaderID(dragonboatShardID)
		if err == nil && ok && id >= 1 && id <= uint64(n) {
			leader := hosts[id-1]
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := leader.SyncPropose(ctx, leader.GetNoOPSession(dragonboatShardID), cmd)
			cancel()
			if err == nil {
				return leader, stop
			}
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	stop()
	tb.Fatal("dragonboat: no leader")
	return nil, nil
}

func dragonboatProposer(leader *dragonboat.NodeHost, cmdSize int) func() proposeFunc {
	cmd := make([]byte, cmdSize)
	return func() proposeFunc {
		session := leader.GetNoOPSession(dragonboatShardID)
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), dragonboatProposeTO)
			defer cancel()
			res, err := leader.SyncPropose(ctx, session, cmd)
			if err != nil {
				return err
			}
			if res.Value == 0 { // Update counts from 1
				return errors.New("dragonboat: no result from Update")
			}
			return nil
		}
	}
}

// dragonboatApplied returns how many entries the leader's state machine has
// applied, read through a linearizable read.
func dragonboatApplied(nh *dragonboat.NodeHost) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := nh.SyncRead(ctx, dragonboatShardID, nil)
	if err != nil {
		return 0, err
	}
	return v.(uint64), nil
}

// BenchmarkDragonboatTCP_64Proposers: the default log DB with fsync and the
// default TCP transport on loopback.
func BenchmarkDragonboatTCP_64Proposers(b *testing.B) {
	benchSystem(b, "DragonboatTCP", defaultShape, proposers)
}

func BenchmarkDragonboatTCP_Sequential(b *testing.B) {
	benchSystem(b, "DragonboatTCP", defaultShape, 1)
}

// BenchmarkDragonboat_64Proposers is the in-memory variant: in-memory file
// system, channel transport.
func BenchmarkDragonboat_64Proposers(b *testing.B) {
	benchSystem(b, "Dragonboat", defaultShape, proposers)
}

func BenchmarkDragonboat_Sequential(b *testing.B) { benchSystem(b, "Dragonboat", defaultShape, 1) }

// BenchmarkDragonboatFile_64Proposers is the durable variant on the
// in-memory network: the default log DB on disk with fsync, channel
// transport.
func BenchmarkDragonboatFile_64Proposers(b *testing.B) {
	benchSystem(b, "DragonboatFile", defaultShape, proposers)
}

func BenchmarkDragonboatFile_Sequential(b *testing.B) {
	benchSystem(b, "DragonboatFile", defaultShape, 1)
}
