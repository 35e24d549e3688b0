package shapes

import (
	"encoding/json"
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

// A table without a primary key keys its rows by every column. An update
// of one column leaves a TOASTed value of another unchanged: pgoutput
// sends it as 'u' (nil in New, listed in Unchanged), and the whole old row
// (REPLICA IDENTITY FULL) carries it. The new key must be built from the
// row's real values: today the unchanged column is keyed as NULL (_), so
// the client holds the row under a key no later change names, and the
// next update of the row leaves it behind as a duplicate.
func TestReviewNoPKUpdateUnchangedToastKey(t *testing.T) {
	s := func(v string) *string { return &v }
	m := &Meta{Definition: Definition{Schema: "public", Table: "t"}, PK: []string{"body", "n"}}
	tx := &txn.Transaction{XID: 7, CommitLSN: 100, Changes: []txn.Change{{
		Op: "update", Schema: "public", Table: "t", Columns: []string{"body", "n"},
		Old: []*string{s("big"), s("1")}, OldFull: true,
		New: []*string{nil, s("2")}, Unchanged: []string{"body"},
	}}}
	u := m.txMessages(tx, []int{0}, everyRow)
	var got []struct {
		Key     string            `json:"key"`
		Value   map[string]string `json:"value"`
		Headers struct {
			Operation string `json:"operation"`
		} `json:"headers"`
	}
	if err := json.Unmarshal(append(append([]byte{'['}, u.body...), ']'), &got); err != nil {
		t.Fatal(err)
	}
	wantKey := `"public"."t"/"big"/"2"`
	for _, msg := range got {
		if msg.Headers.Operation == "insert" && msg.Key != wantKey {
			t.Fatalf("insert under key %s; want %s (messages %s)", msg.Key, wantKey, u.body)
		}
	}
	if len(got) != 2 {
		t.Fatalf("got %d messages %s; want a delete and an insert", len(got), u.body)
	}
}
