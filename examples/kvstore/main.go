// Command kvstore is a small replicated key-value store on raftkit, with
// FileStorage and TCPTransport, served over HTTP (see examples/kvstore/README.md).
//
// With no flags it runs a local three-node cluster in one process, on
// loopback ports, with its data in a directory it prints (a second run
// reuses it):
//
//	go run ./examples/kvstore
//
// With -id, the process is one node of a cluster, the production layout:
//
//	kvstore -id 1 -data /var/lib/kv1 -raft 10.0.0.1:7000 -http 10.0.0.1:8000 \
//	    -members 1=10.0.0.1:7000=10.0.0.1:8000,2=10.0.0.2:7000=10.0.0.2:8000,3=10.0.0.3:7000=10.0.0.3:8000
//
// A node added later starts with -join (any member's HTTP address) instead
// of -members: it asks the cluster to add it as a learner, and promotes
// itself to a voter once it has caught up.
//
// With -groups N (N > 1), every node runs N Raft groups through one
// raft.Host and one raft.HostStorage, the keys spread over them by hash
// ranges (sharded.go, server/sharded.go, shard/); the HTTP API is the same.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/client"
	"github.com/raftkit/raft/examples/kvstore/server"
)

// The local cluster's fixed loopback ports: fixed, because the Raft
// addresses are part of the replicated configuration that a second run
// finds on disk.
const (
	localRaftPort = 7101 // nodes 1, 2, 3: 7101, 7102, 7103
	localHTTPPort = 8101 // 8101, 8102, 8103
)

type flags struct {
	id              uint64
	data            string
	raft, raftAdv   string
	http, httpAdv   string
	members         string
	join            string
	clusterID       string
	electionTimeout time.Duration
	snapshotEvery   uint64
	trailing        uint64
	maxInflight     int
	leaseReads      bool
	logLevel        string
	tlsCert, tlsKey string
	tlsCA           string
	httpCert        string
	httpKey         string
	httpCA          string
	restore         string
	groups          int
}

func main() {
	log.SetFlags(0)
	var f flags
	flag.Uint64Var(&f.id, "id", 0, "this node's ID (non-zero); without it, run a local three-node cluster in this process")
	flag.StringVar(&f.data, "data", "", "data directory (default for the local cluster: $TMPDIR/raftkit-kvstore, or $TMPDIR/raftkit-kvstore-<N>groups with -groups N)")
	flag.StringVar(&f.raft, "raft", "", "Raft listen address, host:port (without -id: node 1's, nodes 2 and 3 take the next ports; default 127.0.0.1:7101)")
	flag.StringVar(&f.raftAdv, "raft-advertise", "", "Raft address peers dial (default: -raft)")
	flag.StringVar(&f.http, "http", "", "HTTP listen address, host:port (without -id: node 1's, nodes 2 and 3 take the next ports; default 127.0.0.1:8101)")
	flag.StringVar(&f.httpAdv, "http-advertise", "", "HTTP address clients and redirects use (default: -http)")
	flag.StringVar(&f.members, "members", "", "founding members, id=raftaddr=httpaddr,... (the same on every founder)")
	flag.StringVar(&f.join, "join", "", "HTTP address of a member of the cluster to join (instead of -members)")
	flag.StringVar(&f.clusterID, "cluster-id", "kvstore", "cluster name, the same on every node")
	flag.DurationVar(&f.electionTimeout, "election-timeout", 0, "Raft election timeout (default 1s)")
	flag.Uint64Var(&f.snapshotEvery, "snapshot-threshold", 0, "applied entries between snapshots (default: the library's, 16384)")
	flag.Uint64Var(&f.trailing, "trailing-entries", 0, "log entries kept behind a snapshot for slow followers (default: the library's, 4096)")
	flag.IntVar(&f.maxInflight, "max-inflight", defaultMaxInflight, "AppendEntries messages in flight to one follower (raft.Config.MaxInflight; see node.go)")
	flag.BoolVar(&f.leaseReads, "lease-reads", false, "serve ?consistency=lease from the leader's read lease (trusts clocks to drift by less than 10%; the same on every node); without it, lease reads are ReadIndex reads")
	flag.StringVar(&f.tlsCert, "tls-cert", "", "Raft mutual TLS: this node's certificate (PEM), naming raft://<cluster-id>/node/<id>")
	flag.StringVar(&f.tlsKey, "tls-key", "", "Raft mutual TLS: this node's private key (PEM)")
	flag.StringVar(&f.tlsCA, "tls-ca", "", "Raft mutual TLS: the cluster's CA certificate (PEM)")
	flag.StringVar(&f.httpCert, "http-tls-cert", "", "serve the HTTP API over HTTPS with this certificate (PEM)")
	flag.StringVar(&f.httpKey, "http-tls-key", "", "HTTPS: the certificate's private key (PEM)")
	flag.StringVar(&f.httpCA, "http-tls-ca", "", "HTTPS: require client certificates signed by this CA (PEM); the node also trusts it, and presents its own certificate, when it calls another node (-join)")
	flag.StringVar(&f.restore, "restore", "", "found a new cluster from this back-up file (GET /admin/backup): restore it into the empty -data directory, then start; every founder of the new cluster restores the same file with the same -members")
	flag.IntVar(&f.groups, "groups", 1, "number of Raft groups the keys are spread over by hash ranges, run by one raft.Host per process "+
		"(1: one group, on a FileStorage and TCPTransport); the same on every node, and for the data's life (see README.md, \"Sharded\")")
	flag.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default: info for a node, warn for the local cluster)")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Printf("unexpected arguments %q: every setting is a flag (see -help)", flag.Args())
		os.Exit(2)
	}

	if f.groups < 1 || f.groups > maxGroups {
		log.Printf("-groups %d: give 1 to %d", f.groups, maxGroups)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if f.id == 0 {
		err = runLocal(ctx, f)
	} else {
		err = runNode(ctx, f)
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func newLogger(level, dflt string) (*zap.Logger, error) {
	if level == "" {
		level = dflt
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

// runNode runs one node until ctx ends.
func runNode(ctx context.Context, f flags) error {
	if f.data == "" || f.raft == "" || f.http == "" {
		return errors.New("a node needs -data, -raft and -http (see -help)")
	}
	if (f.members == "") == (f.join == "") {
		return errors.New("give either -members (a founding node) or -join (a node added to a running cluster)")
	}
	members, err := parseMembers(f.members)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	switch {
	case f.tlsCert != "" && f.tlsKey != "" && f.tlsCA != "":
		if tlsConfig, err = loadTLS(f.tlsCert, f.tlsKey, f.tlsCA); err != nil {
			return err
		}
	case f.tlsCert != "" || f.tlsKey != "" || f.tlsCA != "":
		return errors.New("mutual TLS needs all of -tls-cert, -tls-key and -tls-ca")
	}
	var httpTLS *tls.Config
	switch {
	case f.httpCert != "" && f.httpKey != "":
		if httpTLS, err = loadHTTPTLS(f.httpCert, f.httpKey, f.httpCA); err != nil {
			return err
		}
	case f.httpCert != "" || f.httpKey != "" || f.httpCA != "":
		return errors.New("HTTPS needs -http-tls-cert and -http-tls-key (and -http-tls-ca to require client certificates)")
	}
	if f.groups > 1 && (f.join != "" || f.restore != "") {
		return errors.New("-join and -restore need -groups 1: the sharded example's groups have the founding members only")
	}
	if f.restore != "" {
		if f.join != "" {
			return errors.New("-restore founds a new cluster: give it -members, not -join")
		}
		if err := restore(f.restore, f.data, members); err != nil {
			return err
		}
	}
	logger, err := newLogger(f.logLevel, "info")
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck // stderr
	cfg := nodeConfig{
		ID: f.id, DataDir: f.data,
		RaftListen: f.raft, RaftAdvertise: f.raftAdv,
		HTTPListen: f.http, HTTPAdvertise: f.httpAdv,
		Members: members, ClusterID: f.clusterID, TLS: tlsConfig, HTTPTLS: httpTLS,
		ElectionTimeout: f.electionTimeout, SnapshotThreshold: f.snapshotEvery,
		TrailingEntries: f.trailing, MaxInflight: f.maxInflight, LeaseReads: f.leaseReads, Groups: f.groups, Logger: logger,
	}
	if cfg.RaftAdvertise == "" {
		cfg.RaftAdvertise = cfg.RaftListen
	}
	if cfg.HTTPAdvertise == "" {
		cfg.HTTPAdvertise = cfg.HTTPListen
	}
	if err := checkAddresses(cfg); err != nil {
		return err
	}
	if err := checkNotRemoved(cfg.DataDir, cfg.ID); err != nil {
		return err
	}
	n, err := startNode(cfg)
	if err != nil {
		return err
	}
	if n.raft != nil {
		go markRemoved(n)
	}
	scheme := "http"
	if httpTLS != nil {
		scheme = "https"
	}
	fmt.Printf("node %d: HTTP %s://%s, Raft %s, data %s%s\n", cfg.ID, scheme, cfg.HTTPAdvertise, cfg.RaftAdvertise, cfg.DataDir, groupsNote(f.groups))
	if f.join != "" {
		if err := join(ctx, n, f.join); err != nil {
			n.close()
			return err
		}
	}
	return serve(ctx, n)
}

// serve waits until ctx ends (a signal) or the HTTP server fails, then
// stops the node.
func serve(ctx context.Context, nodes ...*node) error {
	var err error
	served := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { served <- <-n.served }()
	}
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("HTTP server: %w", err)
	}
	fmt.Println("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(nodes) > 1 {
		// The whole cluster stops: no leader to hand over to.
		for _, n := range nodes {
			n.close()
		}
		return err
	}
	if serr := nodes[0].shutdown(sctx); serr != nil {
		log.Printf("node %d: shutdown: %v", nodes[0].cfg.ID, serr)
	}
	return err
}

// join adds this node to the cluster that member belongs to: as a learner
// first, promoted once it has caught up, so the cluster's quorum never
// waits for a node that is far behind (docs/operations.md, "Join a node").
// A node that is already a member (restarted with the same flags) skips it.
func join(ctx context.Context, n *node, member string) error {
	isMember := func() (raft.Member, bool) {
		st := n.raft.Status()
		i := slices.IndexFunc(st.Members, func(m raft.Member) bool { return m.ID == n.cfg.ID })
		if i < 0 {
			return raft.Member{}, false
		}
		return st.Members[i], true
	}
	if m, ok := isMember(); ok && !m.Learner {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := client.New(member)
	if n.cfg.HTTPTLS != nil {
		c = client.NewTLS(n.cfg.HTTPTLS.Clone(), member)
	}
	if _, ok := isMember(); !ok {
		fmt.Printf("node %d: asking %s to add it as a learner\n", n.cfg.ID, member)
		if err := c.AddLearner(ctx, n.cfg.ID, n.cfg.RaftAdvertise, n.cfg.HTTPAdvertise); err != nil {
			return fmt.Errorf("joining through %s: %w", member, err)
		}
	}
	// Caught up: this node has applied all it knows committed, and the
	// leader's heartbeats keep that close to the leader's commit index.
	// Changed does not fire at every new index: poll Status.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := n.raft.Status()
		if _, ok := isMember(); ok && st.Leader != 0 && st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("joining: waiting to catch up: %w", ctx.Err())
		}
	}
	fmt.Printf("node %d: caught up, promoting to a voter\n", n.cfg.ID)
	if err := c.Promote(ctx, n.cfg.ID); err != nil {
		return fmt.Errorf("joining: promoting: %w", err)
	}
	return nil
}

// checkAddresses checks that the addresses others will use are ones they
// can dial, and, on a founder, that -members says the same about this node
// as its own flags: a mismatch would leave it cut off from its peers, or
// (with -restore) running as a node outside the cluster.
func checkAddresses(cfg nodeConfig) error {
	for _, a := range []struct{ flag, addr string }{
		{"-raft-advertise", cfg.RaftAdvertise}, {"-http-advertise", cfg.HTTPAdvertise},
	} {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) || port == "" || port == "0" {
			return fmt.Errorf("%s %q: others cannot dial it; listening on a wildcard address or port 0, give %s with the host and port others use",
				a.flag, a.addr, a.flag)
		}
	}
	if len(cfg.Members) == 0 {
		return nil
	}
	i := slices.IndexFunc(cfg.Members, func(m raft.Member) bool { return m.ID == cfg.ID })
	if i < 0 {
		return fmt.Errorf("-members does not list this node, %d: a founder is one of the members", cfg.ID)
	}
	if m := cfg.Members[i]; m.Addr != cfg.RaftAdvertise || m.Meta[server.MetaHTTP] != cfg.HTTPAdvertise {
		return fmt.Errorf("-members lists node %d at Raft %s and HTTP %s, but this node advertises Raft %s and HTTP %s (-raft/-raft-advertise, -http/-http-advertise): they must agree",
			cfg.ID, m.Addr, m.Meta[server.MetaHTTP], cfg.RaftAdvertise, cfg.HTTPAdvertise)
	}
	return nil
}

// removedMarker is the file a node writes into its data directory when it
// learns that it was removed from the cluster. The library does not keep
// that across a restart, and a removed node restarted with its usual
// -join would ask to be added back, with its old state: an operator's
// removal undone by a supervisor's restart.
const removedMarker = "REMOVED"

// markRemoved writes removedMarker once the node is removed, and returns
// when it is or when the node stops.
func markRemoved(n *node) {
	for {
		ch := n.raft.Changed()
		st := n.raft.Status()
		if st.Removed {
			msg := fmt.Sprintf("node %d was removed from the cluster at %s\n", n.cfg.ID, time.Now().UTC().Format(time.RFC3339))
			if err := writeFileSync(filepath.Join(n.cfg.DataDir, removedMarker), []byte(msg)); err != nil {
				log.Printf("node %d: recording the removal: %v", n.cfg.ID, err)
			}
			fmt.Printf("node %d: removed from the cluster; stop this process and delete %s (to add this machine back: an empty -data and -join)\n",
				n.cfg.ID, n.cfg.DataDir)
			return
		}
		if st.Err != nil {
			return
		}
		<-ch
	}
}

// checkNotRemoved refuses to start a node that was removed.
func checkNotRemoved(dir string, id uint64) error {
	b, err := os.ReadFile(filepath.Join(dir, removedMarker))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%s: %s: a removed node must not come back with its old state; to add this machine back, "+
		"delete %s and start it with -join (docs/operations.md, \"Replace a dead or wiped node\")", dir, strings.TrimSpace(string(b)), dir)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// restore creates the storage of a founder of a new cluster in dir from
// the back-up file (raft.RestoreBackupDir): the back-up's state, with
// members as the configuration. dir must be empty or new, so that a node
// restarted later with -restore still given is stopped, rather than having
// its history overwritten by the back-up.
func restore(file, dir string, members []raft.Member) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("-restore: %w", err)
	}
	defer f.Close()
	meta, err := raft.RestoreBackupDir(dir, bufio.NewReaderSize(f, 1<<20), members)
	if err != nil {
		return fmt.Errorf("-restore %s: %w (restore into an empty -data directory; to restart a restored node, drop -restore)", file, err)
	}
	fmt.Printf("restored %s into %s: the store as of log index %d, in a new cluster\n", file, dir, meta.Index)
	return nil
}

// parseMembers parses -members: id=raftaddr=httpaddr,...
func parseMembers(s string) ([]raft.Member, error) {
	if s == "" {
		return nil, nil
	}
	var members []raft.Member
	for _, part := range strings.Split(s, ",") {
		fields := strings.Split(strings.TrimSpace(part), "=")
		if len(fields) != 3 || fields[1] == "" || fields[2] == "" {
			return nil, fmt.Errorf("-members: %q is not id=raftaddr=httpaddr", part)
		}
		id, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("-members: %q: the ID must be a non-zero number", part)
		}
		members = append(members, raft.Member{ID: id, Addr: fields[1], Meta: map[string]string{server.MetaHTTP: fields[2]}})
	}
	return members, nil
}

// localBase parses the local cluster's -raft or -http, host:port for node
// 1, whose next two ports nodes 2 and 3 take.
func localBase(addr, flagName string, dflt int) (string, int, error) {
	if addr == "" {
		return "127.0.0.1", dflt, nil
	}
	host, p, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil || host == "" || port <= 0 || port > 65533 {
		return "", 0, fmt.Errorf("%s %q: the local cluster needs host:port for node 1 (nodes 2 and 3 take the next ports)", flagName, addr)
	}
	return host, port, nil
}

// runLocal runs a three-node cluster in this process until ctx ends.
func runLocal(ctx context.Context, f flags) error {
	if f.members != "" || f.join != "" || f.raftAdv != "" || f.httpAdv != "" || f.tlsCert != "" || f.httpCert != "" || f.restore != "" {
		return errors.New("-members, -join, -*-advertise, -tls-*, -http-tls-* and -restore need -id (one node per process)")
	}
	// -raft and -http move the local cluster's ports: node 1's, and the
	// next two for nodes 2 and 3.
	raftHost, raftPort, err := localBase(f.raft, "-raft", localRaftPort)
	if err != nil {
		return err
	}
	httpHost, httpPort, err := localBase(f.http, "-http", localHTTPPort)
	if err != nil {
		return err
	}
	if f.data == "" {
		f.data = filepath.Join(os.TempDir(), "raftkit-kvstore")
		if f.groups > 1 {
			// Data of another -groups is refused: each its own default.
			f.data = filepath.Join(os.TempDir(), fmt.Sprintf("raftkit-kvstore-%dgroups", f.groups))
		}
	}
	logger, err := newLogger(f.logLevel, "warn")
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck // stderr
	var members []raft.Member
	for id := uint64(1); id <= 3; id++ {
		members = append(members, raft.Member{
			ID:   id,
			Addr: net.JoinHostPort(raftHost, strconv.Itoa(raftPort+int(id)-1)),
			Meta: map[string]string{server.MetaHTTP: net.JoinHostPort(httpHost, strconv.Itoa(httpPort+int(id)-1))},
		})
	}
	_, statErr := os.Stat(f.data)
	fmt.Printf("data directory: %s", f.data)
	if statErr == nil {
		fmt.Print(" (reused; delete it to start afresh)")
	}
	fmt.Println()
	var nodes []*node
	for _, m := range members {
		n, err := startNode(nodeConfig{
			ID:         m.ID,
			DataDir:    filepath.Join(f.data, fmt.Sprintf("node%d", m.ID)),
			RaftListen: m.Addr, RaftAdvertise: m.Addr,
			HTTPListen: m.Meta[server.MetaHTTP], HTTPAdvertise: m.Meta[server.MetaHTTP],
			Members: members, ClusterID: f.clusterID,
			ElectionTimeout: f.electionTimeout, SnapshotThreshold: f.snapshotEvery,
			TrailingEntries: f.trailing, MaxInflight: f.maxInflight, LeaseReads: f.leaseReads, Groups: f.groups, Logger: logger,
		})
		if err != nil {
			for _, n := range nodes {
				n.close()
			}
			return err
		}
		nodes = append(nodes, n)
		fmt.Printf("node %d: HTTP http://%s  Raft %s%s\n", m.ID, m.Meta[server.MetaHTTP], m.Addr, groupsNote(f.groups))
	}
	h1, h2 := members[0].Meta[server.MetaHTTP], members[1].Meta[server.MetaHTTP]
	fmt.Printf(`
try:
  curl -L -X PUT -d world http://%s/kv/hello     # a write, redirected to the leader
  curl http://%s/kv/hello                         # a linearizable read, on any node
  curl http://%s/status

serving until interrupted (Ctrl-C)
`, h1, h2, h1)
	return serve(ctx, nodes...)
}

// groupsNote is what the start-up line says of -groups.
func groupsNote(groups int) string {
	if groups <= 1 {
		return ""
	}
	return fmt.Sprintf(", %d groups (keys by hash range)", groups)
}
