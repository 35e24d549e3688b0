package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// TestShapeSnapshotEnd: the initial snapshot comes in table order (no
// ORDER BY) and ends with Electric's snapshot-end control message, with
// the snapshot's xmin, xmax and xip_list as strings; the offset=-1
// response holds the snapshot only, also once the shape has changes after
// it (issue 10, items 2 and 5). The official client sees snapshot-end
// before its first up-to-date.
func TestShapeSnapshotEnd(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	// Inserted in this order, the rows are in this order in the heap.
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)",
		"INSERT INTO items VALUES (3, 'three')", "INSERT INTO items VALUES (1, 'one')", "INSERT INTO items VALUES (2, E'two\\t\\n\\\\ \\r\\x01')")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()

	first := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
	if first.Status != 200 {
		t.Fatalf("offset -1: %d %s", first.Status, first.Text())
	}
	msgs := messages(t, first.Text())
	var keys []string
	for _, m := range msgs {
		if m.Key != "" {
			keys = append(keys, m.Key)
		}
	}
	if want := []string{`"public"."items"/"3"`, `"public"."items"/"1"`, `"public"."items"/"2"`}; !slices.Equal(keys, want) {
		t.Errorf("snapshot rows in the order %v; want table order %v", keys, want)
	}
	// COPY's escapes undone: the value as PostgreSQL holds it.
	if v := msgs[2].Value["note"]; v != "two\t\n\\ \r\x01" {
		t.Errorf("row 2's note in the snapshot: %q", v)
	}
	if len(msgs) != 4 {
		t.Fatalf("offset -1 body %s; want the 3 rows and snapshot-end", first.Text())
	}
	end := msgs[3].Headers
	if end["control"] != "snapshot-end" {
		t.Fatalf("last message of the snapshot: %v; want snapshot-end", end)
	}
	for _, f := range []string{"xmin", "xmax"} {
		if v, ok := end[f].(string); !ok || v == "" || strings.Trim(v, "0123456789") != "" {
			t.Errorf("snapshot-end %s = %#v; want a decimal string", f, end[f])
		}
	}
	if xip, ok := end["xip_list"].([]any); !ok {
		t.Errorf("snapshot-end xip_list = %#v; want a list of strings", end["xip_list"])
	} else {
		for _, x := range xip {
			if _, ok := x.(string); !ok {
				t.Errorf("snapshot-end xip_list holds %#v; want strings", x)
			}
		}
	}
	if protoUpToDateHeader(first.Header) {
		t.Errorf("offset -1 response is up to date; Electric's is not")
	}

	// A change after the snapshot: the shape's log has it, and offset -1
	// still answers the snapshot only.
	handle := first.Header.Get("electric-handle")
	execSQL(t, pg, "INSERT INTO items VALUES (4, 'four')")
	c := harness.NewShapeClient(base, url.Values{"table": {"items"}})
	c.Handle, c.Offset = handle, first.Header.Get("electric-offset")
	deadline := time.Now().Add(30 * time.Second)
	for seen := ""; !strings.Contains(seen, `"four"`); seen += request(t, c, true).Text() {
		if time.Now().After(deadline) {
			t.Fatalf("the insert of 4 did not reach the shape within 30s: %s", seen)
		}
	}
	again := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
	if again.Header.Get("electric-handle") != handle || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("offset -1 after a change: handle %s, body %s; want %s and the snapshot only, as before: %s",
			again.Header.Get("electric-handle"), again.Text(), handle, first.Text())
	}

	tr := startTrace(t, base, "items")
	tr.await(t, 30*time.Second, "up-to-date", func(ev []traceEvent) bool {
		return slices.Contains(ev, traceEvent{Control: "up-to-date"})
	})
	ev := tr.snapshot()
	i := slices.Index(ev, traceEvent{Control: "snapshot-end"})
	if i < 0 || i > slices.Index(ev, traceEvent{Control: "up-to-date"}) || i != 3 {
		t.Fatalf("the client saw %+v; want the 3 rows, snapshot-end, then the change and up-to-date", ev)
	}
}

// snapshotRows is the size of the table the mid-snapshot tests take a
// snapshot of: its COPY lasts long enough for holdSnapshot to stop it
// after its first rows.
const snapshotRows = 40000

// startSnapshotTable starts PostgreSQL with items holding snapshotRows
// rows of about 200 bytes.
func startSnapshotTable(t *testing.T) *pgtest.Cluster {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)",
		fmt.Sprintf("INSERT INTO items SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, %d) g", snapshotRows))
	return pg
}

// smallChunks are worker settings that cut a snapshot into 16 KiB chunks:
// a few hundred rows make the first.
var smallChunks = map[string]string{"BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "16384"}

// changeAfterCut commits changes while the worker is down: updates of
// rows of the snapshot and inserts after them; it returns the last id.
func changeAfterCut(t *testing.T, pg *pgtest.Cluster) int {
	t.Helper()
	execSQL(t, pg, "UPDATE items SET note = 'changed ' || id WHERE id % 997 = 0",
		fmt.Sprintf("INSERT INTO items SELECT g, 'new ' || g FROM generate_series(%d, %d) g", snapshotRows+1, snapshotRows+50))
	return snapshotRows + 50
}

// holdSnapshot stops (SIGSTOP) the PostgreSQL backend of the snapshot's
// COPY once it has sent a few hundred rows (pg_stat_progress_copy), so
// that the worker gets enough of them for a first chunk (they are in the
// socket's buffers) while the snapshot cannot end: its rows, and the
// commit before its end, wait for that backend. The returned func lets
// the backend go on, once the worker that ran it is gone (it then finds
// its connection closed).
func holdSnapshot(t *testing.T, pg *pgtest.Cluster) (resume func()) {
	t.Helper()
	conn := connect(t, pg)
	var pid int
	err := harness.AwaitEvery(30*time.Second, time.Millisecond, "the snapshot's COPY past its first rows", func() (bool, error) {
		err := conn.QueryRow(context.Background(), `SELECT p.pid FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid)
			WHERE a.query LIKE 'COPY (SELECT %' AND p.tuples_processed >= 500`).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP the COPY's backend %d: %v", pid, err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// checkCutSnapshot checks what the client saw of a snapshot cut short: it
// was told to refetch, and never up to date before that (it never took the
// part it had for the whole); log is the log of the worker that took over,
// which must have dropped the partial shape.
func checkCutSnapshot(t *testing.T, c *clientTrace, refetches int, log string) {
	t.Helper()
	if !strings.Contains(log, "snapshot was cut short") {
		t.Fatalf("the worker that took over did not drop a partial snapshot; was the snapshot still being written? log:\n%s", harness.Tail(log, 20))
	}
	ev := c.snapshot()
	r := slices.Index(ev, traceEvent{Control: "must-refetch"})
	if refetches == 0 || r < 0 {
		t.Fatalf("the client was not told to refetch after the snapshot it followed was cut short")
	}
	if u := slices.Index(ev[:r], traceEvent{Control: "up-to-date"}); u >= 0 {
		t.Fatalf("the client was up to date (event %d) in a snapshot that was cut short (refetch at event %d)", u, r)
	}
	if n, _ := insertsSeen(ev[:r]); n == 0 || n >= snapshotRows {
		t.Fatalf("the client had %d rows of the cut snapshot; want part of it", n)
	}
}

// TestShapeSnapshotCrash: the worker is killed (SIGKILL) while the
// official client follows a snapshot it is still writing; started again on
// its storage, it drops the partial shape, and the client, told to
// refetch, ends with the table's rows, changes made meanwhile included.
func TestShapeSnapshotCrash(t *testing.T) {
	t.Parallel()
	pg := startSnapshotTable(t)
	pod := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), WorkerSettings: smallChunks})
	if err := pod.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	c := startTrace(t, pod.URL(), "items")
	resume := holdSnapshot(t, pg)
	c.await(t, 60*time.Second, "a first chunk", func(ev []traceEvent) bool { return len(ev) > 0 })
	pod.Worker().Kill()
	resume()
	last := changeAfterCut(t, pg)
	if err := pod.StartWorker(); err != nil {
		t.Fatal(err)
	}
	if err := pod.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	refetches := checkClientEndsWithTable(t, pg, c, last)
	checkCutSnapshot(t, c, refetches, pod.Worker().Output())
}

// TestShapeSnapshotHandoff: a rolling handoff (the active pod stopped as
// the kubelet stops it, worker first) while the official client follows a
// snapshot being written; the standby, on the same storage, drops the
// partial shape, and the client, through the Service, ends with the
// table's rows.
func TestShapeSnapshotHandoff(t *testing.T) {
	t.Parallel()
	pg := startSnapshotTable(t)
	svc := startServiceProxy(t)
	storage := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: storage, WorkerSettings: smallChunks})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: storage, WorkerSettings: smallChunks})
	if err := b.Worker().AwaitStatus("waiting", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	svc.moveTo(t, a.URL())
	c := startTrace(t, svc.URL(), "items")
	resume := holdSnapshot(t, pg)
	c.await(t, 60*time.Second, "a first chunk", func(ev []traceEvent) bool { return len(ev) > 0 })
	svc.moveTo(t, b.URL())
	if err := a.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	resume()
	if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	last := changeAfterCut(t, pg)
	refetches := checkClientEndsWithTable(t, pg, c, last)
	checkCutSnapshot(t, c, refetches, b.Worker().Output())
}

// TestSnapshotValuesAreText: every value of a snapshot is the column's
// ::text, whether PostgreSQL writes it with the cast (types with a cast
// function to text: boolean, bpchar, inet, cidr, "char", name; xml, whose
// binary cast keeps the declaration its output function drops; domains)
// or without it (the rest, which COPY writes with their output
// function), through COPY (no params) and through a query (params).
func TestSnapshotValuesAreText(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	cols := []string{"b", "bp", "ip", "net", "ch", "nm", "yes", "word", "f4", "f8", "n", "ts", "iv", "by", "jb", "bs", "tx", "m", "mo", "pt", "tv", "x", "vc"}
	execSQL(t, pg,
		"CREATE TYPE mood AS ENUM ('sad', 'ok')",
		"CREATE DOMAIN yes AS bool",
		"CREATE DOMAIN word AS text CHECK (VALUE <> 'x')",
		`CREATE TABLE vals (id int PRIMARY KEY, b bool, bp char(5), ip inet, net cidr, ch "char", nm name, yes yes, word word,
			f4 float4, f8 float8, n numeric, ts timestamptz, iv interval, by bytea, jb jsonb, bs bool[], tx text[], m mood,
			mo money, pt point, tv tsvector, x xml, vc varchar(8))`,
		`INSERT INTO vals VALUES
			(1, true, 'ab', '10.1.2.3', '10.1.0.0/16', 'q', 'nm', false, 'w', 1.5, 0.1, 1e-20, '2024-01-01 12:00:00+02', '1 day 02:03:04',
			 '\x00ff', '{"a": [1, "x\ty"]}', '{t,f,NULL}', '{"a b","c\"d",NULL,"e\\f"}', 'ok', 12.5, '(1,2)', 'a fat:2 cat', '<?xml version="1.0"?><a>1</a>', 'v  '),
			(2, false, 'abcde', '::1', '::/0', '\', 'x y', true, E'tab\there\nnew\\line', 'NaN', '-Infinity', 'NaN', 'infinity', '-1 mons',
			 '\x', 'null', '{}', '{}', 'sad', -0.01, '(-1.5,1e+30)', '', '<b/>', ''),
			(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	sel := "id::text"
	for _, c := range cols {
		sel += ", " + c + "::text"
	}
	want := map[string]map[string]any{}
	conn := connect(t, pg)
	rows, err := conn.Query(t.Context(), "SELECT "+sel+" FROM vals")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		vals := make([]*string, len(cols)+1)
		dst := make([]any, len(vals))
		for i := range vals {
			dst[i] = &vals[i]
		}
		if err := rows.Scan(dst...); err != nil {
			t.Fatal(err)
		}
		row := map[string]any{"id": *vals[0]}
		for i, c := range cols {
			if v := vals[i+1]; v != nil {
				row[c] = *v
			} else {
				row[c] = nil
			}
		}
		want[*vals[0]] = row
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want["1"]["b"] != "true" || want["2"]["bp"] != "abcde" || want["1"]["bp"] != "ab" || want["1"]["ip"] != "10.1.2.3/32" ||
		want["1"]["x"] != `<?xml version="1.0"?><a>1</a>` {
		t.Fatalf("::text of the first rows: %v; want PostgreSQL's casts (true, unpadded, with the mask, with the declaration)", want)
	}
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	for _, q := range []url.Values{
		{"table": {"vals"}, "offset": {"-1"}},
		{"table": {"vals"}, "offset": {"-1"}, "where": {"id > $1"}, "params[1]": {"0"}},
	} {
		r := protoGet(t, base, q, nil)
		if r.Status != 200 {
			t.Fatalf("%v: %d %s", q, r.Status, r.Text())
		}
		got := map[string]map[string]any{}
		for _, m := range messages(t, r.Text()) {
			if m.Value != nil {
				got[fmt.Sprint(m.Value["id"])] = m.Value
			}
		}
		for id, w := range want {
			for c, v := range w {
				if g, ok := got[id][c]; !ok || g != v {
					t.Errorf("%v: row %s column %s = %#v; want %#v (its ::text)", q.Get("where"), id, c, got[id][c], v)
				}
			}
		}
		if len(got) != len(want) {
			t.Errorf("%v: %d rows; want %d", q.Get("where"), len(got), len(want))
		}
	}
}
