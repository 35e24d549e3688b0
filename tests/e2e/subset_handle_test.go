package e2e_test

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/pgtest"
)

// TestSubsetWhileShapeDeleted: the shape a Shape in log=changes_only mode
// follows is deleted while its log requests are held up (a slow network),
// and a row it holds from a subset changes; then it requests another
// subset. The subset request is answered 409 and the official client asks
// again at the new handle, keeping its offset of the deleted shape's log
// (it does not refetch on a subset's 409), then follows the new shape from
// there. That offset is not one of the new shape's: its next log request
// must be answered 409 must-refetch, else the client keeps the row's old
// value for good (the change committed before the new shape was made is
// in no log it reads).
func TestSubsetWhileShapeDeleted(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)",
		"INSERT INTO items SELECT i, i % 4, 0 FROM generate_series(1, 10) i")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	c := startSubsetClient(t, base, "items")
	var handle struct{ Handle string }
	c.do(t, map[string]any{"op": "snapshot", "where": "id <= 3"}, &handle)
	type state struct {
		OK     bool
		Rows   map[string]int
		Handle string
	}
	var st state
	if c.do(t, map[string]any{"op": "await", "values": map[string]int{"1": 0, "2": 0, "3": 0}}, &st); !st.OK {
		t.Fatalf("rows after the first subset: %v", st.Rows)
	}
	// The change to row 2 ends the pending long-poll; the next log request
	// waits in the client.
	var hold struct{ Live bool }
	if c.do(t, map[string]any{"op": "hold"}, &hold); !hold.Live {
		t.Fatal("the client sent no live log request within 10s of the first subset")
	}
	execSQL(t, pg, "UPDATE items SET v = 1 WHERE id = 2")
	if c.do(t, map[string]any{"op": "await", "values": map[string]int{"1": 0, "2": 1, "3": 0}}, &st); !st.OK {
		t.Fatalf("rows after the update of row 2: %v", st.Rows)
	}
	if code := deleteShape(t, base, url.Values{"table": {"items"}, "handle": {handle.Handle}, "log": {"changes_only"}}); code != 202 {
		t.Fatalf("DELETE of the shape: %d; want 202", code)
	}
	execSQL(t, pg, "UPDATE items SET v = 100 WHERE id = 1")
	// The worker has stored it (its slot confirmed past it) before the new
	// shape is made: the update is then below the new shape's first
	// offset (a worker behind the database is the window left, see
	// shapes.ErrOtherLog).
	awaitSlotPast(t, pg)
	c.do(t, map[string]any{"op": "snapshot", "where": "id = $1", "params": map[string]string{"1": "7"}}, &handle)
	c.do(t, map[string]any{"op": "release"}, &struct{}{})
	// Whatever the client holds in the end, it holds as the table has it:
	// after the must-refetch the Shape loads its subsets again.
	want := map[string]int{"1": 100, "2": 1, "3": 0, "7": 0}
	c.do(t, map[string]any{"op": "await", "values": want, "ms": 10000}, &st)
	pgRows := map[string]int{}
	for _, id := range queryInts(t, pg, "SELECT id FROM items") {
		pgRows[strconv.Itoa(id)] = queryInts(t, pg, "SELECT v FROM items WHERE id = "+strconv.Itoa(id))[0]
	}
	for id, v := range st.Rows {
		if pgRows[id] != v {
			t.Errorf("the client holds row %s with v = %d; the table has %d (a change lost across the shape's deletion)", id, v, pgRows[id])
		}
	}
	t.Logf("client rows at the end: %v (handle %s)", st.Rows, st.Handle)
}

// awaitSlotPast waits until the stream's slot is confirmed up to the
// database's current WAL position.
func awaitSlotPast(t *testing.T, pg *pgtest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var target string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	for {
		var past bool
		if err := conn.QueryRow(ctx, "SELECT coalesce(bool_and(confirmed_flush_lsn >= $1::pg_lsn), false) FROM pg_replication_slots WHERE slot_type = 'logical'", target).Scan(&past); err != nil {
			t.Fatal(err)
		}
		if past {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the slot was not confirmed up to %s", target)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
