package where

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// pair is a row whose pre-filter passed for an entry: PostgreSQL must
// evaluate the entry's whole clause on it.
type pair struct {
	row int
	e   *entry
}

// pairJob is one query evaluating pairs: its CASE branches and, per
// pair, the element [branch, index, row image] of the JSON array the
// query reads.
type pairJob struct {
	branches []*branch
	byKey    map[string]*branch
	nparams  int
	pairs    []pair
	elems    [][]byte
	size     int
	ok       []bool // per pair: the clause is true on the row
	errs     []predError
}

// branch is a CASE branch of a pair query: one predicate, its parameters
// bound as in a chunk; or a family, the predicates of one clause, each
// parameter bound as an array of their values (of the array type of the
// parameter's type, so each value is read by its type's input function
// as a bound parameter is), a pair's index picking its predicate's.
type branch struct {
	n       int // 1-based
	e       *entry
	members []*entry // of a family, by index - 1
	index   map[*entry]int
}

// matchPairs has PostgreSQL evaluate the whole clause of each pair's entry
// on the pair's row, and adds the entry to the row's matches where it is
// true. The pairs are split in queries of at most chunkPredicates
// branches and batchRows pairs, run at once on the Evaluator's
// connections.
func (g *pgPath) matchPairs(ctx context.Context, s *Set, rows []rowRef, pairs []pair, out [][]int) error {
	objs := map[int][]byte{}
	var jobs []*pairJob
	var j *pairJob
	for _, p := range pairs {
		obj, ok := objs[p.row]
		if !ok {
			obj = g.object(s, rows[p.row])
			objs[p.row] = obj
		}
		key := p.e.p.family
		if key == "" {
			key = "\x00" + strconv.Itoa(p.e.id)
		}
		var b *branch
		if j != nil {
			b = j.byKey[key]
		}
		if j == nil || len(j.pairs) >= batchRows || j.size+len(obj) > batchBytes ||
			b == nil && (len(j.branches) >= chunkPredicates || j.nparams+p.e.p.clause.nparams > chunkParams) {
			j = &pairJob{byKey: map[string]*branch{}}
			jobs = append(jobs, j)
			b = nil
		}
		if b == nil {
			b = &branch{n: len(j.branches) + 1, e: p.e}
			if p.e.p.family != "" {
				b.index = map[*entry]int{}
			}
			j.branches = append(j.branches, b)
			j.byKey[key] = b
			j.nparams += p.e.p.clause.nparams
		}
		idx := 0
		if b.index != nil {
			if idx = b.index[p.e]; idx == 0 {
				b.members = append(b.members, p.e)
				idx = len(b.members)
				b.index[p.e] = idx
			}
		}
		elem := make([]byte, 0, len(obj)+24)
		elem = append(elem, '[')
		elem = strconv.AppendInt(elem, int64(b.n), 10)
		elem = append(elem, ',')
		elem = strconv.AppendInt(elem, int64(idx), 10)
		elem = append(elem, ',')
		elem = append(append(elem, obj...), ']')
		j.pairs = append(j.pairs, p)
		j.elems = append(j.elems, elem)
		j.size += len(elem) + 1
	}
	if err := runJobs(ctx, s.ev.conns(), jobs, func(ctx context.Context, j *pairJob) error {
		return g.matchPairJob(ctx, s, j)
	}); err != nil {
		return err
	}
	for _, j := range jobs {
		for k, p := range j.pairs {
			if j.ok[k] {
				out[p.row] = append(out[p.row], p.e.id)
			}
		}
		if s.onError != nil {
			for _, e := range j.errs {
				s.onError(e.id, e.err)
			}
		}
	}
	return nil
}

// preparedBranches: a pair query of at most this many branches is
// prepared (the same few clauses come back batch after batch); larger ones,
// whose branches vary with the rows, are not.
const preparedBranches = 8

func (g *pgPath) matchPairJob(ctx context.Context, s *Set, j *pairJob) error {
	sql, oids, vals := g.pairQuery(j.branches)
	j.ok = make([]bool, len(j.pairs))
	all := make([]int, len(j.pairs))
	for k := range all {
		all[k] = k
	}
	return g.evalPairs(ctx, s, j, sql, oids, vals, all)
}

// evalPairs evaluates the pairs of j at the given indexes. When the query
// raises an error, it evaluates each half of them in turn, down to the
// single pairs that raise: those do not match and their errors are
// reported.
func (g *pgPath) evalPairs(ctx context.Context, s *Set, j *pairJob, sql string, oids []uint32, vals [][]byte, idx []int) error {
	elems := make([][]byte, len(idx))
	for n, k := range idx {
		elems[n] = j.elems[k]
	}
	res, err := s.ev.query(ctx, sql, oids, append(slices.Clip(vals), jsonArray(elems)), len(j.branches) <= preparedBranches)
	var ee *evalError
	if errors.As(err, &ee) {
		if len(idx) == 1 {
			j.errs = append(j.errs, predError{id: j.pairs[idx[0]].e.id, err: err})
			return nil
		}
		half := len(idx) / 2
		if err := g.evalPairs(ctx, s, j, sql, oids, vals, idx[:half]); err != nil {
			return err
		}
		return g.evalPairs(ctx, s, j, sql, oids, vals, idx[half:])
	}
	if err != nil {
		return err
	}
	if len(res) != len(idx) {
		return fmt.Errorf("evaluate: %d results for %d pairs", len(res), len(idx))
	}
	for n, v := range res {
		j.ok[idx[n]] = string(v) == "t"
	}
	return nil
}

// pairQuery is the query evaluating pairs with the given branches: its
// parameters are the branches', then the pairs as a JSON array of
// [branch, index, row image]. Each pair's row is made a row of the
// table's type in a subquery of its own, where the clause's column names
// can only mean the table's columns; the branch picks the clause (a simple
// CASE evaluates only the branch it selects).
func (g *pgPath) pairQuery(branches []*branch) (string, []uint32, [][]byte) {
	alias := "baton_pair"
	if g.table.Name == alias {
		alias += "_"
	}
	var oids []uint32
	var vals [][]byte
	var b strings.Builder
	fmt.Fprintf(&b, "SELECT (SELECT (CASE (%s.v OPERATOR(pg_catalog.->>) 0)::pg_catalog.int4", alias)
	for _, br := range branches {
		p := br.e.p
		if br.members == nil {
			fmt.Fprintf(&b, " WHEN %d THEN (%s)", br.n, p.clause.sqlShifted(len(oids)))
			oids = append(oids, p.paramOIDs...)
			vals = append(vals, textValues(p.params)...)
			continue
		}
		base := len(oids)
		fmt.Fprintf(&b, " WHEN %d THEN (%s)", br.n, p.clause.sqlParams(func(k int) string {
			return fmt.Sprintf("(($%d)[(%s.v OPERATOR(pg_catalog.->>) 1)::pg_catalog.int4])", base+k, alias)
		}))
		oids = append(oids, p.arrayOIDs...)
		for k := range p.params {
			vals = append(vals, arrayLiteral(br.members, k))
		}
	}
	b.WriteString(" END) IS TRUE FROM ")
	b.WriteString(g.rowFrom(alias + ".v OPERATOR(pg_catalog.->) 2"))
	oids = append(oids, oidJSON)
	fmt.Fprintf(&b, ") FROM pg_catalog.json_array_elements($%d::pg_catalog.json) WITH ORDINALITY AS %s(v, o) ORDER BY %s.o", len(oids), alias, alias)
	return b.String(), oids, vals
}

// arrayLiteral is the text of an array of the members' parameter k.
func arrayLiteral(members []*entry, k int) []byte {
	b := []byte{'{'}
	for i, e := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for _, c := range []byte(e.p.params[k]) {
			if c == '"' || c == '\\' {
				b = append(b, '\\')
			}
			b = append(b, c)
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// rowFrom is a FROM item of one row of the table's type, read from the
// JSON row image src (as object writes it).
func (g *pgPath) rowFrom(src string) string {
	rowtype := "NULL::" + g.table.ident()
	alias := quoteIdent(g.table.Name)
	if len(g.json) == 0 {
		return fmt.Sprintf("pg_catalog.json_populate_record(%s, %s) AS %s", rowtype, src, alias)
	}
	var b bytes.Buffer
	b.WriteString("(SELECT ")
	g.project(&b, "("+src+")")
	fmt.Fprintf(&b, " FROM pg_catalog.json_populate_record(%s, (%s) OPERATOR(pg_catalog.->) 0) AS r) AS %s", rowtype, src, alias)
	return b.String()
}
