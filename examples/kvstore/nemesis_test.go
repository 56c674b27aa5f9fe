package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/raftkit/raft/examples/kvstore/client"
)

// The faults the nemesis chooses among, each as likely as the others.
const (
	faultKill    = "kill"    // SIGKILL, restarted a moment later
	faultPause   = "pause"   // SIGSTOP, then SIGCONT
	faultIsolate = "isolate" // one node cut off from all others, both ways
	faultSplit   = "split"   // the leader and a minority of the others against the majority
	faultBridge  = "bridge"  // two sides that do not see each other, one node seeing both
	faultOneWay  = "one-way" // a node hears nothing, or is heard by no one, or one directed link is cut
)

var faultKinds = []string{faultKill, faultPause, faultIsolate, faultSplit, faultBridge, faultOneWay}

// nemesisRecord is what the nemesis did, and what it found wrong.
type nemesisRecord struct {
	mu         sync.Mutex
	actions    []string
	counts     map[string]int // by kind, and by kind and link mode ("split/stall")
	violations []string       // a minority acknowledged a write or served a ReadIndex read
	probed     probeCounts
}

// probeCounts counts the calls made to nodes cut off in a minority.
type probeCounts struct{ writes, linReads, leaseReads, leaseServed int }

func (r *nemesisRecord) did(kind, mode, action string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[kind]++
	if mode != "" {
		r.counts[kind+"/"+mode]++
	}
	r.actions = append(r.actions, action)
}

// note adds to the description of the last fault.
func (r *nemesisRecord) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions[len(r.actions)-1] += ": " + s
}

func (r *nemesisRecord) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.counts {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.counts[k]))
	}
	return fmt.Sprintf("%d faults (%s); nodes in a minority were sent %d writes, %d linearizable and %d lease reads (%d lease reads served)",
		len(r.actions), strings.Join(parts, ", "), r.probed.writes, r.probed.linReads, r.probed.leaseReads, r.probed.leaseServed)
}

// nemesis injects one fault at a time, every second or so, until ctx
// ends: a kill, a pause, or a partition of the Raft network (faultNet),
// dropped or stalled; half the time the fault targets the leader. It
// heals each fault before the next. While a node is cut off in a minority
// (isolate, split), a probe sends it writes and reads directly, without
// following redirects: it must acknowledge none of those writes and serve
// none of those ReadIndex reads until the partition heals, since it cannot
// reach a majority (§3.5, §6.4); its lease reads, if its lease still held,
// go into the history with everything else, where porcupine judges them
// against the writes the majority's new leader acknowledged meanwhile.
func nemesis(ctx context.Context, rng *rand.Rand, c *testCluster, h *history, keys []string, rec *nemesisRecord) {
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ids := c.ids()
	for n := 0; pause(500*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))); n++ {
		leader := c.leader()
		id, what := ids[rng.IntN(len(ids))], "node"
		if leader != 0 && rng.IntN(2) == 0 {
			// The case that makes writes' outcomes unknown and forces an
			// election.
			id, what = leader, "leader"
		}
		down := 200*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))
		mode := linkDrop
		if rng.IntN(2) == 0 {
			mode = linkStall
		}
		switch kind := faultKinds[rng.IntN(len(faultKinds))]; kind {
		case faultKill:
			st, err := c.nodes[id].tryStatus()
			if err == nil && rng.IntN(3) == 0 {
				// Down until the others have compacted past its log: it
				// restarts into a snapshot transfer, which the next faults
				// may interrupt.
				need := st.LastIndex + trailingEntries + 100
				start := time.Now()
				c.kill(id)
				ok, _ := c.fillUntil(ctx, 10*time.Second, h, func() bool { return c.compactedPast(without(ids, id), need) })
				rec.did(kind, "behind", fmt.Sprintf("kill -9 %s %d until the others compacted past index %d (%v, %v)",
					what, id, need, ok, time.Since(start).Round(time.Millisecond)))
				c.start(id)
				break
			}
			c.kill(id)
			rec.did(kind, "", fmt.Sprintf("kill -9 %s %d for %v", what, id, down.Round(time.Millisecond)))
			pause(down)
			c.start(id)
		case faultPause:
			c.signal(id, syscall.SIGSTOP)
			rec.did(kind, "", fmt.Sprintf("pause %s %d for %v", what, id, down.Round(time.Millisecond)))
			pause(down)
			c.signal(id, syscall.SIGCONT)
		case faultIsolate:
			c.net.set(across([]uint64{id}, without(ids, id)), mode)
			rec.did(kind, mode.String(), fmt.Sprintf("isolate %s %d (%v) for %v", what, id, mode, down.Round(time.Millisecond)))
			c.holdMinority(ctx, rng, n, id, []uint64{id}, leader, down, h, keys, rec)
		case faultSplit:
			// The leader with a minority of the others, against a majority
			// that elects a new leader: the stale leader's case.
			minority := []uint64{id}
			if leader != 0 {
				minority = []uint64{leader}
			}
			rest := without(ids, minority...)
			rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
			minority = append(minority, rest[:(len(ids)-1)/2-len(minority)]...)
			down += time.Second // time for an election
			c.net.set(across(minority, without(ids, minority...)), mode)
			rec.did(kind, mode.String(), fmt.Sprintf("split %v | %v, leader %d in the minority (%v), for %v",
				minority, without(ids, minority...), leader, mode, down.Round(time.Millisecond)))
			c.holdMinority(ctx, rng, n, minority[0], minority, leader, down, h, keys, rec)
		case faultBridge:
			// Two sides that do not see each other and a node that sees
			// both; half the time the leader is on a side, not the bridge.
			order := slices.Clone(ids)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			if leader != 0 && rng.IntN(2) == 0 && order[0] == leader {
				order[0], order[1] = order[1], order[0]
			}
			bridge, sides := order[0], order[1:]
			left, right := sides[:len(sides)/2], sides[len(sides)/2:]
			c.net.set(across(left, right), mode)
			rec.did(kind, mode.String(), fmt.Sprintf("bridge %v | %d | %v, leader %d (%v), for %v",
				left, bridge, right, leader, mode, down.Round(time.Millisecond)))
			pause(down)
			c.net.heal()
		case faultOneWay:
			var links []link
			var desc string
			switch rng.IntN(3) {
			case 0:
				links, desc = oneWay(without(ids, id), []uint64{id}), fmt.Sprintf("%s %d hears no one", what, id)
			case 1:
				links, desc = oneWay([]uint64{id}, without(ids, id)), fmt.Sprintf("no one hears %s %d", what, id)
			default:
				others := without(ids, id)
				to := others[rng.IntN(len(others))]
				if rng.IntN(2) == 0 {
					links, desc = []link{{id, to}}, fmt.Sprintf("link %d→%d from %s %d", id, to, what, id)
				} else {
					links, desc = []link{{to, id}}, fmt.Sprintf("link %d→%d to %s %d", to, id, what, id)
				}
			}
			c.net.set(links, mode)
			rec.did(kind, mode.String(), fmt.Sprintf("one-way: %s (%v) for %v", desc, mode, down.Round(time.Millisecond)))
			pause(down)
			c.net.heal()
		}
	}
}

// holdMinority keeps the partition that cut off minority for d (or until
// ctx ends) while probe sends writes and reads to node probe, which is in
// it, then heals the network. When the leader was cut off, it notes how
// soon the majority knew a new one.
func (c *testCluster) holdMinority(ctx context.Context, rng *rand.Rand, fault int, probe uint64, minority []uint64, leader uint64, d time.Duration, h *history, keys []string, rec *nemesisRecord) {
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	majority := without(c.ids(), minority...)
	start := time.Now()
	var wg sync.WaitGroup
	var electedAt atomic.Int64 // history time when the majority was seen to know a leader; 0: not yet
	seed := rng.Uint64()
	for lane, kind := range []string{"write", "linearizable", "lease"} {
		prng := rand.New(rand.NewPCG(seed, uint64(lane)))
		wg.Go(func() { c.probe(pctx, prng, fault, probe, kind, &electedAt, h, keys, rec) })
	}
	var elected time.Duration
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for pctx.Err() == nil {
		if elected == 0 && c.leaderAmong(majority) != 0 {
			elected = time.Since(start)
			electedAt.Store(h.now())
		}
		select {
		case <-tick.C:
		case <-pctx.Done():
		}
	}
	// The probe stops before the network heals: whatever it was told
	// before this point, it was told by a node that could not reach a
	// majority.
	wg.Wait()
	c.net.heal()
	switch {
	case !slices.Contains(minority, leader):
	case elected > 0:
		rec.note(fmt.Sprintf("the majority knew a new leader after %v", elected.Round(time.Millisecond)))
		rec.mu.Lock()
		rec.counts["leader cut off, new one elected"]++
		rec.mu.Unlock()
	default:
		rec.note("no new leader on the majority side meanwhile")
	}
}

// probe sends calls of one kind to node id, cut off in a minority, until
// ctx ends; successful ones go into the history. A write acknowledged or a
// linearizable read served is a violation, and so is a lease read served
// that was sent after the majority was seen to know a leader: that leader
// was elected after the old leader's lease ended (§6.4.1), so the old
// leader cannot hold a lease any more.
func (c *testCluster) probe(ctx context.Context, rng *rand.Rand, fault int, id uint64, kind string, electedAt *atomic.Int64, h *history, keys []string, rec *nemesisRecord) {
	hc := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	clientID := probeClientID + int(id)
	base := "http://" + c.nodes[id].http + "/kv/"
	for seq := 0; ctx.Err() == nil; seq++ {
		key := keys[rng.IntN(len(keys))]
		var req *http.Request
		switch kind {
		case "write":
			req, _ = http.NewRequestWithContext(ctx, http.MethodPut, base+key, strings.NewReader(fmt.Sprintf("p%d-%d-%d", id, fault, seq)))
		case "linearizable", "lease":
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+key+"?consistency="+kind, nil)
		}
		call := h.now()
		resp, err := hc.Do(req)
		var code int
		var body []byte
		if err == nil {
			code = resp.StatusCode
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		ret := h.now()
		served := err == nil && (code == http.StatusOK || code == http.StatusNotFound && kind != "write")
		rec.mu.Lock()
		switch kind {
		case "write":
			rec.probed.writes++
		case "linearizable":
			rec.probed.linReads++
		case "lease":
			rec.probed.leaseReads++
			if served {
				rec.probed.leaseServed++
			}
		}
		if at := electedAt.Load(); served && kind == "lease" && at != 0 && call > at {
			rec.violations = append(rec.violations, fmt.Sprintf("node %d, cut off in a minority, served a lease read sent %v after the majority knew a new leader: %s %s, %d (%q)",
				id, time.Duration(call-at), req.Method, req.URL, code, body))
		}
		if served && kind != "lease" {
			rec.violations = append(rec.violations, fmt.Sprintf("node %d, cut off in a minority, answered %s %s with %d (%q)", id, req.Method, req.URL, code, body))
		}
		rec.mu.Unlock()
		switch {
		case kind == "write":
			in := kvIn{op: opPut, key: key, value: fmt.Sprintf("p%d-%d-%d", id, fault, seq)}
			switch {
			case err == nil && code == http.StatusOK:
				var ans struct {
					Revision uint64 `json:"revision"`
				}
				json.Unmarshal(body, &ans) //nolint:errcheck // a violation already
				h.write(clientID, in, call, ans.Revision, nil)
			case err == nil && (code == http.StatusTemporaryRedirect || code == http.StatusServiceUnavailable):
				h.write(clientID, in, call, 0, errors.New("not made"))
			default: // sent, and no answer that says what became of it
				h.write(clientID, in, call, 0, &client.UnknownOutcomeError{Method: "PUT", Key: key, Err: fmt.Errorf("status %d, %v", code, err)})
			}
		case served:
			value := string(body)
			if code == http.StatusNotFound {
				value = ""
			}
			h.add(porcupine.Operation{ClientId: clientID, Input: kvIn{op: opGet, key: key}, Output: kvOut{value: value},
				Call: call, Return: ret, Metadata: fmt.Sprintf("%s read on node %d cut off in a minority", kind, id)})
		}
		if !served && ctx.Err() == nil {
			// Refused at once (no leader known, or a redirect): not too fast.
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

// probeClientID+id is the porcupine client ID of the probe of node id.
const probeClientID = 100

// lagBehindSnapshot makes a follower receive a snapshot over TCP: it cuts
// the follower off, writes until every other node has compacted its log
// past the follower's last entry, heals, and waits until the follower has
// installed the leader's snapshot, as its log, its /metrics (the restore
// count) and its /status show. The writes go into the history.
func lagBehindSnapshot(t *testing.T, rng *rand.Rand, c *testCluster, h *history, trailing uint64) string {
	t.Helper()
	var leader uint64
	require.Eventually(t, func() bool { leader = c.leader(); return leader != 0 }, 20*time.Second, 20*time.Millisecond,
		"no leader; logs in %s", c.dir)
	ids := c.ids()
	followers := without(ids, leader)
	lagger := followers[rng.IntN(len(followers))]
	others := without(ids, lagger)
	nd := c.nodes[lagger]
	restoresBefore, err := c.metricCount(lagger, "raft_snapshot_restore_duration_seconds")
	require.NoError(t, err)
	receivedBefore := c.logCount(lagger, "snapshot received")

	c.net.set(across([]uint64{lagger}, others), linkDrop)
	st := nd.status(t)
	// FileStorage keeps trailing entries behind a snapshot: a node whose
	// snapshot is past lastIndex+trailing no longer holds the entry after
	// lastIndex, and must send a snapshot (Raft paper §7). A margin covers
	// what was in flight when the links were cut.
	need := st.LastIndex + trailing + 100
	start := time.Now()

	ok, writes := c.fillUntil(context.Background(), 30*time.Second, h, func() bool { return c.compactedPast(others, need) })
	require.True(t, ok, "the nodes other than %d did not snapshot past index %d; logs in %s", lagger, need, c.dir)
	lagged := time.Since(start)
	c.net.heal()

	healed := time.Now()
	var restored uint64
	require.True(t, waitFor(context.Background(), 30*time.Second, func() bool {
		n, err := c.metricCount(lagger, "raft_snapshot_restore_duration_seconds")
		st, serr := nd.tryStatus()
		// Status's AppliedIndex can show the restore a moment before its
		// SnapshotIndex does (the first is read live, the second as the
		// event loop last published it): wait for both.
		if err != nil || serr != nil || n <= restoresBefore || st.AppliedIndex < need || st.SnapshotIndex < need {
			return false
		}
		restored = st.SnapshotIndex
		return true
	}), "node %d did not install a snapshot past index %d; logs in %s", lagger, need, c.dir)
	require.Greater(t, c.logCount(lagger, "snapshot received"), receivedBefore,
		"node %d restored a snapshot but did not log receiving one; logs in %s", lagger, c.dir)
	return fmt.Sprintf("node %d cut off at index %d; %d writes until the others snapshotted past %d (%v); healed, it installed the snapshot at index %d over TCP within %v",
		lagger, st.LastIndex, writes, need, lagged.Round(time.Millisecond), restored, time.Since(healed).Round(time.Millisecond))
}

// fillUntil writes to the key "fill", one write after another, until cond
// holds (true), or within passes or ctx ends (false), and returns how many
// writes it made. The workers' clients wait out a node that is down or cut
// off, so they alone would write little meanwhile. The writes go into the
// history.
func (c *testCluster) fillUntil(ctx context.Context, within time.Duration, h *history, cond func() bool) (ok bool, writes int) {
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		cl := client.New(c.httpAddrs()...)
		defer cl.Close()
		for fctx.Err() == nil {
			wctx, wcancel := context.WithTimeout(fctx, 3*time.Second)
			in := kvIn{op: opPut, key: "fill", value: fmt.Sprintf("f%d", h.nextFill())}
			call := h.now()
			rev, err := cl.Put(wctx, in.key, []byte(in.value))
			wcancel()
			if fctx.Err() != nil && err != nil {
				// Cut short: conservatively, it may have been applied.
				err = &client.UnknownOutcomeError{Method: "PUT", Key: in.key, Err: err}
			}
			h.write(fillClientID, in, call, rev, err)
			writes++
		}
	})
	ok = waitFor(ctx, within, cond)
	cancel()
	wg.Wait()
	return ok, writes
}

// fillClientID is the porcupine client ID of fillUntil's writer.
const fillClientID = 99

// waitFor polls cond every 20ms until it holds (true), or within passes
// or ctx ends (false).
func waitFor(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// compactedPast reports whether every node of ids has a snapshot at or
// past index need.
func (c *testCluster) compactedPast(ids []uint64, need uint64) bool {
	for _, id := range ids {
		st, err := c.nodes[id].tryStatus()
		if err != nil || st.SnapshotIndex < need {
			return false
		}
	}
	return true
}

// across returns the links between a and b, both ways.
func across(a, b []uint64) []link {
	return append(oneWay(a, b), oneWay(b, a)...)
}

// oneWay returns the links from each of a to each of b.
func oneWay(a, b []uint64) []link {
	var links []link
	for _, from := range a {
		for _, to := range b {
			links = append(links, link{from, to})
		}
	}
	return links
}

// without returns ids less drop.
func without(ids []uint64, drop ...uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		if !slices.Contains(drop, id) {
			out = append(out, id)
		}
	}
	return out
}

// ids returns the nodes' IDs in order.
func (c *testCluster) ids() []uint64 {
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// leaderAmong returns a leader that one of ids knows and that is one of
// them; 0 if none.
func (c *testCluster) leaderAmong(ids []uint64) uint64 {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, id := range ids {
		resp, err := hc.Get("http://" + c.nodes[id].http + "/healthz")
		if err != nil {
			continue
		}
		var health struct {
			Leader uint64 `json:"leader"`
		}
		err = json.NewDecoder(resp.Body).Decode(&health)
		resp.Body.Close()
		if err == nil && slices.Contains(ids, health.Leader) {
			return health.Leader
		}
	}
	return 0
}

// metricCount returns the sum of the count series of histogram name in
// node id's GET /metrics (the process's since it started).
func (c *testCluster) metricCount(id uint64, name string) (uint64, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + c.nodes[id].http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum uint64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+"_count")
		if !ok || rest == "" || rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		n, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", line, err)
		}
		sum += uint64(n)
	}
	return sum, sc.Err()
}

// logCount counts the lines of node id's log that contain phrase.
func (c *testCluster) logCount(id uint64, phrase string) int {
	b, err := os.ReadFile(c.nodes[id].log.Name())
	if err != nil {
		return 0
	}
	return strings.Count(string(b), phrase)
}
