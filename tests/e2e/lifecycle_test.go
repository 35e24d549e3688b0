package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// idleTimeout is the BATON_SHAPE_IDLE_TIMEOUT of the lifecycle tests.
const idleTimeout = 2 * time.Second

// poller follows one shape with live long-polls (each waits up to 20 s on
// an idle table: the shape is in use while it waits), from base, which
// the test changes when the worker is restarted.
type poller struct {
	base    atomic.Pointer[string]
	ok      atomic.Int64 // successful responses
	mu      sync.Mutex
	handle  string
	refetch []string // 409s: the followed shape must never get one
	stop    context.CancelFunc
	done    chan struct{}
}

func startPoller(t *testing.T, base, table, handle, offset string) *poller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{handle: handle, stop: cancel, done: make(chan struct{})}
	p.base.Store(&base)
	go p.run(ctx, table, offset)
	t.Cleanup(func() {
		p.stop()
		<-p.done
	})
	return p
}

func (p *poller) run(ctx context.Context, table, offset string) {
	defer close(p.done)
	c := harness.NewShapeClient(*p.base.Load(), url.Values{"table": {table}})
	c.Handle, c.Offset = p.handle, offset
	live := false
	for ctx.Err() == nil {
		c.Base = *p.base.Load()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := c.Request(rctx, live)
		cancel()
		var se *harness.StatusError
		switch {
		case err == nil:
			live = live || r.UpToDate()
			p.ok.Add(1)
		case errors.As(err, &se) && se.Status == http.StatusConflict:
			p.mu.Lock()
			p.refetch = append(p.refetch, se.Handle())
			p.mu.Unlock()
			return
		default:
			// 503 while the worker has no lease, or no answer while it
			// restarts (or the test ends): retry shortly.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
}

// check fails the test if the followed shape was ever refetched.
func (p *poller) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.refetch) > 0 {
		t.Fatalf("the polled shape %s got 409 must-refetch (new handle %v); a shape in use must not expire", p.handle, p.refetch)
	}
}

// awaitPolls waits until the poller has n more successful responses.
func (p *poller) awaitPolls(t *testing.T, n int64) {
	t.Helper()
	want := p.ok.Load() + n
	if err := harness.Await(30*time.Second, fmt.Sprintf("%d more successful polls", n), func() (bool, error) {
		p.mu.Lock()
		refetched := len(p.refetch) > 0
		p.mu.Unlock()
		return p.ok.Load() >= want || refetched, nil
	}); err != nil {
		t.Fatal(err)
	}
	p.check(t)
}

// A shape no request uses for BATON_SHAPE_IDLE_TIMEOUT is removed with its
// storage and its table leaves the publication, while a shape that is
// polled (by long-polls that wait longer than the timeout) stays; the
// expired shape's old handle gets 409 and a new shape; its expiry is logged
// once and counted; its last use is persisted, and after a restart the
// publication still holds exactly the tables of the shapes in use and the
// polled shape is kept.
func TestShapeIdleExpiry(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE kept (id int PRIMARY KEY)", "CREATE TABLE idle (id int PRIMARY KEY)",
		"INSERT INTO kept VALUES (1)", "INSERT INTO idle VALUES (1)")
	conn := connect(t, pg)
	published := func() string {
		t.Helper()
		var s string
		if err := conn.QueryRow(context.Background(), `SELECT coalesce(string_agg(tablename, ',' ORDER BY tablename), '')
			FROM pg_publication_tables WHERE pubname = 'baton_pub_default'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	awaitPublished := func(want, what string) {
		t.Helper()
		if err := harness.Await(20*time.Second, what, func() (bool, error) { return published() == want, nil }); err != nil {
			t.Fatalf("%v: published %q, want %q", err, published(), want)
		}
	}
	storage := t.TempDir()
	settings := map[string]string{"BATON_SHAPE_IDLE_TIMEOUT": idleTimeout.String()}
	p := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: storage, WorkerSettings: settings})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	base := p.URL()

	handles, offsets := map[string]string{}, map[string]string{}
	for _, table := range []string{"kept", "idle"} {
		code, h, body := get(t, base, url.Values{"table": {table}, "offset": {"-1"}})
		if code != 200 {
			t.Fatalf("GET %s: %d %s", table, code, body)
		}
		handles[table], offsets[table] = h.Get("electric-handle"), h.Get("electric-offset")
	}
	poll := startPoller(t, base, "kept", handles["kept"], offsets["kept"])

	// The idle shape goes: storage, then publication; the polled one stays.
	if err := harness.Await(20*time.Second, "the idle shape's storage removed", func() (bool, error) {
		dirs := shapeDirs(t, storage)
		return len(dirs) == 1 && dirs[0] == handles["kept"], nil
	}); err != nil {
		t.Fatalf("%v: shape folders %v; want only %s", err, shapeDirs(t, storage), handles["kept"])
	}
	awaitPublished("kept", "the idle shape's table dropped from the publication")
	poll.check(t)

	// Its old handle gets 409 with a new handle, which then serves the table.
	code, h, body := get(t, base, url.Values{"table": {"idle"}, "handle": {handles["idle"]}, "offset": {offsets["idle"]}})
	if code != http.StatusConflict || !strings.Contains(body, "must-refetch") {
		t.Fatalf("old handle of the expired shape: %d %s; want 409 must-refetch", code, body)
	}
	fresh := h.Get("electric-handle")
	if fresh == "" || fresh == handles["idle"] {
		t.Fatalf("409 names handle %q; want a new one (old %q)", fresh, handles["idle"])
	}
	code, h, body = get(t, base, url.Values{"table": {"idle"}, "handle": {fresh}, "offset": {"-1"}})
	if code != 200 || h.Get("electric-handle") != fresh || !strings.Contains(body, `"insert"`) {
		t.Fatalf("refetch of the expired shape: %d handle %q %s; want 200 with %q and its row", code, h.Get("electric-handle"), body, fresh)
	}
	if got := published(); got != "idle,kept" {
		t.Fatalf("published %q with the new shape; want idle,kept", got)
	}
	// Nobody follows the new shape either: it expires in turn.
	awaitPublished("kept", "the second idle shape's table dropped from the publication")

	// Each expiry is logged once, with the shape's handle, and counted.
	for _, handle := range []string{handles["idle"], fresh} {
		if err := p.Worker().WaitOutput("shape="+handle, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(p.Worker().Output(), "\n") {
			if strings.Contains(line, "shape expired") && strings.Contains(line, "shape="+handle) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("expiry of %s logged %d times; want once", handle, n)
		}
	}
	if got := metric(t, base, "baton_worker_shapes_expired_total"); got != "2" {
		t.Fatalf("baton_worker_shapes_expired_total = %q; want 2", got)
	}
	// A change ends the poller's waiting long-poll.
	execSQL(t, pg, "INSERT INTO kept VALUES (2)")
	poll.awaitPolls(t, 1)

	// Restart: the publication still holds exactly the polled shape's table,
	// whose last use was persisted, and the polled shape is kept.
	terminate(t, p)
	var m struct {
		LastUsedAt time.Time `json:"last_used_at"`
	}
	if err := json.Unmarshal(shapeMeta(t, storage, handles["kept"]), &m); err != nil || time.Since(m.LastUsedAt) > time.Minute {
		t.Fatalf("metadata of the polled shape: last_used_at %s (%v); want a recent use", m.LastUsedAt, err)
	}
	p = newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: storage, WorkerSettings: settings})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	base = p.URL()
	poll.base.Store(&base)
	awaitPublished("kept", "the publication reconciled at start-up")
	// For several timeouts the polled shape is served and never removed.
	until := time.Now().Add(3 * idleTimeout)
	if err := harness.AwaitEvery(20*time.Second, 50*time.Millisecond, "three idle timeouts after the restart", func() (bool, error) {
		if dirs := shapeDirs(t, storage); len(dirs) != 1 || dirs[0] != handles["kept"] {
			return false, fmt.Errorf("shape folders %v; want only %s", dirs, handles["kept"])
		}
		if got := published(); got != "kept" {
			return false, fmt.Errorf("published %q; want kept", got)
		}
		return time.Now().After(until), nil
	}); err != nil {
		t.Fatal(err)
	}
	execSQL(t, pg, "INSERT INTO kept VALUES (3)")
	poll.awaitPolls(t, 1)
	if code, h, _ := get(t, base, url.Values{"table": {"kept"}, "handle": {handles["kept"]}, "offset": {"-1"}}); code != 200 || h.Get("electric-handle") != handles["kept"] {
		t.Fatalf("polled shape after restart: %d %q; want 200 %q", code, h.Get("electric-handle"), handles["kept"])
	}
}

// BATON_SHAPE_IDLE_TIMEOUT=0 disables expiry: an unused shape stays.
func TestShapeIdleExpiryDisabled(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY)")
	storage := t.TempDir()
	p := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: storage, WorkerSettings: map[string]string{"BATON_SHAPE_IDLE_TIMEOUT": "0"}})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	base := p.URL()
	code, h, _ := get(t, base, url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	handle := h.Get("electric-handle")
	until := time.Now().Add(2 * time.Second)
	if err := harness.AwaitEvery(10*time.Second, 50*time.Millisecond, "two seconds without expiry", func() (bool, error) {
		if dirs := shapeDirs(t, storage); len(dirs) != 1 {
			return false, fmt.Errorf("shape folders %v; want %s", dirs, handle)
		}
		return time.Now().After(until), nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, base, "baton_worker_shapes_expired_total"); got != "0" {
		t.Fatalf("baton_worker_shapes_expired_total = %q; want 0", got)
	}
}

// metric returns the value of the worker's metric name (stream default).
func metric(t *testing.T, base, name string) string {
	t.Helper()
	prefix := name + `{stream="default"} `
	for _, line := range strings.Split(scrape(t, base), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	t.Fatalf("metric %s missing from /metrics", name)
	return ""
}
