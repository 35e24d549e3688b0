package e2e_test

// Rows of a table without a primary key are keyed by every column: the
// snapshot and the log must key a row the same way, and an update must not
// change the key of a row it leaves as it was.

import (
	"net/url"
	"testing"

	"github.com/batonhq/baton/tests/pgtest"
)

// A table without a primary key keys rows by every column; a generated
// column is not in the shape (logical replication does not carry it).
// The snapshot and the log must key a row the same way, so that a delete
// removes the row the client holds (the snapshot once put the first
// column's value at the generated column's place in the key and the log
// put _ there: the delete named a key the client did not hold).
func TestNoPKGeneratedColumnKey(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE g (a int, note text, b int GENERATED ALWAYS AS (a * 2) STORED)",
		"INSERT INTO g (a, note) VALUES (1, 'one')")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	c := newRowClient(base, url.Values{"table": {"g"}})
	c.upToDate(t)
	if len(c.rows) != 1 {
		t.Fatalf("snapshot rows %v; want 1", c.rows)
	}
	execSQL(t, pg, "DELETE FROM g WHERE a = 1")
	c.awaitMessages(t, 2)
	if len(c.rows) != 0 {
		t.Fatalf("after DELETE the client holds %v; messages %+v", c.rows, c.msgs)
	}
}

// A table without a primary key, with a TOASTed text column: updating the
// other column leaves the text unchanged (not sent by pgoutput). The client
// must end with one row, equal to the table's.
func TestNoPKToastUpdate(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE nt (body text, n int)",
		"ALTER TABLE nt ALTER COLUMN body SET STORAGE EXTERNAL",
		"INSERT INTO nt SELECT string_agg(md5(g::text), ''), 1 FROM generate_series(1, 200) g")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	c := newRowClient(base, url.Values{"table": {"nt"}})
	c.upToDate(t)
	execSQL(t, pg, "UPDATE nt SET n = 2", "UPDATE nt SET n = 3")
	c.awaitMessages(t, 1+4)
	if len(c.rows) != 1 {
		keys := make([]string, 0, len(c.rows))
		for k := range c.rows {
			if len(k) > 60 {
				k = k[:30] + "…" + k[len(k)-30:]
			}
			keys = append(keys, k)
		}
		t.Fatalf("the client holds %d rows, keys %v; want 1", len(c.rows), keys)
	}
	for _, r := range c.rows {
		if r["n"] != "3" || len(r["body"].(string)) != 6400 {
			t.Fatalf("row n=%v body of %d chars; want n=3, 6400 chars", r["n"], len(r["body"].(string)))
		}
	}
}
