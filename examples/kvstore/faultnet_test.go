package main

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultNet is the Raft network between the test's processes, as the
// nemesis controls it: the state of each directed link, from one node to
// another.
//
// Each node's Raft port sits behind a proxy of the test (raftProxy), and
// the founding members list names the proxies, so every Raft connection to
// node j goes through j's proxy. A partition must control each direction of
// each pair separately (a bridge, a one-way cut), but the address of node j
// is part of the replicated configuration, the same for every sender: a
// proxy per (sender, receiver) pair cannot be reached by giving each sender
// its own address for j. Nor can j's proxy tell the sender by the
// connection's source, an ephemeral port on 127.0.0.1. The TCP transport's
// wire protocol settles it (docs/tcp.md, "Wire format"): the dialer opens
// every connection with a hello that names its node ID ("from"), and after
// the acceptor's 6-byte reply only the dialer writes on it, because each
// node dials its peers for its own outbound messages (responses included)
// and only reads the connections it accepts. So j's proxy reads the first
// bytes of the hello, learns the sender i, and that connection carries the
// messages of the link i→j and of no other link: cutting the link's
// connections cuts that one direction. (Under TLS the hello is encrypted:
// the proxy sees no sender, and link faults do not apply. The nemesis runs
// without TLS.)
//
// A link is up, dropped or stalled:
//   - dropped: its connections are closed at once and new ones are closed
//     after the hello, so the sender sees broken connections and failed
//     handshakes and backs off: a host that answers with resets;
//   - stalled: the proxy stops forwarding and holds what it read, so TCP's
//     flow control fills the sender's buffers; when the link heals, what
//     was held is delivered, in order and late: a network that delays
//     (messages of an old term arrive after a new leader was elected).
type faultNet struct {
	mu      sync.Mutex
	state   map[link]linkState             // absent: up
	changed chan struct{}                  // closed, and replaced, at every change
	conns   map[link]map[net.Conn]struct{} // the open connections of each link, both sides of the proxy
	closed  bool
}

// link is the direction from one node to another; from is 0 when the
// proxy could not read a hello (TLS).
type link struct{ from, to uint64 }

type linkState uint8

const (
	linkUp linkState = iota
	linkDrop
	linkStall
)

func (s linkState) String() string {
	return [...]string{"up", "drop", "stall"}[s]
}

func newFaultNet(t *testing.T) *faultNet {
	n := &faultNet{state: map[link]linkState{}, changed: make(chan struct{}), conns: map[link]map[net.Conn]struct{}{}}
	t.Cleanup(n.close)
	return n
}

// set puts links in state s (the others keep theirs).
func (n *faultNet) set(links []link, s linkState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range links {
		if s == linkUp {
			delete(n.state, l)
		} else {
			n.state[l] = s
		}
		if s == linkDrop {
			for c := range n.conns[l] {
				c.Close()
			}
		}
	}
	n.changedLocked()
}

// heal puts every link back up: what stalled links held is delivered.
func (n *faultNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.state)
	n.changedLocked()
}

func (n *faultNet) changedLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// close breaks every connection and lets every stalled forwarder go.
func (n *faultNet) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for _, conns := range n.conns {
		for c := range conns {
			c.Close()
		}
	}
	n.changedLocked()
}

// await waits while l is stalled; false when l is dropped or the network
// closed (the caller closes its connections).
func (n *faultNet) await(l link) bool {
	for {
		n.mu.Lock()
		s, closed, changed := n.state[l], n.closed, n.changed
		n.mu.Unlock()
		switch {
		case closed || s == linkDrop:
			return false
		case s == linkUp:
			return true
		}
		<-changed
	}
}

// track registers an open connection of l; false if l is dropped or the
// network closed.
func (n *faultNet) track(l link, c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.state[l] == linkDrop {
		return false
	}
	if n.conns[l] == nil {
		n.conns[l] = map[net.Conn]struct{}{}
	}
	n.conns[l][c] = struct{}{}
	return true
}

func (n *faultNet) untrack(l link, c net.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.conns[l], c)
}

// raftProxy forwards the TCP connections to node id's Raft port, each
// under the state of its link in net.
type raftProxy struct {
	ln     net.Listener
	id     uint64
	target string
	net    *faultNet
	wg     sync.WaitGroup
}

func newRaftProxy(t *testing.T, fn *faultNet, id uint64, target string) *raftProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &raftProxy{ln: ln, id: id, target: target, net: fn}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		fn.close()
		p.wg.Wait()
	})
	return p
}

func (p *raftProxy) addr() string { return p.ln.Addr().String() }

func (p *raftProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(in) })
	}
}

// The part of the transport's hello (tcp_wire.go) that names the sender:
// magic "RKTP", version, lane, then the dialer's node ID, big-endian.
const (
	helloMagic  = "RKTP"
	helloPrefix = 4 + 1 + 1 + 8
)

func (p *raftProxy) forward(in net.Conn) {
	defer in.Close()
	// The hello comes first, from the dialer, within its handshake
	// timeout; TLS starts with a ClientHello instead, far longer.
	first := make([]byte, helloPrefix)
	in.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // a net.Conn
	if _, err := io.ReadFull(in, first); err != nil {
		return
	}
	in.SetReadDeadline(time.Time{}) //nolint:errcheck
	l := link{to: p.id}
	if string(first[:4]) == helloMagic {
		l.from = binary.BigEndian.Uint64(first[6:14])
	}
	if !p.net.track(l, in) {
		return
	}
	defer p.net.untrack(l, in)
	if !p.net.await(l) {
		return
	}
	out, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return // the node is down: the dialer sees the connection close
	}
	defer out.Close()
	if !p.net.track(l, out) {
		return
	}
	defer p.net.untrack(l, out)
	done := make(chan struct{}, 2)
	go func() { p.copyLink(l, out, in, first); done <- struct{}{} }()
	// The other direction carries the acceptor's reply to the hello and
	// nothing else: it follows the link's fate through the connection.
	go func() { io.Copy(in, out); done <- struct{}{} }() //nolint:errcheck // either side closing ends it
	<-done
	in.Close()
	out.Close()
	<-done
}

// copyLink copies the dialer's bytes, first those already read, to the
// node, holding them while l is stalled.
func (p *raftProxy) copyLink(l link, dst, src net.Conn, first []byte) {
	if _, err := dst.Write(first); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !p.net.await(l) {
				return
			}
			if _, err := dst.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// The proxy tells the links apart by the hello: a dropped link's
// connections break, the other links' go on; a stalled link delivers what
// it held, in order, when it heals.
func TestFaultNet_LinksAreCutOneDirectionAtATime(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	received := make(chan []byte, 16) // what node 3 reads, chunk by chunk
	var serving sync.WaitGroup
	serving.Go(func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			serving.Go(func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						received <- slices.Clone(buf[:n])
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	fn := newFaultNet(t)
	p := newRaftProxy(t, fn, 3, target.Addr().String())
	t.Cleanup(func() {
		target.Close()
		serving.Wait()
	})
	// dial connects to node 3 through its proxy as node from, and waits
	// until the proxy has forwarded the hello.
	dial := func(from uint64) net.Conn {
		c, err := net.Dial("tcp", p.addr())
		require.NoError(t, err)
		hello := append([]byte(helloMagic), 1, 0)
		hello = binary.BigEndian.AppendUint64(hello, from)
		_, err = c.Write(hello)
		require.NoError(t, err)
		var got []byte
		for len(got) < len(hello) {
			got = append(got, recv(t, received)...)
		}
		require.Equal(t, hello, got)
		return c
	}
	from1, from2 := dial(1), dial(2)
	defer from1.Close()
	defer from2.Close()

	fn.set([]link{{1, 3}}, linkStall)
	_, err = from1.Write([]byte("late"))
	require.NoError(t, err)
	_, err = from2.Write([]byte("on time"))
	require.NoError(t, err)
	require.Equal(t, "on time", string(recv(t, received)), "2→3 is up")
	select {
	case b := <-received:
		t.Fatalf("1→3 is stalled, yet %q arrived", b)
	case <-time.After(100 * time.Millisecond):
	}
	fn.heal()
	require.Equal(t, "late", string(recv(t, received)), "held, then delivered")

	fn.set([]link{{2, 3}}, linkDrop)
	from2.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	_, err = from2.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the proxy closed the dropped link's connection")
	again, err := net.Dial("tcp", p.addr())
	require.NoError(t, err)
	defer again.Close()
	_, err = again.Write(binary.BigEndian.AppendUint64(append([]byte(helloMagic), 1, 0), 2))
	require.NoError(t, err)
	again.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	_, err = again.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "a new connection of a dropped link is closed after the hello")
	_, err = from1.Write([]byte("still up"))
	require.NoError(t, err)
	require.Equal(t, "still up", string(recv(t, received)))
}

func recv(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("nothing arrived")
		return nil
	}
}
