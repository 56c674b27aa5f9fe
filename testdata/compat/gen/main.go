// Command gen writes and checks the compatibility data of testdata/compat.
// It is built against an OLDER revision of the library (copied into a git
// worktree of that revision, see ../README.md) and uses only the exported
// API, so that what it writes is what that revision writes and what it
// accepts is what that revision reads.
//
//	gen -out DIR [-commit REV]     write DIR/data, DIR/messages, DIR/tcp and
//	                               DIR/MANIFEST.json with the old build
//	gen -verify DIR [-commit REV]  check with the old build the bytes the
//	                               current build wrote into DIR (to-old/) as
//	                               described by DIR/EXPECT.json, and write
//	                               DIR/VERIFIED.json with their SHA-256
package main

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
	"hash/crc32"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	raft "github.com/raftkit/raft"
)

// The cluster ID of every transport here; the tests use the same.
const clusterID = "compat"

func main() {
	out := flag.String("out", "", "write the old build's artifacts into this directory")
	verify := flag.String("verify", "", "check the current build's artifacts in this directory")
	commit := flag.String("commit", "", "the revision this program is built from (recorded in the manifests)")
	flag.Parse()
	var err error
	switch {
	case *out != "":
		err = generate(*out, *commit)
	case *verify != "":
		err = verifyDir(*verify, *commit)
	default:
		err = errors.New("give -out or -verify")
	}
	if err != nil {
		log.Fatal(err)
	}
}

// ---- The state machine ----

// kv is the state machine of every node here: a command "key=value" sets
// key; a snapshot is the sorted lines "key=value\n". compat_test.go has the
// same one.
type kv struct {
	mu sync.Mutex
	m  map[string]string
}

func newKV() *kv { return &kv{m: map[string]string{}} }

func (s *kv) Apply(e raft.Entry) any {
	k, v, _ := strings.Cut(string(e.Data), "=")
	s.mu.Lock()
	s.m[k] = v
	s.mu.Unlock()
	return nil
}

type kvSnap []byte

func (b kvSnap) WriteTo(w io.Writer) (int64, error) { n, err := w.Write(b); return int64(n), err }
func (kvSnap) Release()                             {}

func (s *kv) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return kvSnap(encodeKV(s.m)), nil
}

func (s *kv) Restore(r io.Reader) error {
	m, err := decodeKV(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

func (s *kv) copy() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]string, len(s.m))
	for k, v := range s.m {
		c[k] = v
	}
	return c
}

func encodeKV(m map[string]string) []byte {
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

func decodeKV(r io.Reader) (map[string]string, error) {
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

// ---- Manifests ----

// StorageState is what a FileStorage directory holds, as read through the
// Storage interface.
type StorageState struct {
	HardState  raft.HardState
	FirstIndex uint64
	LastIndex  uint64
	Entries    []raft.Entry
	Snapshot   *SnapshotState `json:",omitempty"`
}

// SnapshotState is the newest snapshot of a directory.
type SnapshotState struct {
	Meta raft.SnapshotMeta
	KV   map[string]string
}

// MessageFile is one encoded message and what it decodes to.
type MessageFile struct {
	File    string
	Message raft.Message
}

// Manifest describes what gen -out wrote.
type Manifest struct {
	Commit, Go string
	// Storage: data/, with the torn write at the end of TornSegment cut off.
	Storage     StorageState
	NodeID      uint64
	KV          map[string]string // the state machine after every entry
	TornSegment string
	Messages    []MessageFile
	// TCP handshake, cluster ID "compat": the hello the old node (ID 1)
	// sent dialing node 2 (HelloFrom, HelloTo, HelloAddr), and the old
	// acceptor's replies to a hello of version 1 and of version 2.
	HelloControl                   string
	HelloFrom, HelloTo             uint64
	HelloAddr                      string
	ReplyAccepted, ReplyBadVersion string
	FirstFrame                     string // the first frame the old node sent after the hello
	FirstFrameType                 raft.MessageType
}

// Expect describes what the current build wrote for gen -verify.
type Expect struct {
	Storage  StorageState
	NodeID   uint64
	Members  []raft.Member // the configuration the node must start with
	KV       map[string]string
	Messages []MessageFile // From 1, To 2
	Hello    string        // from 1 to 2, cluster "compat", control lane
	// Refused: FileStorage directories using a newer feature (member
	// metadata), on which an old node must refuse to start.
	Refused []string
}

// Verified is what gen -verify writes: the files the old build checked.
type Verified struct {
	VerifiedBy, Go string
	Files          map[string]string // path in DIR -> SHA-256
	Refusals       map[string]string // Expect.Refused -> the old node's error
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ---- gen -out ----

func generate(dir, commit string) error {
	for _, sub := range []string{"data", "messages", "tcp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	man := Manifest{Commit: commit, Go: runtime.Version(), NodeID: 1}
	if err := runOldNode(dir, &man); err != nil {
		return err
	}
	st, err := readStorage(filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	man.Storage = st
	if man.TornSegment, err = tearLastSegment(filepath.Join(dir, "data"), st); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "data", "LOCK"))
	if err := writeMessages(dir, &man, st); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "MANIFEST.json"), man)
}

// runOldNode runs node 1 alone over TCP on FileStorage, with writes, a
// learner (node 2, played by a listener that records the hello), a snapshot
// and compaction; and records the node's handshake replies.
func runOldNode(dir string, man *Manifest) error {
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer peer.Close()
	type capture struct {
		hello, frame []byte
		err          error
	}
	captured := make(chan capture, 1)
	go func() {
		c, err := peer.Accept()
		if err != nil {
			captured <- capture{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		hello, err := readHello(c)
		if err != nil {
			captured <- capture{err: err}
			return
		}
		if _, err := c.Write([]byte("RKTP\x01\x00")); err != nil {
			captured <- capture{err: err}
			return
		}
		var frame []byte
		for len(frame) == 0 { // skip keepalives
			var hdr [4]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				captured <- capture{err: err}
				return
			}
			frame = make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(c, frame); err != nil {
				captured <- capture{err: err}
				return
			}
		}
		captured <- capture{hello: hello, frame: frame}
		io.Copy(io.Discard, c)
	}()

	fs, err := raft.OpenFileStorage(filepath.Join(dir, "data"), raft.WithSegmentSize(4096))
	if err != nil {
		return err
	}
	tr, err := raft.NewTCPTransport(raft.TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: clusterID})
	if err != nil {
		return err
	}
	sm := newKV()
	n, err := raft.NewNode(raft.Config{
		ID:                1,
		InitialMembers:    []raft.Member{{ID: 1, Addr: tr.Addr()}},
		ElectionTimeout:   300 * time.Millisecond,
		HeartbeatInterval: 30 * time.Millisecond,
		SnapshotThreshold: 1 << 30,
		TrailingEntries:   20,
	}, sm, fs, tr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	put := func(from, to int) error {
		for i := from; i <= to; i++ {
			if _, err := n.Propose(ctx, []byte(fmt.Sprintf("k%03d=v%03d", i, i))); err != nil {
				return err
			}
		}
		return nil
	}
	if err := waitLeader(ctx, n); err != nil {
		return err
	}
	if err := put(1, 150); err != nil {
		return err
	}
	if err := n.Snapshot(ctx); err != nil {
		return err
	}
	if err := put(151, 200); err != nil {
		return err
	}
	if err := n.AddLearner(ctx, 2, peer.Addr().String()); err != nil {
		return err
	}
	if err := put(201, 260); err != nil {
		return err
	}
	c := <-captured
	if c.err != nil {
		return fmt.Errorf("capturing the hello: %w", c.err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tcp", "hello-control.bin"), c.hello, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tcp", "first-frame.bin"), c.frame, 0o644); err != nil {
		return err
	}
	var first raft.Message
	if err := first.UnmarshalBinary(c.frame); err != nil {
		return err
	}
	man.HelloControl, man.FirstFrame, man.FirstFrameType = "tcp/hello-control.bin", "tcp/first-frame.bin", first.Type
	man.HelloFrom, man.HelloTo, man.HelloAddr = 1, 2, tr.Addr()
	// The old acceptor's replies.
	for _, r := range []struct {
		version byte
		file    string
		field   *string
	}{{1, "tcp/reply-accepted.bin", &man.ReplyAccepted}, {2, "tcp/reply-bad-version.bin", &man.ReplyBadVersion}} {
		reply, err := handshake(tr.Addr(), hello(r.version, 2, 1, peer.Addr().String()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, r.file), reply, 0o644); err != nil {
			return err
		}
		*r.field = r.file
	}
	man.KV = sm.copy()
	if len(man.KV) != 260 {
		return fmt.Errorf("the state machine holds %d keys, want 260", len(man.KV))
	}
	if err := n.Close(); err != nil {
		return err
	}
	if err := tr.Close(); err != nil {
		return err
	}
	return fs.Close()
}

func waitLeader(ctx context.Context, n *raft.Node) error {
	for n.Status().Role != raft.Leader {
		select {
		case <-ctx.Done():
			return errors.New("no leader")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// hello builds a handshake as tcp_wire.go describes it.
func hello(version byte, from, to uint64, addr string) []byte {
	b := append([]byte("RKTP"), version, 0)
	b = binary.BigEndian.AppendUint64(b, from)
	b = binary.BigEndian.AppendUint64(b, to)
	b = append(b, byte(len(clusterID)))
	b = append(b, clusterID...)
	b = append(b, byte(len(addr)))
	return append(b, addr...)
}

// readHello reads one hello's bytes.
func readHello(r io.Reader) ([]byte, error) {
	b := make([]byte, 23)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	rest := make([]byte, int(b[22])+1)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, err
	}
	addr := make([]byte, int(rest[len(rest)-1]))
	if _, err := io.ReadFull(r, addr); err != nil {
		return nil, err
	}
	return append(append(b, rest...), addr...), nil
}

// handshake dials addr, sends h and returns the 6-byte reply.
func handshake(addr string, h []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(h); err != nil {
		return nil, err
	}
	reply := make([]byte, 6)
	_, err = io.ReadFull(c, reply)
	return reply, err
}

// readStorage reads a FileStorage directory through the Storage interface.
func readStorage(dir string) (StorageState, error) {
	var st StorageState
	fs, err := raft.OpenFileStorage(dir)
	if err != nil {
		return st, err
	}
	defer fs.Close()
	if st.HardState, err = fs.InitialState(); err != nil {
		return st, err
	}
	if st.FirstIndex, err = fs.FirstIndex(); err != nil {
		return st, err
	}
	if st.LastIndex, err = fs.LastIndex(); err != nil {
		return st, err
	}
	if st.Entries, err = fs.Entries(st.FirstIndex, st.LastIndex+1); err != nil {
		return st, err
	}
	meta, r, err := fs.Snapshot()
	if errors.Is(err, raft.ErrNoSnapshot) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	defer r.Close()
	m, err := decodeKV(r)
	if err != nil {
		return st, err
	}
	st.Snapshot = &SnapshotState{Meta: meta, KV: m}
	return st, nil
}

// tearLastSegment appends the first half of an entry record (format in
// filestorage.go) to the last segment, as a crash in the middle of a write
// leaves it; recovery must cut it off.
func tearLastSegment(dir string, st StorageState) (string, error) {
	segs, err := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	if err != nil || len(segs) == 0 {
		return "", fmt.Errorf("no segments (%v)", err)
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	payload := binary.AppendUvarint(nil, st.LastIndex+1)
	payload = binary.AppendUvarint(payload, st.HardState.Term)
	payload = append(payload, byte(raft.EntryCommand))
	payload = append(payload, "k999=torn"...)
	body := append([]byte{1}, payload...) // type 1: entry
	rec := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.LittleEndian.AppendUint32(rec, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	rec = append(rec, body...)
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(rec[:len(rec)/2]); err != nil {
		f.Close()
		return "", err
	}
	return "data/" + filepath.Base(last), f.Close()
}

// writeMessages encodes one message of every type the codec knows, filling
// every field that type uses.
func writeMessages(dir string, man *Manifest, st StorageState) error {
	var conf raft.Entry // a configuration entry as the old build encodes it
	for _, e := range st.Entries {
		if e.Type == raft.EntryConfChange {
			conf = e
		}
	}
	if conf.Type != raft.EntryConfChange {
		return errors.New("no configuration entry in the log")
	}
	for i, m := range sampleMessages(conf.Data) {
		b, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("%v: %w", m.Type, err)
		}
		file := fmt.Sprintf("messages/%02d-%v.bin", i+1, m.Type)
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
			return err
		}
		man.Messages = append(man.Messages, MessageFile{File: file, Message: m})
	}
	return nil
}

// sampleMessages returns one message of each type from MsgAppend to
// MsgSnapshotResp (two of MsgAppendResp: rejected and accepted) with the
// fields that the older build sets when it sends that type, and no others:
// a later version may give the others a meaning (docs/protocol.md,
// "Formats and versions").
func sampleMessages(confData []byte) []raft.Message {
	var ms []raft.Message
	for mt := raft.MsgAppend; mt <= raft.MsgSnapshotResp; mt++ {
		k := uint64(mt)
		m := raft.Message{Type: mt, From: 1, To: 2, Term: 7 + k}
		switch mt {
		case raft.MsgAppend:
			m.Index, m.LogTerm, m.Commit = 1000+k, 6, 900+k
			m.Entries = []raft.Entry{
				{Index: m.Index + 1, Term: 6, Type: raft.EntryCommand, Data: []byte("k001=v001")},
				{Index: m.Index + 2, Term: m.Term, Type: raft.EntryNoop},
				{Index: m.Index + 3, Term: m.Term, Type: raft.EntryConfChange, Data: confData},
			}
		case raft.MsgAppendResp: // a rejection with its hint; the accepted one follows
			m.Index, m.Reject, m.HintIndex, m.HintTerm = 1000+k, true, 300+k, 5
			ms = append(ms, m)
			m = raft.Message{Type: mt, From: 1, To: 2, Term: 7 + k, Index: 1000 + k, Commit: 900 + k}
		case raft.MsgVote, raft.MsgPreVote:
			m.Index, m.LogTerm, m.Context = 1000+k, 6, 1+k%2
		case raft.MsgVoteResp, raft.MsgPreVoteResp:
			m.Reject = mt == raft.MsgVoteResp
		case raft.MsgHeartbeat:
			m.Commit, m.Context = 900+k, 1<<40+k
		case raft.MsgHeartbeatResp: // with a snapshot status
			m.Commit, m.Context, m.Done, m.Index, m.HintIndex = 900+k, 1<<40+k, true, 800+k, 4096+k
		case raft.MsgReadIndex:
			m.Context = 1<<40 + k
		case raft.MsgReadIndexResp:
			m.Index, m.Context = 1000+k, 1<<40+k
		case raft.MsgTimeoutNow:
			m.Index, m.LogTerm, m.Commit = 1000+k, 6, 900+k
		case raft.MsgSnapshot: // the first and last chunk
			m.Index, m.LogTerm, m.Context, m.HintIndex = 1000+k, 6, 0, 0xdeadbeef
			m.Entries = []raft.Entry{{Index: m.Index, Term: m.LogTerm, Type: raft.EntryConfChange, Data: confData}}
			m.Data, m.Done = []byte("k001=v001\nk002=v002\n"), true
		case raft.MsgSnapshotResp:
			m.Index, m.Context = 1000+k, 20
		}
		ms = append(ms, m)
	}
	return ms
}

// ---- gen -verify ----

func verifyDir(dir, commit string) error {
	var exp Expect
	b, err := os.ReadFile(filepath.Join(dir, "EXPECT.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		return err
	}
	v := Verified{VerifiedBy: commit, Go: runtime.Version(), Files: map[string]string{}, Refusals: map[string]string{}}
	note := func(rel string) error {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		v.Files[rel] = hex.EncodeToString(sum[:])
		return nil
	}
	if err := note("EXPECT.json"); err != nil {
		return err
	}
	// Messages: each decodes to the expected fields, and the old encoder
	// writes the same bytes for them.
	for _, mf := range exp.Messages {
		b, err := os.ReadFile(filepath.Join(dir, mf.File))
		if err != nil {
			return err
		}
		var m raft.Message
		if err := m.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("%s: %w", mf.File, err)
		}
		want, err := mf.Message.MarshalBinary()
		if err != nil {
			return fmt.Errorf("%s: %w", mf.File, err)
		}
		again, _ := m.MarshalBinary()
		if !bytes.Equal(b, want) || !bytes.Equal(again, want) {
			return fmt.Errorf("%s: decodes to %+v, not to %+v", mf.File, m, mf.Message)
		}
		if err := note(mf.File); err != nil {
			return err
		}
	}
	// Storage: the old FileStorage reads the directory as expected, and an
	// old node starts on a copy of it, holds the state and takes writes.
	work, err := os.MkdirTemp("", "compat-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := copyDir(filepath.Join(dir, "data"), work, func(rel string) error { return note("data/" + rel) }); err != nil {
		return err
	}
	st, err := readStorage(work)
	if err != nil {
		return fmt.Errorf("opening data/ with the old FileStorage: %w", err)
	}
	if !reflect.DeepEqual(normalize(st), normalize(exp.Storage)) {
		return fmt.Errorf("data/ reads as\n%+v\nnot as\n%+v", st, exp.Storage)
	}
	if err := startOnData(work, exp); err != nil {
		return err
	}
	// TCP: an old acceptor accepts the hello and decodes the frames that follow.
	if err := acceptHello(dir, exp); err != nil {
		return err
	}
	if err := note(exp.Hello); err != nil {
		return err
	}
	// Newer features: an old node refuses to start on them.
	for _, rel := range exp.Refused {
		work, err := os.MkdirTemp("", "compat-refused-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		if err := copyDir(filepath.Join(dir, rel), work, func(name string) error { return note(rel + "/" + name) }); err != nil {
			return err
		}
		err = refusedStart(work, exp.NodeID)
		if err == nil {
			return fmt.Errorf("%s: an old node started on it", rel)
		}
		v.Refusals[rel] = err.Error()
	}
	return writeJSON(filepath.Join(dir, "VERIFIED.json"), v)
}

// normalize makes empty and nil byte slices compare equal.
func normalize(st StorageState) StorageState {
	for i := range st.Entries {
		if len(st.Entries[i].Data) == 0 {
			st.Entries[i].Data = nil
		}
	}
	return st
}

func copyDir(from, to string, each func(rel string) error) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			return err
		}
		if err := each(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// startOnData starts an old node on dir and checks its configuration and
// state, then writes to it.
func startOnData(dir string, exp Expect) error {
	fs, err := raft.OpenFileStorage(dir)
	if err != nil {
		return err
	}
	defer fs.Close()
	nw := raft.NewInmemNetwork()
	defer nw.Close()
	sm := newKV()
	n, err := raft.NewNode(raft.Config{ID: exp.NodeID, ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 30 * time.Millisecond}, sm, fs, nw.Transport(exp.NodeID))
	if err != nil {
		return fmt.Errorf("starting an old node on data/: %w", err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitLeader(ctx, n); err != nil {
		return err
	}
	if _, err := n.Propose(ctx, []byte("written=by-old")); err != nil {
		return err
	}
	if got := n.Status().Members; !reflect.DeepEqual(got, exp.Members) {
		return fmt.Errorf("old node's members %+v, want %+v", got, exp.Members)
	}
	got := sm.copy()
	if got["written"] != "by-old" {
		return errors.New("the old node did not apply its write")
	}
	delete(got, "written")
	if !reflect.DeepEqual(got, exp.KV) {
		return fmt.Errorf("old node's state has %d keys, want %d", len(got), len(exp.KV))
	}
	return nil
}

// refusedStart starts an old node on dir and returns why it cannot.
func refusedStart(dir string, id uint64) error {
	fs, err := raft.OpenFileStorage(dir)
	if err != nil {
		return err
	}
	defer fs.Close()
	nw := raft.NewInmemNetwork()
	defer nw.Close()
	n, err := raft.NewNode(raft.Config{ID: id}, newKV(), fs, nw.Transport(id))
	if err != nil {
		return err
	}
	n.Close()
	return nil
}

// acceptHello has an old transport (node 2) accept the current build's
// hello and the frames of every expected message.
func acceptHello(dir string, exp Expect) error {
	h, err := os.ReadFile(filepath.Join(dir, exp.Hello))
	if err != nil {
		return err
	}
	tr, err := raft.NewTCPTransport(raft.TCPConfig{ListenAddr: "127.0.0.1:0", ClusterID: clusterID})
	if err != nil {
		return err
	}
	defer tr.Close()
	var got atomic.Int64
	if err := tr.Attach(2, func(raft.Message) { got.Add(1) }); err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", tr.Addr(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(h); err != nil {
		return err
	}
	reply := make([]byte, 6)
	if _, err := io.ReadFull(c, reply); err != nil {
		return err
	}
	if string(reply) != "RKTP\x01\x00" {
		return fmt.Errorf("the old acceptor replied %q to the hello", reply)
	}
	for _, mf := range exp.Messages {
		b, err := os.ReadFile(filepath.Join(dir, mf.File))
		if err != nil {
			return err
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < int64(len(exp.Messages)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := tr.Stats(); got.Load() != int64(len(exp.Messages)) || s.BadFrames != 0 {
		return fmt.Errorf("the old transport delivered %d of %d messages (bad frames %d)", got.Load(), len(exp.Messages), s.BadFrames)
	}
	return nil
}
