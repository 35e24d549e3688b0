package shapes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// fanout finds the shapes each change goes to. Shapes without a where
// clause take every change of their table; the others are matched by a
// where.Set per table, which indexes equality and range clauses and has
// PostgreSQL evaluate the rest, so a change costs about the same whatever
// the number of shapes. It belongs to the router goroutine.
type fanout struct {
	r      *Registry
	ev     *where.Evaluator
	conn   *pgx.Conn // for preparing the where clauses of shapes opened from disk
	tables map[string]*tableShapes
	ids    map[*Shape]int
	next   int
	gen    uint64 // Registry.gen as of the last sync
	synced bool
	// pos is how far every caught-up shape is routed (published as
	// Registry.routed); behind are the shapes that are not (new ones, and
	// all of them when the router starts), nCaught the number of the others.
	pos     routedPos
	behind  map[*Shape]bool
	nCaught int
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
}

func newFanout(r *Registry) *fanout {
	dial := func(ctx context.Context) (*pgx.Conn, error) {
		return connect(ctx, r.o.DatabaseURL, "baton-worker-where:"+r.o.StreamID+":"+strconv.FormatUint(r.o.Epoch, 10))
	}
	f := &fanout{r: r, ev: where.NewEvaluator(dial), tables: map[string]*tableShapes{}, ids: map[*Shape]int{}, behind: map[*Shape]bool{}}
	if p := r.routed.Load(); p != nil {
		f.pos = *p // a restarted router: caught-up shapes stay so
	}
	return f
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

// sync brings the tables up to the current shapes. It returns the shapes
// that cannot be served any more: their table or where clause no longer
// fits the database.
func (f *fanout) sync(ctx context.Context, shapes []*Shape) ([]*Shape, error) {
	live := make(map[*Shape]bool, len(shapes))
	for _, s := range shapes {
		if !s.isGone() {
			live[s] = true
		}
	}
	// Shapes gone first, so that a table whose shapes were all replaced
	// (after an ALTER) starts anew.
	for s, id := range f.ids {
		if !live[s] {
			f.remove(s, id)
		}
	}
	var invalid []*Shape
	added := map[*tableShapes][]int{} // where shapes added, by table
	for _, s := range shapes {
		if !live[s] {
			continue
		}
		if _, ok := f.ids[s]; ok {
			continue
		}
		d := s.meta.Definition
		if d.Where != "" && s.pred == nil {
			p, err := f.prepare(ctx, s)
			var ie *InvalidError
			if errors.As(err, &ie) {
				f.r.o.Log.Warn("shape no longer valid: its clients refetch", "shape", s.meta.Handle, "reason", ie.Error())
				invalid = append(invalid, s)
				continue
			}
			if err != nil {
				return nil, err
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
		if s.caught.Load() {
			f.nCaught++
		} else {
			if f.behind == nil {
				f.behind = map[*Shape]bool{}
			}
			f.behind[s] = true
		}
		if s.pred == nil {
			ts.whole = append(ts.whole, s)
		} else {
			ts.byID[f.next] = s
		}
		added[ts] = append(added[ts], f.next)
	}
	for ts, ids := range added {
		stale := ts.refreshColumns()
		invalid = append(invalid, stale...)
		ts.rebuildSet(f, stale, ids)
	}
	return invalid, nil
}

// remove forgets a shape that is gone.
func (f *fanout) remove(s *Shape, id int) {
	delete(f.ids, s)
	if f.behind[s] {
		delete(f.behind, s)
	} else if s.caught.Load() {
		f.nCaught--
	}
	d := s.meta.Definition
	name := tableName(d.Schema, d.Table)
	ts := f.tables[name]
	if ts == nil {
		return
	}
	ts.whole = slices.DeleteFunc(ts.whole, func(x *Shape) bool { return x == s })
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
	for _, s := range ts.byID {
		if !slices.Contains(stale, s) && (newest == nil || s.meta.CreatedAt.After(newest.meta.CreatedAt)) {
			newest = s
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
// they were made.
func (ts *tableShapes) refreshColumns() []*Shape {
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
		if cols := tableColumns(s); cols != nil && !slices.Equal(cols, ts.cols) {
			stale = append(stale, s)
		}
	}
	return stale
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
		c, err := connect(ctx, f.r.o.DatabaseURL, "baton-worker-shapes:"+f.r.o.StreamID+":"+strconv.FormatUint(f.r.o.Epoch, 10))
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

// txFanout is what one transaction does to the shapes.
type txFanout struct {
	// touched: the shapes that get a unit of messages, and how to make it.
	touched []touch
	// invalid are shapes whose table was truncated or changed.
	invalid []*Shape
}

type touch struct {
	s   *Shape
	idx []int
	in  membership
}

// transaction decides which shapes tx's changes go to.
func (f *fanout) transaction(ctx context.Context, tx *txn.Transaction) (txFanout, error) {
	var out txFanout
	if len(f.tables) == 0 {
		return out, nil
	}
	byTable := map[string][]int{}
	var order []string
	for i := range tx.Changes {
		c := &tx.Changes[i]
		switch c.Op {
		case "truncate":
			// A truncated table is named "schema.table": a dot in a name
			// makes it ambiguous, and the shapes of each table it may be
			// are invalidated (they refetch; nothing is lost).
			for _, name := range c.Tables {
				for key, ts := range f.tables {
					if strings.Replace(key, "\x00", ".", 1) == name {
						out.invalid = append(out.invalid, ts.all()...)
					}
				}
			}
		case "insert", "update", "delete":
			name := tableName(c.Schema, c.Table)
			if f.tables[name] == nil {
				continue
			}
			if _, ok := byTable[name]; !ok {
				order = append(order, name)
			}
			byTable[name] = append(byTable[name], i)
		}
	}
	for _, name := range order {
		ts, idx := f.tables[name], byTable[name]
		if ts.changed(tx, idx) {
			out.invalid = append(out.invalid, ts.all()...)
			continue
		}
		for _, s := range ts.whole {
			out.touched = append(out.touched, touch{s: s, idx: idx, in: everyRow})
		}
		if ts.set == nil || ts.set.Len() == 0 {
			continue
		}
		t, err := ts.match(ctx, tx, idx)
		if err != nil {
			return out, err
		}
		out.touched = append(out.touched, t...)
	}
	return out, nil
}

func (ts *tableShapes) all() []*Shape {
	out := slices.Clone(ts.whole)
	for _, s := range ts.byID {
		out = append(out, s)
	}
	return out
}

// changed reports whether a change carries other columns than the shapes
// were made with: the table was altered.
func (ts *tableShapes) changed(tx *txn.Transaction, idx []int) bool {
	if ts.cols == nil {
		return false
	}
	for _, i := range idx {
		if !slices.Equal(tx.Changes[i].Columns, ts.cols) {
			return true
		}
	}
	return false
}

// Membership bits of one change for one shape.
const (
	inOld = 1 << iota
	inNew
	oldKnown
)

// match evaluates the where clauses on the old and new rows of the
// changes idx of tx.
func (ts *tableShapes) match(ctx context.Context, tx *txn.Transaction, idx []int) ([]touch, error) {
	cols := tx.Changes[idx[0]].Columns
	var rows [][]*string
	type images struct{ old, new int }
	img := make([]images, len(idx))
	for k, i := range idx {
		c := &tx.Changes[i]
		img[k] = images{-1, -1}
		full := c.OldFull && len(c.Old) == len(c.Columns)
		if full && c.Op != "insert" {
			img[k].old = len(rows)
			rows = append(rows, c.Old)
		}
		if c.Op != "delete" {
			img[k].new = len(rows)
			rows = append(rows, newImage(c, full))
		}
		if c.Op == "delete" && !full {
			// Without the old row a delete is told to every shape: a
			// delete of a row a client does not hold changes nothing.
			img[k].old = -2
		}
	}
	matched, err := ts.set.Match(ctx, cols, rows)
	if err != nil {
		return nil, fmt.Errorf("match where clauses: %w", err)
	}
	flags := map[int][]uint8{}
	set := func(id, k int, bit uint8) {
		fl := flags[id]
		if fl == nil {
			fl = make([]uint8, len(idx))
			flags[id] = fl
		}
		fl[k] |= bit
	}
	for k := range idx {
		c := &tx.Changes[idx[k]]
		if img[k].old >= 0 {
			for _, id := range matched[img[k].old] {
				set(id, k, inOld)
			}
		}
		if img[k].new >= 0 {
			for _, id := range matched[img[k].new] {
				set(id, k, inNew)
			}
		}
		if img[k].old == -2 || (c.Op == "update" && img[k].old == -1) {
			for id := range ts.byID {
				set(id, k, 0)
			}
		}
	}
	out := make([]touch, 0, len(flags))
	for id, fl := range flags {
		s := ts.byID[id]
		if s == nil {
			continue
		}
		// The shape's own changes: those with a row in it, and those whose
		// old row is unknown.
		var sub []int
		var subFl []uint8
		for k := range idx {
			c := &tx.Changes[idx[k]]
			if c.Op == "insert" || img[k].old >= 0 {
				fl[k] |= oldKnown
			}
			if img[k].old == -2 {
				fl[k] |= inOld | oldKnown
			}
			if fl[k]&(inOld|inNew) != 0 || fl[k]&oldKnown == 0 {
				sub = append(sub, idx[k])
				subFl = append(subFl, fl[k])
			}
		}
		if len(sub) == 0 {
			continue
		}
		out = append(out, touch{s: s, idx: sub, in: func(j int) (bool, bool, bool) {
			return subFl[j]&inOld != 0, subFl[j]&inNew != 0, subFl[j]&oldKnown != 0
		}})
	}
	return out, nil
}

// newImage is the new row of a change, with unchanged TOASTed values taken
// from the old row when it is whole.
func newImage(c *txn.Change, fullOld bool) []*string {
	if len(c.Unchanged) == 0 || !fullOld {
		return c.New
	}
	row := slices.Clone(c.New)
	for j, col := range c.Columns {
		if j < len(row) && slices.Contains(c.Unchanged, col) {
			row[j] = c.Old[j]
		}
	}
	return row
}

// pending is what a batch wrote to one shape log.
type pending struct {
	entries []entry
	dirty   bool
}

// refresh brings the fanout up to the shapes listed at gen; it returns the
// shapes that can no longer be served.
func (f *fanout) refresh(ctx context.Context, shapes []*Shape, gen uint64) ([]*Shape, error) {
	invalid, err := f.sync(ctx, shapes)
	if err != nil {
		return nil, err
	}
	f.gen, f.synced = gen, true
	return invalid, nil
}

// current reports whether the fanout knows the shapes as of gen.
func (f *fanout) current(gen uint64) bool { return f.synced && gen == f.gen }

// from is the stream log seq every shape has been routed to: where the
// next batch starts.
func (f *fanout) from() uint64 {
	from := uint64(math.MaxUint64)
	if f.nCaught > 0 || len(f.behind) == 0 {
		from = f.pos.seq
	}
	for s := range f.behind {
		from = min(from, s.applied())
	}
	return from
}

// routeRecords applies recs to the shapes: the transactions not visible in
// a shape's snapshot become one record each in the logs of the shapes they
// touch. Then each touched log is written and the records and how far the
// shapes were routed published; meta.json (written by another goroutine)
// syncs a log before it names how far it was routed.
func (f *fanout) routeRecords(ctx context.Context, recs []storage.Record) error {
	var invalid []*Shape
	// start is where each shape the batch touches was routed to before it.
	start := map[*Shape]uint64{}
	startOf := func(s *Shape) uint64 {
		a, ok := start[s]
		if !ok {
			a = s.applied()
			start[s] = a
		}
		return a
	}
	work := map[*Shape]*pending{}
	var err error

	last := recs[len(recs)-1]
	var lastLSN uint64
	for _, rec := range recs {
		tx := f.r.o.Decoded.Take(rec.Seq)
		if tx == nil {
			if tx, err = txn.Decode(rec.Payload); err != nil {
				return fmt.Errorf("stream record %d: %w", rec.Seq, err)
			}
		}
		lastLSN = tx.CommitLSN
		fo, err := f.transaction(ctx, tx)
		if err != nil {
			return err
		}
		for _, s := range fo.invalid {
			if startOf(s) < rec.Seq && !s.meta.visible(tx.XID, tx.CommitLSN) && !slices.Contains(invalid, s) {
				invalid = append(invalid, s)
			}
		}
		for _, t := range fo.touched {
			s := t.s
			if startOf(s) >= rec.Seq || s.isGone() || slices.Contains(invalid, s) || s.meta.visible(tx.XID, tx.CommitLSN) {
				continue
			}
			u := s.meta.txMessages(tx, t.idx, t.in)
			if u.count == 0 {
				continue
			}
			seq, err := s.log.Append(storage.Record{CommitLSN: tx.CommitLSN, EndLSN: rec.EndLSN, Payload: u.payload(u.lastOp)})
			if err != nil {
				if s.isGone() {
					continue // deleted meanwhile
				}
				return fmt.Errorf("shape %s: %w", s.meta.Handle, err)
			}
			p := work[s]
			if p == nil {
				p = &pending{}
				work[s] = p
			}
			p.dirty = true
			if seq != 0 {
				p.entries = append(p.entries, entry{seq: seq, off: Offset{TX: tx.CommitLSN, Op: u.lastOp}, size: len(u.body)})
			}
		}
	}
	if err := writeLogs(work); err != nil {
		return err
	}
	// The shapes that got records, and those behind, move on one by one
	// (publish leaves alone a shape routed this far already); the caught-up
	// ones all at once, with the router's position.
	for s, p := range work {
		s.publish(p.entries, lastLSN, last.Seq)
	}
	for s := range f.behind {
		s.publish(nil, lastLSN, last.Seq)
	}
	if last.Seq > f.pos.seq {
		f.pos = routedPos{seq: last.Seq, lsn: max(f.pos.lsn, lastLSN)}
		p := f.pos
		f.r.routed.Store(&p)
	}
	for s := range f.behind {
		if s.ownApplied() >= f.pos.seq {
			s.caught.Store(true)
			delete(f.behind, s)
			f.nCaught++
		}
	}
	return f.invalidate(ctx, invalid)
}

// writeLogs makes the records appended to the logs of work readable. They
// are not fsynced here: a shape log is made again from the durable stream
// log after a crash of the machine (routing resumes from the applied_seq
// of meta.json, which persist writes only after syncing the log), so one
// disk flush per touched shape per batch is not needed.
func writeLogs(work map[*Shape]*pending) error {
	for s, p := range work {
		if !p.dirty {
			continue
		}
		if err := s.log.Write(); err != nil && !s.isGone() {
			return fmt.Errorf("shape %s: %w", s.meta.Handle, err)
		}
	}
	return nil
}

// invalidate removes shapes whose table was truncated or changed, or whose
// where clause no longer fits it: their clients get 409 and refetch, and
// a new request makes a shape from the table as it is now.
func (f *fanout) invalidate(ctx context.Context, shapes []*Shape) error {
	if len(shapes) == 0 {
		return nil
	}
	for _, s := range shapes {
		inc(f.r.o.Counters.Invalidated)
		f.r.o.Log.Info("table truncated or changed: the shape is removed, its clients refetch", "shape", s.meta.Handle, "table", s.meta.Definition.String())
		if err := f.r.Delete(s); err != nil {
			return err
		}
	}
	if err := f.r.Reconcile(ctx); err != nil {
		f.r.o.Log.Warn("publication not reconciled after removing shapes", "err", err)
	}
	return nil
}
