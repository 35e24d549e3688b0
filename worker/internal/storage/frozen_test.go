package storage_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

const (
	frozenDirEnv   = "BATON_STORAGE_FROZEN_DIR"
	frozenEpochEnv = "BATON_STORAGE_FROZEN_EPOCH"
)

// TestFrozenWriter freezes (SIGSTOP) a writer process in the middle of a
// write, between the ownership check that starts it and the one that
// publishes it (seen in /proc/locks: the writer marks that span with a
// shared flock on its LIVE file). Open for a newer epoch must return while
// it is frozen; once thawed, the old writer's Sync fails with ErrFenced,
// and the log holds exactly what the newer Open found plus what the newer
// writer added: every position the old writer reported durable, and none
// of what it wrote after the newer Open.
func TestFrozenWriter(t *testing.T) {
	dir := t.TempDir()
	const oldEpoch = 4
	child := startFrozenChild(t, dir, oldEpoch)
	if err := child.awaitLines(20, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	attempts := freezeInsideWrite(t, child.cmd.Process.Pid, dir)
	t.Logf("writer frozen inside a write after %d attempts", attempts)

	type opened struct {
		l   *storage.Log
		err error
	}
	done := make(chan opened, 1)
	start := time.Now()
	go func() {
		l, err := storage.OpenWith(dir, oldEpoch+1, storage.Options{SegmentSize: 16 << 10})
		done <- opened{l, err}
	}()
	var cur *storage.Log
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("Open while the old writer is frozen: %v", o.err)
		}
		cur = o.l
	case <-time.After(10 * time.Second):
		t.Fatal("Open waited for the frozen writer")
	}
	t.Logf("Open beside the frozen writer took %s", time.Since(start))
	taken := readAll(t, cur, 100)
	_, end := cur.Durable()
	var mine []uint64
	for range 30 {
		end += 3
		mine = append(mine, end)
	}
	appendSync(t, cur, mine...)

	if err := child.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := child.wait(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !child.fenced() {
		t.Fatalf("the thawed writer did not report ErrFenced; output:\n%s", child.output())
	}
	cur.Close()

	l := openLog(t, dir, oldEpoch+2, storage.Options{})
	all := readAll(t, l, 100)
	if len(all) != len(taken)+len(mine) {
		t.Fatalf("%d records after the takeover, want the %d the newer Open found and its own %d", len(all), len(taken), len(mine))
	}
	for i, r := range all {
		want := storage.Record{Seq: uint64(i + 1), Epoch: oldEpoch + 1}
		if i < len(taken) {
			want = taken[i]
		} else {
			want.EndLSN = mine[i-len(taken)]
			want.CommitLSN, want.Payload = want.EndLSN-1, payloadFor(want.EndLSN)
		}
		if r.Seq != want.Seq || r.EndLSN != want.EndLSN || r.Epoch != want.Epoch || !bytes.Equal(r.Payload, want.Payload) {
			t.Fatalf("record %d: seq %d end %d epoch %d, want seq %d end %d epoch %d", i, r.Seq, r.EndLSN, r.Epoch, want.Seq, want.EndLSN, want.Epoch)
		}
	}
	found := map[uint64]bool{}
	for _, r := range taken {
		found[r.EndLSN] = true
	}
	for _, e := range child.durable() {
		if !found[e] {
			t.Fatalf("end LSN %d was reported durable by the old writer but is not in the log", e)
		}
	}
	t.Logf("%d records taken over, %d reported durable by the old writer", len(taken), len(child.durable()))
}

// frozenChild is a TestHelperFrozen process, with what it printed.
type frozenChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	lines  []string
	eof    chan struct{}
}

func startFrozenChild(t *testing.T, dir string, epoch uint64) *frozenChild {
	t.Helper()
	c := &frozenChild{eof: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperFrozen$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), frozenDirEnv+"="+dir, frozenEpochEnv+"="+strconv.FormatUint(epoch, 10))
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGCONT)
		c.cmd.Process.Kill()
		<-c.eof
	})
	go func() {
		defer close(c.eof)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *frozenChild) awaitLines(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c.mu.Lock()
		got := len(c.lines)
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the writer reported %d syncs in %s, want %d; stderr:\n%s", got, limit, n, c.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *frozenChild) wait(limit time.Duration) error {
	select {
	case <-c.eof:
	case <-time.After(limit):
		return fmt.Errorf("the thawed writer did not stop within %s", limit)
	}
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("the thawed writer: %w; stderr:\n%s", err, c.stderr.String())
	}
	return nil
}

func (c *frozenChild) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n") + "\n" + c.stderr.String()
}

func (c *frozenChild) fenced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.lines {
		if l == "fenced" {
			for _, after := range c.lines[i+1:] {
				if _, err := strconv.ParseUint(after, 10, 64); err == nil {
					return false // a Sync succeeded after ErrFenced
				}
			}
			return true
		}
	}
	return false
}

func (c *frozenChild) durable() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, l := range c.lines {
		if e, err := strconv.ParseUint(l, 10, 64); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// TestHelperFrozen is the child of TestFrozenWriter: it appends and syncs
// batches of records until fenced, printing each durable EndLSN, then
// "fenced".
func TestHelperFrozen(t *testing.T) {
	dir := os.Getenv(frozenDirEnv)
	if dir == "" {
		return // not a child of TestFrozenWriter
	}
	epoch, err := strconv.ParseUint(os.Getenv(frozenEpochEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	l, err := storage.OpenWith(dir, epoch, storage.Options{SegmentSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var end uint64
	for i := 0; ; i++ {
		for range 1 + i%7 {
			end++
			if _, err := l.Append(record(end)); err != nil && !errors.Is(err, storage.ErrFenced) {
				t.Fatal(err)
			}
		}
		durable, err := l.Sync()
		if errors.Is(err, storage.ErrFenced) {
			fmt.Println("fenced")
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(durable)
	}
}

// freezeInsideWrite SIGSTOPs pid, retrying (SIGCONT, a moment, SIGSTOP)
// until it is stopped inside a write to the log at dir. It returns how
// many freezes it took.
func freezeInsideWrite(t *testing.T, pid int, dir string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		for !allStopped(t, pid) {
			if time.Now().After(deadline) {
				t.Fatal("the writer's threads did not stop")
			}
			time.Sleep(time.Millisecond)
		}
		if holdsWriteMark(t, pid, dir) {
			return attempt
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not freeze the writer inside a write in %d attempts", attempt)
		}
		time.Sleep(time.Duration(attempt%3) * time.Millisecond)
	}
}

// allStopped reports whether every thread of pid is stopped by a signal.
func allStopped(t *testing.T, pid int) bool {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		if f := strings.Fields(rest); len(f) == 0 || (f[0] != "T" && f[0] != "t") {
			return false
		}
	}
	return true
}

// holdsWriteMark reports whether pid holds a flock on a LIVE file of the
// log at dir, per /proc/locks.
func holdsWriteMark(t *testing.T, pid int, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "o.*", "LIVE"))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			inodes[strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10)] = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	// "1: FLOCK  ADVISORY  READ 31652 fe:00:10182660 0 EOF"
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[4] != strconv.Itoa(pid) {
			continue
		}
		dev := strings.Split(f[5], ":")
		if inodes[dev[len(dev)-1]] {
			return true
		}
	}
	return false
}
