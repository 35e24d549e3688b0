package e2e_test

// Schema changes and TRUNCATE of a followed table: each case ends with the
// clients holding the new truth after a refetch (or, when the table or the
// where clause can no longer be served, with the client told so).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// shapeQuery is the request of spec with offset (and handle when given).
func shapeQuery(s shapeSpec, offset, handle string) url.Values {
	q := s.values()
	q.Set("offset", offset)
	if handle != "" {
		q.Set("handle", handle)
	}
	return q
}

// pollResult is how a live request ended.
type pollResult struct {
	code   int
	handle string
	body   string
	err    error
}

// livePoll long-polls spec's shape from (handle, offset) until the answer
// is something else than "no change" (a 200 with only up-to-date), or
// until timeout. It returns once the first request is written, so that a
// change made after it finds the request waiting.
func livePoll(t *testing.T, base string, s shapeSpec, handle, offset string, timeout time.Duration) <-chan pollResult {
	t.Helper()
	out := make(chan pollResult, 1)
	written := make(chan struct{})
	c := harness.NewShapeClient(base, s.values())
	c.Handle, c.Offset = handle, offset
	go func() {
		deadline := time.Now().Add(timeout)
		first := true
		for {
			if time.Now().After(deadline) {
				out <- pollResult{err: fmt.Errorf("no answer but 'no change' within %s", timeout)}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			if first {
				first = false
				ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(written) }})
			}
			r, err := c.Request(ctx, true)
			cancel()
			var se *harness.StatusError
			if errors.As(err, &se) {
				out <- pollResult{code: se.Status, handle: se.Handle(), body: se.Text()}
				return
			}
			if err != nil {
				out <- pollResult{err: err}
				return
			}
			if msgs, err := r.Messages(); err == nil && len(msgs) == 1 && msgs[0].IsUpToDate() {
				continue
			}
			out <- pollResult{code: r.Status, handle: r.Handle(), body: r.Text()}
			return
		}
	}()
	select {
	case <-written:
	case r := <-out:
		t.Fatalf("live request of shape %s ended before the change: %+v", s.Name, r)
	case <-time.After(10 * time.Second):
		t.Fatalf("live request of shape %s not sent within 10s", s.Name)
	}
	// The request may still be on its way when the change lands: it then
	// finds its shape already gone, and the answer asserted is the same.
	return out
}

// awaitError waits until the follower reports an error for shape name
// containing every one of subs.
func (f *multiFollower) awaitError(t *testing.T, name string, timeout time.Duration, subs ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		e, wake := f.errs[name], f.wake
		f.mu.Unlock()
		ok := e != ""
		for _, s := range subs {
			ok = ok && strings.Contains(e, s)
		}
		if ok {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("shape %s: no client error containing %q within %s (last error %q)", name, subs, timeout, e)
		}
	}
}

// schemaColumns returns the names of the columns in an electric-schema
// header.
func schemaColumns(t *testing.T, header string) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(header), &m); err != nil {
		t.Fatalf("electric-schema %q: %v", header, err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func columnNames(cols []column) []string {
	var out []string
	for _, c := range cols {
		out = append(out, c.name)
	}
	slices.Sort(out)
	return out
}

var schemaBaseColumns = []column{{"id", "int4"}, {"grp", "int4"}, {"note", "text"}, {"n", "int4"}}

// schemaCase is one change of a followed table; TBL in its statements is
// the table's name.
type schemaCase struct {
	name   string
	change []string
	// cols are the table's columns after the change; nil when the table is
	// gone (dropped or renamed).
	cols func([]column) []column
	// whereInvalid: the where clause no longer type-checks.
	whereInvalid bool
	// schemaType, when set, is a column and the type the new shape's
	// electric-schema must give it (a change the rows do not show).
	schemaType [2]string
}

func withColumn(c column) func([]column) []column {
	return func(cols []column) []column { return append(slices.Clone(cols), c) }
}

func withoutColumn(name string) func([]column) []column {
	return func(cols []column) []column {
		return slices.DeleteFunc(slices.Clone(cols), func(c column) bool { return c.name == name })
	}
}

func retyped(name, typ string) func([]column) []column {
	return func(cols []column) []column {
		out := slices.Clone(cols)
		for i := range out {
			if out[i].name == name {
				out[i].typ = typ
			}
		}
		return out
	}
}

func renamed(from, to string) func([]column) []column {
	return func(cols []column) []column {
		out := slices.Clone(cols)
		for i := range out {
			if out[i].name == from {
				out[i].name = to
			}
		}
		return out
	}
}

// A TypeScript client follows a where shape and a whole-table shape of a
// table, then the table is truncated or altered. A live request waiting on
// each shape gets 409 must-refetch (with a new handle while the table can
// still be served); the old handle gets 409 with the current one; the
// client refetches and ends equal to PostgreSQL's answer for the table as
// it is now, new columns included, and keeps following it. When the table
// is gone, or the where clause no longer type-checks, new requests get 400
// and the client reports that error; the live request waiting at the
// change still gets 409 first, because the TypeScript client clears the
// rows it holds only on must-refetch: after a bare 400 it keeps showing
// rows of a table that is gone.
func TestSchemaChanges(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	conn := displayConn(t, pg.URL())
	base := newActivePod(t, pg, "a", t.TempDir()).URL()

	same := func(cols []column) []column { return cols }
	cases := []schemaCase{
		{name: "truncate", change: []string{"TRUNCATE TBL", "INSERT INTO TBL VALUES (10, 1, 'after', 100), (11, 0, 'after', 110)"}, cols: same},
		{name: "add_column_no_writes", change: []string{"ALTER TABLE TBL ADD COLUMN extra text DEFAULT 'dflt'"}, cols: withColumn(column{"extra", "text"})},
		{name: "add_column_then_insert", change: []string{"ALTER TABLE TBL ADD COLUMN extra int DEFAULT 7", "INSERT INTO TBL VALUES (20, 1, 'new', 200, 8)"}, cols: withColumn(column{"extra", "int4"})},
		{name: "int_to_bigint", change: []string{"ALTER TABLE TBL ALTER COLUMN n TYPE bigint"}, cols: retyped("n", "int8")},
		{name: "text_to_varchar", change: []string{"ALTER TABLE TBL ALTER COLUMN note TYPE varchar(50)"}, cols: retyped("note", "varchar"), schemaType: [2]string{"note", "varchar"}},
		{name: "drop_column_not_in_where", change: []string{"ALTER TABLE TBL DROP COLUMN n"}, cols: withoutColumn("n")},
		{name: "rename_column_in_where", change: []string{"ALTER TABLE TBL RENAME COLUMN grp TO grp2"}, cols: renamed("grp", "grp2"), whereInvalid: true},
		{name: "rename_table", change: []string{"ALTER TABLE TBL RENAME TO TBL_renamed"}},
		{name: "drop_table", change: []string{"DROP TABLE TBL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runSchemaCase(t, pg, conn, base, c) })
	}
}

func runSchemaCase(t *testing.T, pg *pgtest.Cluster, conn *pgx.Conn, base string, c schemaCase) {
	table := "sc_" + c.name
	sql := func(stmts ...string) []string {
		out := make([]string, len(stmts))
		for i, s := range stmts {
			out[i] = strings.ReplaceAll(s, "TBL", table)
		}
		return out
	}
	execSQL(t, pg, sql(
		"CREATE TABLE TBL (id int PRIMARY KEY, grp int NOT NULL, note text, n int)",
		"INSERT INTO TBL SELECT g, g % 2, 'row ' || g, g * 10 FROM generate_series(1, 6) g")...)
	specs := []shapeSpec{
		{Name: "where", Table: table, Where: "grp = $1", Params: []string{"1"}},
		{Name: "whole", Table: table},
	}
	cols := map[string][]column{table: schemaBaseColumns}
	f := startMultiFollower(t, base, specs)
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "before the change")

	// The handles the client follows, and a live request waiting on each.
	handles, offsets := map[string]string{}, map[string]string{}
	polls := map[string]<-chan pollResult{}
	for _, s := range specs {
		c, _ := catchUp(t, base, s.values())
		handles[s.Name], offsets[s.Name] = c.Handle, c.Offset
		polls[s.Name] = livePoll(t, base, s, handles[s.Name], offsets[s.Name], 30*time.Second)
	}

	execSQL(t, pg, sql(c.change...)...)

	// valid are the shapes that can still be served after the change.
	var valid, invalid []shapeSpec
	servable := map[string]bool{}
	for _, s := range specs {
		if c.cols == nil || (s.Where != "" && c.whereInvalid) {
			invalid = append(invalid, s)
		} else {
			valid = append(valid, s)
			servable[s.Name] = true
		}
	}

	// Every waiting live request is told to refetch, with a new handle when
	// the shape can be made again.
	for _, s := range specs {
		var r pollResult
		select {
		case r = <-polls[s.Name]:
		case <-time.After(40 * time.Second):
			t.Fatalf("shape %s: live request still waiting 40s after the change", s.Name)
		}
		if r.err != nil || r.code != 409 || !strings.Contains(r.body, "must-refetch") {
			t.Errorf("shape %s: live request waiting during the change ended %d (handle %q) %s err=%v; want 409 must-refetch",
				s.Name, r.code, r.handle, r.body, r.err)
			continue
		}
		if servable[s.Name] && (r.handle == "" || r.handle == handles[s.Name]) {
			t.Errorf("shape %s: 409 with handle %q (old %q); want a new handle", s.Name, r.handle, handles[s.Name])
		}
	}

	if c.cols != nil {
		cols[table] = c.cols(schemaBaseColumns)
		f.awaitRows(t, valid, pgShapes(t, conn, valid, cols), 25*time.Second, "after the change")
		// The refetched shapes are live: a write moving rows across the
		// where boundary reaches the client.
		grp := c.cols([]column{{name: "grp"}})[0].name // its name after the change
		execSQL(t, pg, sql(
			fmt.Sprintf("UPDATE TBL SET %[1]s = 1 - %[1]s, note = 'moved' WHERE id IN (2, 3)", grp),
			fmt.Sprintf("INSERT INTO TBL (id, %s, note) VALUES (30, 1, 'later')", grp))...)
		f.awaitRows(t, valid, pgShapes(t, conn, valid, cols), 20*time.Second, "after a write following the change")

		for _, s := range valid {
			code, h, body := get(t, base, shapeQuery(s, "-1", ""))
			if code != 200 {
				t.Fatalf("shape %s: new request: %d %s", s.Name, code, body)
			}
			current := h.Get("electric-handle")
			if got, want := schemaColumns(t, h.Get("electric-schema")), columnNames(cols[table]); !slices.Equal(got, want) {
				t.Errorf("shape %s: electric-schema columns %v; want %v (%s)", s.Name, got, want, h.Get("electric-schema"))
			}
			if col, typ := c.schemaType[0], c.schemaType[1]; col != "" {
				var m map[string]struct {
					Type string `json:"type"`
				}
				_ = json.Unmarshal([]byte(h.Get("electric-schema")), &m)
				if m[col].Type != typ {
					t.Errorf("shape %s: electric-schema gives %s type %q; want %q (%s)", s.Name, col, m[col].Type, typ, h.Get("electric-schema"))
				}
			}
			code, h, body = get(t, base, shapeQuery(s, offsets[s.Name], handles[s.Name]))
			if code != 409 || h.Get("electric-handle") != current || current == handles[s.Name] || !strings.Contains(body, "must-refetch") {
				t.Errorf("shape %s: old handle %s at %s: %d handle %q %s; want 409 must-refetch with the current handle %q",
					s.Name, handles[s.Name], offsets[s.Name], code, h.Get("electric-handle"), body, current)
			}
		}
	}

	for _, s := range invalid {
		code, _, body := get(t, base, shapeQuery(s, "-1", ""))
		var e struct {
			Errors map[string][]string `json:"errors"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		field, want := "table", "does not exist"
		if c.cols != nil {
			field, want = "where", "grp"
		}
		if code != 400 || len(e.Errors[field]) == 0 || !strings.Contains(body, want) {
			t.Errorf("shape %s: new request after the change: %d %s; want 400 naming %s (%q)", s.Name, code, body, field, want)
		}
		f.awaitError(t, s.Name, 20*time.Second, "400", want)
	}
	if c.name == "rename_table" {
		// The table under its new name is served as it is.
		s := shapeSpec{Name: "renamed", Table: table + "_renamed"}
		if code, _, body := get(t, base, shapeQuery(s, "-1", "")); code != 200 || !strings.Contains(body, `"note":"row 1"`) {
			t.Errorf("renamed table: %d %s", code, body)
		}
	}
}

// A whole-table shape is invalidated by a column added to its table; the
// client refetches the new shape, which must then follow the table: its
// next change must not invalidate it again.
func TestSchemaChangeRefetchedShapeStaysValid(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	a := newRowClient(base, url.Values{"table": {"items"}})
	a.upToDate(t)
	execSQL(t, pg, "ALTER TABLE items ADD COLUMN extra int", "INSERT INTO items VALUES (2, 'b', 2)")
	deadline := time.Now().Add(20 * time.Second)
	for a.step(t, true) == 200 {
		if time.Now().After(deadline) {
			t.Fatal("shape not invalidated by the altered table")
		}
	}
	b := newRowClient(base, url.Values{"table": {"items"}})
	b.upToDate(t)
	if len(b.rows) != 2 {
		t.Fatalf("new shape rows %v; want 2", b.rows)
	}
	execSQL(t, pg, "INSERT INTO items VALUES (3, 'c', 3)")
	b.awaitMessages(t, 3)
}

// A where shape is invalidated by a column added to its table, and a new
// where shape on the new column is made. The fanout keeps the table's
// where.Set made for the first shape (its column ordinals from the table
// before the ALTER) and adds the new predicate to it: the new column has
// no ordinal there. The new shape must get the row that matches it.
func TestSchemaChangeWhereOnAddedColumn(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, grp int)", "INSERT INTO items VALUES (1, 1)")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	a := newRowClient(base, url.Values{"table": {"items"}, "where": {"grp = 1"}})
	a.upToDate(t)
	execSQL(t, pg, "ALTER TABLE items ADD COLUMN extra int", "INSERT INTO items VALUES (2, 1, 0)")
	deadline := time.Now().Add(20 * time.Second)
	for a.step(t, true) == 200 {
		if time.Now().After(deadline) {
			t.Fatal("shape not invalidated by the altered table")
		}
	}
	b := newRowClient(base, url.Values{"table": {"items"}, "where": {"extra = 5"}})
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
