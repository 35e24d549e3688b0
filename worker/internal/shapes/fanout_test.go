package shapes

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/txn"
)

// wholeTableShape is an open shape of a whole table made when the table had
// cols, as far as the fanout looks at it.
func wholeTableShape(handle string, cols ...string) *Shape {
	m := Meta{Handle: handle, Definition: Definition{Schema: "public", Table: "t"}, PK: []string{"id"}}
	for _, c := range cols {
		m.TableColumns = append(m.TableColumns, Column{Name: c})
	}
	return &Shape{meta: m, changed: make(chan struct{})}
}

// TestFanoutShapeRecreatedAfterAlter: a table is altered (a column added):
// its shape A is invalidated, and a client's refetch makes shape B from the
// table as it is now. The router syncs next with B listed and A gone (A is
// still known to the fanout: sync runs only when records arrive). A change
// to the table, with the new columns, reaches B: it is exactly what B was
// made from. Were the table's column list kept from A, B would be
// invalidated on its first change, and so would every shape made after
// it: clients would refetch forever.
func TestFanoutShapeRecreatedAfterAlter(t *testing.T) {
	r := &Registry{o: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	f := &fanout{r: r, tables: map[string]*tableShapes{}, ids: map[*Shape]int{}}
	ctx := context.Background()

	a := wholeTableShape("a", "id", "v")
	if _, err := f.sync(ctx, []*Shape{a}); err != nil {
		t.Fatal(err)
	}
	// ALTER TABLE t ADD COLUMN w; a row with it invalidates A.
	a.markGone()
	b := wholeTableShape("b", "id", "v", "w")
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

// TestFanoutTableNameWithDot: table "a"."b.c" and table "a.b"."c" are
// different tables; were both named a.b.c, a change to one would go to the
// shapes of the other, whose clients would get rows of a table they never
// asked for.
func TestFanoutTableNameWithDot(t *testing.T) {
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

// TestFanoutColumnsRandom syncs a fanout through a seeded random run of
// shapes added (most made from the table's current columns, some from
// other ones, as after an ALTER) and removed, and checks after every sync
// that the table's columns and the shapes reported stale are what a scan
// of every listed shape gives: refreshColumns' fast path, which skips
// that scan, must never change the answer.
func TestFanoutColumnsRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	r := &Registry{o: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	f := &fanout{r: r, tables: map[string]*tableShapes{}, ids: map[*Shape]int{}}
	ctx := context.Background()
	variants := [][]string{{"id", "v"}, {"id", "v", "w"}, {"id", "w"}}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var listed []*Shape
	for step := range 400 {
		for range 1 + rng.IntN(4) {
			switch r := rng.IntN(10); {
			case r < 7 || len(listed) == 0:
				cols := variants[0]
				if rng.IntN(8) == 0 {
					cols = variants[rng.IntN(len(variants))]
				}
				s := wholeTableShape(fmt.Sprintf("s%d", step), cols...)
				if rng.IntN(10) == 0 {
					s.meta.TableColumns = nil // made before columns were recorded
				}
				// Mostly newer than every other, sometimes not (opened from disk).
				s.meta.CreatedAt = base.Add(time.Duration(step*10+rng.IntN(15)) * time.Second)
				listed = append(listed, s)
			default:
				i := rng.IntN(len(listed))
				listed[i].markGone()
				listed = slices.Delete(listed, i, i+1)
			}
		}
		out, err := f.sync(ctx, listed)
		if err != nil {
			t.Fatal(err)
		}
		var newest *Shape
		for _, s := range listed {
			if s.meta.TableColumns != nil && (newest == nil || s.meta.CreatedAt.After(newest.meta.CreatedAt)) {
				newest = s
			}
		}
		var want []string
		var wantStale []*Shape
		if newest != nil {
			want = tableColumns(newest)
			for _, s := range listed {
				if c := tableColumns(s); c != nil && !slices.Equal(c, want) {
					wantStale = append(wantStale, s)
				}
			}
		}
		ts := f.tables[tableName("public", "t")]
		if ts == nil {
			if len(listed) > 0 {
				t.Fatalf("step %d: no table for %d listed shapes", step, len(listed))
			}
			continue
		}
		// A sync that added nothing does not look at the columns.
		if len(out.added) == 0 {
			continue
		}
		if !slices.Equal(ts.cols, want) {
			t.Fatalf("step %d: table columns %v, a scan gives %v", step, ts.cols, want)
		}
		if !sameSet(out.invalid, wantStale) {
			t.Fatalf("step %d: %d shapes reported stale, a scan finds %d", step, len(out.invalid), len(wantStale))
		}
	}
}

func sameSet(a, b []*Shape) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// TestRouterViewRandom registers, completes and removes shapes at random
// (now and then more than Registry.changed keeps, and a router restarted
// with a new fanout), refreshing a fanout from Registry.routerView the
// way the router does; after every refresh the fanout must index exactly
// the registered shapes whose snapshot is complete.
func TestRouterViewRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	r := &Registry{o: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		byDef: map[string]*Shape{}, byHandle: map[string]*Shape{}, added: make(chan struct{})}
	newFan := func() *fanout { return &fanout{r: r, tables: map[string]*tableShapes{}, ids: map[*Shape]int{}} }
	f, synced := newFan(), false
	ctx := context.Background()
	var registered []*Shape
	n := 0
	register := func() {
		n++
		s := wholeTableShape(fmt.Sprintf("h%d", n), "id", "v")
		s.meta.Definition.Table = fmt.Sprintf("t%d", n) // a definition of its own
		s.filling.Store(rng.IntN(3) == 0)
		if err := r.register(s); err != nil {
			t.Fatal(err)
		}
		registered = append(registered, s)
	}
	for step := range 600 {
		switch x := rng.IntN(100); {
		case x < 40:
			register()
		case x < 55: // a snapshot completes (fill.go)
			for _, s := range registered {
				if s.filling.Load() {
					s.filling.Store(false)
					r.mu.Lock()
					if r.byDef[s.meta.Definition.Key()] == s {
						r.moved(s)
					}
					r.mu.Unlock()
					break
				}
			}
		case x < 75 && len(registered) > 0:
			i := rng.IntN(len(registered))
			r.unregister([]*Shape{registered[i]})
			registered = slices.Delete(registered, i, i+1)
		case x < 77: // more changes than kept: the whole list next
			for range 1100 {
				register()
				i := len(registered) - 1
				if rng.IntN(2) == 0 {
					r.unregister([]*Shape{registered[i]})
					registered = registered[:i]
				}
			}
		case x < 79: // the router restarts
			f, synced = newFan(), false
		default:
			add, drop, full := r.routerView(!synced)
			var err error
			if full {
				_, err = f.sync(ctx, add)
			} else {
				_, err = f.apply(ctx, add, drop)
			}
			if err != nil {
				t.Fatal(err)
			}
			synced = true
			want := map[*Shape]bool{}
			for _, s := range registered {
				if !s.filling.Load() {
					want[s] = true
				}
			}
			for s := range f.ids {
				if !want[s] {
					t.Fatalf("step %d: the fanout indexes %s, which is removed or not complete", step, s.meta.Handle)
				}
			}
			if len(f.ids) != len(want) {
				t.Fatalf("step %d: the fanout indexes %d shapes, want %d", step, len(f.ids), len(want))
			}
		}
	}
}
