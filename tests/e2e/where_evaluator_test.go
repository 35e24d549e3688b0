package e2e_test

import (
	"net/url"
	"testing"

	"github.com/batonhq/baton/tests/pgtest"
)

// The connection on which PostgreSQL evaluates where clauses is ended
// (pg_terminate_backend, an idle_session_timeout, a pooler closing idle
// server connections): the next change must still reach the where shape's
// client, the evaluator dialling again (the router once stopped on the
// error, and every shape answered 503 while the worker stayed active).
func TestWhereEvaluatorReconnects(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'apple')")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	c := newRowClient(base, url.Values{"table": {"items"}, "where": {"note LIKE 'a%' OR length(note) > 100"}})
	c.upToDate(t)
	execSQL(t, pg, "INSERT INTO items VALUES (2, 'avocado')")
	c.awaitMessages(t, 2)

	conn := connect(t, pg)
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name LIKE 'baton-worker-where:%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d evaluator connections terminated; want 1 (is the clause evaluated by PostgreSQL?)", n)
	}
	execSQL(t, pg, "INSERT INTO items VALUES (3, 'apricot')")
	c.awaitMessages(t, 3)
}
