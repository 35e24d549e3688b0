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
