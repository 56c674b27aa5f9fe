package raft

// Compatibility with an older build of the library, from the golden data in
// testdata/compat (its README says how it was made). The older build wrote
// data/, messages/ and tcp/ there; these tests check that this build reads
// them. The older build read to-old/, which this build wrote;
// TestCompat_OldBuildReadsThisEncoding checks that this build still writes
// exactly those bytes.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// compatLabels are the older builds whose golden data this build must read:
// directories of testdata/compat.
var compatLabels = []string{"c9e03b4"}

var compatUpdate = flag.Bool("compat-update", false,
	"rewrite testdata/compat/<label>/to-old with this build's encoding (then verify it with the old build, see testdata/compat/README.md)")

// compatCluster is the cluster ID of every transport in the golden data.
const compatCluster = "compat"

// ---- The golden data's manifests (testdata/compat/gen/main.go) ----

type compatStorageState struct {
	HardState  HardState
	FirstIndex uint64
	LastIndex  uint64
	Entries    []Entry
	Snapshot   *compatSnapshotState `json:",omitempty"`
}

type compatSnapshotState struct {
	Meta SnapshotMeta
	KV   map[string]string
}

type compatMessageFile struct {
	File    string
	Message Message
}

type compatManifest struct {
	Commit, Go                     string
	Storage                        compatStorageState
	NodeID                         uint64
	KV                             map[string]string
	TornSegment                    string
	Messages                       []compatMessageFile
	HelloControl                   string
	HelloFrom, HelloTo             uint64
	HelloAddr                      string
	ReplyAccepted, ReplyBadVersion string
	FirstFrame                     string
	FirstFrameType                 MessageType
}

type compatExpect struct {
	Storage  compatStorageState
	NodeID   uint64
	Members  []Member
	KV       map[string]string
	Messages []compatMessageFile
	Hello    string
	Refused  []string
}

type compatVerified struct {
	VerifiedBy, Go string
	Files          map[string]string
	Refusals       map[string]string
}

func readCompatJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), path)
}

func compatManifestOf(t *testing.T, label string) (string, compatManifest) {
	t.Helper()
	dir := filepath.Join("testdata", "compat", label)
	var man compatManifest
	readCompatJSON(t, filepath.Join(dir, "MANIFEST.json"), &man)
	return dir, man
}

// ---- The state machine of the golden data ----

// compatKV is gen's state machine: "key=value" commands; a snapshot is the
// sorted lines "key=value\n".
type compatKV struct {
	mu sync.Mutex
	m  map[string]string
}

func newCompatKV() *compatKV { return &compatKV{m: map[string]string{}} }

func (s *compatKV) Apply(e Entry) any {
	k, v, _ := strings.Cut(string(e.Data), "=")
	s.mu.Lock()
	s.m[k] = v
	s.mu.Unlock()
	return nil
}

type compatKVSnap []byte

func (b compatKVSnap) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}
func (compatKVSnap) Release() {}

func (s *compatKV) Snapshot() (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return compatKVSnap(encodeCompatKV(s.m)), nil
}

func (s *compatKV) Restore(r io.Reader) error {
	m, err := decodeCompatKV(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

func (s *compatKV) copy() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]string, len(s.m))
	for k, v := range s.m {
		c[k] = v
	}
	return c
}

func encodeCompatKV(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, m[k])
	}
	return b.Bytes()
}

func decodeCompatKV(r io.Reader) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			return nil, fmt.Errorf("bad snapshot line %q", sc.Text())
		}
		m[k] = v
	}
	return m, sc.Err()
}

// ---- Helpers ----

// readCompatStorage reads a FileStorage directory through the Storage
// interface, as gen does.
func readCompatStorage(t *testing.T, dir string) compatStorageState {
	t.Helper()
	fs, err := OpenFileStorage(dir)
	require.NoError(t, err)
	defer fs.Close()
	var st compatStorageState
	st.HardState, err = fs.InitialState()
	require.NoError(t, err)
	st.FirstIndex, err = fs.FirstIndex()
	require.NoError(t, err)
	st.LastIndex, err = fs.LastIndex()
	require.NoError(t, err)
	st.Entries, err = fs.Entries(st.FirstIndex, st.LastIndex+1)
	require.NoError(t, err)
	meta, r, err := fs.Snapshot()
	if errors.Is(err, ErrNoSnapshot) {
		return normalizeCompatStorage(st)
	}
	require.NoError(t, err)
	defer r.Close()
	kv, err := decodeCompatKV(r)
	require.NoError(t, err)
	st.Snapshot = &compatSnapshotState{Meta: meta, KV: kv}
	return normalizeCompatStorage(st)
}

// normalizeCompatStorage makes empty and nil data compare equal.
func normalizeCompatStorage(st compatStorageState) compatStorageState {
	st.Entries = slices.Clone(st.Entries)
	for i := range st.Entries {
		if len(st.Entries[i].Data) == 0 {
			st.Entries[i].Data = nil
		}
	}
	return st
}

// copyCompatDir copies the files of from into a new temporary directory,
// so that tests never modify the golden data.
func copyCompatDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), b, 0o644))
	}
	return to
}

// compatSampleMessages is gen's sampleMessages: one message of each type
// (two of MsgAppendResp) with the fields the older build sets in it.
func compatSampleMessages(confData []byte) []Message {
	var ms []Message
	for mt := MsgAppend; mt <= MsgSnapshotResp; mt++ {
		k := uint64(mt)
		m := Message{Type: mt, From: 1, To: 2, Term: 7 + k}
		switch mt {
		case MsgAppend:
			m.Index, m.LogTerm, m.Commit = 1000+k, 6, 900+k
			m.Entries = []Entry{
				{Index: m.Index + 1, Term: 6, Type: EntryCommand, Data: []byte("k001=v001")},
				{Index: m.Index + 2, Term: m.Term, Type: EntryNoop},
				{Index: m.Index + 3, Term: m.Term, Type: EntryConfChange, Data: confData},
			}
		case MsgAppendResp: // a rejection with its hint; the accepted one follows
			m.Index, m.Reject, m.HintIndex, m.HintTerm = 1000+k, true, 300+k, 5
			ms = append(ms, m)
			m = Message{Type: mt, From: 1, To: 2, Term: 7 + k, Index: 1000 + k, Commit: 900 + k}
		case MsgVote, MsgPreVote:
			m.Index, m.LogTerm, m.Context = 1000+k, 6, 1+k%2
		case MsgVoteResp, MsgPreVoteResp:
			m.Reject = mt == MsgVoteResp
		case MsgHeartbeat:
			m.Commit, m.Context = 900+k, 1<<40+k
		case MsgHeartbeatResp: // with a snapshot status
			m.Commit, m.Context, m.Done, m.Index, m.HintIndex = 900+k, 1<<40+k, true, 800+k, 4096+k
		case MsgReadIndex:
			m.Context = 1<<40 + k
		case MsgReadIndexResp:
			m.Index, m.Context = 1000+k, 1<<40+k
		case MsgTimeoutNow:
			m.Index, m.LogTerm, m.Commit = 1000+k, 6, 900+k
		case MsgSnapshot: // the first and last chunk
			m.Index, m.LogTerm, m.Context, m.HintIndex = 1000+k, 6, 0, 0xdeadbeef
			m.Entries = []Entry{{Index: m.Index, Term: m.LogTerm, Type: EntryConfChange, Data: confData}}
			m.Data, m.Done = []byte("k001=v001\nk002=v002\n"), true
		case MsgSnapshotResp:
			m.Index, m.Context = 1000+k, 20
		}
		ms = append(ms, m)
	}
	return ms
}

// ---- Reading what the older build wrote ----

// TestCompat_OpensOldFileStorage: the older build's data directory (WAL
// segments with hard-state, entry and compaction records, a snapshot file,
// a torn final write) opens with the same hard state, log and snapshot as
// the older build read from it, and the torn write is cut off.
func TestCompat_OpensOldFileStorage(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			dir, man := compatManifestOf(t, label)
			data := copyCompatDir(t, filepath.Join(dir, "data"))
			torn := filepath.Join(data, filepath.Base(man.TornSegment))
			before, err := os.Stat(torn)
			require.NoError(t, err)

			got := readCompatStorage(t, data)
			assert.Equal(t, normalizeCompatStorage(man.Storage), got)
			require.NotNil(t, got.Snapshot, "the golden data has a snapshot")
			assert.Positive(t, got.FirstIndex-1, "the golden log was compacted")

			after, err := os.Stat(torn)
			require.NoError(t, err)
			assert.Less(t, after.Size(), before.Size(), "the torn write is cut off")
		})
	}
}

// TestCompat_NodeServesFromOldData: a Node of this build restarts from the
// older build's data directory with its state machine and configuration
// intact, and takes new writes, which survive a restart.
func TestCompat_NodeServesFromOldData(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			dir, man := compatManifestOf(t, label)
			data := copyCompatDir(t, filepath.Join(dir, "data"))
			start := func() (*Node, *compatKV, *FileStorage, *InmemNetwork) {
				fs, err := OpenFileStorage(data)
				require.NoError(t, err)
				nw := NewInmemNetwork()
				sm := newCompatKV()
				cfg := fastConfig(t, man.NodeID, nil)
				n, err := NewNode(cfg, sm, fs, nw.Transport(man.NodeID))
				require.NoError(t, err)
				require.Eventually(t, func() bool { return n.Status().Role == Leader }, 10*time.Second, time.Millisecond)
				return n, sm, fs, nw
			}
			stop := func(n *Node, fs *FileStorage, nw *InmemNetwork) {
				require.NoError(t, n.Close())
				nw.Close()
				require.NoError(t, fs.Close())
			}

			n, sm, fs, nw := start()
			st := n.Status()
			require.Eventually(t, func() bool { return n.Status().AppliedIndex >= man.Storage.LastIndex }, 10*time.Second, time.Millisecond)
			assert.Equal(t, man.KV, sm.copy(), "the state machine holds every write of the older build")
			last := man.Storage.Entries[len(man.Storage.Entries)-1]
			var conf []Member
			for _, e := range man.Storage.Entries {
				if e.Type == EntryConfChange {
					var err error
					conf, err = decodeMembers(e.Data)
					require.NoError(t, err)
				}
			}
			require.NotNil(t, conf, "the golden log holds a configuration entry")
			assert.Equal(t, conf, st.Members)
			assert.Greater(t, st.Term, last.Term, "a new term after the restart")

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := n.Propose(ctx, []byte("new=written-by-this-build"))
			require.NoError(t, err)
			stop(n, fs, nw)

			n, sm, fs, nw = start()
			defer stop(n, fs, nw)
			require.NoError(t, n.LinearizableRead(ctx))
			kv := sm.copy()
			assert.Equal(t, "written-by-this-build", kv["new"])
			delete(kv, "new")
			assert.Equal(t, man.KV, kv)
		})
	}
}

// TestCompat_DecodesOldMessages: every message type the older build
// encoded decodes to the fields it encoded, and this build encodes those
// fields to the same bytes.
func TestCompat_DecodesOldMessages(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			dir, man := compatManifestOf(t, label)
			types := map[MessageType]bool{}
			for _, mf := range man.Messages {
				types[mf.Message.Type] = true
			}
			require.Len(t, types, int(MsgSnapshotResp), "a message of every type")
			for _, mf := range man.Messages {
				b, err := os.ReadFile(filepath.Join(dir, mf.File))
				require.NoError(t, err)
				var m Message
				require.NoError(t, m.UnmarshalBinary(b), mf.File)
				assert.Equal(t, normalizeCompatMessage(mf.Message), normalizeCompatMessage(m), mf.File)
				again, err := m.MarshalBinary()
				require.NoError(t, err)
				assert.Equal(t, b, again, "%s: this build encodes the same message to the same bytes", mf.File)
			}
			b, err := os.ReadFile(filepath.Join(dir, man.FirstFrame))
			require.NoError(t, err)
			var m Message
			require.NoError(t, m.UnmarshalBinary(b), "the first frame the older build's transport sent")
			assert.Equal(t, man.FirstFrameType, m.Type)
		})
	}
}

func normalizeCompatMessage(m Message) Message {
	m.Entries = slices.Clone(m.Entries)
	for i := range m.Entries {
		if len(m.Entries[i].Data) == 0 {
			m.Entries[i].Data = nil
		}
	}
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	if len(m.Data) == 0 {
		m.Data = nil
	}
	return m
}

// TestCompat_AcceptsOldHandshake: the older build's hello parses and this
// build writes the same bytes for it; this build's replies are the older
// acceptor's; and a TCPTransport of this build accepts the older hello and
// delivers the older build's message frames that follow it.
func TestCompat_AcceptsOldHandshake(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			dir, man := compatManifestOf(t, label)
			read := func(rel string) []byte {
				b, err := os.ReadFile(filepath.Join(dir, rel))
				require.NoError(t, err)
				return b
			}
			hello := read(man.HelloControl)
			h, err := readTCPHello(bytes.NewReader(hello))
			require.NoError(t, err)
			assert.Equal(t, tcpHello{lane: tcpLaneControl, from: man.HelloFrom, to: man.HelloTo, cluster: compatCluster, addr: man.HelloAddr}, h)
			assert.Equal(t, hello, h.appendTo(nil), "this build writes the same hello")
			assert.Equal(t, read(man.ReplyAccepted), tcpReply(tcpAccepted))
			assert.Equal(t, read(man.ReplyBadVersion), tcpReply(tcpRefusedVersion))

			tr, err := NewTCPTransport(TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: compatCluster, Logger: zaptest.NewLogger(t)})
			require.NoError(t, err)
			defer tr.Close()
			got := make(chan Message, len(man.Messages)+1)
			require.NoError(t, tr.Attach(man.HelloTo, func(m Message) { got <- m }))
			c, err := net.DialTimeout("tcp", tr.Addr(), 5*time.Second)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = c.Write(hello)
			require.NoError(t, err)
			reply := make([]byte, tcpReplySize)
			_, err = io.ReadFull(c, reply)
			require.NoError(t, err)
			require.Equal(t, read(man.ReplyAccepted), reply, "accepted")
			for _, mf := range man.Messages {
				b := read(mf.File)
				_, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
				require.NoError(t, err)
			}
			for _, mf := range man.Messages {
				select {
				case m := <-got:
					assert.Equal(t, normalizeCompatMessage(mf.Message), normalizeCompatMessage(m), mf.File)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s was not delivered (stats %+v)", mf.File, tr.Stats())
				}
			}
			assert.Zero(t, tr.Stats().BadFrames)
		})
	}
}

// ---- What the older build read from this one ----

// compatToOldMembers are the configurations of to-old: no metadata, so
// that they are in the member encoding the older build reads.
var compatToOldMembers = [][]Member{
	{{ID: 1, Addr: "127.0.0.1:7001"}},
	{{ID: 1, Addr: "127.0.0.1:7001"}, {ID: 2, Addr: "127.0.0.1:7002", Learner: true}},
}

// writeCompatToOld writes into dir what this build writes for the
// features the older build knows, deterministically: a FileStorage
// directory (entry, hard-state and compaction records over two segments, a
// snapshot file), one message of every type, a hello; and EXPECT.json,
// what gen -verify checks them against.
func writeCompatToOld(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"data", "messages", "tcp"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
	}
	write := func(rel string, b []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, rel), b, 0o644))
	}

	// The data directory, written through the Storage interface as a node
	// that bootstrapped, took 157 writes, snapshotted at 100 and added a
	// learner would have.
	work := t.TempDir()
	fs, err := OpenFileStorage(work, WithSegmentSize(4096))
	require.NoError(t, err)
	var ents []Entry
	kv := map[string]string{}
	var snapKV map[string]string
	add := func(e Entry) {
		e.Index = uint64(len(ents)) + 1
		ents = append(ents, e)
	}
	add(Entry{Term: 1, Type: EntryConfChange, Data: encodeMembers(compatToOldMembers[0])})
	add(Entry{Term: 2, Type: EntryNoop})
	for i := 1; i <= 157; i++ {
		if i == 121 {
			add(Entry{Term: 2, Type: EntryConfChange, Data: encodeMembers(compatToOldMembers[1])})
		}
		add(Entry{Term: 2, Type: EntryCommand, Data: fmt.Appendf(nil, "k%03d=v%03d-%s", i, i, strings.Repeat("x", 24))})
	}
	for lo := 0; lo < len(ents); lo += 20 {
		hi := min(lo+20, len(ents))
		require.NoError(t, fs.Save(HardState{Term: 2, Vote: 1, Commit: uint64(hi)}, ents[lo:hi]))
		for _, e := range ents[lo:hi] {
			if e.Type == EntryCommand {
				k, v, _ := strings.Cut(string(e.Data), "=")
				kv[k] = v
			}
			if e.Index == 100 {
				snapKV = maps.Clone(kv)
				require.NoError(t, fs.SaveSnapshot(SnapshotMeta{Index: 100, Term: 2, Members: compatToOldMembers[0]}, bytes.NewReader(encodeCompatKV(snapKV))))
				require.NoError(t, fs.Compact(80, 2))
			}
		}
	}
	require.NoError(t, fs.Close())
	exp := compatExpect{Storage: readCompatStorage(t, work), NodeID: 1, Members: compatToOldMembers[1], KV: kv, Hello: "tcp/hello-control.bin"}
	require.Equal(t, snapKV, exp.Storage.Snapshot.KV)
	files, err := os.ReadDir(work)
	require.NoError(t, err)
	for _, f := range files {
		if f.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(work, f.Name()))
		require.NoError(t, err)
		write("data/"+f.Name(), b)
	}

	for i, m := range compatSampleMessages(encodeMembers(compatToOldMembers[1])) {
		b, err := m.MarshalBinary()
		require.NoError(t, err)
		rel := fmt.Sprintf("messages/%02d-%v.bin", i+1, m.Type)
		write(rel, b)
		exp.Messages = append(exp.Messages, compatMessageFile{File: rel, Message: m})
	}
	write(exp.Hello, (&tcpHello{lane: tcpLaneControl, from: 1, to: 2, cluster: compatCluster, addr: "127.0.0.1:7001"}).appendTo(nil))

	// Newer features, each in a configuration: member metadata (member
	// list version 2) and a joint configuration (version 3).
	for _, newer := range []struct {
		rel  string
		conf []byte
	}{
		{"refused/meta", encodeMembers([]Member{{ID: 1, Addr: "127.0.0.1:7001", Meta: map[string]string{"http": "127.0.0.1:8001"}}})},
		{"refused/joint", encodeConfig(compatToOldMembers[1], compatToOldMembers[0])},
	} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, newer.rel), 0o755))
		fs, err = OpenFileStorage(filepath.Join(dir, newer.rel))
		require.NoError(t, err)
		require.NoError(t, fs.Save(HardState{Term: 1, Commit: 1}, []Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: newer.conf}}))
		require.NoError(t, fs.Close())
		require.NoError(t, os.Remove(filepath.Join(dir, newer.rel, "LOCK")))
		exp.Refused = append(exp.Refused, newer.rel)
	}
	b, err := json.MarshalIndent(exp, "", "  ")
	require.NoError(t, err)
	write("EXPECT.json", append(b, '\n'))
}

// compatFiles returns the SHA-256 of every file under dir but
// VERIFIED.json, by path relative to dir.
func compatFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "VERIFIED.json" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		sum := sha256.Sum256(b)
		sums[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	}))
	return sums
}

// TestCompat_OldBuildReadsThisEncoding: this build still writes, for the
// features the older build knows, exactly the bytes the older build was
// verified to read (gen -verify: it decoded every message to the expected
// fields, opened the data directory, started a node on it that served the
// expected state and took a write, and accepted the hello and the message
// frames after it). A change to any of these encodings fails here until it
// is verified again with the older build (testdata/compat/README.md).
func TestCompat_OldBuildReadsThisEncoding(t *testing.T) {
	for _, label := range compatLabels {
		t.Run(label, func(t *testing.T) {
			golden := filepath.Join("testdata", "compat", label, "to-old")
			if *compatUpdate {
				require.NoError(t, os.RemoveAll(golden))
				writeCompatToOld(t, golden)
				t.Fatalf("rewrote %s: verify it with the older build (testdata/compat/README.md), then run the test again", golden)
			}
			fresh := t.TempDir()
			writeCompatToOld(t, fresh)
			want := compatFiles(t, golden)
			got := compatFiles(t, fresh)
			delete(got, "EXPECT.json") // the golden one is what was verified
			delete(want, "EXPECT.json")
			for rel, sum := range got {
				if want[rel] != sum {
					t.Errorf("%s: this build writes other bytes than the older build was verified to read (rerun with -compat-update and verify with the older build)", rel)
				}
			}
			for rel := range want {
				if _, ok := got[rel]; !ok {
					t.Errorf("%s: no longer written", rel)
				}
			}
			var v compatVerified
			readCompatJSON(t, filepath.Join(golden, "VERIFIED.json"), &v)
			assert.Equal(t, label, v.VerifiedBy, "verified by the build it is named after")
			want = compatFiles(t, golden)
			assert.Equal(t, want, v.Files, "every file of to-old as the older build verified it")
			// The older build refuses member metadata and joint
			// configurations, with a clear error.
			for _, rel := range []string{"refused/meta", "refused/joint"} {
				require.Contains(t, v.Refusals, rel)
				assert.Contains(t, v.Refusals[rel], "configuration entry: unknown format", rel)
			}
		})
	}
}

// ---- Newer formats are refused ----

// TestFormats_NewerVersionsRefused: data and messages of a newer format
// version than this build reads are refused with ErrNewerVersion, not
// misread, and not cut off as a torn write; a damaged header is still
// ErrCorrupt.
func TestFormats_NewerVersionsRefused(t *testing.T) {
	// newDir returns a FileStorage directory with a few entries and a
	// snapshot, closed.
	newDir := func(t *testing.T) string {
		dir := t.TempDir()
		fs, err := OpenFileStorage(dir)
		require.NoError(t, err)
		ents := []Entry{
			{Index: 1, Term: 1, Type: EntryConfChange, Data: encodeMembers([]Member{{ID: 1}})},
			{Index: 2, Term: 1, Type: EntryCommand, Data: []byte("a=1")},
		}
		require.NoError(t, fs.Save(HardState{Term: 1, Vote: 1, Commit: 2}, ents))
		require.NoError(t, fs.SaveSnapshot(SnapshotMeta{Index: 2, Term: 1, Members: []Member{{ID: 1}}}, strings.NewReader("a=1\n")))
		require.NoError(t, fs.Close())
		return dir
	}
	patch := func(t *testing.T, path string, off int64, b string) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte(b), off)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	segment := func(dir string) string { return filepath.Join(dir, "wal-0000000000000001.log") }
	snapshot := func(t *testing.T, dir string) string {
		paths, err := filepath.Glob(filepath.Join(dir, "snap-*.snap"))
		require.NoError(t, err)
		require.Len(t, paths, 1)
		return paths[0]
	}

	t.Run("segment of a newer version", func(t *testing.T) {
		dir := newDir(t)
		patch(t, segment(dir), 0, "RKWAL02\n")
		_, err := OpenFileStorage(dir)
		require.ErrorIs(t, err, ErrNewerVersion)
		assert.NotErrorIs(t, err, ErrCorrupt)
		assert.ErrorContains(t, err, "segment format 02; this build reads up to 01")
	})
	t.Run("damaged segment header", func(t *testing.T) {
		for _, magic := range []string{"RKWAL00\n", "RKWAL+2\n", "RKWAL1x\n", "RKWAL02 "} {
			dir := newDir(t)
			patch(t, segment(dir), 0, magic)
			_, err := OpenFileStorage(dir)
			require.ErrorIs(t, err, ErrCorrupt, "%q", magic)
			assert.NotErrorIs(t, err, ErrNewerVersion, "%q", magic)
		}
	})
	t.Run("intact record of an unknown type at the end", func(t *testing.T) {
		// A torn write is cut off; an intact record that this build cannot
		// read is refused: cutting it off would lose what a newer build wrote.
		dir := newDir(t)
		rec := appendRecord(nil, 9, func(b []byte) []byte { return append(b, "from a newer build"...) })
		f, err := os.OpenFile(segment(dir), os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.Write(rec)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		before, err := os.Stat(segment(dir))
		require.NoError(t, err)
		_, err = OpenFileStorage(dir)
		require.ErrorIs(t, err, ErrNewerVersion)
		assert.ErrorContains(t, err, "has type 9")
		after, err := os.Stat(segment(dir))
		require.NoError(t, err)
		assert.Equal(t, before.Size(), after.Size(), "nothing cut off")
	})
	t.Run("snapshot file of a newer version", func(t *testing.T) {
		dir := newDir(t)
		patch(t, snapshot(t, dir), 0, "RKSNAP02")
		_, err := OpenFileStorage(dir)
		require.ErrorIs(t, err, ErrNewerVersion)
		assert.NotErrorIs(t, err, ErrCorrupt)
		assert.ErrorContains(t, err, "format 02; this build reads up to 01")
	})
	t.Run("back-up of a newer version", func(t *testing.T) {
		f, err := os.ReadFile(snapshot(t, newDir(t))) // a snapshot file is a back-up
		require.NoError(t, err)
		copy(f, "RKSNAP02")
		_, err = RestoreBackup(NewMemoryStorage(), bytes.NewReader(f), []Member{{ID: 1}})
		require.ErrorIs(t, err, ErrNewerVersion)
		assert.NotErrorIs(t, err, ErrCorrupt)
		assert.ErrorContains(t, err, "back-up: format 02; this build reads up to 01")
	})
	t.Run("message of a newer version", func(t *testing.T) {
		b, err := (&Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 3}).MarshalBinary()
		require.NoError(t, err)
		b[0] = codecVersion + 1
		var m Message
		err = m.UnmarshalBinary(b)
		require.ErrorIs(t, err, ErrNewerVersion)
		assert.ErrorIs(t, err, ErrCorrupt, "UnmarshalBinary's errors all wrap ErrCorrupt")
	})
	t.Run("hello of a newer version", func(t *testing.T) {
		h := (&tcpHello{from: 1, to: 2, cluster: compatCluster}).appendTo(nil)
		h[4] = tcpVersion + 1
		_, err := readTCPHello(bytes.NewReader(h))
		var version *tcpVersionError
		require.ErrorAs(t, err, &version)
		assert.ErrorContains(t, err, "unsupported protocol version 2 (this node speaks 1)")
	})
	t.Run("member list of a newer version", func(t *testing.T) {
		_, err := decodeMembers([]byte{9, 0})
		require.ErrorIs(t, err, ErrCorrupt)
		assert.ErrorContains(t, err, "newer version")
	})
}

// TestFormats_DialerReportsThePeersVersion: a dialer whose hello a peer
// refuses for its version warns at once (the refusal will not heal by
// itself), naming both versions.
func TestFormats_DialerReportsThePeersVersion(t *testing.T) {
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan struct{})
	go func() { // a peer of a newer version: refuses every hello with status 1
		defer close(served)
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			if _, err := readTCPHello(c); err == nil {
				_, _ = c.Write([]byte{'R', 'K', 'T', 'P', tcpVersion + 1, byte(tcpRefusedVersion)})
			}
			c.Close()
		}
	}()
	defer func() {
		peer.Close()
		<-served
	}()
	core, logs := observer.New(zapcore.WarnLevel)
	tr := newTestTCP(t, "dialer", TCPConfig{Logger: zap.New(core)})
	require.NoError(t, tr.Attach(1, func(Message) {}))
	tr.SetPeers([]Member{{ID: 1, Addr: tr.Addr()}, {ID: 2, Addr: peer.Addr().String()}})
	require.Eventually(t, func() bool { return logs.Len() > 0 }, 10*time.Second, time.Millisecond, "no warning")
	entry := logs.All()[0]
	assert.Equal(t, "cannot reach peer; dropping its queued messages", entry.Message)
	assert.Contains(t, fmt.Sprint(entry.ContextMap()["error"]),
		"handshake refused by the peer: unsupported protocol version (this node speaks 1, the peer 2)")
}
