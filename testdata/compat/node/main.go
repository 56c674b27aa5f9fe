// Command node is one raftkit node over TCPTransport and FileStorage with a
// small key-value state machine and an HTTP interface, for the two-build
// test (compat_process_test.go). It uses only API that the older builds
// under test also have, so the same source builds against either.
//
//	node -id 1 -dir DIR -raft 127.0.0.1:7001 -http 127.0.0.1:8001 \
//	     -members 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//
// HTTP: POST /put?k=K&v=V (204; 421 with the leader's ID when not the
// leader), GET /dump (a linearizable read of every key, as JSON), GET
// /status (JSON), POST /transfer?to=ID. SIGTERM or SIGINT stops the node
// (Shutdown when the build has it, else Close) and exits 0.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	raft "github.com/raftkit/raft"
)

type kv struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *kv) Apply(e raft.Entry) any {
	k, v, _ := strings.Cut(string(e.Data), "=")
	s.mu.Lock()
	s.m[k] = v
	s.mu.Unlock()
	return nil
}

type snap []byte

func (b snap) WriteTo(w io.Writer) (int64, error) { n, err := w.Write(b); return int64(n), err }
func (snap) Release()                             {}

func (s *kv) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, s.m[k])
	}
	return snap(b.Bytes()), nil
}

func (s *kv) Restore(r io.Reader) error {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		m[k] = v
	}
	if err := sc.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// status is what GET /status returns.
type status struct {
	ID, Term, Leader          uint64
	Role                      string
	CommitIndex, AppliedIndex uint64
	LastIndex, SnapshotIndex  uint64
	Err                       string
}

func main() {
	id := flag.Uint64("id", 0, "node ID")
	dir := flag.String("dir", "", "data directory")
	raftAddr := flag.String("raft", "", "raft listen address")
	httpAddr := flag.String("http", "", "HTTP listen address")
	membersFlag := flag.String("members", "", "founding members: id=addr,...")
	snapEvery := flag.Uint64("snapshot-threshold", 64, "entries between automatic snapshots")
	flag.Parse()

	var members []raft.Member
	for _, f := range strings.Split(*membersFlag, ",") {
		idStr, addr, _ := strings.Cut(f, "=")
		mid, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil {
			log.Fatalf("bad -members: %v", err)
		}
		members = append(members, raft.Member{ID: mid, Addr: addr})
	}
	fs, err := raft.OpenFileStorage(*dir)
	if err != nil {
		log.Fatal(err)
	}
	tr, err := raft.NewTCPTransport(raft.TCPConfig{ListenAddr: *raftAddr, ClusterID: "compat"})
	if err != nil {
		log.Fatal(err)
	}
	sm := &kv{m: map[string]string{}}
	n, err := raft.NewNode(raft.Config{
		ID:                *id,
		InitialMembers:    members,
		ElectionTimeout:   500 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond,
		SnapshotThreshold: *snapEvery,
		TrailingEntries:   16,
	}, sm, fs, tr)
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		_, err := n.Propose(ctx, []byte(r.URL.Query().Get("k")+"="+r.URL.Query().Get("v")))
		var nl *raft.NotLeaderError
		switch {
		case err == nil:
			w.WriteHeader(http.StatusNoContent)
		case errors.As(err, &nl):
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprint(w, nl.Leader)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/dump", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := n.LinearizableRead(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		sm.mu.Lock()
		b, _ := json.Marshal(sm.m)
		sm.mu.Unlock()
		w.Write(b)
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		st := n.Status()
		out := status{ID: st.ID, Term: st.Term, Leader: st.Leader, Role: st.Role.String(),
			CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastIndex: st.LastIndex, SnapshotIndex: st.SnapshotIndex}
		if st.Err != nil {
			out.Err = st.Err.Error()
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/transfer", func(w http.ResponseWriter, r *http.Request) {
		to, _ := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := n.TransferLeadership(ctx, to); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Addr: *httpAddr, Handler: mux}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	// Shutdown hands leadership over first; builds without it only Close.
	if s, ok := any(n).(interface{ Shutdown(context.Context) error }); ok {
		err = s.Shutdown(ctx)
	} else {
		err = n.Close()
	}
	if err != nil {
		log.Printf("stopping: %v", err)
	}
	tr.Close()
	if err := fs.Close(); err != nil {
		log.Fatal(err)
	}
}
