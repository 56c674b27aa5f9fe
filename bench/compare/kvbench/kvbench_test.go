//go:build unix

package kvbench

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestClusters builds both servers, starts three processes of each, has 64
// clients put and then read back (linearizable) for a second each, checks
// every value read is one that was written, and that stopping the cluster
// leaves no process and no goroutine behind.
func TestClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("builds etcd and runs six server processes")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bins, err := Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, sys := range []string{KVStore, Etcd} {
		t.Run(sys, func(t *testing.T) {
			start := StartKVStore
			bin := bins.KVStore
			if sys == Etcd {
				start, bin = StartEtcd, bins.Etcd
			}
			c, err := start(ctx, bin, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			pids := c.PIDs()
			stopped := false
			defer func() {
				if !stopped {
					c.Stop()
				}
			}()
			if len(pids) != 3 {
				t.Fatalf("%d processes, want 3", len(pids))
			}
			var clients []Client
			defer func() {
				for _, cl := range clients {
					cl.Close()
				}
			}()
			for i := range 64 {
				cl, err := c.NewClient(i)
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, cl)
			}
			const keys = 100
			value := func(i int64) []byte { return Value(128, int(i%keys)) }
			puts, err := Run(ctx, clients, time.Second, func(ctx context.Context, cl Client, i int64) error {
				return cl.Put(ctx, Key(i, keys), value(i))
			})
			if err != nil {
				t.Fatal("puts: ", err)
			}
			if puts.Ops < keys {
				t.Fatalf("%d puts in a second, want at least %d", puts.Ops, keys)
			}
			// Key i only ever gets value(i): every read must return it.
			gets, err := Run(ctx, clients, time.Second, func(ctx context.Context, cl Client, i int64) error {
				v, err := cl.Get(ctx, Key(i, keys))
				if err == nil && string(v) != string(value(i)) {
					err = fmt.Errorf("get %s: %q, want %q", Key(i, keys), v, value(i))
				}
				return err
			})
			if err != nil {
				t.Fatal("gets: ", err)
			}
			if gets.Ops == 0 || gets.P50 > gets.P99 {
				t.Fatalf("gets: %+v", gets)
			}
			if err := c.Check(); err != nil {
				t.Fatal(err)
			}
			if c.CPUTime() <= 0 {
				t.Errorf("no CPU time read for the members")
			}
			c.Stop()
			stopped = true
			for _, pid := range pids {
				// Stop reaps the processes: the pid is gone.
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process %d still there after Stop: kill(0): %v", pid, err)
				}
			}
		})
	}
}
