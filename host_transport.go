package raft

// The shared transport of a Host (host.go). The host has one link to the
// other hosts, over TCP (a TCPTransport in host mode, tcp_wire.go) or an
// in-memory network; each group's Node gets a groupTransport, a view of
// that link which tags what the node sends with the group's ID and
// receives what the link routes to the group.
//
// The link's peers are the union of the groups' peers: hostPeers counts,
// for each peer host, the groups that name it, and hands the link a new
// peer set only when that union changes (a host named by a first group, or
// by none any more, or at a new address).

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"
)

// hostLink is a Host's connection to the other hosts.
type hostLink interface {
	// sendGroup sends the messages of group, as Transport.Send does; it
	// never blocks, and reports losses to the group (Host.route).
	sendGroup(group uint64, msgs []Message)
	// SetPeers sets the hosts to send to: the union of the groups' peers.
	SetPeers(members []Member)
	// close stops the link; nothing is delivered after it returns.
	close() error
}

// tcpHostLink is a TCPTransport in host mode.
type tcpHostLink struct{ *TCPTransport }

func (l tcpHostLink) close() error { return l.Close() }

// maxCommandSize is what the host's TCPTransport carries in one frame
// (see TCPTransport.maxCommandSize); a group's Node asks it through its
// groupTransport.
func (g *groupTransport) maxCommandSize() int {
	if t := g.host.tcp; t != nil {
		return t.maxCommandSize()
	}
	return 0
}

// inmemHostLink is a Host's endpoint on an InmemNetwork.
type inmemHostLink struct{ *inmemEndpoint }

func (l inmemHostLink) close() error {
	l.Detach()
	return nil
}

// groupTransport is the Transport a Host gives the Node of one group: it
// sends on the host's link with the group's ID, receives the messages the
// host routes to the group, and runs the node's event loop on the host's
// workers, ticked by the host's clock (loopPooled). It serves one node
// once, as TCPTransport does.
type groupTransport struct {
	host  *Host
	group uint64
	every int // the group's tick, in host ticks

	mu       sync.Mutex // serializes Attach and Detach
	attached bool
	detached bool
	clock    *hostTicked // the group's place on the host's clock, from Attach to Detach

	deliver func(Message) // set by Attach, before the group is routed to
	gate    inmemGate     // lets Detach stop deliveries and wait for those under way
}

var (
	_ Transport  = (*groupTransport)(nil)
	_ loopPooled = (*groupTransport)(nil)
)

func newGroupTransport(h *Host, group uint64, every int) *groupTransport {
	return &groupTransport{host: h, group: group, every: every, gate: inmemGate{drained: make(chan struct{}, 1)}}
}

// Attach routes the group's messages to deliver and puts the group on the
// host's clock. id must be the host's ID: a group's members are hosts.
func (g *groupTransport) Attach(id uint64, deliver func(Message)) error {
	if id != g.host.id {
		return fmt.Errorf("%w: group %d: node ID %d is not the host's ID %d", ErrInvalidConfig, g.group, id, g.host.id)
	}
	if deliver == nil {
		return errors.New("raft: host transport: nil deliver function")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.attached || g.detached {
		return fmt.Errorf("raft: the transport of group %d serves one node once", g.group)
	}
	g.deliver = deliver
	g.host.addRoute(g)
	g.clock = g.host.clock.add(g.every)
	g.attached = true
	return nil
}

// Send sends msgs on the host's link, tagged with the group's ID.
func (g *groupTransport) Send(msgs []Message) { g.host.link.sendGroup(g.group, msgs) }

// SetPeers records the group's peers in the host's union of peers.
func (g *groupTransport) SetPeers(members []Member) { g.host.peers.set(g.group, members) }

// Detach stops routing to the group and waits for deliveries under way,
// takes it off the clock, releases its peers, and removes it from the
// host's groups (so that Node.Close works as Host.StopGroup).
func (g *groupTransport) Detach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.detached {
		return
	}
	g.detached = true
	if g.attached {
		g.host.removeRoute(g)
		g.host.clock.remove(g.clock)
		g.host.quiesce.wake(g.group, true) // a resting leader's followers must not wait for it
		g.host.peers.set(g.group, nil)
	}
	g.gate.close()
	g.host.forget(g)
}

// receive hands m to the group's node unless it is detached.
func (g *groupTransport) receive(m Message) {
	if !g.gate.enter() {
		return
	}
	g.deliver(m)
	g.gate.exit()
}

// hostPeers is the union of the peers of a host's groups, which it keeps
// the host's link set to.
type hostPeers struct {
	mu      sync.Mutex
	link    hostLink
	logger  *zap.Logger
	byGroup map[uint64][]Member  // each group's last peers
	refs    map[uint64]*peerRefs // by host ID: the groups that name it, by address
	current map[uint64]string    // what the link was last given: host ID to address
	warned  map[uint64][2]string // address conflicts already logged
}

// peerRefs counts the groups that name a peer host, per address.
type peerRefs struct {
	addrs  map[string]int
	latest string // the address in use: the last one a group introduced
}

func newHostPeers(link hostLink, logger *zap.Logger) *hostPeers {
	return &hostPeers{link: link, logger: logger, byGroup: map[uint64][]Member{}, refs: map[uint64]*peerRefs{},
		current: map[uint64]string{}, warned: map[uint64][2]string{}}
}

// set replaces the peers of group (nil: the group is gone) and updates the
// link when the union changed. When groups name a host at different
// addresses (one host moved, and not every group knows it yet), the
// address named last by a group that did not name it before is used.
func (p *hostPeers) set(group uint64, members []Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.byGroup[group] {
		p.release(m.ID, m.Addr)
	}
	for _, m := range members {
		p.hold(m.ID, m.Addr)
	}
	if len(members) == 0 {
		delete(p.byGroup, group)
	} else {
		p.byGroup[group] = slices.Clone(members)
	}
	changed := len(p.current) != len(p.refs)
	for id, r := range p.refs {
		if addr, ok := p.current[id]; !ok || addr != r.latest {
			changed = true
			break
		}
	}
	if !changed {
		return
	}
	union := make([]Member, 0, len(p.refs))
	clear(p.current)
	for id, r := range p.refs {
		union = append(union, Member{ID: id, Addr: r.latest})
		p.current[id] = r.latest
	}
	slices.SortFunc(union, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	p.link.SetPeers(union)
}

func (p *hostPeers) hold(id uint64, addr string) {
	r := p.refs[id]
	if r == nil {
		r = &peerRefs{addrs: map[string]int{}}
		p.refs[id] = r
	}
	if r.addrs[addr]++; r.addrs[addr] == 1 {
		if len(r.addrs) > 1 {
			p.warnConflict(id, r.latest, addr)
		}
		r.latest = addr
	}
}

func (p *hostPeers) release(id uint64, addr string) {
	r := p.refs[id]
	if r == nil {
		return
	}
	if r.addrs[addr]--; r.addrs[addr] > 0 {
		return
	}
	delete(r.addrs, addr)
	if len(r.addrs) == 0 {
		delete(p.refs, id)
		return
	}
	if r.latest == addr {
		// The most named of the others; ties by address, to be
		// deterministic.
		r.latest = ""
		best := 0
		for a, n := range r.addrs {
			if n > best || n == best && a < r.latest {
				r.latest, best = a, n
			}
		}
	}
}

func (p *hostPeers) warnConflict(id uint64, old, addr string) {
	if w, ok := p.warned[id]; ok && w == [2]string{old, addr} {
		return
	}
	p.warned[id] = [2]string{old, addr}
	p.logger.Warn("groups name a peer host at different addresses; using the newest",
		zap.Uint64("peerHost", id), zap.String("was", old), zap.String("now", addr))
}
