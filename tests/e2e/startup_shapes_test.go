package e2e_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// TestStartupManyShapes measures a takeover's start-up and a graceful
// stop over many stored shapes; it runs only with BATON_STARTUP_SHAPES=n
// (BENCHMARKS.md, "Takeover with many shapes"):
//
//	BATON_STARTUP_SHAPES=2000 go test ./tests/e2e -run TestStartupManyShapes -v
//
// It creates n `id = $1` shapes, stops the pod, and starts a pod on the
// same storage three times, logging pod start → active, the worker's
// startup.shapes step and SIGTERM → exit. Each restarted worker must
// serve the stored shapes under their old handles.
func TestStartupManyShapes(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("BATON_STARTUP_SHAPES"))
	if err != nil || n <= 0 {
		t.Skip("set BATON_STARTUP_SHAPES=<number of shapes> to run this measurement")
	}
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)",
		fmt.Sprintf("INSERT INTO items SELECT g, 'x' FROM generate_series(1, %d) g", n))
	storage := t.TempDir()
	p := newActivePod(t, pg, "a", storage)
	shape := func(i int) url.Values {
		return url.Values{"table": {"items"}, "offset": {"-1"}, "where": {"id = $1"}, "params[1]": {strconv.Itoa(i)}}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last string // the handle of shape n
	)
	ch := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				code, h, body := get(t, p.URL(), shape(i))
				if code != 200 {
					t.Errorf("create shape %d: %d %s", i, code, body)
				}
				if i == n {
					mu.Lock()
					last = h.Get("electric-handle")
					mu.Unlock()
				}
			}
		}()
	}
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("created %d shapes in %s", n, time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	terminate(t, p)
	t.Logf("first pod: SIGTERM -> exit %s", time.Since(t1).Round(time.Millisecond))
	step := regexp.MustCompile(`startup\.shapes=(\S+)`)
	for round := range 3 {
		start := time.Now()
		q := newPod(t, pg, harness.PodOptions{Name: fmt.Sprintf("b%d", round), StorageDir: storage})
		if err := q.Worker().AwaitStatus("active", 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		shapesStep := "?"
		if m := step.FindStringSubmatch(q.Worker().Output()); m != nil {
			shapesStep = m[1]
		}
		if code, h, body := get(t, q.URL(), shape(n)); code != 200 || h.Get("electric-handle") != last {
			t.Fatalf("round %d: shape %d after the restart: %d handle %q %s; want 200 and its handle %q", round, n, code, h.Get("electric-handle"), body, last)
		}
		stop := time.Now()
		terminate(t, q)
		t.Logf("round %d: pod start -> active %s (startup.shapes %s); SIGTERM -> exit %s",
			round, took.Round(time.Millisecond), shapesStep, time.Since(stop).Round(time.Millisecond))
	}
}

// TestStartupBigShape measures a takeover's start-up over one large stored
// shape; it runs only with BATON_STARTUP_ROWS=n (BENCHMARKS.md, "Start-up
// with a large stored shape"):
//
//	BATON_STARTUP_ROWS=1000000 go test ./tests/e2e -run TestStartupBigShape -v
//
// It creates a whole-table shape of n rows (the snapshot read to its end),
// stops the pod, and starts a pod on the same storage three times, logging
// pod start → active and the worker's startup.shapes step. With
// BATON_STARTUP_DROP_CACHES=1 (as root) the page cache is dropped before
// each start, as for a takeover on another node of a shared volume. Each restarted
// worker must serve the shape under its old handle, every row of it.
func TestStartupBigShape(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("BATON_STARTUP_ROWS"))
	if err != nil || n <= 0 {
		t.Skip("set BATON_STARTUP_ROWS=<rows of the shape> to run this measurement")
	}
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id bigint PRIMARY KEY, note text, n int, at timestamptz)",
		fmt.Sprintf("INSERT INTO items SELECT g, md5(g::text) || 'abcdef', g %% 1000, now() FROM generate_series(1, %d) g", n))
	storage := t.TempDir()
	p := newActivePod(t, pg, "a", storage)
	t0 := time.Now()
	handle, rows := readWholeShape(t, p.URL(), "")
	if rows != n {
		t.Fatalf("the new shape has %d rows, want %d", rows, n)
	}
	t.Logf("created and read the shape (%d rows) in %s", n, time.Since(t0).Round(time.Millisecond))
	terminate(t, p)
	step := regexp.MustCompile(`startup\.shapes=(\S+)`)
	for round := range 3 {
		if os.Getenv("BATON_STARTUP_DROP_CACHES") != "" {
			// A takeover on another node: nothing of the log is cached.
			if err := exec.Command("sync").Run(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
				t.Fatalf("drop the page cache (needs root): %v", err)
			}
		}
		start := time.Now()
		q := newPod(t, pg, harness.PodOptions{Name: fmt.Sprintf("b%d", round), StorageDir: storage})
		if err := q.Worker().AwaitStatus("active", 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		shapesStep := "?"
		if m := step.FindStringSubmatch(q.Worker().Output()); m != nil {
			shapesStep = m[1]
		}
		h, got := readWholeShape(t, q.URL(), handle)
		if h != handle || got != n {
			t.Fatalf("round %d: after the restart the shape is %q with %d rows; want %q with %d", round, h, got, handle, n)
		}
		terminate(t, q)
		t.Logf("round %d: pod start -> active %s (startup.shapes %s)", round, took.Round(time.Millisecond), shapesStep)
	}
}

// readWholeShape follows the whole-table shape of items from offset -1
// until up to date and returns its handle and the inserts it read; want,
// when set, is the handle it must have.
func readWholeShape(t *testing.T, base, want string) (string, int) {
	t.Helper()
	q := url.Values{"table": {"items"}, "offset": {"-1"}}
	handle, rows := "", 0
	for range 100000 {
		code, h, body := get(t, base, q)
		if code != 200 {
			t.Fatalf("shape request %v: %d %s", q, code, body)
		}
		handle = h.Get("electric-handle")
		if want != "" && handle != want {
			return handle, rows
		}
		rows += strings.Count(body, `"operation":"insert"`)
		if strings.Contains(body, `"control":"up-to-date"`) {
			return handle, rows
		}
		q = url.Values{"table": {"items"}, "offset": {h.Get("electric-offset")}, "handle": {handle}}
	}
	t.Fatal("the shape did not reach up to date")
	return "", 0
}
