package nodeworker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// The lines of each kind of change, decoded from pgoutput by the worker
// itself: values in PostgreSQL's text form (NULL as null, quotes and
// non-ASCII text, arrays, JSON, timestamps), an update's new row (and its
// old row under REPLICA IDENTITY FULL, or its key when the key changed), a
// delete's key or old row, a truncate's tables, and a transaction's lines
// numbered i of n with one commit LSN.
func TestOutputLines(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	for _, sql := range []string{
		"CREATE TABLE items (id int PRIMARY KEY, note text, tags text[], doc jsonb, at timestamptz)",
		"CREATE TABLE full_items (id int PRIMARY KEY, note text)",
		"ALTER TABLE full_items REPLICA IDENTITY FULL",
	} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "changes.jsonl")
	p := harness.NewPod(t, harness.PodOptions{
		Name: "a", BrokerBin: bins["broker"], WorkerBin: bins["node-worker"], DatabaseURL: pg.URL(), BrokerSettings: fastBroker,
		WorkerSettings: map[string]string{"BATON_OUTPUT_FILE": out, "BATON_TABLES": "public.items,public.full_items"},
		AwaitBroker:    true,
	})
	awaitActive(t, 30*time.Second, p)
	for _, sql := range []string{
		`INSERT INTO items VALUES (1, 'say "hi" – ünïcode', '{a,"b c"}', '{"k": [1, null]}', '2026-01-02 03:04:05.123456+00'), (2, NULL, NULL, NULL, NULL)`,
		"UPDATE items SET note = 'changed' WHERE id = 1",
		"UPDATE items SET id = 3 WHERE id = 2",
		"DELETE FROM items WHERE id = 3",
		"INSERT INTO full_items VALUES (1, 'a')",
		"UPDATE full_items SET note = 'b' WHERE id = 1",
		"DELETE FROM full_items WHERE id = 1",
		"TRUNCATE items, full_items",
	} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	want := []string{
		`{"i":0,"n":2,"op":"insert","schema":"public","table":"items","new":{"at":"2026-01-02 03:04:05.123456+00","doc":"{\"k\": [1, null]}","id":"1","note":"say \"hi\" – ünïcode","tags":"{a,\"b c\"}"}}`,
		`{"i":1,"n":2,"op":"insert","schema":"public","table":"items","new":{"at":null,"doc":null,"id":"2","note":null,"tags":null}}`,
		`{"i":0,"n":1,"op":"update","schema":"public","table":"items","new":{"at":"2026-01-02 03:04:05.123456+00","doc":"{\"k\": [1, null]}","id":"1","note":"changed","tags":"{a,\"b c\"}"}}`,
		`{"i":0,"n":1,"op":"update","schema":"public","table":"items","new":{"at":null,"doc":null,"id":"3","note":null,"tags":null},"key":{"id":"2"}}`,
		`{"i":0,"n":1,"op":"delete","schema":"public","table":"items","key":{"id":"3"}}`,
		`{"i":0,"n":1,"op":"insert","schema":"public","table":"full_items","new":{"id":"1","note":"a"}}`,
		`{"i":0,"n":1,"op":"update","schema":"public","table":"full_items","new":{"id":"1","note":"b"},"old":{"id":"1","note":"a"}}`,
		`{"i":0,"n":1,"op":"delete","schema":"public","table":"full_items","old":{"id":"1","note":"b"}}`,
		`{"i":0,"n":1,"op":"truncate","tables":["public.items","public.full_items"]}`,
	}
	var lines []map[string]any
	if err := harness.AwaitEvery(20*time.Second, 100*time.Millisecond, fmt.Sprintf("%d lines in the file", len(want)), func() (bool, error) {
		b, err := os.ReadFile(out)
		if err != nil && !os.IsNotExist(err) {
			return false, err
		}
		lines = nil
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				return false, fmt.Errorf("%w: %s", err, l)
			}
			lines = append(lines, m)
		}
		return len(lines) >= len(want), nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, m := range lines {
		for _, k := range []string{"lsn", "end_lsn", "xid", "commit_time", "epoch"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d has no %s: %v", i+1, k, m)
			}
			delete(m, k)
		}
		got, _ := json.Marshal(m) // map keys sorted
		var w map[string]any
		if i < len(want) {
			_ = json.Unmarshal([]byte(want[i]), &w)
		}
		wantJSON, _ := json.Marshal(w)
		if string(got) != string(wantJSON) {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, got, wantJSON)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("%d lines, want %d", len(lines), len(want))
	}
}
