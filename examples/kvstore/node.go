package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/metrics"
	"github.com/raftkit/raft/examples/kvstore/server"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// defaultMaxInflight is the number of AppendEntries messages the leader
// keeps in flight to each follower, where the library's default is 256.
// Writes reach the leader one HTTP request at a time: with a wide window
// the leader sends nearly one message per write (0.9 per entry, measured
// with 64 clients), and each message costs a send, a receive, a follower's
// storage write and an acknowledgment. With a few in flight, the entries
// that arrive while they are acknowledged go out together in the next one
// (0.14 messages per entry), and the servers' CPU per write drops by about
// a tenth (docs/benchmarks.md). Four appends of up to MaxAppendBytes (1
// MiB) each per round trip keep a follower's disk busy on a LAN; over a
// link with a long round trip, raise it (-max-inflight).
const defaultMaxInflight = 4

// nodeConfig is what one node needs: the same flags for its whole life.
type nodeConfig struct {
	ID            uint64
	DataDir       string
	RaftListen    string        // where the Raft transport listens
	RaftAdvertise string        // what peers dial; default RaftListen
	HTTPListen    string        // where the HTTP API listens
	HTTPAdvertise string        // what clients (and redirects) use; default HTTPListen
	Members       []raft.Member // the founding members; empty for a node to be added
	ClusterID     string
	// TLS, when set, secures the Raft connections (mutual TLS: see
	// loadTLS).
	TLS *tls.Config
	// HTTPTLS, when set, serves the HTTP API over HTTPS (see loadHTTPTLS).
	HTTPTLS         *tls.Config
	ElectionTimeout time.Duration // 0: the library's default
	// SnapshotThreshold is the number of applied entries between
	// snapshots, after which FileStorage compacts the log; 0: the default.
	SnapshotThreshold uint64
	// TrailingEntries is the number of log entries kept behind a snapshot
	// for followers that lag; one further behind gets the snapshot.
	TrailingEntries uint64
	// MaxInflight bounds the AppendEntries messages in flight to one
	// follower (raft.Config.MaxInflight); 0: defaultMaxInflight.
	MaxInflight int
	// LeaseReads lets the leader answer lease reads from its read lease;
	// every voter must have the same setting (raft.Config.LeaseReads).
	LeaseReads bool
	// Groups is the number of Raft groups the keys are spread over
	// (sharded.go); 0 or 1: one group, on a FileStorage and a
	// TCPTransport.
	Groups int
	Logger *zap.Logger
}

// node is one running kvstore node: storage, transport, Raft node, store
// and HTTP server.
type node struct {
	cfg       nodeConfig
	storage   *raft.FileStorage
	transport *raft.TCPTransport
	raft      *raft.Node
	store     *store.Store
	metrics   *metrics.Exporter // the node's MeterProvider, served at GET /metrics
	http      *http.Server
	httpAddr  string // the bound HTTP address
	served    chan error

	// With Groups > 1 (sharded.go), instead of storage, transport, raft,
	// store and metrics: the host that runs the groups, their shared log
	// and each group's replica.
	host   *raft.Host
	wal    *raft.HostStorage
	groups []server.Group
}

// startNode opens the node's storage, starts its transport, Raft node and
// HTTP server. On error, whatever was started is stopped.
// tcpConfig is the Raft transport's configuration, for a node or a host.
func (cfg nodeConfig) tcpConfig() raft.TCPConfig {
	return raft.TCPConfig{
		ListenAddr:    cfg.RaftListen,
		AdvertiseAddr: cfg.RaftAdvertise,
		ClusterID:     cfg.ClusterID,
		TLS:           cfg.TLS,
		Logger:        cfg.Logger,
	}
}

// listenHTTP listens on the HTTP address (with TLS when configured) and
// records the address it got.
func (n *node) listenHTTP(cfg nodeConfig) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("node %d: HTTP: %w", cfg.ID, err)
	}
	n.httpAddr = ln.Addr().String()
	if cfg.HTTPTLS != nil {
		ln = tls.NewListener(ln, cfg.HTTPTLS)
	}
	return ln, nil
}

func startNode(cfg nodeConfig) (_ *node, err error) {
	if cfg.Groups > 1 {
		return startShardedNode(cfg)
	}
	if err := checkGroupsMarker(cfg.DataDir, 1); err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	n := &node{cfg: cfg, store: store.New(), metrics: metrics.New(), served: make(chan error, 1)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	// The durable log, fsynced before anything is acknowledged.
	if n.storage, err = raft.OpenFileStorage(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("node %d: opening %s: %w", cfg.ID, cfg.DataDir, err)
	}
	if n.transport, err = raft.NewTCPTransport(cfg.tcpConfig()); err != nil {
		return nil, fmt.Errorf("node %d: Raft transport: %w", cfg.ID, err)
	}
	// Listen for HTTP before starting Raft, so that a port already in use
	// is reported before the node joins the cluster.
	ln, err := n.listenHTTP(cfg)
	if err != nil {
		return nil, err
	}
	if n.raft, err = raft.NewNode(raft.Config{
		ID:                cfg.ID,
		InitialMembers:    cfg.Members, // ignored once the storage holds state
		ElectionTimeout:   cfg.ElectionTimeout,
		SnapshotThreshold: cfg.SnapshotThreshold,
		TrailingEntries:   cfg.TrailingEntries,
		MaxInflight:       cmp.Or(cfg.MaxInflight, defaultMaxInflight),
		LeaseReads:        cfg.LeaseReads,
		Logger:            cfg.Logger,
		MeterProvider:     n.metrics.Provider,
	}, n.store, n.storage, n.transport); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	api := server.New(n.raft, n.store)
	api.Handle("GET /metrics", n.metrics)
	n.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		// A client that sends its body slowly holds a handler and its
		// buffer: bound the whole request's reading, and idle connections.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute,
	}
	go func() { n.served <- n.http.Serve(ln) }()
	return n, nil
}

// shutdown stops the node for a planned stop: the HTTP server stops taking
// requests (those in flight finish), a leader hands leadership over
// (Node.Shutdown), then the transport and the storage close.
func (n *node) shutdown(ctx context.Context) error {
	var errs []error
	if n.http != nil {
		errs = append(errs, n.http.Shutdown(ctx))
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown(ctx))
	}
	if n.groups != nil {
		errs = append(errs, n.shutdownGroups(ctx))
	}
	n.close()
	return errors.Join(errs...)
}

// close stops whatever was started, at once, in reverse order.
func (n *node) close() {
	if n.http != nil {
		n.http.Close()
	}
	if n.raft != nil {
		n.raft.Close()
	}
	if n.transport != nil {
		n.transport.Close()
	}
	if n.storage != nil {
		n.storage.Close()
	}
	if n.host != nil {
		n.host.Close() // closes the groups' Nodes, before their storage
	}
	if n.wal != nil {
		n.wal.Close()
	}
	if n.metrics != nil {
		n.metrics.Shutdown(context.Background())
	}
}

// loadHTTPTLS returns the TLS config of the HTTPS API: this node's
// certificate and key (with a SAN for its HTTP address). With caFile, the
// API requires client certificates signed by that CA; the node also
// trusts it, and presents its own certificate, when it calls another node
// (to -join), so one CA signs the nodes' and the clients' certificates.
func loadHTTPTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("HTTPS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		ca, err := loadCA(caFile, "HTTPS CA")
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = ca
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.RootCAs = ca
	}
	return cfg, nil
}

// loadTLS returns the mutual TLS config of the Raft transport: this node's
// certificate and key (valid for server and client authentication, with an
// IP or DNS SAN for its Raft address, and naming its node ID in a URI SAN
// raft://<cluster-id>/node/<id>: see docs/tcp.md), and the cluster's CA,
// which must have signed every node's certificate.
func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	ca, err := loadCA(caFile, "TLS CA")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, // presented as server and as client
		RootCAs:      ca,                      // verifies the peers this node dials
		ClientCAs:    ca,                      // verifies the peers that dial it
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// loadCA reads a PEM file of CA certificates; what names it in errors.
func loadCA(file, what string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ca := x509.NewCertPool()
	if !ca.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no PEM certificate in %s", what, file)
	}
	return ca, nil
}
