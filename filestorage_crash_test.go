package raft

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// crashEntryData is what the crash child writes at index i: the parent
// recomputes it to check every entry is intact.
func crashEntryData(i uint64) []byte {
	return []byte(fmt.Sprintf("entry %d %s", i, strings.Repeat("x", int(i%97))))
}

// TestMain re-executes the test binary as the crash child when asked to.
func init() {
	if dir := os.Getenv("RAFT_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
}

// crashChild appends batches to a FileStorage in dir forever, printing the
// last index of each batch once Save has returned (acknowledged).
func crashChild(dir string) {
	s, err := OpenFileStorage(dir, WithSegmentSize(64<<10))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	last, _ := s.LastIndex()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	out := bufio.NewWriter(os.Stdout)
	for {
		n := 1 + rng.Intn(20)
		ents := make([]Entry, n)
		for i := range ents {
			idx := last + 1 + uint64(i)
			ents[i] = Entry{Index: idx, Term: 1, Data: crashEntryData(idx)}
		}
		if err := s.Save(HardState{Term: 1, Commit: last}, ents); err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			os.Exit(1)
		}
		last += uint64(n)
		fmt.Fprintln(out, "ack", last)
		out.Flush()
	}
}

// TestFileStorage_CrashKill runs a child that appends and fsyncs, kills it
// with SIGKILL at a random moment, and checks after reopening that every
// acknowledged entry is present and intact and that the log ends cleanly.
// RAFT_CRASH_ITER sets the number of kills (default 12).
func TestFileStorage_CrashKill(t *testing.T) {
	iters := envInt("RAFT_CRASH_ITER", 12)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	exe, err := os.Executable()
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "log")
	var acked uint64
	for it := 0; it < iters; it++ {
		cmd := exec.Command(exe, "-test.run", "^$")
		cmd.Env = append(os.Environ(), "RAFT_CRASH_CHILD="+dir)
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
		// The kill comes at a random moment after the child's first
		// acknowledgment, so a slow start on a loaded machine cannot use up
		// the time meant for writing.
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
				f := strings.Fields(line)
				require.Equal(t, "ack", f[0], "child: %s", line)
				v, err := strconv.ParseUint(f[1], 10, 64)
				require.NoError(t, err)
				acked = max(acked, v)
				if !armed {
					kill, armed = time.After(time.Duration(rng.Intn(60))*time.Millisecond), true
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

		s, err := OpenFileStorage(dir, WithSegmentSize(64<<10))
		require.NoError(t, err, "iteration %d", it)
		last, err := s.LastIndex()
		require.NoError(t, err)
		require.GreaterOrEqual(t, last, acked, "iteration %d: an acknowledged entry was lost", it)
		ents, err := s.Entries(1, last+1)
		require.NoError(t, err)
		for _, e := range ents {
			require.Equal(t, string(crashEntryData(e.Index)), string(e.Data), "entry %d damaged", e.Index)
		}
		require.NoError(t, s.Close())
	}
	require.Positive(t, acked, "the child acknowledged writes")
	t.Logf("%d kills, %d entries acknowledged", iters, acked)
}
