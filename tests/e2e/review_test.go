package e2e_test

// Review findings about shape definitions: each test fails while its bug
// is there.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/pgtest"
)

// reviewClient reads one shape the way a client does and applies its
// messages to a map of rows by key.
type reviewClient struct {
	base           string
	q              url.Values
	handle, offset string
	rows           map[string]map[string]any
	msgs           []logMessage
}

func newReviewClient(base string, q url.Values) *reviewClient {
	return &reviewClient{base: base, q: q, offset: "-1", rows: map[string]map[string]any{}}
}

// step makes one request (live once up to date) and applies the answer;
// it returns the status.
func (c *reviewClient) step(t *testing.T, live bool) int {
	t.Helper()
	q := url.Values{}
	for k, v := range c.q {
		q[k] = v
	}
	q.Set("offset", c.offset)
	if c.handle != "" {
		q.Set("handle", c.handle)
	}
	if live {
		q.Set("live", "true")
	}
	code, h, body := get(t, c.base, q)
	if code != 200 {
		return code
	}
	c.handle, c.offset = h.Get("electric-handle"), h.Get("electric-offset")
	var msgs []logMessage
	if err := json.Unmarshal([]byte(body), &msgs); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	for _, m := range msgs {
		op, _ := m.Headers["operation"].(string)
		switch op {
		case "insert":
			c.rows[m.Key] = m.Value
		case "update":
			r := c.rows[m.Key]
			if r == nil {
				r = map[string]any{}
				c.rows[m.Key] = r
			}
			for k, v := range m.Value {
				r[k] = v
			}
		case "delete":
			delete(c.rows, m.Key)
		default:
			continue
		}
		c.msgs = append(c.msgs, m)
	}
	return code
}

// upToDate reads until the response is up to date.
func (c *reviewClient) upToDate(t *testing.T) {
	t.Helper()
	for range 50 {
		if code := c.step(t, false); code != 200 {
			t.Fatalf("%v: %d", c.q, code)
		}
		if c.offset != "-1" && c.handle != "" {
			// one more non-live request answers up to date with no records
			// when there is nothing more; good enough to stop.
			q := url.Values{}
			for k, v := range c.q {
				q[k] = v
			}
			q.Set("offset", c.offset)
			q.Set("handle", c.handle)
			code, h, _ := get(t, c.base, q)
			if code == 200 && len(h.Values("electric-up-to-date")) > 0 && h.Get("electric-offset") == c.offset {
				return
			}
		}
	}
	t.Fatalf("%v: not up to date", c.q)
}

// awaitMessages follows live until n change messages arrived in all.
func (c *reviewClient) awaitMessages(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(c.msgs) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v: %d messages after 20s, want %d", c.q, len(c.msgs), n)
		}
		if code := c.step(t, true); code != 200 {
			t.Fatalf("%v: live request answered %d after %d messages", c.q, code, len(c.msgs))
		}
	}
}

// A table without a primary key keys rows by every column; a generated
// column is not in the shape (logical replication does not carry it).
// The snapshot and the log must key a row the same way, so that a delete
// removes the row the client holds. Today the snapshot puts the first
// column's value at the generated column's place in the key and the log
// puts _ there: the delete names a key the client does not hold.
func TestReviewNoPKGeneratedColumnKey(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE g (a int, note text, b int GENERATED ALWAYS AS (a * 2) STORED)",
		"INSERT INTO g (a, note) VALUES (1, 'one')")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	c := newReviewClient(base, url.Values{"table": {"g"}})
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
func TestReviewNoPKToastUpdate(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE nt (body text, n int)",
		"ALTER TABLE nt ALTER COLUMN body SET STORAGE EXTERNAL",
		"INSERT INTO nt SELECT string_agg(md5(g::text), ''), 1 FROM generate_series(1, 200) g")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	c := newReviewClient(base, url.Values{"table": {"nt"}})
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

// DELETE /v1/shape with a where clause (Electric takes the shape's whole
// definition) removes that shape, not the table's whole-table shape.
func TestReviewDeleteWhereShape(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a'), (2, 'b')")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	whole := newReviewClient(base, url.Values{"table": {"items"}})
	whole.upToDate(t)
	filtered := newReviewClient(base, url.Values{"table": {"items"}, "where": {"id = 1"}})
	filtered.upToDate(t)

	q := url.Values{"table": {"items"}, "where": {"id = 1"}}
	req, _ := http.NewRequest("DELETE", base+"/v1/shape?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Errorf("DELETE of the where shape: %d; want 202", resp.StatusCode)
	}
	check := func(c *reviewClient, want int) int {
		q := url.Values{}
		for k, v := range c.q {
			q[k] = v
		}
		q.Set("offset", c.offset)
		q.Set("handle", c.handle)
		code, _, body := get(t, base, q)
		if code != want {
			t.Errorf("%v after DELETE of the where shape: %d %s; want %d", c.q, code, strings.TrimSpace(body), want)
		}
		return code
	}
	check(whole, 200)
	check(filtered, 409)
}

// A whole-table shape is invalidated by a column added to its table; the
// client refetches the new shape, which must then follow the table: its
// next change must not invalidate it again.
func TestReviewShapeAfterAlterStaysValid(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	a := newReviewClient(base, url.Values{"table": {"items"}})
	a.upToDate(t)
	execSQL(t, pg, "ALTER TABLE items ADD COLUMN extra int", "INSERT INTO items VALUES (2, 'b', 2)")
	deadline := time.Now().Add(20 * time.Second)
	for a.step(t, true) == 200 {
		if time.Now().After(deadline) {
			t.Fatal("shape not invalidated by the altered table")
		}
	}
	b := newReviewClient(base, url.Values{"table": {"items"}})
	b.upToDate(t)
	if len(b.rows) != 2 {
		t.Fatalf("new shape rows %v; want 2", b.rows)
	}
	execSQL(t, pg, "INSERT INTO items VALUES (3, 'c', 3)")
	b.awaitMessages(t, 3)
}

// The connection on which PostgreSQL evaluates where clauses is ended
// (pg_terminate_backend, an idle_session_timeout, a pooler closing idle
// server connections): the next change must still reach the where shape's
// client, the evaluator dialling again. Today the router stops on the
// error and every shape answers 503 while the worker stays active.
func TestReviewEvaluatorConnectionLost(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'apple')")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	c := newReviewClient(base, url.Values{"table": {"items"}, "where": {"note LIKE 'a%' OR length(note) > 100"}})
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

// A where shape is invalidated by a column added to its table, and a new
// where shape on the new column is made. The fanout keeps the table's
// where.Set made for the first shape (its column ordinals from the table
// before the ALTER) and adds the new predicate to it: the new column has
// no ordinal there. The new shape must get the row that matches it.
func TestReviewWhereShapeOnAddedColumn(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, grp int)", "INSERT INTO items VALUES (1, 1)")
	_, base := startShapePair(t, pg, "a", t.TempDir())
	a := newReviewClient(base, url.Values{"table": {"items"}, "where": {"grp = 1"}})
	a.upToDate(t)
	execSQL(t, pg, "ALTER TABLE items ADD COLUMN extra int", "INSERT INTO items VALUES (2, 1, 0)")
	deadline := time.Now().Add(20 * time.Second)
	for a.step(t, true) == 200 {
		if time.Now().After(deadline) {
			t.Fatal("shape not invalidated by the altered table")
		}
	}
	b := newReviewClient(base, url.Values{"table": {"items"}, "where": {"extra = 5"}})
	b.upToDate(t)
	if len(b.rows) != 0 {
		t.Fatalf("new shape rows %v; want none", b.rows)
	}
	execSQL(t, pg, "INSERT INTO items VALUES (3, 0, 5)", "INSERT INTO items VALUES (4, 0, 6)")
	b.awaitMessages(t, 1)
	if len(b.rows) != 1 || b.rows[`"public"."items"/"3"`] == nil {
		t.Fatalf("shape extra = 5 holds %v; want row 3 only", b.rows)
	}
}
