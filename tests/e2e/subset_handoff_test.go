package e2e_test

// Nothing lost with everything in use (issue 10): a rolling handoff while
// an official client follows a table on demand (log=changes_only, its rows
// loaded by subset snapshots) through an nginx cache in front of both pods
// (harness.StartNginx).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// subsetFollower is a running tests/ts/subset_follow.mjs.
type subsetFollower struct {
	in     io.WriteCloser
	mu     sync.Mutex
	rows   []itemRow
	up     bool
	loaded int
	errs   []string
	ctrl   []string
	stderr strings.Builder
	wake   chan struct{}
}

func startSubsetFollower(t *testing.T, base, table string) *subsetFollower {
	t.Helper()
	needClient(t)
	f := &subsetFollower{wake: make(chan struct{})}
	pr, pw := io.Pipe()
	f.in = pw
	_, out := startNode(t, &f.mu, &f.stderr, pr, "subset_follow.mjs", base, table)
	// Runs before startNode's cleanup, whose Wait waits for stdin's copy.
	t.Cleanup(func() { pw.Close() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var line struct {
				Rows     *[]itemRow `json:"rows"`
				UpToDate bool       `json:"upToDate"`
				Loaded   int        `json:"loaded"`
				Control  string     `json:"control"`
				Error    string     `json:"error"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				continue
			}
			f.mu.Lock()
			switch {
			case line.Rows != nil:
				f.rows, f.up = *line.Rows, line.UpToDate
			case line.Loaded > 0:
				f.loaded = line.Loaded
			case line.Control != "":
				f.ctrl = append(f.ctrl, line.Control)
			case line.Error != "":
				f.errs = append(f.errs, line.Error)
			}
			close(f.wake)
			f.wake = make(chan struct{})
			f.mu.Unlock()
		}
	}()
	return f
}

// load asks the client to load a subset (requestSnapshot).
func (f *subsetFollower) load(t *testing.T, subset map[string]any) {
	t.Helper()
	b, err := json.Marshal(subset)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.in.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// await waits until cond holds on the client's state; on timeout it fails
// the test, with more of the state when detail tells it.
func (f *subsetFollower) await(t *testing.T, timeout time.Duration, what string, cond func(rows []itemRow, upToDate bool, loaded int) bool, detail ...func(rows []itemRow) string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		rows, up, loaded, wake := f.rows, f.up, f.loaded, f.wake
		f.mu.Unlock()
		if cond(rows, up, loaded) {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			more := ""
			for _, d := range detail {
				more += "\n" + d(f.rows)
			}
			t.Fatalf("client: %s not reached after %s: %d rows (up to date %v), %d subsets loaded; controls %v; errors %v%s",
				what, timeout, len(f.rows), f.up, f.loaded, f.ctrl, f.errs, more)
		}
	}
}

// TestSubsetCachedRollingHandoff: the official client follows items on
// demand (log=changes_only; its rows come from two subset snapshots, one
// of them requested while the stream moves) through an nginx cache in
// front of both pods, while a writer inserts, updates and deletes rows;
// pod A gets SIGTERM and pod B, on the same storage, takes over. The
// client ends with exactly the table's rows, without a must-refetch.
func TestSubsetCachedRollingHandoff(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	// Rows from before the shape: only subset snapshots bring them.
	execSQL(t, pg, "INSERT INTO items SELECT g, 'pre' || g FROM generate_series(100001, 100300) g")
	// One storage for both pods (as the shared-storage overlay): the
	// handle, and the responses cached under it, stay valid.
	dir := t.TempDir()
	// Advertised, as deployed: the cache sends requests to either pod, and
	// the standby forwards them to the active worker.
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, Advertise: true})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir, Advertise: true})
	if err := b.Worker().AwaitStatus("waiting", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	cache, err := harness.StartNginx(strings.TrimPrefix(a.URL(), "http://"), strings.TrimPrefix(b.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	// Stale responses served while they are revalidated in the background.
	c := startSubsetFollower(t, cache.URL("bg"), "items")
	c.await(t, 30*time.Second, "up to date", func(_ []itemRow, up bool, _ int) bool { return up })

	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	w := startMixedWriter(t, pg)
	// The writer's rows come through the log (inserts); the rows
	// from before come with the first subset, ordered and limited.
	c.load(t, map[string]any{"where": "id > $1", "params": map[string]string{"1": "100000"}, "orderBy": "id", "limit": 1000})
	c.await(t, 30*time.Second, "the first subset and 20 writer rows", func(rows []itemRow, _ bool, loaded int) bool {
		return loaded >= 1 && len(rows) >= 300+20
	})

	phase("first subset loaded; SIGTERM to pod a")
	_ = a.Worker().Signal(syscall.SIGTERM)
	_ = a.Broker().Signal(syscall.SIGTERM)
	// Asked while the stream moves: the writer's rows, some of them
	// updated or deleted by now, so the two subsets cover the table
	// (a client on demand holds the rows it asked for and the rows
	// inserted after; after a must-refetch, only what it asks for
	// again).
	c.load(t, map[string]any{"where": "id <= $1", "params": map[string]string{"1": "100000"}})
	if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	phase("pod b active")
	// Writes go on against pod B for a while.
	start := time.Now()
	c.await(t, 60*time.Second, "the second subset and rows written after the handoff", func(rows []itemRow, _ bool, loaded int) bool {
		return loaded >= 2 && time.Since(start) > 2*time.Second
	})
	phase("second subset loaded")
	r := w.finish()
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := tableRows(t, pg)
	c.await(t, 60*time.Second, fmt.Sprintf("the table's %d rows, up to date", len(want)), func(rows []itemRow, up bool, _ int) bool {
		return up && sameItems(rows, want)
	}, func(rows []itemRow) string { return itemsDiff(rows, want) })
	phase("client rows equal to the table's")
	c.mu.Lock()
	ctrl, errs := c.ctrl, c.errs
	c.mu.Unlock()
	for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
		if code, err := p.Wait(30 * time.Second); err != nil || code != 0 {
			t.Errorf("%s exit %d %v; want 0", p.Name, code, err)
		}
	}
	refetches := strings.Count(strings.Join(ctrl, " "), "must-refetch")
	statuses, err := cache.CacheStatuses()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writer: %d inserts, %d updates, %d deletes; client: %d must-refetch, errors %v; cache: %v",
		r.inserts, r.updates, r.deletes, refetches, errs, statuses)
	if refetches > 0 {
		t.Errorf("shared storage: %d must-refetch; want none (same handle)", refetches)
	}
}
