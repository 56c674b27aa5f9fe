package compare

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The TCP variant of the durable hashicorp/raft harness: the same nodes and
// stores (raft-wal behind a LogCache of 512, fsync on), but each node talks
// over its own NetworkTransport, raft.NewTCPTransportWithLogger bound to
// 127.0.0.1 on a free port, with a connection pool of 3 per peer and a 10s
// I/O timeout (how Consul sets it up: raftPool = 3, 10s timeout). The
// leader replicates through the transport's pipelined AppendEntries, which
// NetworkTransport supports.

const (
	hashicorpTCPMaxPool = 3
	hashicorpTCPTimeout = 10 * time.Second
)

// hashicorpNetTransport closes the pooled outbound connections as well:
// NetworkTransport.Close only stops the listener, and the connections it
// keeps in its pool would otherwise stay open (and keep the peer's reading
// goroutine alive).
type hashicorpNetTransport struct {
	*raft.NetworkTransport
}

func (t hashicorpNetTransport) Close() error {
	t.CloseStreams()
	return t.NetworkTransport.Close()
}

// hashicorpTCPTransports opens n NetworkTransports on 127.0.0.1, each on a
// port the kernel picks.
func hashicorpTCPTransports(tb testing.TB, n int) []hashicorpTransport {
	out := make([]hashicorpTransport, 0, n)
	for range n {
		t, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, hashicorpTCPMaxPool, hashicorpTCPTimeout, hclog.NewNullLogger())
		if err != nil {
			for _, t := range out {
				t.Close()
			}
			tb.Fatal(err)
		}
		out = append(out, hashicorpNetTransport{t})
	}
	return out
}

// BenchmarkHashicorpTCP_64Proposers: raft-wal with fsync, NetworkTransport
// over TCP on loopback.
func BenchmarkHashicorpTCP_64Proposers(b *testing.B) {
	benchSystem(b, "HashicorpTCP", defaultShape, proposers)
}

func BenchmarkHashicorpTCP_Sequential(b *testing.B) { benchSystem(b, "HashicorpTCP", defaultShape, 1) }
