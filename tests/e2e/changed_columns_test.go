package e2e_test

// Updates as Electric tells them (issue 10, item 3), seen through the
// official client: replica=default carries the primary key and the changed
// columns, replica=full the whole row and the old values of the changed
// columns; a row moving into a where shape is an insert of the whole row,
// one moving out a delete. Electric sets REPLICA IDENTITY FULL on every
// table it serves, so that it has the old row to diff against; so does
// Baton, when a shape is created.

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/pgtest"
)

// messages returns the change messages the follower kept for a shape
// (shapeSpec.Messages).
func (f *multiFollower) messages(name string) []clientMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]clientMessage(nil), f.msgs[name]...)
}

// identityOf is pg_class.relreplident of a table: d(efault), f(ull).
func identityOf(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var r string
	if err := conn.QueryRow(context.Background(), "SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass", table).Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// msgText is a change message as one line: operation, key, value and
// old_value as JSON (keys sorted).
func msgText(m clientMessage) string {
	v, _ := json.Marshal(m.Value)
	s := m.Operation + " " + m.Key + " " + string(v)
	if len(m.OldValue) > 0 {
		o, _ := json.Marshal(m.OldValue)
		s += " old " + string(o)
	}
	return s
}

// TestChangedColumnUpdates: a whole-table shape on a table with the
// default replica identity gets updates with the key and the changed
// columns only (the worker sets REPLICA IDENTITY FULL when it creates the
// shape); replica=full gets whole rows and old_value; a where shape gets a
// row moving in as an insert of the whole row and one moving out as a
// delete of its key. An update that changes nothing is not sent. The
// client's rows end equal to PostgreSQL's.
func TestChangedColumnUpdates(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		// w has only a whole-table replica=default shape: nothing else
		// needs its old rows.
		"CREATE TABLE w (id int PRIMARY KEY, a int, b text, c text)",
		"INSERT INTO w VALUES (1, 1, 'x', 'keep'), (2, 2, 'y', 'keep2')",
		"CREATE TABLE r (id int PRIMARY KEY, a int, b text, c text)",
		"INSERT INTO r VALUES (1, 1, 'x', 'keep'), (2, -1, 'y', 'keep2')")
	conn := displayConn(t, pg.URL())
	for _, table := range []string{"w", "r"} {
		if got := identityOf(t, conn, table); got != "d" {
			t.Fatalf("replica identity of %s before any shape: %q; want d", table, got)
		}
	}
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	specs := []shapeSpec{
		{Name: "whole", Table: "w", Messages: true},
		{Name: "full", Table: "r", Replica: "full", Messages: true},
		{Name: "where", Table: "r", Where: "a > 0", Messages: true},
	}
	cols := map[string][]column{
		"w": {{"id", "int4"}, {"a", "int4"}, {"b", "text"}, {"c", "text"}},
		"r": {{"id", "int4"}, {"a", "int4"}, {"b", "text"}, {"c", "text"}},
	}
	f := startMultiFollower(t, base, specs)
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "initial snapshot")
	for _, table := range []string{"w", "r"} {
		if got := identityOf(t, conn, table); got != "f" {
			t.Errorf("replica identity of %s once served: %q; want f (FULL, as Electric sets it)", table, got)
		}
	}
	before := map[string]int{}
	for _, s := range specs {
		before[s.Name] = len(f.messages(s.Name))
	}

	execSQL(t, pg,
		"UPDATE w SET b = 'x2' WHERE id = 1",
		"UPDATE w SET b = b WHERE id = 2", // changes nothing: not sent
		"UPDATE w SET a = 20, c = 'c2' WHERE id = 2",
		"UPDATE r SET b = 'x2' WHERE id = 1", // in the where shape, one column
		"UPDATE r SET a = 5 WHERE id = 2",    // moves into a > 0
		"UPDATE r SET a = -5 WHERE id = 1",   // moves out
		"INSERT INTO w VALUES (99, 0, 'sentinel', 's')",
		"INSERT INTO r VALUES (99, 99, 'sentinel', 's')")
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "after the updates")

	k := func(table, id string) string { return rowKey(table, id) }
	want := map[string][]string{
		"whole": {
			`update ` + k("w", "1") + ` {"b":"x2","id":1}`,
			`update ` + k("w", "2") + ` {"a":20,"c":"c2","id":2}`,
			`insert ` + k("w", "99") + ` {"a":0,"b":"sentinel","c":"s","id":99}`,
		},
		"full": {
			`update ` + k("r", "1") + ` {"a":1,"b":"x2","c":"keep","id":1} old {"b":"x"}`,
			`update ` + k("r", "2") + ` {"a":5,"b":"y","c":"keep2","id":2} old {"a":-1}`,
			`update ` + k("r", "1") + ` {"a":-5,"b":"x2","c":"keep","id":1} old {"a":1}`,
			`insert ` + k("r", "99") + ` {"a":99,"b":"sentinel","c":"s","id":99}`,
		},
		"where": {
			`update ` + k("r", "1") + ` {"b":"x2","id":1}`,
			`insert ` + k("r", "2") + ` {"a":5,"b":"y","c":"keep2","id":2}`,
			`delete ` + k("r", "1") + ` {"id":1}`,
			`insert ` + k("r", "99") + ` {"a":99,"b":"sentinel","c":"s","id":99}`,
		},
	}
	for _, s := range specs {
		var got []string
		for _, m := range f.messages(s.Name)[before[s.Name]:] {
			got = append(got, msgText(m))
		}
		if strings.Join(got, "\n") != strings.Join(want[s.Name], "\n") {
			t.Errorf("shape %s: the client got\n  %s\nwant\n  %s", s.Name, strings.Join(got, "\n  "), strings.Join(want[s.Name], "\n  "))
		}
	}
}

// TestReplicaIdentityLocked: a table the worker cannot set REPLICA
// IDENTITY FULL on within its lock_timeout (a transaction holds a lock on
// it) is a 400 that names the statement to run, and the table's users are
// not queued behind the worker for longer than that; once the lock is
// gone the shape is served.
func TestReplicaIdentityLocked(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE busy (id int PRIMARY KEY, v text)", "INSERT INTO busy VALUES (1, 'a')")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	locker := connect(t, pg)
	ctx := context.Background()
	if _, err := locker.Exec(ctx, "BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"table": {"busy"}, "offset": {"-1"}}
	code, _, body := get(t, base, q)
	if code != 400 || !strings.Contains(body, "locked") || !strings.Contains(body, "REPLICA IDENTITY FULL") {
		t.Errorf("shape of a locked table: %d %s; want 400 saying it is locked and naming ALTER TABLE ... REPLICA IDENTITY FULL", code, body)
	}
	if _, err := locker.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if code, _, body := get(t, base, q); code != 200 {
		t.Errorf("shape once the lock is gone: %d %s; want 200", code, body)
	}
}
