package shapes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

// fanout is the router's index of the shapes by table, from which it finds
// the shapes each change goes to (match.go). Shapes without a where clause
// take every change of their table; the others are matched by a where.Set
// per table, which indexes equality and range clauses and has PostgreSQL
// evaluate the rest, so a change costs about the same whatever the number
// of shapes. It belongs to the router goroutine.
type fanout struct {
	r      *Registry
	ev     *where.Evaluator
	conn   *pgx.Conn // for preparing the where clauses of shapes opened from disk
	tables map[string]*tableShapes
	ids    map[*Shape]int
	next   int
}

// tableShapes are the shapes of one table.
type tableShapes struct {
	whole []*Shape
	set   *where.Set
	byID  map[int]*Shape
	// cols are the table's column names as the shapes know them (nil when
	// unknown): a change with other columns means the table changed.
	cols []string
	// setCols are the columns set was built for.
	setCols []string
	// colsClean: every shape of the table whose columns are known has
	// exactly cols (none is stale), as of the last refreshColumns, and no
	// shape was removed since.
	colsClean bool
	// newest is the newest shape of byID (by CreatedAt), nil when unknown
	// (none, or the newest was removed): newestWhere finds it again.
	newest *Shape
}

// syncRounds numbers fanout.sync rounds process-wide, so that a shape's
// listed mark from one fanout never matches a round of another.
var syncRounds atomic.Uint64

func newFanout(r *Registry) *fanout {
	dial := func(ctx context.Context) (*pgx.Conn, error) {
		return r.dial(ctx, "where")
	}
	return &fanout{r: r, ev: where.NewEvaluator(dial), tables: map[string]*tableShapes{}, ids: map[*Shape]int{}}
}

func (f *fanout) close() {
	f.ev.Close()
	if f.conn != nil {
		f.conn.Close(context.Background())
	}
}

// tableName keys a table: a NUL byte cannot be in a name, so "a"."b.c"
// and "a.b"."c" stay apart.
func tableName(schema, table string) string { return schema + "\x00" + table }

// synced is what a sync changed in the fanout.
type synced struct {
	// removed are the shapes it forgot (gone), added those it indexed.
	removed, added []*Shape
	// invalid are the shapes that cannot be served any more: their table
	// or where clause no longer fits the database. They are not indexed.
	invalid []*Shape
}

// sync brings the tables up to the current shapes: it forgets the shapes
// gone, then indexes the new ones. On an error, what it returns is what it
// changed before it.
func (f *fanout) sync(ctx context.Context, shapes []*Shape) (synced, error) {
	// The shapes listed and not gone are marked with this round (a map of
	// them costs an allocation per shape at every sync).
	round := syncRounds.Add(1)
	for _, s := range shapes {
		if !s.isGone() {
			s.listed = round
		}
	}
	var add, drop []*Shape
	for s := range f.ids {
		if s.listed != round {
			drop = append(drop, s)
		}
	}
	for _, s := range shapes {
		if s.listed == round {
			add = append(add, s)
		}
	}
	return f.apply(ctx, add, drop)
}

// apply forgets the shapes of drop it indexed, then indexes those of add
// it has not, but those gone meanwhile. On an error, what it returns is
// what it changed before it.
func (f *fanout) apply(ctx context.Context, add, drop []*Shape) (synced, error) {
	var out synced
	// Shapes gone first, so that a table whose shapes were all replaced
	// (after an ALTER) starts anew.
	for _, s := range drop {
		if id, ok := f.ids[s]; ok {
			f.remove(s, id)
			out.removed = append(out.removed, s)
		}
	}
	added := map[*tableShapes][]int{} // where shapes added, by table
	addedShapes := map[*tableShapes][]*Shape{}
	for _, s := range add {
		if _, ok := f.ids[s]; ok || s.isGone() {
			continue
		}
		d := s.meta.Definition
		if d.Where != "" && s.pred == nil {
			p, err := f.prepare(ctx, s)
			var ie *InvalidError
			if errors.As(err, &ie) {
				f.r.o.Log.Warn("shape no longer valid: its clients refetch", "shape", s.meta.Handle, "reason", ie.Error())
				out.invalid = append(out.invalid, s)
				continue
			}
			if err != nil {
				return out, err
			}
			s.pred = p
		}
		name := tableName(d.Schema, d.Table)
		ts := f.tables[name]
		if ts == nil {
			ts = &tableShapes{byID: map[int]*Shape{}}
			f.tables[name] = ts
		}
		f.next++
		f.ids[s] = f.next
		out.added = append(out.added, s)
		if s.pred == nil {
			ts.whole = append(ts.whole, s)
		} else {
			ts.byID[f.next] = s
			if ts.newest != nil && s.meta.CreatedAt.After(ts.newest.meta.CreatedAt) {
				ts.newest = s
			}
		}
		added[ts] = append(added[ts], f.next)
		addedShapes[ts] = append(addedShapes[ts], s)
	}
	for ts, ids := range added {
		stale := ts.refreshColumns(addedShapes[ts])
		out.invalid = append(out.invalid, stale...)
		ts.rebuildSet(f, stale, ids)
	}
	return out, nil
}

// len is the number of shapes indexed.
func (f *fanout) len() int { return len(f.ids) }

// remove forgets a shape that is gone.
func (f *fanout) remove(s *Shape, id int) {
	delete(f.ids, s)
	d := s.meta.Definition
	name := tableName(d.Schema, d.Table)
	ts := f.tables[name]
	if ts == nil {
		return
	}
	ts.whole = slices.DeleteFunc(ts.whole, func(x *Shape) bool { return x == s })
	ts.colsClean = false
	if ts.newest == s {
		ts.newest = nil
	}
	if _, ok := ts.byID[id]; ok {
		delete(ts.byID, id)
		if ts.set != nil {
			ts.set.Remove(id)
		}
	}
	if len(ts.whole) == 0 && len(ts.byID) == 0 {
		delete(f.tables, name)
	}
}

// rebuildSet makes the table's where.Set hold the predicates of its
// shapes but the stale ones, for the table's current columns: built anew
// when the columns changed (a predicate is planned on column positions)
// or a shape went stale, else given the added shapes.
func (ts *tableShapes) rebuildSet(f *fanout, stale []*Shape, added []int) {
	var newest *Shape
	if len(stale) == 0 {
		newest = ts.newestWhere()
	} else {
		for _, s := range ts.byID {
			if !slices.Contains(stale, s) && (newest == nil || s.meta.CreatedAt.After(newest.meta.CreatedAt)) {
				newest = s
			}
		}
	}
	if newest == nil {
		ts.set, ts.setCols = nil, nil
		return
	}
	cols := tableColumns(newest)
	if ts.set == nil || !slices.Equal(cols, ts.setCols) || len(stale) > 0 {
		d := newest.meta.Definition
		ts.set, ts.setCols = where.NewSet(whereTable(d, newest.meta.TableColumns), f.ev), cols
		ts.set.OnError(f.evalError(ts))
		for id, s := range ts.byID {
			if !slices.Contains(stale, s) {
				ts.set.Add(id, s.pred)
			}
		}
		return
	}
	for _, id := range added {
		if s := ts.byID[id]; s != nil {
			ts.set.Add(id, s.pred)
		}
	}
}

// newestWhere is the newest shape of byID, nil when there is none.
func (ts *tableShapes) newestWhere() *Shape {
	if ts.newest == nil {
		for _, s := range ts.byID {
			if ts.newest == nil || s.meta.CreatedAt.After(ts.newest.meta.CreatedAt) {
				ts.newest = s
			}
		}
	}
	return ts.newest
}

// tableColumns are the names of the columns logical replication carries
// for the table the shape was made from (nil when not recorded).
func tableColumns(s *Shape) []string {
	if s.meta.TableColumns == nil {
		return nil
	}
	out := []string{}
	for _, c := range s.meta.TableColumns {
		if !c.Generated {
			out = append(out, c.Name)
		}
	}
	return out
}

// refreshColumns sets the table's columns to those of its newest shape,
// and returns the shapes made from other columns: the table changed since
// they were made. added are the shapes added since the last call.
//
// When no shape was stale or removed since the last call, every shape
// whose columns are known has cols, so if every added shape has them too
// (the common case: shapes made from an unchanged table), cols and the
// answer (none stale) are what a scan of every shape would give; the scan
// is skipped then.
func (ts *tableShapes) refreshColumns(added []*Shape) []*Shape {
	if ts.colsClean && ts.cols != nil && !slices.ContainsFunc(added, func(s *Shape) bool {
		return s.meta.TableColumns != nil && !sameColumns(s, ts.cols)
	}) {
		return nil
	}
	all := ts.all()
	var newest *Shape
	for _, s := range all {
		if s.meta.TableColumns != nil && (newest == nil || s.meta.CreatedAt.After(newest.meta.CreatedAt)) {
			newest = s
		}
	}
	if newest == nil {
		ts.cols = nil
		return nil
	}
	ts.cols = tableColumns(newest)
	var stale []*Shape
	for _, s := range all {
		if s.meta.TableColumns != nil && !sameColumns(s, ts.cols) {
			stale = append(stale, s)
		}
	}
	ts.colsClean = len(stale) == 0
	return stale
}

// sameColumns reports whether tableColumns(s) equals cols, without
// making it.
func sameColumns(s *Shape, cols []string) bool {
	i := 0
	for _, c := range s.meta.TableColumns {
		if c.Generated {
			continue
		}
		if i == len(cols) || cols[i] != c.Name {
			return false
		}
		i++
	}
	return i == len(cols)
}

// evalErrorEvery bounds the warnings about one shape's where clause
// failing on a row.
const evalErrorEvery = time.Minute

// evalError is told about a where clause that raised an error on a row
// (a division by zero, a failing cast): the row is not in the shape, as
// it is in no answer PostgreSQL gives to the query. It is logged, at most
// once a minute per shape.
func (f *fanout) evalError(ts *tableShapes) func(id int, err error) {
	last := map[int]time.Time{}
	return func(id int, err error) {
		inc(f.r.o.Counters.WhereErrors)
		s := ts.byID[id]
		if s == nil || time.Since(last[id]) < evalErrorEvery {
			return
		}
		last[id] = time.Now()
		f.r.o.Log.Warn("where clause failed on a changed row; the row is left out of the shape", "shape", s.meta.Handle,
			"where", s.meta.Definition.Where, "err", err)
	}
}

// prepare binds the where clause of a shape opened from disk, checking
// first that its table is still the one it was made from.
func (f *fanout) prepare(ctx context.Context, s *Shape) (*where.Predicate, error) {
	if f.conn == nil || f.conn.IsClosed() {
		c, err := f.r.dial(ctx, "shapes")
		if err != nil {
			return nil, err
		}
		f.conn = c
	}
	d := s.meta.Definition
	t, err := describe(ctx, f.conn, Definition{Schema: d.Schema, Table: d.Table})
	if err != nil {
		return nil, err
	}
	if !s.meta.madeFrom(t) {
		return nil, &InvalidError{Field: "table", Problem: fmt.Sprintf("table %s changed", d)}
	}
	return prepareWhere(ctx, f.conn, d, t.columns)
}

func (ts *tableShapes) all() []*Shape {
	out := slices.Clone(ts.whole)
	for _, s := range ts.byID {
		out = append(out, s)
	}
	return out
}
