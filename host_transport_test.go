package raft

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of a Host's shared transport (host_transport.go) and of host mode
// on the wire (tcp_wire.go): the hello and frames written out by hand, the
// union of the groups' peers, the in-memory network's hosts.

// groupInbox records what a host routes to one group, standing in for the
// group's Node.
type groupInbox struct {
	mu   sync.Mutex
	msgs []Message
}

func (b *groupInbox) deliver(m Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *groupInbox) all() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

// attachGroup gives group of h a transport view attached to a groupInbox.
func attachGroup(t *testing.T, h *Host, group uint64) (*groupTransport, *groupInbox) {
	t.Helper()
	inbox := &groupInbox{}
	v := newGroupTransport(h, group, 1)
	require.NoError(t, v.Attach(h.id, inbox.deliver))
	t.Cleanup(v.Detach)
	return v, inbox
}

// hostFrame is a frame in host mode: its length, the group's ID and the
// message.
func hostFrame(t *testing.T, group uint64, m Message) []byte {
	t.Helper()
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	body = append(binary.AppendUvarint(nil, group), body...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func newTestHost(t *testing.T, id uint64, tcp TCPConfig, logger *zap.Logger) *Host {
	t.Helper()
	if tcp.ListenAddr == "" {
		tcp.ListenAddr = "127.0.0.1:0"
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	h, err := NewHost(HostConfig{ID: id, TCP: &tcp, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	return h
}

// The acceptor's side of host mode, byte by byte as tcp_wire.go describes
// it: a version-2 hello, frames that begin with the group's ID; messages
// for a group the host does not run are counted, bad group IDs close the
// connection, a version-1 hello is refused.
func TestHost_WireFormatInbound(t *testing.T) {
	h := newTestHost(t, 2, TCPConfig{ClusterID: "abc"}, nil)
	_, inbox := attachGroup(t, h, 5)
	conn := dialRaw(t, h.Addr())
	hello := []byte{'R', 'K', 'T', 'P', 2, 0, // version 2: host mode; control lane
		0, 0, 0, 0, 0, 0, 0, 7, // from host 7
		0, 0, 0, 0, 0, 0, 0, 2, // to host 2
		3, 'a', 'b', 'c', // cluster
		0, // no advertised address
	}
	_, err := conn.Write(hello)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var reply [tcpReplySize]byte
	_, err = io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	assert.Equal(t, []byte{'R', 'K', 'T', 'P', 2, 0}, reply[:], "accepted, in version 2")

	m := heartbeat(7, 2, 42)
	wire := hostFrame(t, 5, m)
	require.Equal(t, []byte{0, 0, 0, 14, 5, 1, 7, 7, 2, 3, 0, 0, 7, 0, 0, 42, 0, 0}, wire,
		"length 14, group 5, then the heartbeat of docs/tcp.md's example")
	_, err = conn.Write(append([]byte{0, 0, 0, 0}, wire...)) // a keepalive, then the frame
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(inbox.all()) == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, m, inbox.all()[0])

	// A group the host does not run: dropped, counted; the connection stays.
	_, err = conn.Write(hostFrame(t, 6, m))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.Stats().DroppedUnknownGroup == 1 }, 5*time.Second, time.Millisecond)
	// A message whose sender is not the hello's host: misrouted.
	_, err = conn.Write(hostFrame(t, 5, heartbeat(8, 2, 1)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.Stats().TCP.DroppedMisrouted == 1 }, 5*time.Second, time.Millisecond)
	_, err = conn.Write(hostFrame(t, 5, heartbeat(7, 2, 43)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(inbox.all()) == 2 }, 5*time.Second, time.Millisecond)

	body, err := m.MarshalBinary()
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		group []byte
	}{
		{"group 0", []byte{0}},
		{"a group ID that is not minimal", []byte{0x85, 0x00}},
		{"a group ID that does not end", []byte{0x85}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Stats().TCP.BadFrames
			conn := dialRaw(t, h.Addr())
			_, err := conn.Write(hello)
			require.NoError(t, err)
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = io.ReadFull(conn, reply[:])
			require.NoError(t, err)
			b := tc.group
			if tc.name != "a group ID that does not end" {
				b = append(slices.Clone(tc.group), body...)
			}
			_, err = conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
			require.NoError(t, err)
			assert.True(t, closedByPeer(t, conn, 5*time.Second), "the connection is closed")
			require.Eventually(t, func() bool { return h.Stats().TCP.BadFrames == before+1 }, 5*time.Second, time.Millisecond)
		})
	}

	t.Run("a single node's hello", func(t *testing.T) {
		before := h.Stats().TCP.HandshakesRefused
		conn := dialRaw(t, h.Addr())
		_, err := conn.Write(helloBytes(7, 2, "abc")) // version 1
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = io.ReadFull(conn, reply[:])
		require.NoError(t, err)
		assert.Equal(t, []byte{'R', 'K', 'T', 'P', 2, byte(tcpRefusedVersion)}, reply[:], "refused: unsupported version; the host speaks 2")
		assert.True(t, closedByPeer(t, conn, 5*time.Second))
		require.Eventually(t, func() bool { return h.Stats().TCP.HandshakesRefused == before+1 }, 5*time.Second, time.Millisecond)
	})
	assert.Len(t, inbox.all(), 2, "nothing else reached the group")
}

// fakePeerHost listens as a peer host would and hands each connection to
// serve.
func fakePeerHost(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// The dialer's side of host mode: the host sends a version-2 hello naming
// itself and the peer host, then frames whose bodies begin with the
// group's ID, the messages of two groups in one stream.
func TestHost_WireFormatOutbound(t *testing.T) {
	type frame struct {
		group uint64
		msg   Message
	}
	hellos := make(chan tcpHello, 4)
	frames := make(chan frame, 16)
	addr := fakePeerHost(t, func(c net.Conn) {
		h, err := readTCPHelloOf(c, tcpHostVersion)
		if err != nil {
			return
		}
		hellos <- h
		if _, err := c.Write(tcpReplyOf(tcpHostVersion, tcpAccepted)); err != nil {
			return
		}
		br := bufio.NewReader(c)
		for {
			var header [4]byte
			if _, err := io.ReadFull(br, header[:]); err != nil {
				return
			}
			body := make([]byte, binary.BigEndian.Uint32(header[:]))
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			if len(body) == 0 {
				continue
			}
			g, n := binary.Uvarint(body)
			var m Message
			if n <= 0 || m.UnmarshalBinary(body[n:]) != nil {
				frames <- frame{}
				return
			}
			frames <- frame{g, m}
		}
	})
	h := newTestHost(t, 2, TCPConfig{ClusterID: "abc"}, nil)
	v5, _ := attachGroup(t, h, 5)
	v300, _ := attachGroup(t, h, 300)
	v5.SetPeers([]Member{{ID: 2, Addr: h.Addr()}, {ID: 3, Addr: addr}})
	v300.SetPeers([]Member{{ID: 2, Addr: h.Addr()}, {ID: 3, Addr: addr}})
	v5.Send([]Message{heartbeat(2, 3, 1)})
	v300.Send([]Message{heartbeat(2, 3, 2)})

	select {
	case hello := <-hellos:
		assert.Equal(t, tcpHello{lane: tcpLaneControl, from: 2, to: 3, cluster: "abc", addr: h.Addr()}, hello)
	case <-time.After(10 * time.Second):
		t.Fatal("no hello")
	}
	got := map[uint64]Message{}
	for len(got) < 2 {
		select {
		case f := <-frames:
			require.NotZero(t, f.group, "a frame that does not decode")
			got[f.group] = f.msg
		case <-time.After(10 * time.Second):
			t.Fatalf("frames missing; got %v", got)
		}
	}
	assert.Equal(t, map[uint64]Message{5: heartbeat(2, 3, 1), 300: heartbeat(2, 3, 2)}, got)
	assert.Len(t, hellos, 0, "one connection carries both groups")
	assert.Equal(t, 1, h.Stats().TCP.OutboundConns)
}

// A transport of an earlier release refuses the host's version-2 hello as
// it refuses any version it does not know, with the reply recorded from it
// in testdata/compat; the host warns at once, naming both versions and
// what they mean, and reports the loss to the group.
func TestHost_RefusedByAnEarlierRelease(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			dir, man := compatManifestOf(t, label)
			oldReply, err := os.ReadFile(filepath.Join(dir, man.ReplyBadVersion))
			require.NoError(t, err)
			require.Equal(t, []byte{'R', 'K', 'T', 'P', 1, 1}, oldReply, "the earlier release's refusal of a version-2 hello")
			versions := make(chan byte, 4)
			addr := fakePeerHost(t, func(c net.Conn) {
				var b [5]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				versions <- b[4]
				_, _ = c.Write(oldReply)
			})
			core, logs := observer.New(zapcore.WarnLevel)
			h := newTestHost(t, 2, TCPConfig{}, zap.New(core))
			v, inbox := attachGroup(t, h, 5)
			v.SetPeers([]Member{{ID: 2, Addr: h.Addr()}, {ID: 3, Addr: addr}})
			v.Send([]Message{heartbeat(2, 3, 1)})
			require.Eventually(t, func() bool { return logs.FilterMessage("cannot reach peer; dropping its queued messages").Len() > 0 },
				10*time.Second, time.Millisecond)
			assert.Equal(t, byte(tcpHostVersion), <-versions)
			assert.Contains(t, fmt.Sprint(logs.FilterMessage("cannot reach peer; dropping its queued messages").All()[0].ContextMap()["error"]),
				"handshake refused by the peer: unsupported protocol version (this node speaks 2, the peer 1); "+
					"the peer is a single node's TCPTransport (or a release without hosts), and a Host connects only to Hosts")
			require.Eventually(t, func() bool {
				return slices.ContainsFunc(inbox.all(), func(m Message) bool { return m.Type == MsgUnreachable && m.From == 3 })
			}, 10*time.Second, time.Millisecond, "the group was told its message to host 3 was lost")
		})
	}
}

// peerRecorder is a hostLink that records the peer sets it is given.
type peerRecorder struct{ sets [][]Member }

func (r *peerRecorder) sendGroup(uint64, []Message) {}
func (r *peerRecorder) SetPeers(members []Member)   { r.sets = append(r.sets, slices.Clone(members)) }
func (r *peerRecorder) close() error                { return nil }

// The link's peers are the union of the groups' peers, counted: a host
// stays a peer while any group names it, the link is told only when the
// union changes, and when groups name a host at different addresses (it
// moved, and not every group knows yet) the newest address is used.
func TestHostPeers_UnionOfTheGroupsPeers(t *testing.T) {
	link := &peerRecorder{}
	p := newHostPeers(link, zap.NewNop())
	m := func(id uint64, addr string) Member { return Member{ID: id, Addr: addr} }
	last := func() []Member { return link.sets[len(link.sets)-1] }

	p.set(1, []Member{m(1, "a1"), m(2, "a2"), m(3, "a3")})
	require.Len(t, link.sets, 1)
	assert.Equal(t, []Member{m(1, "a1"), m(2, "a2"), m(3, "a3")}, last())
	p.set(2, []Member{m(1, "a1"), m(2, "a2"), m(3, "a3")})
	p.set(1, []Member{m(3, "a3"), m(1, "a1"), m(2, "a2")}) // same set, other order
	assert.Len(t, link.sets, 1, "the union did not change")

	p.set(2, []Member{m(1, "a1"), m(2, "a2"), m(3, "a3"), m(4, "a4")})
	assert.Equal(t, []Member{m(1, "a1"), m(2, "a2"), m(3, "a3"), m(4, "a4")}, last(), "host 4 joins with group 2")
	p.set(1, nil) // group 1 stops: every host is still named by group 2
	assert.Len(t, link.sets, 2)

	p.set(3, []Member{m(1, "a1"), m(2, "a2-new")})
	assert.Equal(t, []Member{m(1, "a1"), m(2, "a2-new"), m(3, "a3"), m(4, "a4")}, last(), "the address named last is used")
	p.set(2, []Member{m(1, "a1"), m(3, "a3")}) // group 2 drops hosts 2 and 4
	assert.Equal(t, []Member{m(1, "a1"), m(2, "a2-new"), m(3, "a3")}, last())
	p.set(3, nil)
	assert.Equal(t, []Member{m(1, "a1"), m(3, "a3")}, last(), "host 2 is no group's member any more")
	p.set(2, nil)
	assert.Empty(t, last())
	assert.Empty(t, p.refs)
	assert.Empty(t, p.byGroup)
}

// On an InmemNetwork, a Host's endpoint and a single node's do not reach
// each other, as over TCP: the message is dropped and reported.
func TestHost_Inmem_HostAndSingleNodeDoNotReachEachOther(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	h, err := NewHost(HostConfig{ID: 1, Network: nw})
	require.NoError(t, err)
	defer h.Close()
	v, inbox := attachGroup(t, h, 5)
	single := nw.Transport(2)
	var singleGot []Message
	var mu sync.Mutex
	require.NoError(t, single.Attach(2, func(m Message) {
		mu.Lock()
		singleGot = append(singleGot, m)
		mu.Unlock()
	}))
	defer single.Detach()
	v.SetPeers([]Member{{ID: 1}, {ID: 2}})
	single.SetPeers([]Member{{ID: 1}, {ID: 2}})

	v.Send([]Message{heartbeat(1, 2, 1)})
	single.Send([]Message{heartbeat(2, 1, 1)})
	for name, msgs := range map[string][]Message{"the host's group": inbox.all(), "the single node": func() []Message {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(singleGot)
	}()} {
		require.Len(t, msgs, 1, name)
		assert.Equal(t, MsgUnreachable, msgs[0].Type, "%s was told of its loss, and got nothing else", name)
	}
	assert.Equal(t, uint64(2), nw.Stats().DroppedNoReceiver)
}

// InmemNetwork's faults apply to hosts: an isolated host's groups lose
// their leaders to the other hosts, and catch up once it is healed.
func TestHost_Inmem_IsolatedHostLosesItsLeaderships(t *testing.T) {
	c := newHostCluster(t, 3, false)
	groups := groupIDs(10)
	for _, g := range groups {
		c.foundGroup(g, 1, 2, 3)
	}
	leaders := c.waitLeaders(groups)
	led := 0
	for _, g := range groups {
		if leaders[g] == 1 {
			led++
		}
	}
	t.Logf("host 1 led %d of %d groups", led, len(groups))
	c.net.Isolate(1)
	last := map[uint64]uint64{}
	require.Eventually(t, func() bool {
		for _, g := range groups {
			n2, n3 := c.node(g, 2).Status(), c.node(g, 3).Status()
			if !(n2.Role == Leader && n3.Leader == 2 || n3.Role == Leader && n2.Leader == 3) || n2.Term != n3.Term {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "every group elects a leader on host 2 or 3: %v", lazyGroups{c, groups})
	for _, g := range groups {
		leader := uint64(2)
		if c.node(g, 3).Status().Role == Leader {
			leader = 3
		}
		index, err := c.node(g, leader).Propose(t.Context(), []byte(fmt.Sprintf("g%d/isolated", g)))
		require.NoError(t, err)
		last[g] = index.(uint64)
	}
	c.net.Heal()
	for _, g := range groups {
		c.waitApplied(g, last[g])
	}
	c.checkSameHistory(groups)
}

// The losses of one batch are reported once per group and peer (and every
// snapshot chunk), however many peers and groups the batch holds: a Host's
// batch holds the messages of many groups.
func TestLossReports_OncePerGroupAndPeer(t *testing.T) {
	var r lossReports
	reported := 0
	for round := range 2 {
		for group := uint64(1); group <= 3; group++ {
			for peer := uint64(2); peer <= 7; peer++ {
				if r.wantsIn(group, &Message{Type: MsgAppend, To: peer}) {
					reported++
				}
			}
		}
		assert.Equal(t, 18, reported, "round %d: three groups times six peers", round)
	}
	assert.True(t, r.wantsIn(1, &Message{Type: MsgSnapshot, To: 2}), "every snapshot chunk is reported")
	assert.True(t, r.wantsIn(1, &Message{Type: MsgSnapshot, To: 2}))

	var single lossReports
	reported = 0
	for range 2 {
		for peer := uint64(2); peer <= 7; peer++ {
			if single.wants(&Message{Type: MsgHeartbeat, To: peer}) {
				reported++
			}
		}
	}
	assert.Equal(t, 6, reported, "a single node's: one per peer, beyond four peers too")
}
