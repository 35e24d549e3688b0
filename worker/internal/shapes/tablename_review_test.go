package shapes

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

// Table "a"."b.c" and table "a.b"."c" are different tables, but the
// fanout names both a.b.c: a change to one goes to the shapes of the
// other, whose clients get rows of a table they never asked for.
func TestReviewTableNameWithDot(t *testing.T) {
	r := &Registry{o: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	f := &fanout{r: r, tables: map[string]*tableShapes{}, ids: map[*Shape]int{}}
	ctx := context.Background()
	s := &Shape{meta: Meta{Handle: "x", Definition: Definition{Schema: "a.b", Table: "c"}, PK: []string{"id"}}, changed: make(chan struct{})}
	if _, err := f.sync(ctx, []*Shape{s}); err != nil {
		t.Fatal(err)
	}
	v := "1"
	tx := &txn.Transaction{XID: 10, CommitLSN: 100, Changes: []txn.Change{{
		Op: "insert", Schema: "a", Table: "b.c", Columns: []string{"id"}, New: []*string{&v},
	}}}
	fo, err := f.transaction(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fo.touched) != 0 {
		t.Fatalf("a row of \"a\".\"b.c\" goes to the shape of \"a.b\".\"c\"")
	}
}
