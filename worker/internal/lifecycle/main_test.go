package lifecycle_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/lifecycle"
)

// The tests run lifecycle.Run in-process against a real PostgreSQL
// (pgtest, one cluster for the package, a stream of its own per test) and
// a real broker process, built once.
var (
	cluster   *pgtest.Cluster
	brokerBin string
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "baton-lifecycle-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		bins, err := harness.Build(ctx, dir, "github.com/batonhq/baton/broker/cmd/broker")
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		brokerBin = bins["broker"]
		c, err := pgtest.New(context.Background(), pgtest.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
			return 1
		}
		cluster = c
		code := m.Run()
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
			return 1
		}
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// brokerSettings are short but valid timeouts: a lost lock ends the lease
// within a second.
var brokerSettings = map[string]string{
	"BATON_LOCK_SESSION_TIMEOUT":   "3s",
	"BATON_HEARTBEAT_INTERVAL":     "500ms",
	"BATON_LEASE_TTL":              "2s",
	"BATON_WORKER_ABSENCE_TIMEOUT": "30s",
	"BATON_DRAIN_TIMEOUT":          "10s",
}

// env is a stream of the test's own: its broker, and a session of the
// test's on the cluster.
type env struct {
	t      *testing.T
	stream string
	broker *harness.Broker
	db     *pgx.Conn
}

func newEnv(t *testing.T) *env {
	t.Helper()
	stream := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, strings.TrimPrefix(t.Name(), "Test"))
	stream = stream[:min(len(stream), 40)]
	b, err := harness.StartBroker(harness.BrokerOptions{Bin: brokerBin, DatabaseURL: cluster.URL(), StreamID: stream, Settings: brokerSettings})
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("--- log of the broker ---\n%s", b.Output())
		}
	})
	db := connect(t)
	return &env{t: t, stream: stream, broker: b, db: db}
}

// connect opens a session of the test's, closed at cleanup.
func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cluster.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// exec runs sql on c.
func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count is the first column of the first row of sql, an integer.
func count(t *testing.T, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// table creates the test's table (id, name) with rows ids 1..n named
// "row <id>", and returns its name.
func (e *env) table(n int) string {
	e.t.Helper()
	name := "items_" + e.stream
	exec(e.t, e.db, fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, name text NOT NULL)", name))
	exec(e.t, e.db, fmt.Sprintf("INSERT INTO %s SELECT i, 'row ' || i FROM generate_series(1, $1) i", name), n)
	return name
}

// loseLock ends the broker's lock session, as a failover or a network
// cut does: the broker revokes the lease (lock lost), takes the lock again
// and grants a new epoch.
func (e *env) loseLock() {
	e.t.Helper()
	n := count(e.t, e.db, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1`,
		"baton-broker:"+e.stream+":%")
	if n != 1 {
		e.t.Fatalf("terminated %d lock sessions of the broker, want 1", n)
	}
}

// epoch is the stream's epoch as the broker recorded it.
func (e *env) epoch() uint64 {
	e.t.Helper()
	return uint64(count(e.t, e.db, "SELECT epoch FROM baton.streams WHERE stream_id = $1", e.stream))
}

// await fails the test unless cond holds within timeout.
func await(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := harness.Await(timeout, what, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatal(err)
	}
}

// worker is lifecycle.Run running in the test.
type worker struct {
	t      *testing.T
	url    string
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startWorker runs the worker of the stream with its HTTP API on a free
// port, connecting to PostgreSQL at dbURL; it is stopped at cleanup.
func (e *env) startWorker(dbURL string) *worker {
	t := e.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DatabaseURL = dbURL
	cfg.StreamID = e.stream
	cfg.BrokerAddr = e.broker.Addr
	cfg.StorageDir = t.TempDir()
	cfg.HTTPListen = ln.Addr().String()
	cfg.AdvertiseURL = "http://" + ln.Addr().String()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{t: t, url: cfg.AdvertiseURL, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = lifecycle.Run(ctx, lifecycle.Options{Config: cfg, Listener: ln, ID: "worker@" + e.stream, Version: "test",
			Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(time.Minute):
			t.Error("the worker did not stop within a minute")
		}
		if t.Failed() {
			t.Logf("--- log of the worker ---\n%s", logs)
		}
	})
	return w
}

// stop stops the worker (as SIGTERM does) and waits for Run to return; it
// fails the test unless Run returns nil within timeout.
func (w *worker) stop(timeout time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.t.Fatalf("Run did not return within %s of the stop", timeout)
	}
	if w.err != nil {
		w.t.Fatalf("Run: %v", w.err)
	}
	return time.Since(start)
}

// health is the worker's /v1/health status.
func (w *worker) health() string {
	var body struct{ Status string }
	if err := w.getJSON("/v1/health", &body); err != nil {
		return err.Error()
	}
	return body.Status
}

func (w *worker) awaitHealth(status string, timeout time.Duration) {
	w.t.Helper()
	var last string
	if err := harness.Await(timeout, "worker "+status, func() (bool, error) {
		last = w.health()
		return last == status, nil
	}); err != nil {
		w.t.Fatalf("%v (last: %s)", err, last)
	}
}

func (w *worker) getJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := harness.Fetch(ctx, http.MethodGet, w.url+path, nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(r.Body, v)
}

// metric is the value of the unlabelled sample name on /metrics (-1 when
// it cannot be read).
func (w *worker) metric(name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := harness.Fetch(ctx, http.MethodGet, w.url+"/metrics", nil)
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// shape asks for a shape of table from its start: its status and rows.
func (w *worker) shape(ctx context.Context, q url.Values) (*harness.Response, error) {
	q.Set("offset", "-1")
	return harness.Get(ctx, w.url, q, nil)
}

// awaitLog waits until the worker logged a line containing each of parts
// and returns when (the first such line seen).
func (w *worker) awaitLog(timeout time.Duration, parts ...string) time.Time {
	w.t.Helper()
	var at time.Time
	await(w.t, timeout, fmt.Sprintf("the worker to log %q", parts), func() bool {
		at = w.logs.find(parts...)
		return !at.IsZero()
	})
	return at
}

// logBuffer holds a worker's log (text handler) and when each line came.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, strings.TrimSuffix(string(p), "\n"))
	b.at = append(b.at, time.Now())
	return len(p), nil
}

// find is when the first line containing every part was written (zero:
// none yet).
func (b *logBuffer) find(parts ...string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for i, l := range b.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return b.at[i]
	}
	return time.Time{}
}

// count is how many lines contain every part.
func (b *logBuffer) count(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
next:
	for _, l := range b.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		n++
	}
	return n
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// viaProxy is the cluster's URL with p's address.
func viaProxy(t *testing.T, p *pgProxy) string {
	t.Helper()
	u, err := url.Parse(cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return u.String()
}
