package raft

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of TCPTransport against raw sockets (helpers in tcp_test.go): the
// hello and frames of tcp_wire.go written out by hand, every handshake
// refusal, misrouted messages, bad and oversized frames, slowloris,
// keepalives, a connection flood, and a fuzz target for the inbound side.

func TestTCPHandshakeWireFormat(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{ClusterID: "abc"})
	inB := attachInbox(t, b, 2)
	conn := dialRaw(t, b.Addr())
	// The hello exactly as docs/tcp.md describes it, written out by hand.
	hello := []byte{'R', 'K', 'T', 'P', 1, 0,
		0, 0, 0, 0, 0, 0, 0, 7, // from 7
		0, 0, 0, 0, 0, 0, 0, 2, // to 2
		3, 'a', 'b', 'c', // cluster
		0, // no advertised address
	}
	_, err := conn.Write(hello)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var reply [6]byte
	_, err = io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	assert.Equal(t, []byte{'R', 'K', 'T', 'P', 1, 0}, reply[:])

	m := heartbeat(7, 2, 42)
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{1, 7, 7, 2, 3, 0, 0, 7, 0, 0, 42, 0, 0}, body, "the example in docs/tcp.md")
	wire := []byte{0, 0, 0, 0} // a keepalive
	wire = append(wire, byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	_, err = conn.Write(append(wire, body...))
	require.NoError(t, err)
	inB.waitCount(t, 1)
	assert.Equal(t, m, inB.all()[0])
}

func TestTCPHandshakeRefusals(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{})
	inB := attachInbox(t, b, 2)
	withVersion := func(v byte) []byte {
		h := helloBytes(1, 2, tcpTestCluster)
		h[4] = v
		return h
	}
	withMagic := helloBytes(1, 2, tcpTestCluster)
	copy(withMagic, "RAFT")
	for _, tc := range []struct {
		name   string
		hello  []byte
		status tcpStatus
		reply  bool // a status is sent back; otherwise the connection is just closed
	}{
		{"other cluster", helloBytes(1, 2, "another-cluster"), tcpRefusedCluster, true},
		{"empty cluster", helloBytes(1, 2, ""), tcpRefusedCluster, true},
		{"other node", helloBytes(1, 3, tcpTestCluster), tcpRefusedNode, true},
		{"sender 0", helloBytes(0, 2, tcpTestCluster), tcpRefusedSender, true},
		{"sender is the receiver", helloBytes(2, 2, tcpTestCluster), tcpRefusedSender, true},
		{"unknown version", withVersion(2), tcpRefusedVersion, true},
		{"wrong magic", withMagic, 0, false},
		{"an HTTP client", []byte("GET / HTTP/1.1\r\nHost: raft\r\n\r\n"), 0, false},
		{"garbage", bytes.Repeat([]byte{0xff}, 100), 0, false},
		{"unknown lane", append([]byte("RKTP\x01\x07"), make([]byte, 18)...), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().HandshakesRefused
			conn := dialRaw(t, b.Addr())
			_, err := conn.Write(tc.hello)
			require.NoError(t, err)
			if tc.reply {
				assert.Equal(t, tc.status, readReply(t, conn))
			}
			assert.True(t, closedByPeer(t, conn, 5*time.Second), "the connection is closed")
			require.Eventually(t, func() bool { return b.Stats().HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
		})
	}

	t.Run("not attached in time", func(t *testing.T) {
		// A starting transport holds the handshake for half its
		// HandshakeTimeout, then refuses it.
		c := newTestTCP(t, "c", TCPConfig{HandshakeTimeout: 200 * time.Millisecond})
		conn := dialRaw(t, c.Addr())
		_, err := conn.Write(helloBytes(1, 3, tcpTestCluster))
		require.NoError(t, err)
		assert.Equal(t, tcpRefusedNotReady, readReply(t, conn))
		assert.True(t, closedByPeer(t, conn, 5*time.Second))
	})
	assert.Zero(t, inB.count(), "nothing reached the node")
	assert.Zero(t, b.Stats().Received)
}

func TestTCPDialerReportsRefusal(t *testing.T) {
	// A node of another cluster is refused, and its dialer says why.
	a := newTestTCP(t, "a", TCPConfig{ClusterID: "other"})
	b := newTestTCP(t, "b", TCPConfig{})
	attachInbox(t, a, 1)
	inB := attachInbox(t, b, 2)
	a.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
	a.Send([]Message{heartbeat(1, 2, 1)})
	require.Eventually(t, func() bool { return a.Stats().DialFailures >= 1 && a.Stats().DroppedUnreachable >= 1 }, 5*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, b.Stats().HandshakesRefused, uint64(1))
	assert.Zero(t, inB.count())

	// The dialer sees the status.
	h := tcpHello{from: 1, to: 2, cluster: "other"}
	conn := dialRaw(t, b.Addr())
	_, err := conn.Write(h.appendTo(nil))
	require.NoError(t, err)
	assert.Equal(t, tcpRefusedCluster, readReply(t, conn))
}

func TestTCPMisroutedMessagesDropped(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{})
	inB := attachInbox(t, b, 2)
	conn := handshaken(t, b, 1, 2)
	var wire []byte
	wire = append(wire, frame(t, heartbeat(3, 2, 1))...) // From is not the handshake's node
	wire = append(wire, frame(t, heartbeat(1, 9, 2))...) // To is not this node
	wire = append(wire, frame(t, heartbeat(1, 2, 3))...) // fine
	_, err := conn.Write(wire)
	require.NoError(t, err)
	inB.waitCount(t, 1)
	assert.Equal(t, uint64(3), inB.all()[0].Context)
	assert.Equal(t, uint64(2), b.Stats().DroppedMisrouted)
	assert.False(t, closedByPeer(t, conn, 100*time.Millisecond), "dropping a message keeps the connection")
}

func TestTCPBadFramesCloseTheConnection(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{MaxFrameSize: 1 << 20})
	inB := attachInbox(t, b, 2)
	valid := frame(t, heartbeat(1, 2, 1))
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"oversized", binary.BigEndian.AppendUint32(nil, 1<<20+1)},
		{"undecodable body", append(binary.BigEndian.AppendUint32(nil, 5), 1, 99, 0, 0, 0)},
		{"trailing garbage inside the frame", append(binary.BigEndian.AppendUint32(nil, uint32(len(valid)-4+1)), append(valid[4:], 0)...)},
		{"truncated body", valid[:len(valid)-2]},
		{"truncated header", valid[:2]},
		{"truncated large body", append(binary.BigEndian.AppendUint32(nil, 512<<10), make([]byte, 1000)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().BadFrames
			conn := handshaken(t, b, 1, 2)
			_, err := conn.Write(tc.wire)
			require.NoError(t, err)
			if strings.HasPrefix(tc.name, "truncated") {
				require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // the peer's end of stream
			}
			assert.True(t, closedByPeer(t, conn, 5*time.Second), "the connection is closed")
			require.Eventually(t, func() bool { return b.Stats().BadFrames == before+1 }, 5*time.Second, time.Millisecond)
		})
	}
	assert.Zero(t, inB.count())

	// The node keeps working.
	conn := handshaken(t, b, 1, 2)
	_, err := conn.Write(valid)
	require.NoError(t, err)
	inB.waitCount(t, 1)
}

func TestTCPOversizedFrameClosedBeforeAllocating(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{}) // MaxFrameSize 16 MiB
	attachInbox(t, b, 2)
	for _, tc := range []struct {
		name   string
		header uint32
		body   int
	}{
		{"1 GiB announced, beyond MaxFrameSize", 1 << 30, 0},
		{"4 GiB-1 announced", 1<<32 - 1, 0},
		{"16 MiB announced (allowed), 1 KiB sent", 16 << 20, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := handshaken(t, b, 1, 2)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			wire := append(binary.BigEndian.AppendUint32(nil, tc.header), make([]byte, tc.body)...)
			_, err := conn.Write(wire)
			require.NoError(t, err)
			if tc.body > 0 {
				require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			}
			require.True(t, closedByPeer(t, conn, 5*time.Second))
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			assert.Less(t, allocated, uint64(4<<20), "allocated %d bytes for a frame that never came", allocated)
		})
	}
	assert.Equal(t, uint64(3), b.Stats().BadFrames)
}

func TestTCPSlowloris(t *testing.T) {
	b := newTestTCP(t, "b", TCPConfig{HandshakeTimeout: 300 * time.Millisecond, IdleReadTimeout: 300 * time.Millisecond})
	inB := attachInbox(t, b, 2)

	t.Run("silent connection closed after HandshakeTimeout", func(t *testing.T) {
		before := b.Stats().HandshakesRefused
		start := time.Now() // before the dial: the server's timer starts after it
		conn := dialRaw(t, b.Addr())
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "not before the timeout")
		require.Eventually(t, func() bool { return b.Stats().HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
	})
	t.Run("half a hello", func(t *testing.T) {
		conn := dialRaw(t, b.Addr())
		_, err := conn.Write(helloBytes(1, 2, tcpTestCluster)[:10])
		require.NoError(t, err)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
	})
	t.Run("half a frame then a stall", func(t *testing.T) {
		before := b.Stats().BadFrames
		start := time.Now() // before the handshake: the server's read deadline is set after it
		conn := handshaken(t, b, 1, 2)
		f := frame(t, heartbeat(1, 2, 1))
		_, err := conn.Write(f[:len(f)/2])
		require.NoError(t, err)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
		require.Eventually(t, func() bool { return b.Stats().BadFrames == before+1 }, 5*time.Second, time.Millisecond)
	})
	t.Run("idle without keepalives", func(t *testing.T) {
		before := b.Stats()
		conn := handshaken(t, b, 1, 2)
		require.True(t, closedByPeer(t, conn, 10*time.Second))
		assert.Equal(t, before.BadFrames, b.Stats().BadFrames, "an idle connection is not a bad frame")
	})
	assert.Zero(t, inB.count())
}

func TestTCPKeepaliveHoldsIdleConnection(t *testing.T) {
	cfg := TCPConfig{IdleReadTimeout: 600 * time.Millisecond}
	a, b, _, inB := tcpPair(t, cfg, cfg)
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	// Idle for several read timeouts: keepalives hold the connection.
	require.Never(t, func() bool { return b.Stats().InboundConns != 1 || a.Stats().Dials != 1 }, 2*time.Second, 10*time.Millisecond)
	a.Send([]Message{heartbeat(1, 2, 2)})
	inB.waitCount(t, 2)
	assert.Equal(t, uint64(1), a.Stats().Dials)
	assert.Zero(t, a.Stats().DroppedUnreachable)
}

func TestTCPConnectionFlood(t *testing.T) {
	const maxConns = 8
	a, b, _, inB := tcpPair(t, TCPConfig{}, TCPConfig{MaxInboundConns: maxConns, HandshakeTimeout: time.Minute})
	a.Send([]Message{heartbeat(1, 2, 1)})
	inB.waitCount(t, 1)
	require.Equal(t, 1, b.Stats().InboundConns)

	// Fill the remaining slots with connections that never say hello, then
	// ten more: those are closed at once.
	// The transport resets them; the reset may even reach a client before
	// its connect returns, which then fails.
	const excess = 10
	var flood []net.Conn
	closed := 0
	for range maxConns - 1 + excess {
		conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
		if err != nil {
			closed++
			continue
		}
		t.Cleanup(func() { conn.Close() })
		flood = append(flood, conn)
	}
	require.Eventually(t, func() bool { return b.Stats().ConnsRefused == excess }, 10*time.Second, time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, conn := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByPeer(t, conn, time.Second) {
				mu.Lock()
				closed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, excess, closed, "exactly the excess connections were closed")
	assert.Equal(t, maxConns, b.Stats().InboundConns)

	// The established peer still gets through.
	a.Send([]Message{heartbeat(1, 2, 2), heartbeat(1, 2, 3)})
	inB.waitCount(t, 3)

	// Once the flood is gone, new peers get in again.
	for _, conn := range flood {
		conn.Close()
	}
	require.Eventually(t, func() bool { return b.Stats().InboundConns == 1 }, 10*time.Second, time.Millisecond)
	c := newTestTCP(t, "c", TCPConfig{})
	attachInbox(t, c, 3)
	c.SetPeers([]Member{{ID: 2, Addr: b.Addr()}})
	c.Send([]Message{heartbeat(3, 2, 4)})
	inB.waitCount(t, 4)
}

// ---- Fuzzing ----

// FuzzTCPFrameReader feeds arbitrary bytes to the inbound connection
// handler, after a valid hello or in its place: it must never panic, hang,
// or deliver a message that is not from the node the hello named and to
// this node.
// MaxFrameSize is 1 MiB, so no input makes it allocate more than that for
// a frame.
func FuzzTCPFrameReader(f *testing.F) {
	tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: "fuzz", MaxFrameSize: 1 << 20,
		HandshakeTimeout: time.Second, IdleReadTimeout: time.Second})
	require.NoError(f, err)
	f.Cleanup(func() { tr.Close() })
	var wantFrom atomic.Uint64 // the sender the current input's hello names
	require.NoError(f, tr.Attach(2, func(m Message) {
		if m.From != wantFrom.Load() || m.To != 2 {
			panic(fmt.Sprintf("delivered a message from %d to %d; the hello named %d", m.From, m.To, wantFrom.Load()))
		}
	}))
	hello := tcpHello{from: 1, to: 2, cluster: "fuzz"}
	helloWire := hello.appendTo(nil)
	for _, seed := range fuzzTCPSeeds(f) {
		f.Add(seed.withHello, seed.data)
	}
	f.Fuzz(func(t *testing.T, withHello bool, data []byte) {
		wantFrom.Store(1)
		if !withHello {
			h, _ := readTCPHello(bytes.NewReader(data))
			wantFrom.Store(h.from)
		}
		server, client := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the handshake reply
			defer wg.Done()
			_, _ = io.Copy(io.Discard, client)
		}()
		go func() {
			defer wg.Done()
			defer client.Close()
			if withHello {
				if _, err := client.Write(helloWire); err != nil {
					return
				}
			}
			_, _ = client.Write(data)
		}()
		tr.serveConn(&tcpInbound{raw: server, remote: "fuzz"})
		wg.Wait()
	})
}

type fuzzTCPSeed struct {
	name      string
	withHello bool
	data      []byte
}

func fuzzTCPSeeds(t testing.TB) []fuzzTCPSeed {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hb := frame(t, heartbeat(1, 2, 1))
	app := frame(t, Message{Type: MsgAppend, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 1,
		Entries: []Entry{{Index: 4, Term: 2, Data: []byte("x")}, {Index: 5, Term: 2, Type: EntryNoop}}})
	chunk := frame(t, Message{Type: MsgSnapshot, From: 1, To: 2, Term: 2, Index: 9, LogTerm: 2, Data: []byte("snapshot"), Done: true})
	h := tcpHello{from: 1, to: 2, cluster: "fuzz", addr: "127.0.0.1:7000"}
	return []fuzzTCPSeed{
		{"heartbeat", true, hb},
		{"append_and_keepalive", true, cat(app, []byte{0, 0, 0, 0}, hb)},
		{"snapshot_chunk", true, chunk},
		{"misrouted", true, frame(t, heartbeat(3, 2, 1))},
		{"oversized_header", true, binary.BigEndian.AppendUint32(nil, 1<<30)},
		{"truncated", true, app[:len(app)-3]},
		{"hello_and_frames", false, cat(h.appendTo(nil), hb, app)},
		{"http", false, []byte("GET / HTTP/1.1\r\n\r\n")},
	}
}

// TestTCPFuzzSeedCorpus checks that the committed seed corpus is the one
// fuzzTCPSeeds describes; RAFT_WRITE_CORPUS=1 rewrites it.
func TestTCPFuzzSeedCorpus(t *testing.T) {
	dir := "testdata/fuzz/FuzzTCPFrameReader"
	for _, seed := range fuzzTCPSeeds(t) {
		want := fmt.Sprintf("go test fuzz v1\nbool(%v)\n[]byte(%q)\n", seed.withHello, seed.data)
		path := dir + "/" + seed.name
		if os.Getenv("RAFT_WRITE_CORPUS") != "" {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, want, string(got), path)
	}
}

// trickleReader returns at most n bytes per Read, as a socket does when the
// bytes arrive in pieces.
type trickleReader struct {
	r io.Reader
	n int
}

func (t trickleReader) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

// A large frame's entries alias its buffer and keep it alive as long as
// they stay in the log, so the buffer must hold the frame and nothing more:
// its capacity is the frame's size, whether it was allocated at once or
// joined from chunks, and whatever pieces the bytes arrive in.
func TestTCPFrameBufferIsExactlyTheFrame(t *testing.T) {
	noDeadline := func(int) error { return nil }
	for _, size := range []int{tcpReadBuffer + 1, 1<<20 + 217, tcpEagerFrame, tcpEagerFrame + 1, 5<<20 + 3} {
		for _, piece := range []int{1500, 64 << 10, 1 << 20} {
			t.Run(fmt.Sprintf("size=%d/piece=%d", size, piece), func(t *testing.T) {
				want := make([]byte, size)
				for i := range want {
					want[i] = byte(i * 7)
				}
				br := bufio.NewReaderSize(trickleReader{bytes.NewReader(append(want, "next frame"...)), piece}, tcpReadBuffer)
				var small []byte
				body, fresh, err := readFrameBody(br, size, &small, noDeadline)
				require.NoError(t, err)
				assert.True(t, fresh, "a large frame gets its own buffer")
				assert.Equal(t, size, len(body))
				assert.Equal(t, size, cap(body), "the buffer holds the frame and nothing more")
				assert.True(t, bytes.Equal(want, body), "the frame's bytes")
				rest, err := io.ReadAll(br)
				require.NoError(t, err)
				assert.Equal(t, "next frame", string(rest), "nothing read beyond the frame")
			})
		}
	}
	t.Run("connection ends inside the frame", func(t *testing.T) {
		for _, size := range []int{1 << 20, 5 << 20} {
			br := bufio.NewReaderSize(bytes.NewReader(make([]byte, size-1)), tcpReadBuffer)
			var small []byte
			_, _, err := readFrameBody(br, size, &small, noDeadline)
			assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "size %d", size)
		}
	})
}
