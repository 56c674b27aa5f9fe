package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raftkit/raft"
	"github.com/raftkit/raft/examples/kvstore/server"
	"github.com/raftkit/raft/examples/kvstore/store"
)

// The sharded variant, -groups N with N > 1: the node runs N Raft groups
// (IDs 1 to N) through one raft.Host, over one TCP listener and one
// raft.HostStorage in -data, each group with its own store; keys go to
// groups by hash ranges (shard.GroupOf). Every founding node runs a
// replica of every group, so each group has the same members, the
// -members nodes, whose IDs are their hosts' IDs (docs/multigroup.md).

// maxGroups bounds -groups: the example starts every group at once and
// lists them all in /status.
const maxGroups = 1024

// groupsMarker is the file, in a sharded node's data directory, that holds
// its -groups: the key-to-group mapping depends on it, so a node started
// with another -groups on the same data would look for keys in the wrong
// groups.
const groupsMarker = "GROUPS"

// checkGroupsMarker refuses to start a node with a -groups other than the
// one its data directory was written with, and records it on a first start.
func checkGroupsMarker(dir string, groups int) error {
	b, err := os.ReadFile(filepath.Join(dir, groupsMarker))
	switch {
	case errors.Is(err, fs.ErrNotExist) && groups <= 1:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		return writeFileSync(filepath.Join(dir, groupsMarker), []byte(strconv.Itoa(groups)+"\n"))
	case err != nil:
		return err
	}
	was, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s: %q is not a number of groups", filepath.Join(dir, groupsMarker), b)
	}
	if was != groups {
		return fmt.Errorf("%s holds the data of -groups %d, not -groups %d: keys are mapped to groups by their number, "+
			"so it cannot change on existing data (start with -groups %d, or an empty -data)", dir, was, groups, was)
	}
	return nil
}

// startShardedNode opens the node's HostStorage, starts its Host, one
// replica of each group and the HTTP server. On error, whatever was started
// is stopped.
func startShardedNode(cfg nodeConfig) (_ *node, err error) {
	n := &node{cfg: cfg, served: make(chan error, 1)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	// OpenHostStorage refuses a FileStorage's directory (data of -groups
	// 1) with a clear error; the marker catches another -groups.
	if _, statErr := os.Stat(filepath.Join(cfg.DataDir, groupsMarker)); errors.Is(statErr, fs.ErrNotExist) {
		if entries, _ := os.ReadDir(cfg.DataDir); len(entries) > 0 {
			return nil, fmt.Errorf("node %d: %s holds data but no %s file: it was written with -groups 1 (or is not a kvstore data directory); "+
				"start it with -groups 1, or give an empty -data", cfg.ID, cfg.DataDir, groupsMarker)
		}
	}
	if err := checkGroupsMarker(cfg.DataDir, cfg.Groups); err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	// One write-ahead log for all the groups: the Saves of the groups that
	// write together share one fsync.
	if n.wal, err = raft.OpenHostStorage(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("node %d: opening %s: %w", cfg.ID, cfg.DataDir, err)
	}
	tcp := cfg.tcpConfig()
	if n.host, err = raft.NewHost(raft.HostConfig{ID: cfg.ID, TCP: &tcp, Logger: cfg.Logger}); err != nil {
		return nil, fmt.Errorf("node %d: Raft host: %w", cfg.ID, err)
	}
	ln, err := n.listenHTTP(cfg)
	if err != nil {
		return nil, err
	}
	for id := uint64(1); id <= uint64(cfg.Groups); id++ {
		storage, err := n.wal.Group(id)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("node %d: group %d: %w", cfg.ID, id, err)
		}
		st := store.New()
		node, err := n.host.StartGroup(id, raft.Config{
			InitialMembers:    cfg.Members, // ignored once the group's storage holds state
			ElectionTimeout:   cfg.ElectionTimeout,
			SnapshotThreshold: cfg.SnapshotThreshold,
			TrailingEntries:   cfg.TrailingEntries,
			MaxInflight:       cmp.Or(cfg.MaxInflight, defaultMaxInflight),
			LeaseReads:        cfg.LeaseReads,
		}, st, storage)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
		}
		n.groups = append(n.groups, server.Group{ID: id, Node: node, Store: st})
	}
	api, err := server.NewSharded(n.groups)
	if err != nil {
		ln.Close()
		return nil, err
	}
	n.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { n.served <- n.http.Serve(ln) }()
	return n, nil
}

// shutdownGroups hands over the leadership of the groups this node leads
// (Node.Shutdown), all at once.
func (n *node) shutdownGroups(ctx context.Context) error {
	errs := make([]error, len(n.groups))
	var wg sync.WaitGroup
	for i, g := range n.groups {
		wg.Go(func() {
			if err := g.Node.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("group %d: %w", g.ID, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
