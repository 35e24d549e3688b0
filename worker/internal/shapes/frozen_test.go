package shapes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
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
	frozenDirEnv   = "BATON_SHAPES_FROZEN_DIR"
	frozenEpochEnv = "BATON_SHAPES_FROZEN_EPOCH"
	frozenLSNEnv   = "BATON_SHAPES_FROZEN_LSN"
	frozenOpsEnv   = "BATON_SHAPES_FROZEN_OPS"
)

// frozenCases are the writes TestFrozenRegistry freezes a worker in: the
// ops its worker does, and which LIVE file it must be holding.
var frozenCases = []struct {
	name, ops string
	held      func(rel string) bool
}{
	// Persisting metadata only (no records to sync): the only writes are
	// SetMeta's, in the shape logs.
	{"metadata", "meta", func(rel string) bool { return strings.Count(rel, "/") >= 3 }},
	// Creating and deleting shapes, frozen in a write of the set of shapes.
	{"members", "members", func(rel string) bool { return strings.Count(rel, "/") == 1 }},
	// Everything a worker writes, frozen in any of it.
	{"mixed", "mixed", func(string) bool { return true }},
}

// TestFrozenRegistry freezes (SIGSTOP) a worker process in the middle of a
// storage write of its shapes (routing, persisting metadata, creating or
// deleting a shape: seen in /proc/locks, as the writer holds a shared
// flock on its LIVE file from the check that starts a write to the one
// that ends it), opens the storage for a newer epoch while it is frozen,
// works on it, and thaws the old worker, which goes on writing: its
// writes must all fail with storage.ErrFenced once the newer Open
// returned, and the newer worker's shapes (metadata, records, folders)
// must be exactly what it found plus what it did; what the old one wrote
// meanwhile is garbage that the next Open removes.
func TestFrozenRegistry(t *testing.T) {
	for _, c := range frozenCases {
		t.Run(c.name, func(t *testing.T) { testFrozenRegistry(t, c.ops, c.held) })
	}
}

func testFrozenRegistry(t *testing.T, ops string, want func(rel string) bool) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	e := &regEnv{dir: dir}
	r, stream, err := openReg(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if _, err := e.newShape(r, rng); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		if err := e.route(r, mustList(r)[:3]); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	stream.Close()

	child := startFrozenChild(t, dir, 2, e.lsn, ops)
	if err := child.awaitLines(40, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	attempts, held := freezeInsideWrite(t, child.cmd.Process.Pid, dir, want)
	t.Logf("worker frozen inside a write after %d attempts (holding %s)", attempts, held)

	type opened struct {
		r      *Registry
		stream *storage.Log
		err    error
	}
	done := make(chan opened, 1)
	start := time.Now()
	go func() {
		r, s, err := openReg(dir, 3)
		done <- opened{r, s, err}
	}()
	var o opened
	select {
	case o = <-done:
		if o.err != nil {
			t.Fatalf("Open while the old worker is frozen: %v", o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open waited for the frozen worker")
	}
	t.Logf("Open beside the frozen worker took %s", time.Since(start))
	m := regModel{}
	for _, s := range mustList(o.r) {
		m[s.meta.Handle] = snapshotOf(s)
	}
	// The newer worker routes, persists, creates and deletes meanwhile.
	_, e.lsn = o.stream.Durable()
	e.n = 1 << 20
	for range 4 {
		m = e.work(t, "the newer worker", o.r, m, rng)
	}
	checkReg(t, "the newer worker before the old one is thawed", o.r, m)

	if err := child.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := child.wait(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if bad := child.unfenced(); bad != "" {
		t.Fatalf("the thawed worker: %s; output:\n%s", bad, child.output())
	}
	checkReg(t, "the newer worker once the old one went on", o.r, m)
	o.r.Close()
	o.stream.Close()

	r, stream, err = openReg(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	checkReg(t, "reopened", r, m)
	checkNoStrayFolders(t, r)
}

// checkNoStrayFolders verifies that the shapes folder holds only the
// shapes of r, the folders of the set's owners and the format marker.
func checkNoStrayFolders(t *testing.T, r *Registry) {
	t.Helper()
	shapes := map[string]bool{}
	for _, s := range mustList(r) {
		shapes[s.dir] = true
	}
	owners, err := filepath.Glob(filepath.Join(r.dir, "o.*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		entries, err := os.ReadDir(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(o, e.Name())
			if e.IsDir() && !shapes[p] {
				t.Fatalf("%s is not a shape of the registry", p)
			}
		}
	}
}

// frozenChild is a TestHelperFrozenRegistry process, with what it printed.
type frozenChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	lines  []string
	eof    chan struct{}
}

func startFrozenChild(t *testing.T, dir string, epoch, lsn uint64, ops string) *frozenChild {
	t.Helper()
	c := &frozenChild{eof: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperFrozenRegistry$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), frozenDirEnv+"="+dir, frozenEpochEnv+"="+strconv.FormatUint(epoch, 10),
		frozenLSNEnv+"="+strconv.FormatUint(lsn, 10), frozenOpsEnv+"="+ops)
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
			return fmt.Errorf("the worker reported %d writes in %s, want %d; stderr:\n%s", got, limit, n, c.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *frozenChild) wait(limit time.Duration) error {
	select {
	case <-c.eof:
	case <-time.After(limit):
		return fmt.Errorf("the thawed worker did not stop within %s", limit)
	}
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("the thawed worker: %w; stderr:\n%s", err, c.stderr.String())
	}
	return nil
}

func (c *frozenChild) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n") + "\n" + c.stderr.String()
}

// unfenced describes what is wrong with what the thawed worker reported:
// no write fenced, or one that succeeded after one was fenced.
func (c *frozenChild) unfenced() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	fenced := ""
	for _, l := range c.lines {
		switch {
		case strings.HasPrefix(l, "fenced "):
			if fenced == "" {
				fenced = l
			}
		case strings.HasPrefix(l, "ok ") && fenced != "":
			return fmt.Sprintf("%q after %q", l, fenced)
		}
	}
	if fenced == "" {
		return "no write was fenced"
	}
	return ""
}

// TestHelperFrozenRegistry is the worker of TestFrozenRegistry: it opens
// the storage for its epoch and writes as the router, the persist loop,
// creations and deletions do (or, with ops "meta", only persists the last
// use of shapes; with "members", only creates and deletes), printing "ok
// <what>" after each write that succeeded and "fenced <what>" after each
// one that failed with storage.ErrFenced, until it has been fenced 30
// times.
func TestHelperFrozenRegistry(t *testing.T) {
	dir := os.Getenv(frozenDirEnv)
	if dir == "" {
		return // not a child of TestFrozenRegistry
	}
	epoch, err1 := strconv.ParseUint(os.Getenv(frozenEpochEnv), 10, 64)
	lsn, err2 := strconv.ParseUint(os.Getenv(frozenLSNEnv), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	r, stream, err := openReg(dir, epoch)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	e := &regEnv{dir: dir, lsn: lsn, n: 1000}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	fenced := 0
	report := func(what string, err error) {
		switch {
		case err == nil:
			fmt.Println("ok " + what)
		case errors.Is(err, storage.ErrFenced):
			fmt.Println("fenced " + what)
			fenced++
		default:
			t.Fatalf("%s: %v", what, err)
		}
	}
	ops := os.Getenv(frozenOpsEnv)
	for fenced < 30 {
		s := pickShape(r, rng)
		k := rng.IntN(10)
		switch {
		case ops == "meta" && s != nil:
			s.mu.Lock()
			s.meta.LastUsedAt = time.Now().UTC()
			s.mu.Unlock()
			report("persist "+s.meta.Handle, s.persist())
			continue
		case ops == "members":
			k = 6 + k%4
		}
		switch {
		case s != nil && k < 6:
			report("route to "+s.meta.Handle, e.route(r, []*Shape{s}))
			s.mu.Lock()
			s.meta.LastUsedAt = time.Now().UTC()
			s.mu.Unlock()
			report("persist "+s.meta.Handle, s.persist())
		case s != nil && k < 8:
			report("delete "+s.meta.Handle, r.Delete(s))
		default:
			_, err := e.newShape(r, rng)
			report("create", err)
		}
	}
}

// freezeInsideWrite SIGSTOPs pid, retrying (SIGCONT, a moment, SIGSTOP)
// until it is stopped inside a write to the storage at dir that holds a
// LIVE file for which want (given its path relative to dir/shapes) is
// true. It returns how many freezes it took, and that path.
func freezeInsideWrite(t *testing.T, pid int, dir string, want func(string) bool) (int, string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		for !allStopped(t, pid) {
			if time.Now().After(deadline) {
				t.Fatal("the worker's threads did not stop")
			}
			time.Sleep(time.Millisecond)
		}
		if live := heldLive(t, pid, dir); live != "" {
			if rel, err := filepath.Rel(filepath.Join(dir, "shapes"), live); err == nil && want(rel) {
				return attempt, rel
			}
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not freeze the worker inside a write in %d attempts", attempt)
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

// heldLive returns the LIVE file under dir (of the stream log, the set of
// shapes, or a shape log) on which pid holds a flock, per /proc/locks, or
// "" if none.
func heldLive(t *testing.T, pid int, dir string) string {
	t.Helper()
	inodes := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if d.Name() == "LIVE" && !d.IsDir() {
			if fi, err := os.Stat(p); err == nil {
				inodes[strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10)] = p
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
		if p, ok := inodes[dev[len(dev)-1]]; ok {
			return p
		}
	}
	return ""
}
