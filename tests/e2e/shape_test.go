package e2e_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// tsDir holds the TypeScript test client (tests/ts).
var tsDir, _ = filepath.Abs("../ts")

var npmOnce sync.Once
var npmErr error

// needClient installs the TypeScript client from the committed
// package-lock.json (npm ci) once, when node_modules is missing.
func needClient(t *testing.T) {
	t.Helper()
	npmOnce.Do(func() {
		if _, err := exec.LookPath("node"); err != nil {
			npmErr = fmt.Errorf("node is required for the shape API tests (Node.js 20 or newer): %w", err)
			return
		}
		if _, err := os.Stat(filepath.Join(tsDir, "node_modules", "@electric-sql", "client")); err == nil {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			npmErr = fmt.Errorf("npm is required to install the TypeScript test client (cd tests/ts && npm ci): %w", err)
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = tsDir
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = fmt.Errorf("npm ci in %s: %v\n%s", tsDir, err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
}

// shapeRows is one line of follow.mjs.
type shapeRows struct {
	Rows []map[string]any `json:"rows"`
}

// clientOnce fetches the rows of table with the TypeScript client, once.
func clientOnce(t *testing.T, base, table string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "follow.mjs", base, table, "once")
	cmd.Dir = tsDir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node follow.mjs %s once: %v\n%s", table, err, stderr.String())
	}
	var r shapeRows
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	return r.Rows
}

// follower is a running follow.mjs.
type follower struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	last   []map[string]any
	lines  int
	stderr strings.Builder
	wake   chan struct{}
}

func startFollower(t *testing.T, base, table string) *follower {
	t.Helper()
	f := &follower{wake: make(chan struct{})}
	var out io.Reader
	f.cmd, out = startNode(t, &f.mu, &f.stderr, nil, "follow.mjs", base, table, "follow")
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var r shapeRows
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				continue
			}
			f.mu.Lock()
			f.last, f.lines = r.Rows, f.lines+1
			close(f.wake)
			f.wake = make(chan struct{})
			f.mu.Unlock()
		}
	}()
	return f
}

// startNode starts `node script args...` in tests/ts with stdin, its
// stderr written to stderr under mu, and returns it with its stdout. It is
// killed when the test ends; a failed test logs the tail of its stderr.
func startNode(t *testing.T, mu *sync.Mutex, stderr *strings.Builder, stdin io.Reader, script string, args ...string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Dir = tsDir
	cmd.Stdin = stdin
	cmd.Stderr = &syncWriter{w: stderr, mu: mu}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			mu.Lock()
			s := stderr.String()
			mu.Unlock()
			if len(s) > 4000 {
				s = "...\n" + s[len(s)-4000:]
			}
			t.Logf("--- %s stderr (tail) ---\n%s", script, s)
		}
	})
	return cmd, out
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// await waits until the follower's rows equal want.
func (f *follower) await(t *testing.T, want []map[string]any, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		last, n, wake := f.last, f.lines, f.wake
		f.mu.Unlock()
		if n > 0 && reflect.DeepEqual(last, want) {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("follower rows after %s (%d updates):\n%s\nwant:\n%s", timeout, n, dumpRows(last), dumpRows(want))
		}
	}
}

func dumpRows(rows []map[string]any) string {
	var b strings.Builder
	for _, r := range rows {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func execSQL(t *testing.T, pg *pgtest.Cluster, stmts ...string) {
	t.Helper()
	conn := connect(t, pg)
	for _, q := range stmts {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

const typesTable = `CREATE TABLE t (
	id int8 PRIMARY KEY,
	i2 int2, i4 int4, n numeric(20,6), f float8, b bool,
	tx text, vc varchar(40), u uuid, d date, ts timestamptz, iv interval,
	j json, jb jsonb, by bytea, arr int4[], tags text[], m mood)`

// The TypeScript client follows a table with many column types through a
// mixed workload; its rows end equal to a snapshot of the same rows (a
// copy of the table, fetched fresh by the same client) and to a fresh
// fetch of the followed shape itself.
func TestShapeClientFollowsTypes(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
		typesTable,
		`INSERT INTO t VALUES
		 (1, 1, 10, 1.5, 0.1, true, 'one', 'v1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-01-01 12:00:00+02', '1 day 02:03:04',
		  '{"a": [1, 2]}', '{"b": {"c": null}}', '\x00ff10', '{1,2,3}', '{"x y","q\"uote",NULL}', 'happy'),
		 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		 (9007199254740993, -32768, 2147483647, -12345678901234.123456, 'NaN', false, 'slash/and"quote', '', '00000000-0000-0000-0000-000000000000',
		  '0001-01-01', 'infinity', '-1 mons', '[]', '[1, "two", 3.5]', '\x', '{{1,2},{3,4}}', '{}', 'sad')`)
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	f := startFollower(t, base, "t")
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.mu.Lock()
		n := f.lines
		f.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("follower printed nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	execSQL(t, pg,
		`INSERT INTO t (id, i4, tx, ts, iv, jb, arr, m) VALUES (3, 3, 'three', now(), '3 hours', '{"k": 3}', '{7}', 'ok')`,
		`UPDATE t SET tx = 'uno', f = 1e300 WHERE id = 1`,
		`UPDATE t SET i2 = 2, n = 0.000001, b = false, u = gen_random_uuid(), d = '1999-12-31', by = '\xdeadbeef' WHERE id = 2`,
		`BEGIN; INSERT INTO t (id, tx) SELECT g, 'bulk ' || g FROM generate_series(100, 160) g; DELETE FROM t WHERE id BETWEEN 150 AND 155; COMMIT`,
		`UPDATE t SET id = 4000 WHERE id = 3`,
		`UPDATE t SET tx = NULL, arr = NULL WHERE id = 1`,
		`DELETE FROM t WHERE id = 2`,
		`INSERT INTO t (id, tx) VALUES (2, 'two again')`,
		`UPDATE t SET vc = 'v' || id WHERE id BETWEEN 100 AND 120`,
		`CREATE TABLE t_copy (LIKE t INCLUDING ALL)`,
		`INSERT INTO t_copy SELECT * FROM t`,
	)
	want := clientOnce(t, base, "t_copy")
	if len(want) != 4+61-6 {
		t.Fatalf("t_copy has %d rows; want %d", len(want), 4+61-6)
	}
	f.await(t, want, 30*time.Second)
	if fresh := clientOnce(t, base, "t"); !reflect.DeepEqual(fresh, want) {
		t.Fatalf("fresh fetch of t:\n%s\nwant:\n%s", dumpRows(fresh), dumpRows(want))
	}
	// Spot checks of the text format.
	for _, r := range want {
		if r["id"] == "9007199254740993" {
			if r["n"] != "-12345678901234.123456" || r["ts"] != "infinity" || r["iv"] != "-1 mons" || r["by"] != `\x` {
				t.Fatalf("row 9007199254740993 = %v", r)
			}
		}
		if r["id"] == "1" && (r["ts"] != "2024-01-01 10:00:00+00" || r["f"] != 1e300) {
			t.Fatalf("row 1 = %v", r)
		}
	}
}

// shapeDirs returns the names (handles) of the shape folders in the
// default stream's storage: those inside the shape set's owner folders
// (shapes/o.<epoch>.<open>.<nonce>/<handle>), and any directly in shapes/
// (the layout before the set), sorted.
func shapeDirs(t *testing.T, storage string) []string {
	t.Helper()
	root := filepath.Join(storage, "default", "shapes")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "o.") {
			out = append(out, e.Name())
			continue
		}
		inner, err := os.ReadDir(filepath.Join(root, e.Name()))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, f := range inner {
			if f.IsDir() {
				out = append(out, f.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

// shapeMeta returns the stored metadata (JSON) of the shape handle in the
// default stream's storage: the "meta" line of the STATE of its log's
// newest owner (see worker/internal/storage/doc.go).
func shapeMeta(t *testing.T, storage, handle string) []byte {
	t.Helper()
	root := filepath.Join(storage, "default", "shapes")
	dirs, err := filepath.Glob(filepath.Join(root, "o.*", handle))
	if err != nil {
		t.Fatal(err)
	}
	dirs = append(dirs, filepath.Join(root, handle))
	var best []byte
	var bestEpoch, bestOpen uint64
	for _, d := range dirs {
		states, _ := filepath.Glob(filepath.Join(d, "o.*", "STATE"))
		for _, st := range states {
			var epoch, open uint64
			if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(st)), "o.%d.%d.", &epoch, &open); err != nil {
				continue
			}
			if best != nil && (epoch < bestEpoch || epoch == bestEpoch && open < bestOpen) {
				continue
			}
			b, err := os.ReadFile(st)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if enc, ok := strings.CutPrefix(line, "meta "); ok {
					if best, err = base64.StdEncoding.DecodeString(enc); err != nil {
						t.Fatalf("%s: %v", st, err)
					}
					bestEpoch, bestOpen = epoch, open
				}
			}
		}
	}
	if best == nil {
		t.Fatalf("no stored metadata for shape %s", handle)
	}
	return best
}

// Bad requests each get 400 naming the field, and stored shapes stay as
// they were; a stale handle gets 409 with the current one; a worker
// without the lease that knows no active worker holds a request for
// httpapi.DefaultMaxHold, then answers 503 with Retry-After.
func TestShapeBadRequests(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text)",
		"CREATE TABLE nopk (a int)",
		"INSERT INTO items VALUES (1, 'a'), (2, 'b')")
	storage := t.TempDir()
	base := newActivePod(t, pg, "a", storage).URL()

	code, h, body := get(t, base, url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 200 || h.Get("electric-handle") == "" || h.Get("electric-offset") == "" || h.Get("electric-schema") == "" {
		t.Fatalf("initial GET: %d %v %s", code, h, body)
	}
	handle, offset := h.Get("electric-handle"), h.Get("electric-offset")
	if !strings.Contains(body, `"key":"\"public\".\"items\"/\"1\""`) {
		t.Fatalf("initial body: %s", body)
	}
	before := shapeDirs(t, storage)

	cases := []struct {
		name  string
		q     url.Values
		field string
	}{
		{"missing table", url.Values{"offset": {"-1"}}, "table"},
		{"unknown table", url.Values{"table": {"nope"}, "offset": {"-1"}}, "table"},
		{"bad table name", url.Values{"table": {`"unterminated`}, "offset": {"-1"}}, "table"},
		{"missing offset", url.Values{"table": {"items"}}, "offset"},
		{"bad offset", url.Values{"table": {"items"}, "offset": {"abc"}, "handle": {handle}}, "offset"},
		{"offset without handle", url.Values{"table": {"items"}, "offset": {offset}}, "handle"},
		{"live with offset -1", url.Values{"table": {"items"}, "offset": {"-1"}, "live": {"true"}}, "live"},
		{"bad live", url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}, "live": {"maybe"}}, "live"},
		{"where that does not parse", url.Values{"table": {"items"}, "offset": {"-1"}, "where": {"id >"}}, "where"},
		{"offset out of bounds", url.Values{"table": {"items"}, "offset": {"99999999999_0"}, "handle": {handle}}, "offset"},
	}
	for _, c := range cases {
		code, h, body := get(t, base, c.q)
		var e struct {
			Message string              `json:"message"`
			Errors  map[string][]string `json:"errors"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != 400 || e.Message == "" || len(e.Errors[c.field]) == 0 {
			t.Errorf("%s: %d %s; want 400 naming %q", c.name, code, body, c.field)
		}
		if h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: cache-control %q", c.name, h.Get("Cache-Control"))
		}
	}
	if after := shapeDirs(t, storage); !reflect.DeepEqual(after, before) {
		t.Fatalf("stored shapes changed: %v -> %v", before, after)
	}
	// The stored shape still serves its client.
	code, h, body = get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
	if code != 200 || h.Get("electric-handle") != handle || len(h.Values("electric-up-to-date")) == 0 || !strings.Contains(body, `"control":"up-to-date"`) {
		t.Fatalf("GET after bad requests: %d %v %s", code, h, body)
	}
	// A stale handle: 409 must-refetch with the current handle.
	code, h, body = get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {"stale-1"}})
	if code != 409 || h.Get("electric-handle") != handle || !strings.Contains(body, "must-refetch") {
		t.Fatalf("stale handle: %d %v %s", code, h, body)
	}
	// ETag revalidation.
	first := getWith(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
	if r := getWith(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, map[string]string{"If-None-Match": first.Header.Get("ETag")}); r.Status != 304 {
		t.Fatalf("If-None-Match: %d; want 304", r.Status)
	}
	// DELETE removes the shape; its handle is never served again.
	if code := deleteShape(t, base, url.Values{"table": {"items"}}); code != 202 {
		t.Fatalf("DELETE: %d", code)
	}
	code, h, _ = get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
	if code != 409 || h.Get("electric-handle") == "" || h.Get("electric-handle") == handle {
		t.Fatalf("after DELETE: %d handle %q (old %q)", code, h.Get("electric-handle"), handle)
	}

	// A standby worker (no lease, and no URL of the active worker: it
	// advertises none) holds the request, then answers 503 with
	// Retry-After.
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir()})
	if err := b.Worker().AwaitStatus("waiting", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, h, body = get(t, b.URL(), url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "knows no active worker") {
		t.Fatalf("standby: %d %v %s; want 503 with Retry-After saying it knows no active worker", code, h, body)
	}
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("standby answered 503 after %s; want the request held (10 s) first", took)
	}
	_ = harness.Await
}

// A shape created while a writer commits continuously holds every row
// exactly once: no change is missed or doubled between the snapshot and
// the log.
func TestShapeSnapshotConsistency(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	w := startWriter(t, pg)
	time.Sleep(300 * time.Millisecond) // let the writer commit some rows first

	seen := map[int]int{}
	c := harness.NewShapeClient(base, url.Values{"table": {"items"}})
	fetch := func() bool {
		r := request(t, c, false)
		for _, m := range messages(t, r.Text()) {
			if m.Headers["operation"] == "insert" {
				var id int
				fmt.Sscan(fmt.Sprint(m.Value["id"]), &id)
				seen[id]++
			}
		}
		return r.UpToDate()
	}
	fetch() // creates the shape while rows are being written
	time.Sleep(500 * time.Millisecond)
	last := w.finish()
	if err := harness.Await(20*time.Second, fmt.Sprintf("row %d in the shape", last), func() (bool, error) {
		fetch()
		return seen[last] > 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	for !fetch() {
	}
	ids := make([]int, 0, len(seen))
	for id, n := range seen {
		for range n {
			ids = append(ids, id)
		}
	}
	checkExactlyOnce(t, ids, last)
	t.Logf("%d rows written around the shape's creation", last)
}

// terminate stops a pod gracefully: SIGTERM to its broker and worker at
// once; both must exit 0.
func terminate(t *testing.T, p *harness.Pod) {
	t.Helper()
	if err := p.Terminate(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// A worker restarted on the same storage resumes its shapes (same handle,
// clients continue from their offsets, changes made while it was down
// arrive once); when the slot had to be created anew, every shape is
// dropped and its clients get 409.
func TestShapeResume(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	storage := t.TempDir()
	a := newActivePod(t, pg, "a", storage)
	base := a.URL()
	code, h, _ := get(t, base, url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	handle, offset := h.Get("electric-handle"), h.Get("electric-offset")
	terminate(t, a)
	execSQL(t, pg, "INSERT INTO items VALUES (2, 'b')", "UPDATE items SET note = 'A' WHERE id = 1")

	b := newActivePod(t, pg, "b", storage)
	base = b.URL()
	var body string
	if err := harness.Await(10*time.Second, "changes made while the worker was down", func() (bool, error) {
		code, h, body = get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
		if code != 200 || h.Get("electric-handle") != handle {
			return false, fmt.Errorf("resumed GET: %d %v %s", code, h, body)
		}
		return strings.Contains(body, `"operation":"update"`), nil
	}); err != nil {
		t.Fatal(err)
	}
	if msgs, err := harness.Messages([]byte(body)); err != nil || len(msgs) != 3 {
		t.Fatalf("resumed body (want insert, update, up-to-date): %s", body)
	}
	terminate(t, b)

	execSQL(t, pg, "SELECT pg_drop_replication_slot('baton_slot_default')")
	base = newActivePod(t, pg, "c", storage).URL()
	code, h, body = get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
	if code != 409 || h.Get("electric-handle") == "" || h.Get("electric-handle") == handle {
		t.Fatalf("after the slot was recreated: %d handle %q (old %q) %s", code, h.Get("electric-handle"), handle, body)
	}
}

// Pods with separate storage alternate: A serves a shape, B takes the stream
// over and advances the slot past changes A never saw, then A comes back on
// its old storage. A cannot prove its log is continuous with the slot, so
// the old handle gets 409 must-refetch instead of a log with a gap (I2); a
// refetch holds every row.
func TestShapeGapAfterOtherStorageRefetches(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	dirA, dirB := t.TempDir(), t.TempDir()
	a := newActivePod(t, pg, "a", dirA)
	base := a.URL()
	code, h, _ := get(t, base, url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	handle, offset := h.Get("electric-handle"), h.Get("electric-offset")
	terminate(t, a)

	b := newActivePod(t, pg, "b", dirB)
	baseB := b.URL()
	// B serves the table too, so the change below is consumed (and
	// acknowledged) by B.
	if code, _, body := get(t, baseB, url.Values{"table": {"items"}, "offset": {"-1"}}); code != 200 {
		t.Fatalf("GET on b: %d %s", code, body)
	}
	// The target is a position inside the insert's transaction: the slot
	// passes it only once B acknowledged the transaction (WAL written
	// after it, such as the brokers' heartbeats, does not count).
	conn := connect(t, pg)
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var target string
	if _, err := tx.Exec(context.Background(), "INSERT INTO items VALUES (2, 'only b saw this')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	// B has the change before it stops (under load it may still be on its
	// way when SIGTERM arrives; the stop acknowledges only what B has).
	if err := harness.Await(30*time.Second, "b serves the insert", func() (bool, error) {
		rows := clientOnce(t, baseB, "items")
		return len(rows) == 2, nil
	}); err != nil {
		t.Fatal(err)
	}
	terminate(t, b) // a graceful stop acknowledges everything durable
	var behind bool
	if err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn < $1::pg_lsn
		FROM pg_replication_slots WHERE slot_name = 'baton_slot_default'`, target).Scan(&behind); err != nil || behind {
		t.Fatalf("slot not advanced past the insert by b (behind=%v, err=%v)", behind, err)
	}

	base = newActivePod(t, pg, "a2", dirA).URL()
	code, h, body := get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
	if code != 409 || h.Get("electric-handle") == handle {
		t.Fatalf("old handle on storage with a gap: %d handle %q (old %q) %s; want 409 with a new handle", code, h.Get("electric-handle"), handle, body)
	}
	rows := clientOnce(t, base, "items")
	if len(rows) != 2 {
		t.Fatalf("refetched rows %s; want both rows", dumpRows(rows))
	}
}

// The publication holds exactly the tables of the shapes still in use:
// after shapes are added and removed, and across a restart that finds a
// table missing from it or left over.
func TestShapePublicationReconciled(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)", "CREATE TABLE c (id int PRIMARY KEY)")
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
	storage := t.TempDir()
	p := newActivePod(t, pg, "a", storage)
	base := p.URL()
	handles := map[string]string{}
	for _, table := range []string{"a", "b"} {
		code, h, body := get(t, base, url.Values{"table": {table}, "offset": {"-1"}})
		if code != 200 {
			t.Fatalf("GET %s: %d %s", table, code, body)
		}
		handles[table] = h.Get("electric-handle")
	}
	if got := published(); got != "a,b" {
		t.Fatalf("published %q after two shapes; want a,b", got)
	}
	if code := deleteShape(t, base, url.Values{"table": {"a"}, "handle": {handles["a"]}}); code != 202 {
		t.Fatalf("DELETE: %d", code)
	}
	if got := published(); got != "b" {
		t.Fatalf("published %q after deleting shape a; want b", got)
	}
	terminate(t, p)
	// While no worker runs, someone changes the publication by hand: b's
	// changes from then on are never sent, so shape b cannot be kept (its
	// clients refetch), and c, which no shape uses, leaves again.
	execSQL(t, pg, `ALTER PUBLICATION "baton_pub_default" DROP TABLE b`, `ALTER PUBLICATION "baton_pub_default" ADD TABLE c`)
	execSQL(t, pg, "INSERT INTO b VALUES (1)")
	base = newActivePod(t, pg, "a2", storage).URL()
	if err := harness.Await(10*time.Second, "the publication reconciled at start-up", func() (bool, error) {
		return published() == "", nil
	}); err != nil {
		t.Fatalf("%v (published %q)", err, published())
	}
	if code, _, body := get(t, base, url.Values{"table": {"b"}, "offset": {"0_0"}, "handle": {handles["b"]}}); code != 409 {
		t.Fatalf("shape b with its old handle after its table left the publication: %d %s; want 409", code, body)
	}
	code, h, body := get(t, base, url.Values{"table": {"b"}, "offset": {"-1"}})
	if code != 200 || h.Get("electric-handle") == handles["b"] || !strings.Contains(string(body), `"id":"1"`) {
		t.Fatalf("shape b refetched: %d handle %q (old %q) %s; want a new handle with row 1", code, h.Get("electric-handle"), handles["b"], body)
	}
	if got := published(); got != "b" {
		t.Fatalf("published %q after shape b was made again; want b", got)
	}
}

// Slot invalidation made real: with a small max_slot_wal_keep_size, WAL is
// switched past it while the worker is stopped, so PostgreSQL invalidates
// the slot. The worker recreates the slot, drops its shapes (the old handle
// gets 409 must-refetch), says so in the log and a metric, and a refetch
// holds the whole table.
func TestShapeSlotInvalidated(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_slot_wal_keep_size": "1MB"}})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	storage := t.TempDir()
	a := newActivePod(t, pg, "a", storage)
	base := a.URL()
	code, h, _ := get(t, base, url.Values{"table": {"items"}, "offset": {"-1"}})
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	handle, offset := h.Get("electric-handle"), h.Get("electric-offset")
	terminate(t, a)

	conn := connect(t, pg)
	ctx := context.Background()
	next := 100
	if err := harness.AwaitEvery(30*time.Second, 100*time.Millisecond, "the slot invalidated", func() (bool, error) {
		// About 2 MB of WAL per round, then a segment switch and a
		// checkpoint, which invalidates a slot lagging past 1 MB.
		// (rows deleted again, so the table stays small).
		if _, err := conn.Exec(ctx, "INSERT INTO items SELECT g, repeat('x', 500) FROM generate_series($1::int, $1::int + 2999) g", next); err != nil {
			return false, err
		}
		next += 3000
		for _, q := range []string{"DELETE FROM items WHERE id >= 100", "SELECT pg_switch_wal()", "CHECKPOINT"} {
			if _, err := conn.Exec(ctx, q); err != nil {
				return false, err
			}
		}
		var status *string
		if err := conn.QueryRow(ctx, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'baton_slot_default'").Scan(&status); err != nil {
			return false, err
		}
		return status != nil && *status == "lost", nil
	}); err != nil {
		t.Fatal(err)
	}
	b := newActivePod(t, pg, "b", storage)
	base = b.URL()
	code, h, body := get(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}})
	if code != 409 || h.Get("electric-handle") == handle {
		t.Fatalf("old handle after the slot was invalidated: %d %q %s; want 409 with a new handle", code, h.Get("electric-handle"), body)
	}
	mustContain(t, b.Worker().Output(), "replication slot invalidated", "worker log")
	mustContain(t, scrape(t, b.URL()), `baton_worker_slot_recreations_total{stream="default"} 1`, "worker metrics")
	var want int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if rows := clientOnce(t, base, "items"); len(rows) != want {
		t.Fatalf("refetched %d rows, table has %d", len(rows), want)
	}
}
