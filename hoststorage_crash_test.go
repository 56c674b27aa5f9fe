package raft

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// modelLog is what a group of a HostStorage should hold: a model written
// from the Storage contract, independent of the implementation.
type modelLog struct {
	hs               HardState
	first, firstTerm uint64
	entries          []Entry // entries[i].Index == first+i
}

func newModelLog() modelLog { return modelLog{first: 1} }

func (m modelLog) clone() modelLog {
	m.entries = slices.Clone(m.entries)
	return m
}

func (m modelLog) last() uint64 { return m.first + uint64(len(m.entries)) - 1 }

func (m modelLog) termAt(i uint64) uint64 {
	if i == m.first-1 {
		return m.firstTerm
	}
	return m.entries[i-m.first].Term
}

// modelEffect is one record a request writes: an entry, a hard state, a
// compaction or a removal.
type modelEffect struct {
	kind        byte
	entry       Entry
	hs          HardState
	index, term uint64
}

func (m *modelLog) apply(eff modelEffect) {
	switch eff.kind {
	case recEntry:
		m.entries = append(m.entries[:eff.entry.Index-m.first:eff.entry.Index-m.first], eff.entry)
	case recHardState:
		m.hs = eff.hs
	case recCompact:
		if eff.index >= m.last() || m.termAt(eff.index) != eff.term {
			m.entries = nil
		} else {
			m.entries = slices.Clone(m.entries[eff.index+1-m.first:])
		}
		m.first, m.firstTerm = eff.index+1, eff.term
	case recGroupRemoved:
		*m = newModelLog()
	}
}

// effectsOf returns the records req writes to a group holding m, in order,
// and applies them to m.
func effectsOf(m *modelLog, req *hostRequest) []modelEffect {
	var out []modelEffect
	add := func(eff modelEffect) {
		out = append(out, eff)
		m.apply(eff)
	}
	switch req.kind {
	case recGroupRemoved:
		add(modelEffect{kind: recGroupRemoved})
	case recCompact:
		if req.index >= m.first {
			add(modelEffect{kind: recCompact, index: req.index, term: req.term})
		}
	default:
		for _, e := range req.entries {
			if len(e.Data) == 0 {
				e.Data = nil
			}
			add(modelEffect{kind: recEntry, entry: e})
		}
		if req.hs != m.hs {
			add(modelEffect{kind: recHardState, hs: req.hs})
		}
	}
	return out
}

// candidates returns the states a torn write can leave a group in: m with
// a prefix of effs applied, from none to all.
func candidates(m modelLog, effs []modelEffect) []modelLog {
	out := []modelLog{m.clone()}
	for _, eff := range effs {
		m.apply(eff)
		out = append(out, m.clone())
	}
	return out
}

// readModel reads what group s holds.
func readModel(t *testing.T, s Storage) modelLog {
	t.Helper()
	var m modelLog
	var err error
	m.hs, err = s.InitialState()
	require.NoError(t, err)
	m.first, err = s.FirstIndex()
	require.NoError(t, err)
	m.firstTerm, err = s.Term(m.first - 1)
	require.NoError(t, err)
	m.entries = allEntries(t, s)
	if len(m.entries) == 0 {
		m.entries = nil
	}
	return m
}

// matchCandidate returns which candidate got equals, -1 if none.
func matchCandidate(got modelLog, cands []modelLog) int {
	for i, c := range cands {
		if got.hs == c.hs && got.first == c.first && (got.firstTerm == c.firstTerm || got.first == 1) && entriesEqual(got.entries, c.entries) {
			return i
		}
	}
	return -1
}

func entriesEqual(a, b []Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || a[i].Term != b[i].Term || a[i].Type != b[i].Type || string(a[i].Data) != string(b[i].Data) {
			return false
		}
	}
	return true
}

func describeModel(m modelLog) string {
	last := m.last()
	lastTerm := m.firstTerm
	if len(m.entries) > 0 {
		lastTerm = m.entries[len(m.entries)-1].Term
	}
	return fmt.Sprintf("hs %+v, log (%d/%d .. %d/%d]", m.hs, m.first-1, m.firstTerm, last, lastTerm)
}

// copyDir copies the regular files of src (and of its group directories)
// into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if info.Name() == "LOCK" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	require.NoError(t, err)
	return dst
}

// TestHostStorage_TornLastWriteAtEveryOffset tears, at every byte offset,
// one write holding the records of several groups: a copy of an idle group
// made by cleaning, a Save that replaces a suffix and advances the commit
// index over the new entries, an append, a compaction and a new group's
// first entries. Power loss keeps any prefix of the write. After each
// cut, every group must hold what a prefix of its own records leaves (all
// of them, when the write is whole), which keeps every acknowledged write
// and never a commit index over a replaced entry; the log must accept new
// writes and reopen.
func TestHostStorage_TornLastWriteAtEveryOffset(t *testing.T) {
	base := t.TempDir()
	opts := []FileOption{WithSegmentSize(4096), WithNoSync()}
	h := openHS(t, base, opts...)
	// Group 1 writes first and then stays idle: it alone pins segment 1
	// once group 9, which fills the segment, has compacted its log.
	require.NoError(t, openGroup(t, h, 1).Save(HardState{Term: 2, Commit: 5}, groupEntries(1, 1, 10, 2)))
	g9 := openGroup(t, h, 9)
	var i uint64
	for i = 1; len(h.segs) < 2; i++ {
		require.NoError(t, g9.Save(HardState{Term: 1, Commit: i}, groupEntries(9, i, i, 1)))
	}
	require.NoError(t, g9.Save(HardState{Term: 1, Commit: i}, groupEntries(9, i, i, 1)))
	require.NoError(t, g9.Compact(i, 1))
	require.NoError(t, openGroup(t, h, 2).Save(HardState{Term: 1, Commit: 5}, groupEntries(2, 1, 5, 1)))
	require.NoError(t, openGroup(t, h, 3).Save(HardState{Term: 1, Commit: 20}, groupEntries(3, 1, 20, 1)))
	models := map[uint64]modelLog{}
	for id := range h.groups {
		models[id] = readModel(t, openGroup(t, h, id))
	}
	before := copyDir(t, base)
	head := h.segs[len(h.segs)-1]
	headName, start := filepath.Base(head.f.Name()), head.size

	reqs := []*hostRequest{
		{g: h.groups[2], kind: recEntry, hs: HardState{Term: 1, Commit: 8}, entries: groupEntries(2, 6, 8, 1)},
		{g: h.groups[1], kind: recEntry, hs: HardState{Term: 3, Commit: 7}, entries: groupEntries(1, 6, 7, 3)},
		{g: h.groups[3], kind: recCompact, index: 10, term: 1},
	}
	openGroup(t, h, 4)
	reqs = append(reqs, &hostRequest{g: h.groups[4], kind: recEntry, hs: HardState{Term: 1, Commit: 1}, entries: groupEntries(4, 1, 3, 1)})
	effects := map[uint64][]modelEffect{}
	pending := map[uint64]modelLog{}
	for id, m := range models {
		pending[id] = m.clone()
	}
	pending[4] = newModelLog()
	models[4] = newModelLog()
	for _, req := range reqs {
		m := pending[req.g.id]
		effects[req.g.id] = append(effects[req.g.id], effectsOf(&m, req)...)
		pending[req.g.id] = m
	}
	h.mu.Lock()
	h.forceCleaning = true
	h.mu.Unlock()
	h.submit(reqs...)
	for _, req := range reqs {
		require.NoError(t, req.err)
	}
	require.Equal(t, headName, filepath.Base(h.segs[len(h.segs)-1].f.Name()), "the last write went to the same segment")
	require.NoError(t, h.Close())
	full, err := os.ReadFile(filepath.Join(base, headName))
	require.NoError(t, err)
	lastWrite := full[start:]
	t.Logf("the last write: %d bytes", len(lastWrite))
	copied, _, _, _, ok := parseHostRecord(lastWrite)
	require.True(t, ok)
	require.Equal(t, byte(recGroupCopy), copied, "the write starts with a copy of group 1, made by cleaning")

	cands := map[uint64][]modelLog{}
	for id, m := range models {
		cands[id] = candidates(m, effects[id])
	}
	for cut := 0; cut <= len(lastWrite); cut++ {
		dir := copyDir(t, before)
		require.NoError(t, os.WriteFile(filepath.Join(dir, headName), full[:int(start)+cut], 0o644))
		h, err := OpenHostStorage(dir, opts...)
		require.NoError(t, err, "cut at %d", cut)
		for id, cs := range cands {
			got := readModel(t, openGroup(t, h, id))
			k := matchCandidate(got, cs)
			require.GreaterOrEqual(t, k, 0, "cut at %d: group %d holds %s, which no prefix of its records leaves", cut, id, describeModel(got))
			if cut == len(lastWrite) {
				require.Equal(t, len(cs)-1, k, "group %d: the whole write is kept", id)
			}
		}
		// The log goes on after the cut.
		g4 := openGroup(t, h, 4)
		last, err := g4.LastIndex()
		require.NoError(t, err)
		require.NoError(t, g4.Save(HardState{Term: 5, Commit: last}, groupEntries(4, last+1, last+1, 5)))
		require.NoError(t, h.Close())
		h = openHS(t, dir, opts...)
		got, err := openGroup(t, h, 4).Term(last + 1)
		require.NoError(t, err)
		require.Equal(t, uint64(5), got, "cut at %d", cut)
		require.NoError(t, h.Close())
	}
	// And the real directory, whose oldest segment the write freed.
	segs, _ := filepath.Glob(filepath.Join(base, "hwal-*.log"))
	require.NotContains(t, segs, filepath.Join(base, "hwal-0000000000000001.log"), "once group 1 was copied, segment 1 was deleted")
	h = openHS(t, base, opts...)
	defer h.Close()
	for id, cs := range cands {
		got := readModel(t, openGroup(t, h, id))
		require.Equal(t, len(cs)-1, matchCandidate(got, cs), "group %d", id)
	}
}

// powerDisk stands for the disk under a HostStorage in
// TestHostStorage_PowerLossRandomized: it records how much of each segment
// each fsync made durable, fails the failAt-th fsync (the power goes off
// during it), and at the crash drops what was not synced, keeping a random
// prefix of it.
type powerDisk struct {
	armed  bool
	syncs  int
	failAt int
	synced map[string]int64 // file name: durable size
}

var errPowerCut = errors.New("power cut")

func (d *powerDisk) sync(f *os.File) error {
	if d.armed {
		if d.syncs++; d.syncs == d.failAt {
			return errPowerCut
		}
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	d.synced[filepath.Base(f.Name())] = st.Size()
	return nil
}

// arm marks every segment as durable as it is now (the store just opened)
// and starts counting fsyncs.
func (d *powerDisk) arm(t *testing.T, dir string) {
	segs, err := filepath.Glob(filepath.Join(dir, "hwal-*.log"))
	require.NoError(t, err)
	for _, seg := range segs {
		st, err := os.Stat(seg)
		require.NoError(t, err)
		d.synced[filepath.Base(seg)] = st.Size()
	}
	d.armed = true
}

// powerLoss drops, in every segment, what was written after its last
// fsync, but a random prefix of it: power loss can keep any prefix of a
// write in flight. Sometimes the lost part reads back as zeros, as a file
// extended without its data can. A segment that was never synced may lose
// its directory entry.
func (d *powerDisk) powerLoss(t *testing.T, rng *rand.Rand, dir string) {
	segs, err := filepath.Glob(filepath.Join(dir, "hwal-*.log"))
	require.NoError(t, err)
	for _, seg := range segs {
		st, err := os.Stat(seg)
		require.NoError(t, err)
		synced, ok := d.synced[filepath.Base(seg)]
		if !ok && rng.Intn(2) == 0 {
			require.NoError(t, os.Remove(seg))
			continue
		}
		if st.Size() <= synced {
			continue
		}
		keep := synced + rng.Int63n(st.Size()-synced+1)
		require.NoError(t, os.Truncate(seg, keep))
		if rng.Intn(4) == 0 {
			require.NoError(t, os.Truncate(seg, st.Size()))
		}
	}
}

// genRequest makes a random request for a group holding m, as a Node
// would: appends, truncations of uncommitted entries by a newer term, a
// commit index that never moves back or past the log, compactions up to
// the commit index, rarely a removal.
func genRequest(rng *rand.Rand, g *storedGroup, m modelLog) *hostRequest {
	switch r := rng.Intn(100); {
	case r < 2:
		return &hostRequest{g: g, kind: recGroupRemoved}
	case r < 22:
		lo := m.first - 1
		if m.hs.Commit < lo {
			return &hostRequest{g: g, kind: recCompact, index: lo, term: m.firstTerm}
		}
		index := lo + uint64(rng.Int63n(int64(m.hs.Commit-lo+1)))
		return &hostRequest{g: g, kind: recCompact, index: index, term: m.termAt(index)}
	}
	hs := m.hs
	hs.Term = max(hs.Term, 1)
	at := m.last() + 1
	if lo := max(hs.Commit, m.first-1) + 1; lo <= m.last() && rng.Intn(5) == 0 {
		// A new leader overwrites uncommitted entries.
		at = lo + uint64(rng.Int63n(int64(m.last()-lo+1)))
		hs.Term++
		hs.Vote = uint64(rng.Intn(3))
	}
	var ents []Entry
	for i := 0; i < rng.Intn(5); i++ {
		data := make([]byte, rng.Intn(200))
		rng.Read(data)
		ents = append(ents, Entry{Index: at + uint64(i), Term: hs.Term, Data: data})
	}
	if at <= m.last() && len(ents) == 0 {
		ents = append(ents, Entry{Index: at, Term: hs.Term, Data: []byte("overwrite")})
	}
	newLast := m.last()
	if len(ents) > 0 {
		newLast = ents[len(ents)-1].Index
	}
	if lo := max(hs.Commit, m.first-1); newLast > lo {
		hs.Commit = lo + uint64(rng.Int63n(int64(newLast-lo+1)))
	}
	return &hostRequest{g: g, kind: recEntry, hs: hs, entries: ents}
}

// TestHostStorage_PowerLossRandomized writes random batches of several
// groups' Saves, compactions and removals, each batch one write and fsync
// (cleaning copies idle groups and deletes segments on the way), cuts the
// power during a random fsync, drops what was not synced but a random
// prefix (sometimes zero-filled), and reopens: every group must hold every
// acknowledged write, and of the batch in flight at most a prefix of its
// own records, so that nothing unacknowledged counts as committed.
// RAFT_HOST_CRASH_SEED replays a run; RAFT_HOST_CRASH_ITER sets the number
// of crashes (default 40).
func TestHostStorage_PowerLossRandomized(t *testing.T) {
	seed := int64(envInt("RAFT_HOST_CRASH_SEED", 0))
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with RAFT_HOST_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	const groups = 6
	models := map[uint64]modelLog{}
	for id := uint64(1); id <= groups; id++ {
		models[id] = newModelLog()
	}
	var inflight map[uint64][]modelEffect
	// Each group writes in a batch with its own probability, which changes
	// now and then: idle groups are what cleaning must copy.
	activity := map[uint64]float64{}
	levels := []float64{0, 0.02, 0.3, 0.8}
	crashes := envInt("RAFT_HOST_CRASH_ITER", 40)
	acked, cleaned := 0, 0
	for it := 0; it < crashes; it++ {
		disk := &powerDisk{failAt: 1 + rng.Intn(40), synced: map[string]int64{}}
		h, err := OpenHostStorage(dir, WithSegmentSize(4096), func(o *fileOptions) { o.syncHook = disk.sync })
		require.NoError(t, err, "crash %d (seed %d)", it, seed)
		disk.arm(t, dir)
		for id := uint64(1); id <= groups; id++ {
			if it == 0 || rng.Intn(8) == 0 {
				activity[id] = levels[rng.Intn(len(levels))]
			}
			got := readModel(t, openGroup(t, h, id))
			cands := candidates(models[id], inflight[id])
			k := matchCandidate(got, cands)
			require.GreaterOrEqual(t, k, 0, "crash %d (seed %d): group %d holds %s; acknowledged: %s; in flight: %d records",
				it, seed, id, describeModel(got), describeModel(models[id]), len(inflight[id]))
			models[id] = cands[k]
		}
		for {
			// A batch: requests of a random subset of groups, sometimes
			// two of one group.
			var reqs []*hostRequest
			pending := map[uint64]modelLog{}
			effects := map[uint64][]modelEffect{}
			for id := uint64(1); id <= groups; id++ {
				if rng.Float64() >= activity[id] {
					continue
				}
				for n := 1 + rng.Intn(2); n > 0; n-- {
					m, ok := pending[id]
					if !ok {
						m = models[id].clone()
					}
					h.mu.Lock()
					g := h.groups[id]
					h.mu.Unlock()
					req := genRequest(rng, g, m)
					effects[id] = append(effects[id], effectsOf(&m, req)...)
					pending[id] = m
					reqs = append(reqs, req)
					if req.kind == recGroupRemoved {
						break
					}
				}
			}
			h.mu.Lock()
			before := len(h.segs)
			h.mu.Unlock()
			h.submit(reqs...)
			var failed error
			for _, req := range reqs {
				if req.err != nil {
					require.ErrorIs(t, req.err, errPowerCut, "crash %d (seed %d): a request was refused", it, seed)
					failed = req.err
				}
			}
			if failed != nil {
				inflight = effects
				break
			}
			acked += len(reqs)
			for id, m := range pending {
				models[id] = m
			}
			// A removed group comes back empty when next written.
			for _, req := range reqs {
				if req.kind == recGroupRemoved {
					_, err := h.Group(req.g.id)
					require.NoError(t, err)
				}
			}
			h.mu.Lock()
			if len(h.segs) < before {
				cleaned++
			}
			h.mu.Unlock()
		}
		h.Close()
		disk.powerLoss(t, rng, dir)
	}
	t.Logf("%d crashes, %d requests acknowledged, segments deleted after %d of them", crashes, acked, cleaned)
	require.Positive(t, cleaned, "the run deleted segments")
}

// hostCrashData is what the crash child writes at index i of group g.
func hostCrashData(g, i uint64) []byte {
	return []byte(fmt.Sprintf("group %d entry %d %s", g, i, strings.Repeat("x", int((g*7+i)%97))))
}

func init() {
	if dir := os.Getenv("RAFT_HOST_CRASH_CHILD"); dir != "" {
		hostCrashChild(dir)
		os.Exit(0)
	}
}

// hostCrashChild saves into eight groups of a HostStorage in dir at once,
// forever, each group from its own goroutine, printing "ack <group>
// <last index>" once a Save has returned (acknowledged); each group
// compacts its log now and then, so that segments are deleted and idle
// groups copied.
func hostCrashChild(dir string) {
	h, err := OpenHostStorage(dir, WithSegmentSize(64<<10))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	for g := uint64(1); g <= 8; g++ {
		go func() {
			s, err := h.Group(g)
			if err != nil {
				report("error %v", err)
				os.Exit(1)
			}
			last, _ := s.LastIndex()
			rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(g)))
			for {
				n := 1 + rng.Intn(10)
				ents := make([]Entry, n)
				for i := range ents {
					idx := last + 1 + uint64(i)
					ents[i] = Entry{Index: idx, Term: 1, Data: hostCrashData(g, idx)}
				}
				if err := s.Save(HardState{Term: 1, Commit: last}, ents); err != nil {
					report("error %v", err)
					os.Exit(1)
				}
				last += uint64(n)
				report("ack %d %d", g, last)
				if first, _ := s.FirstIndex(); last-first > 300 && g != 1 {
					// Group 1 never compacts: cleaning must copy it.
					if err := s.Compact(last-100, 1); err != nil {
						report("error %v", err)
						os.Exit(1)
					}
				}
				if g == 1 && rng.Intn(50) != 0 {
					time.Sleep(time.Millisecond) // group 1 writes rarely
				}
			}
		}()
	}
	select {}
}

// TestHostStorage_CrashKill runs a child that saves into eight groups of a
// HostStorage at once, kills it with SIGKILL at a random moment, and checks
// after reopening that every acknowledged entry of every group is present
// and intact. RAFT_CRASH_ITER sets the number of kills (default 12).
func TestHostStorage_CrashKill(t *testing.T) {
	iters := envInt("RAFT_CRASH_ITER", 12)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	exe, err := os.Executable()
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "log")
	acked := map[uint64]uint64{}
	total := 0
	for it := 0; it < iters; it++ {
		cmd := exec.Command(exe, "-test.run", "^$")
		cmd.Env = append(os.Environ(), "RAFT_HOST_CRASH_CHILD="+dir)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		var kill <-chan time.Time
		armed := false
		deadline := time.After(time.Minute)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				var g, last uint64
				_, err := fmt.Sscanf(line, "ack %d %d", &g, &last)
				require.NoError(t, err, "child: %s", line)
				acked[g] = max(acked[g], last)
				total++
				if !armed {
					kill, armed = time.After(time.Duration(rng.Intn(100))*time.Millisecond), true
				}
			case <-deadline:
				_ = cmd.Process.Kill()
				t.Fatalf("iteration %d: the child acknowledged nothing within a minute", it)
			case <-kill:
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				kill = nil
			}
		}
		_ = cmd.Wait()

		h, err := OpenHostStorage(dir, WithSegmentSize(64<<10))
		require.NoError(t, err, "iteration %d", it)
		for g, want := range acked {
			s := openGroup(t, h, g)
			last, err := s.LastIndex()
			require.NoError(t, err)
			require.GreaterOrEqual(t, last, want, "iteration %d: group %d lost an acknowledged entry", it, g)
			for _, e := range allEntries(t, s) {
				require.Equal(t, string(hostCrashData(g, e.Index)), string(e.Data), "group %d entry %d damaged", g, e.Index)
			}
		}
		require.NoError(t, h.Close())
	}
	require.Len(t, acked, 8, "every group acknowledged writes")
	t.Logf("%d kills, %d Saves acknowledged", iters, total)
}
