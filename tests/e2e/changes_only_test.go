package e2e_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/pgtest"
)

// TestShapeChangesOnly: log=changes_only is its own shape (another handle
// than the full one), starts with no rows, and then carries the changes to
// the where clause's rows, as Electric documents.
func TestShapeChangesOnly(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 5) g")
	_, base := startShapePair(t, pg, "a", t.TempDir())

	q := url.Values{"table": {"items"}, "where": {"n > $1"}, "params[1]": {"2"}, "log": {"changes_only"}}
	first := protoGet(t, base, withOffset(q, "-1", ""), nil)
	if first.code != 200 {
		t.Fatalf("changes_only GET: %d %s", first.code, first.body)
	}
	if strings.Contains(first.body, `"operation"`) {
		t.Fatalf("changes_only snapshot has rows: %s", first.body)
	}
	full := protoGet(t, base, withOffset(url.Values{"table": {"items"}, "where": {"n > $1"}, "params[1]": {"2"}}, "-1", ""), nil)
	if full.code != 200 || !strings.Contains(full.body, `"row 3"`) {
		t.Fatalf("full GET: %d %s", full.code, full.body)
	}
	if full.h.Get("electric-handle") == first.h.Get("electric-handle") {
		t.Fatalf("log=changes_only and log=full share handle %q", full.h.Get("electric-handle"))
	}

	handle, off := first.h.Get("electric-handle"), first.h.Get("electric-offset")
	execSQL(t, pg, "UPDATE items SET note = 'moved in' WHERE id = 1", "UPDATE items SET n = 10 WHERE id = 1",
		"INSERT INTO items VALUES (6, 'six', 6)", "INSERT INTO items VALUES (7, 'seven', 0)")
	var bodies strings.Builder
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(bodies.String(), `"six"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the insert of 6 did not reach the changes_only shape within 30s: %s", bodies.String())
		}
		lq := withOffset(q, off, handle)
		lq.Set("live", "true")
		r := protoGet(t, base, lq, nil)
		if r.code != 200 {
			t.Fatalf("live GET: %d %s", r.code, r.body)
		}
		bodies.WriteString(r.body)
		off = r.h.Get("electric-offset")
	}
	got := bodies.String()
	if !strings.Contains(got, `"moved in"`) || strings.Contains(got, `"seven"`) || strings.Contains(got, `"row 3"`) {
		t.Fatalf("changes_only changes: %s; want id 1 moving in and 6, not 7 nor the initial rows", got)
	}
}

// withOffset is q with offset (and handle when not empty).
func withOffset(q url.Values, offset, handle string) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	out.Set("offset", offset)
	if handle != "" {
		out.Set("handle", handle)
	}
	return out
}
