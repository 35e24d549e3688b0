package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/pgtest"
)

// TestIdentityTakenAwayAndBack: REPLICA IDENTITY set back to DEFAULT and
// then to FULL again (by an operator, or by the next shape's creation)
// between two checks of the tables. The changes logged meanwhile carry no
// old row, and an update leaving a TOASTed column unchanged carries no
// value for it either: a shape that needs the old row (a where clause,
// replica=full) cannot tell them, and must be refetched rather than send
// a row without that column. The official client ends with the table's
// rows in every shape.
func TestIdentityTakenAwayAndBack(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE big (id int PRIMARY KEY, k int, body text)",
		// about 9.6 kB of hex per row: stored out of line, not compressed away
		`INSERT INTO big SELECT g, 0, 'Z' || (SELECT string_agg(md5(g::text || '-' || x::text), '') FROM generate_series(1, 300) x)
		 FROM generate_series(1, 3) g`)
	conn := displayConn(t, pg.URL())
	var external int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM big WHERE pg_column_size(body) > 4000").Scan(&external); err != nil || external != 3 {
		t.Fatalf("bodies stored out of line: %d (%v); want 3", external, err)
	}
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	specs := []shapeSpec{
		{Name: "all", Table: "big"},
		{Name: "k", Table: "big", Where: "k > 0"},
		{Name: "kfull", Table: "big", Where: "k > 0", Replica: "full"},
	}
	cols := map[string][]column{"big": {{"id", "int4"}, {"k", "int4"}, {"body", "text"}}}
	f := startMultiFollower(t, base, specs)
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "initial snapshot")
	execSQL(t, pg,
		"ALTER TABLE big REPLICA IDENTITY DEFAULT",
		"UPDATE big SET k = 1 WHERE id = 1", // moves into k > 0, body unchanged
		"UPDATE big SET k = 3 WHERE id = 3",
		"UPDATE big SET k = 4 WHERE id = 3", // stays in
		"ALTER TABLE big REPLICA IDENTITY FULL")
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "after updates logged without the old row")
}

// TestKeyChangeWithoutFullIdentity: a whole-table shape is kept when
// REPLICA IDENTITY is set back to DEFAULT (it needs no old row), as are
// shapes made before the identity was set on every served table. An
// update that changes the key and leaves a TOASTed column unchanged then
// carries neither that column's value nor the old row to take it from:
// told as an insert of the new key without it, the client would hold the
// row without that column. The shape is refetched instead.
func TestKeyChangeWithoutFullIdentity(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE big (id int PRIMARY KEY, k int, body text)",
		`INSERT INTO big SELECT g, 0, 'Z' || (SELECT string_agg(md5(g::text || '-' || x::text), '') FROM generate_series(1, 300) x)
		 FROM generate_series(1, 3) g`)
	conn := displayConn(t, pg.URL())
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	specs := []shapeSpec{
		{Name: "all", Table: "big"},
		{Name: "cols", Table: "big", Columns: []string{"id", "body"}},
	}
	cols := map[string][]column{"big": {{"id", "int4"}, {"k", "int4"}, {"body", "text"}}}
	f := startMultiFollower(t, base, specs)
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "initial snapshot")
	execSQL(t, pg,
		"ALTER TABLE big REPLICA IDENTITY DEFAULT",
		"UPDATE big SET id = 10 WHERE id = 1", // a new key, body unchanged
		"UPDATE big SET k = 5 WHERE id = 2")
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "after a key change without the old row")
}
