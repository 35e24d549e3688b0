package shapes

import (
	"encoding/json"
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

// TestTxMessagesMembership checks how a change is told to a shape from
// whether its old and new rows are in it: rows that move into the shape
// are inserts of the whole row, rows that leave are deletes, key changes
// are a delete and an insert, and replica=full carries whole rows and the
// old values.
func TestTxMessagesMembership(t *testing.T) {
	s := func(v string) *string { return &v }
	update := txn.Change{Op: "update", Schema: "public", Table: "t",
		Columns: []string{"id", "a", "b"},
		Old:     []*string{s("1"), s("x"), s("same")},
		New:     []*string{s("1"), s("y"), s("same")}, OldFull: true}
	keyChange := update
	keyChange.New = []*string{s("2"), s("x"), s("same")}
	toasted := update
	toasted.New = []*string{s("1"), s("y"), nil}
	toasted.Unchanged = []string{"b"}
	del := txn.Change{Op: "delete", Schema: "public", Table: "t", Columns: update.Columns, Old: update.Old, OldFull: true}

	type msg struct {
		Key      string            `json:"key"`
		Value    map[string]string `json:"value"`
		OldValue map[string]string `json:"old_value"`
		Headers  struct {
			Operation string `json:"operation"`
		} `json:"headers"`
	}
	for _, c := range []struct {
		name             string
		change           txn.Change
		replica          string
		columns          []string
		oldIn, newIn, ok bool
		want             []msg
		ops              string
	}{
		{name: "stays in", ops: "update", change: update, oldIn: true, newIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "y"}}}},
		{name: "stays in, full", ops: "update", change: update, replica: "full", oldIn: true, newIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "y", "b": "same"}, OldValue: map[string]string{"a": "x"}}}},
		{name: "moves in", ops: "insert", change: update, newIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "y", "b": "same"}}}},
		{name: "moves out", ops: "delete", change: update, oldIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1"}}}},
		{name: "moves out, full", ops: "delete", change: update, replica: "full", oldIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "x", "b": "same"}}}},
		{name: "stays out", change: update, ok: true},
		{name: "key change", ops: "delete insert", change: keyChange, oldIn: true, newIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1"}},
				{Key: `"public"."t"/"2"`, Value: map[string]string{"id": "2", "a": "x", "b": "same"}}}},
		{name: "key change out of the shape", ops: "delete", change: keyChange, oldIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1"}}}},
		{name: "unchanged toast taken from the old row", ops: "insert", change: toasted, newIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "y", "b": "same"}}}},
		{name: "old row unknown, in", ops: "insert", change: update, newIn: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "y", "b": "same"}}}},
		{name: "old row unknown, out", ops: "delete", change: update,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1"}}}},
		{name: "columns without the changed one", change: update, columns: []string{"b", "id"}, oldIn: true, newIn: true, ok: true},
		{name: "delete, full", ops: "delete", change: del, replica: "full", oldIn: true, ok: true,
			want: []msg{{Key: `"public"."t"/"1"`, Value: map[string]string{"id": "1", "a": "x", "b": "same"}}}},
		{name: "delete of a row not in the shape", change: del, ok: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &Meta{Definition: Definition{Schema: "public", Table: "t", Replica: c.replica, Columns: c.columns}, PK: []string{"id"}}
			tx := &txn.Transaction{XID: 7, CommitLSN: 100, Changes: []txn.Change{c.change}}
			u := m.txMessages(tx, []int{0}, func(int) (bool, bool, bool) { return c.oldIn, c.newIn, c.ok })
			var got []msg
			if u.count > 0 {
				if err := json.Unmarshal(append(append([]byte{'['}, u.body...), ']'), &got); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d messages %s, want %d", len(got), u.body, len(c.want))
			}
			var ops string
			for i := range c.want {
				b1, _ := json.Marshal(got[i].Value)
				b2, _ := json.Marshal(c.want[i].Value)
				o1, _ := json.Marshal(got[i].OldValue)
				o2, _ := json.Marshal(c.want[i].OldValue)
				if got[i].Key != c.want[i].Key || string(b1) != string(b2) || string(o1) != string(o2) {
					t.Errorf("message %d = %s", i, u.body)
				}
				if i > 0 {
					ops += " "
				}
				ops += got[i].Headers.Operation
			}
			if ops != c.ops {
				t.Errorf("operations %q, want %q", ops, c.ops)
			}
		})
	}
}
