package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
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

// startIdlePair is startShapePair with worker settings.
func startIdlePair(t *testing.T, pg *pgtest.Cluster, name, storage string, settings map[string]string) (pair, string) {
	t.Helper()
	return startPod(t, pg, name, storage, settings, false, "active")
}

// startPod starts a broker and a worker with settings (advertising its
// own URL when advertise is set, as a pod does with BATON_ADVERTISE_URL)
// and waits until the worker's health says status; it returns the pair and
// the worker's base URL.
func startPod(t *testing.T, pg *pgtest.Cluster, name, storage string, settings map[string]string, advertise bool, status string) (pair, string) {
	t.Helper()
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "broker-" + name})
	w, err := harness.StartWorker(harness.WorkerOptions{
		Bin: bins["worker"], DatabaseURL: pg.URL(), BrokerAddr: b.Addr, StorageDir: storage, Name: "worker-" + name,
		Settings: settings, Advertise: advertise,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", w.Name, w.Output())
		}
	})
	if err := w.AwaitStatus(status, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return pair{broker: b, worker: w}, "http://" + w.HTTPAddr
}

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
	c := http.Client{Timeout: 30 * time.Second}
	live := false
	for ctx.Err() == nil {
		q := url.Values{"table": {table}, "handle": {p.handle}, "offset": {offset}}
		if live {
			q.Set("live", "true")
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *p.base.Load()+"/v1/shape?"+q.Encode(), nil)
		resp, err := c.Do(req)
		if err != nil {
			// The worker is restarting (or the test ends): retry shortly.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			offset = resp.Header.Get("electric-offset")
			_, upToDate := resp.Header["Electric-Up-To-Date"]
			live = live || upToDate
			p.ok.Add(1)
		case http.StatusConflict:
			p.mu.Lock()
			p.refetch = append(p.refetch, resp.Header.Get("electric-handle"))
			p.mu.Unlock()
			return
		default: // 503 while the worker has no lease
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
	p, base := startIdlePair(t, pg, "a", storage, settings)

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
		if err := p.worker.WaitOutput("shape="+handle, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(p.worker.Output(), "\n") {
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
	stopPair(t, p)
	var m struct {
		LastUsedAt time.Time `json:"last_used_at"`
	}
	b, err := os.ReadFile(filepath.Join(storage, "default", "shapes", handles["kept"], "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil || time.Since(m.LastUsedAt) > time.Minute {
		t.Fatalf("meta.json of the polled shape: last_used_at %s (%v); want a recent use", m.LastUsedAt, err)
	}
	_, base = startIdlePair(t, pg, "b", storage, settings)
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
	_, base := startIdlePair(t, pg, "a", storage, map[string]string{"BATON_SHAPE_IDLE_TIMEOUT": "0"})
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
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := name + `{stream="default"} `
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	t.Fatalf("metric %s missing from /metrics", name)
	return ""
}
