package e2e_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
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
	base := newActivePod(t, pg, "a", t.TempDir()).URL()

	q := url.Values{"table": {"items"}, "where": {"n > $1"}, "params[1]": {"2"}, "log": {"changes_only"}}
	c := harness.NewShapeClient(base, q)
	first := request(t, c, false)
	if strings.Contains(first.Text(), `"operation"`) {
		t.Fatalf("changes_only snapshot has rows: %s", first.Body)
	}
	full := protoGet(t, base, url.Values{"table": {"items"}, "where": {"n > $1"}, "params[1]": {"2"}, "offset": {"-1"}}, nil)
	if full.Status != 200 || !strings.Contains(full.Text(), `"row 3"`) {
		t.Fatalf("full GET: %d %s", full.Status, full.Text())
	}
	if full.Header.Get("electric-handle") == first.Handle() {
		t.Fatalf("log=changes_only and log=full share handle %q", full.Header.Get("electric-handle"))
	}

	execSQL(t, pg, "UPDATE items SET note = 'moved in' WHERE id = 1", "UPDATE items SET n = 10 WHERE id = 1",
		"INSERT INTO items VALUES (6, 'six', 6)", "INSERT INTO items VALUES (7, 'seven', 0)")
	var bodies strings.Builder
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(bodies.String(), `"six"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the insert of 6 did not reach the changes_only shape within 30s: %s", bodies.String())
		}
		bodies.WriteString(request(t, c, true).Text())
	}
	got := bodies.String()
	if !strings.Contains(got, `"moved in"`) || strings.Contains(got, `"seven"`) || strings.Contains(got, `"row 3"`) {
		t.Fatalf("changes_only changes: %s; want id 1 moving in and 6, not 7 nor the initial rows", got)
	}
}
