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
