package e2e_test

// Slot loss while the worker is stopped, with where shapes followed by the
// TypeScript client: the worker recreates the slot, drops every shape, says
// so once in its log and once in a metric, and the client refetches and
// ends equal to PostgreSQL.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// logLines returns the lines of out containing every one of subs.
func logLines(out string, subs ...string) []string {
	var found []string
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			found = append(found, l)
		}
	}
	return found
}

// invalidateSlot writes WAL past max_slot_wal_keep_size (into a table no
// shape uses) until PostgreSQL marks the stream's slot lost.
func invalidateSlot(t *testing.T, pg *pgtest.Cluster) {
	t.Helper()
	conn := connect(t, pg)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (id int PRIMARY KEY, pad text)"); err != nil {
		t.Fatal(err)
	}
	if err := harness.AwaitEvery(60*time.Second, 100*time.Millisecond, "the slot invalidated", func() (bool, error) {
		// About 2 MB of WAL per round, a segment switch and a checkpoint.
		for _, q := range []string{"INSERT INTO filler SELECT g, repeat('x', 500) FROM generate_series(1, 3000) g",
			"DELETE FROM filler", "SELECT pg_switch_wal()", "CHECKPOINT"} {
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
}

// A TypeScript client follows where shapes and a whole-table shape. The
// worker is stopped; while it is down the slot is lost (invalidated by
// PostgreSQL, or dropped by hand) and rows change, some crossing the where
// boundaries. The worker started again on the same storage recreates the
// slot, drops every shape (old handles get 409 with a new handle), logs the
// loss once and counts one recreation; the client ends equal to PostgreSQL.
func TestSlotLossWithWhereShapes(t *testing.T) {
	cases := []struct {
		name     string
		settings map[string]string
		lose     func(t *testing.T, pg *pgtest.Cluster)
		logged   string // the word an extra log line names the loss with
	}{
		{"invalidated", map[string]string{"max_slot_wal_keep_size": "1MB"}, invalidateSlot, "invalidated"},
		{"dropped", nil, func(t *testing.T, pg *pgtest.Cluster) {
			execSQL(t, pg, "SELECT pg_drop_replication_slot('baton_slot_default')")
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needClient(t)
			pg := pgtest.Start(t, pgtest.Options{Settings: c.settings})
			execSQL(t, pg,
				"CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, note text)",
				"INSERT INTO items SELECT g, g % 3, 'row ' || g FROM generate_series(1, 20) g")
			conn := displayConn(t, pg.URL())
			cols := map[string][]column{"items": {{"id", "int4"}, {"grp", "int4"}, {"note", "text"}}}
			specs := []shapeSpec{
				{Name: "grp1", Table: "items", Where: "grp = $1", Params: []string{"1"}},
				{Name: "low", Table: "items", Where: "id <= $1 AND note LIKE 'row%'", Params: []string{"15"}},
				{Name: "whole", Table: "items"},
			}
			port, err := harness.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			addr := "127.0.0.1:" + strconv.Itoa(port)
			base := "http://" + addr
			storage := t.TempDir()
			// Both pods serve at addr, so that the client keeps its URL
			// across the restart.
			a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: storage, HTTPAddr: addr})
			if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			f := startMultiFollower(t, base, specs)
			f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "before the worker stops")
			handles, offsets := map[string]string{}, map[string]string{}
			for _, s := range specs {
				c, _ := catchUp(t, base, s.values())
				handles[s.Name], offsets[s.Name] = c.Handle, c.Offset
			}
			terminate(t, a)

			execSQL(t, pg,
				"UPDATE items SET grp = 1 WHERE id IN (2, 3)", // into grp1
				"UPDATE items SET grp = 0 WHERE id = 1",       // out of grp1
				"DELETE FROM items WHERE id = 4")
			c.lose(t, pg)
			execSQL(t, pg,
				"INSERT INTO items VALUES (50, 1, 'row 50'), (51, 2, 'while down')",
				"UPDATE items SET id = 60 WHERE id = 7",             // out of low
				"UPDATE items SET note = 'renoted' WHERE id = 5",    // out of low
				"UPDATE items SET id = 8000, grp = 1 WHERE id = 10", // out of low, into grp1
			)

			b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: storage, HTTPAddr: addr})
			if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 60*time.Second, "after the slot was lost")

			for _, s := range specs {
				code, h, body := get(t, base, shapeQuery(s, "-1", ""))
				if code != 200 {
					t.Fatalf("shape %s: new request: %d %s", s.Name, code, body)
				}
				current := h.Get("electric-handle")
				code, h, body = get(t, base, shapeQuery(s, offsets[s.Name], handles[s.Name]))
				if code != 409 || current == handles[s.Name] || h.Get("electric-handle") != current || !strings.Contains(body, "must-refetch") {
					t.Errorf("shape %s: old handle %s at %s: %d handle %q %s; want 409 must-refetch with a new handle (current %q)",
						s.Name, handles[s.Name], offsets[s.Name], code, h.Get("electric-handle"), body, current)
				}
			}
			// The client is still live on the new shapes.
			execSQL(t, pg, "UPDATE items SET grp = 1 WHERE id = 12", "INSERT INTO items VALUES (13000, 1, 'row after')")
			f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 20*time.Second, "after a write on the recreated slot")

			metrics := scrape(t, b.URL())
			if !strings.Contains(metrics, `baton_worker_slot_recreations_total{stream="default"} 1`+"\n") {
				t.Errorf("worker metrics: want baton_worker_slot_recreations_total{stream=\"default\"} 1, got:\n%s",
					strings.Join(logLines(metrics, "slot_recreations"), "\n"))
			}
			// One line says the shapes were dropped for a new slot; an
			// invalidated slot is also named as such, once.
			out := b.Worker().Output()
			if lines := logLines(out, `msg="replication slot created anew`); len(lines) != 1 {
				t.Errorf("worker log: %d lines %q; want exactly one 'replication slot created anew'", len(lines), lines)
			}
			if c.logged != "" {
				if lines := logLines(out, `msg="replication slot `+c.logged); len(lines) != 1 {
					t.Errorf("worker log: %d lines %q; want exactly one 'replication slot %s'", len(lines), lines, c.logged)
				}
			}
			var published bool
			if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
				WHERE pubname = 'baton_pub_default' AND tablename = 'items')`).Scan(&published); err != nil || !published {
				t.Errorf("items in publication baton_pub_default: %v (err %v)", published, err)
			}
		})
	}
}
