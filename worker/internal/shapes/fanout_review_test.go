package shapes

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

// reviewShape is an open shape of a whole table made when the table had
// cols, as far as the fanout looks at it.
func reviewShape(handle string, cols ...string) *Shape {
	m := Meta{Handle: handle, Definition: Definition{Schema: "public", Table: "t"}, PK: []string{"id"}}
	for _, c := range cols {
		m.TableColumns = append(m.TableColumns, Column{Name: c})
	}
	return &Shape{meta: m, changed: make(chan struct{})}
}

// A table is altered (a column added): its shape A is invalidated, and a
// client's refetch makes shape B from the table as it is now. The router
// syncs next with B listed and A gone (A is still known to the fanout:
// sync runs only when records arrive). A change to the table, with the
// new columns, must reach B: it is exactly what B was made from. Today the
// table's column list kept from A stays, B is invalidated on its first
// change, and so is every shape made after it: clients refetch forever.
func TestReviewSyncRecreatedShapeAfterAlter(t *testing.T) {
	r := &Registry{o: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	f := &fanout{r: r, tables: map[string]*tableShapes{}, ids: map[*Shape]int{}}
	ctx := context.Background()

	a := reviewShape("a", "id", "v")
	if _, err := f.sync(ctx, []*Shape{a}); err != nil {
		t.Fatal(err)
	}
	// ALTER TABLE t ADD COLUMN w; a row with it invalidates A.
	a.markGone()
	b := reviewShape("b", "id", "v", "w")
	for _, listed := range [][]*Shape{{b}, {a, b}} {
		if _, err := f.sync(ctx, listed); err != nil {
			t.Fatal(err)
		}
		s := func(v string) *string { return &v }
		tx := &txn.Transaction{XID: 10, CommitLSN: 100, Changes: []txn.Change{{
			Op: "insert", Schema: "public", Table: "t", Columns: []string{"id", "v", "w"},
			New: []*string{s("1"), s("x"), s("y")},
		}}}
		fo, err := f.transaction(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, inv := range fo.invalid {
			if inv == b {
				t.Fatalf("shape B, made from the altered table, is invalidated by a row with the columns it was made from (table columns kept: %v)",
					f.tables["public.t"].cols)
			}
		}
		if len(fo.touched) != 1 || fo.touched[0].s != b {
			t.Fatalf("the insert touches %d shapes; want B only", len(fo.touched))
		}
	}
}
