package where

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Set holds the predicates of many shapes over one table and matches row
// images against all of them. It is not safe for concurrent use: one
// goroutine (the router) owns it.
type Set struct {
	table   Table
	ev      *Evaluator
	ordinal map[string]int
	onError func(id int, err error)

	entries map[int]*entry
	eq      map[int]map[string][]*entry // column ordinal → canonical value → entries
	ranges  map[int]*intervals          // column ordinal → entries by integer range
	eqCols  []int                       // the keys of eq and ranges, for iterating
	rgCols  []int
	scan    []*entry // fast entries without an index
	pg      pgPath
	pre     pgPath // pre-filtered entries: their columns; PostgreSQL evaluates pairs

	scratch []*entry
	pairs   []pair
}

// entry is one predicate of a Set and where it is indexed.
type entry struct {
	id     int
	p      *Predicate
	where  int // placement: one of the place* constants
	col    int // indexed column ordinal (eq, range)
	keys   []string
	lo, hi int64
	chunk  *chunk
	// check: placed by the predicate's pre-filter, which only selects the
	// rows PostgreSQL evaluates the whole clause on.
	check bool
}

const (
	placeNever = iota
	placeEq
	placeRange
	placeScan
	placePG
)

// NewSet returns an empty Set for table t whose predicates without a fast
// path are evaluated on ev.
func NewSet(t Table, ev *Evaluator) *Set {
	s := &Set{
		table: t, ev: ev, ordinal: map[string]int{}, entries: map[int]*entry{},
		eq: map[int]map[string][]*entry{}, ranges: map[int]*intervals{},
	}
	for i, c := range t.Columns {
		s.ordinal[c.Name] = i
	}
	s.pg.init(t)
	s.pre.init(t)
	return s
}

// OnError sets the function told about a predicate that raised an error
// while PostgreSQL evaluated it on a row (such a row does not match). It is
// called from Match.
func (s *Set) OnError(f func(id int, err error)) { s.onError = f }

// Len is the number of predicates.
func (s *Set) Len() int { return len(s.entries) }

// Add adds (or replaces) the predicate of shape id. p must have been
// prepared for the Set's table.
func (s *Set) Add(id int, p *Predicate) {
	if p.table.Schema != s.table.Schema || p.table.Name != s.table.Name {
		panic(fmt.Sprintf("where: predicate for %s added to the set of %s", p.table.ident(), s.table.ident()))
	}
	s.Remove(id)
	e := &entry{id: id, p: p}
	s.entries[id] = e
	s.place(e)
}

// Remove removes the predicate of shape id, if any.
func (s *Set) Remove(id int) {
	e, ok := s.entries[id]
	if !ok {
		return
	}
	delete(s.entries, id)
	switch e.where {
	case placeEq:
		for _, k := range e.keys {
			b := s.eq[e.col][k]
			if i := slices.Index(b, e); i >= 0 {
				b[i] = b[len(b)-1]
				b = b[:len(b)-1]
			}
			if len(b) == 0 {
				delete(s.eq[e.col], k)
			} else {
				s.eq[e.col][k] = b
			}
		}
		if len(s.eq[e.col]) == 0 {
			delete(s.eq, e.col)
			s.eqCols = slices.DeleteFunc(s.eqCols, func(c int) bool { return c == e.col })
		}
	case placeRange:
		x := s.ranges[e.col]
		x.remove(e)
		if x.n == 0 {
			delete(s.ranges, e.col)
			s.rgCols = slices.DeleteFunc(s.rgCols, func(c int) bool { return c == e.col })
		}
	case placeScan:
		i := slices.Index(s.scan, e)
		s.scan = slices.Delete(s.scan, i, i+1)
	case placePG:
		s.pg.remove(e)
	}
	if e.check {
		s.pre.remove(e)
	}
}

// place indexes a new entry: by equality if the plan pins a column to a set
// of values, by range if it bounds an integer column, in the scan list if
// neither; with PostgreSQL if there is no plan. A predicate with a
// pre-filter is placed by it when it pins a column or bounds an integer
// one; else its pre-filter is not used (checking it on every row and
// sending PostgreSQL (row, predicate) pairs costs more than the batch
// query when it is not selective).
func (s *Set) place(e *entry) {
	plan := e.p.plan
	if pre := e.p.pre; plan == nil && pre != nil && (pre.never || pre.indexed()) {
		plan, e.check = pre, !pre.never
	}
	switch {
	case plan == nil:
		e.where = placePG
		s.pg.add(e)
		return
	case plan.never:
		e.where = placeNever
		return
	}
	if e.check {
		s.pre.add(e)
	}
	for _, c := range plan.ints {
		if c.in != nil || c.lo == c.hi {
			vals := c.in
			if vals == nil {
				vals = []int64{c.lo}
			}
			for _, v := range vals {
				e.keys = append(e.keys, strconv.FormatInt(v, 10))
			}
			s.placeEq(e, c.col)
			return
		}
	}
	for _, c := range plan.strs {
		if c.in != nil {
			for k := range c.in {
				e.keys = append(e.keys, k)
			}
			s.placeEq(e, c.col)
			return
		}
	}
	for _, c := range plan.ints {
		if c.lo != math.MinInt64 || c.hi != math.MaxInt64 {
			e.where, e.col, e.lo, e.hi = placeRange, c.col, c.lo, c.hi
			x := s.ranges[c.col]
			if x == nil {
				x = &intervals{}
				s.ranges[c.col] = x
				s.rgCols = append(s.rgCols, c.col)
			}
			x.add(e)
			return
		}
	}
	e.where = placeScan
	s.scan = append(s.scan, e)
}

func (s *Set) placeEq(e *entry, col int) {
	e.where, e.col = placeEq, col
	m := s.eq[col]
	if m == nil {
		m = map[string][]*entry{}
		s.eq[col] = m
		s.eqCols = append(s.eqCols, col)
	}
	for _, k := range e.keys {
		m[k] = append(m[k], e)
	}
}

// rowRef is a row image seen through the Set's column ordinals.
type rowRef struct {
	pos  []int // column ordinal → index in vals, -1 if absent
	vals []*string
}

func (r rowRef) get(ord int) *string {
	if p := r.pos[ord]; p >= 0 && p < len(r.vals) {
		return r.vals[p]
	}
	return nil
}

// Match returns, for each row, the ids of the shapes whose predicate is true
// on it, in increasing order (false and NULL do not match). A row is the
// text of the columns named in cols as logical replication delivers them,
// nil for NULL; a column the row lacks is NULL, so rows must carry every
// column the predicates refer to (unchanged TOASTed values included). It
// blocks while PostgreSQL evaluates, and returns an error only when it
// could not (the connection broke, ctx ended); an error a predicate raises
// on a row goes to the OnError function and the row does not match it.
func (s *Set) Match(ctx context.Context, cols []string, rows [][]*string) ([][]int, error) {
	pos := make([]int, len(s.table.Columns))
	for i := range pos {
		pos[i] = -1
	}
	for i, c := range cols {
		if o, ok := s.ordinal[c]; ok {
			pos[o] = i
		}
	}
	out := make([][]int, len(rows))
	s.pairs = s.pairs[:0]
	for i, vals := range rows {
		out[i] = s.matchFast(i, rowRef{pos: pos, vals: vals}, out[i])
	}
	if s.pg.len() > 0 {
		if err := s.pg.match(ctx, s, rowsOf(pos, rows), out); err != nil {
			return nil, err
		}
	}
	if len(s.pairs) > 0 {
		if err := s.pre.matchPairs(ctx, s, rowsOf(pos, rows), s.pairs, out); err != nil {
			return nil, err
		}
	}
	for _, ids := range out {
		if len(ids) > 1 {
			slices.Sort(ids)
		}
	}
	return out, nil
}

func rowsOf(pos []int, rows [][]*string) []rowRef {
	out := make([]rowRef, len(rows))
	for i, r := range rows {
		out[i] = rowRef{pos: pos, vals: r}
	}
	return out
}

// matchFast adds to ids the fast entries true on row i, and to s.pairs
// the pre-filtered entries whose pre-filter is true on it.
func (s *Set) matchFast(i int, r rowRef, ids []int) []int {
	for _, col := range s.eqCols {
		if v := r.get(col); v != nil {
			for _, e := range s.eq[col][*v] {
				ids = s.hit(i, r, e, ids)
			}
		}
	}
	for _, col := range s.rgCols {
		x := s.ranges[col]
		v := r.get(col)
		if v == nil {
			continue
		}
		n, err := strconv.ParseInt(*v, 10, 64)
		if err != nil {
			continue
		}
		s.scratch = x.find(n, s.scratch[:0])
		for _, e := range s.scratch {
			ids = s.hit(i, r, e, ids)
		}
	}
	for _, e := range s.scan {
		ids = s.hit(i, r, e, ids)
	}
	return ids
}

// hit checks an entry found for row i: a fast one is decided, a
// pre-filtered one goes to PostgreSQL if its pre-filter holds.
func (s *Set) hit(i int, r rowRef, e *entry, ids []int) []int {
	switch {
	case e.check:
		if e.p.pre.match(r) {
			s.pairs = append(s.pairs, pair{row: i, e: e})
		}
	case e.p.plan.match(r):
		ids = append(ids, e.id)
	}
	return ids
}

// indexed reports whether place would find the plan's entry through an
// index: an equality or a set of values on a column, or a bounded integer
// range.
func (p *fastPlan) indexed() bool {
	for _, c := range p.ints {
		if c.in != nil || c.lo != math.MinInt64 || c.hi != math.MaxInt64 {
			return true
		}
	}
	for _, c := range p.strs {
		if c.in != nil {
			return true
		}
	}
	return false
}
