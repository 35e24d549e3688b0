package where

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"
)

// pgPath evaluates predicates without a fast path in PostgreSQL. They are
// grouped in chunks; each chunk is one query that turns a batch of row
// images back into rows of the table's type (json_populate_recordset gives
// every column its declared type and collation) and returns, per row, the
// positions of the chunk's predicates that are true on it.
//
// Every value travels as a JSON string, read by its type's input function.
// json and jsonb values cannot (json_populate_recordset would take the
// string for a JSON string, and a JSON null for SQL NULL): when predicates
// refer to such columns, each row is a pair [values, JSON values] and those
// are cast from text in a subquery.
type pgPath struct {
	table  Table
	chunks []*chunk
	cols   map[string]int  // columns the predicates refer to → number of predicates
	json   map[string]bool // of those, the ones whose values are JSON text
}

// chunk is a group of predicates evaluated by one query.
type chunk struct {
	entries []*entry
	nparams int
	sql     string // "" when the predicates changed
	oids    []uint32
	vals    [][]byte
}

// Limits of a chunk and of the rows sent with one query.
const (
	chunkPredicates = 200
	chunkParams     = 30000
	batchRows       = 2000
	batchBytes      = 8 << 20
)

func (g *pgPath) init(t Table) {
	g.table = t
	g.cols, g.json = map[string]int{}, map[string]bool{}
}

// from is the FROM clause of the queries, the rows being parameter $n.
func (g *pgPath) from(n int) string {
	rowtype := "NULL::" + g.table.ident()
	alias := quoteIdent(g.table.Name)
	if len(g.json) == 0 {
		return fmt.Sprintf("pg_catalog.json_populate_recordset(%s, $%d::pg_catalog.json) AS %s", rowtype, n, alias)
	}
	var b strings.Builder
	b.WriteString("(SELECT ")
	g.project(&b, "x.v")
	fmt.Fprintf(&b, " FROM pg_catalog.json_array_elements($%d::pg_catalog.json) WITH ORDINALITY AS x(v, o),"+
		" pg_catalog.json_populate_record(%s, x.v OPERATOR(pg_catalog.->) 0) AS r ORDER BY x.o) AS %s", n, rowtype, alias)
	return b.String()
}

// project writes the select list of a row of the referenced columns:
// r's columns, but JSON ones, which are read as text from elem's element
// 1 (the values object writes) and cast to their type.
func (g *pgPath) project(b io.Writer, elem string) {
	names := make([]string, 0, len(g.cols))
	for name := range g.cols {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		if i > 0 {
			io.WriteString(b, ", ")
		}
		if g.json[name] {
			typ := g.table.Columns[g.table.ordinal(name)].Type
			fmt.Fprintf(b, "(%s OPERATOR(pg_catalog.->) 1 OPERATOR(pg_catalog.->>) %s)::%s AS %s", elem, quoteLiteral(name), typ, quoteIdent(name))
		} else {
			io.WriteString(b, "r."+quoteIdent(name))
		}
	}
}

// columnsChanged makes every chunk rebuild its query when the FROM clause
// depends on the referenced columns.
func (g *pgPath) columnsChanged() {
	for _, c := range g.chunks {
		c.sql = ""
	}
}

func (g *pgPath) len() int {
	n := 0
	for _, c := range g.chunks {
		n += len(c.entries)
	}
	return n
}

func (g *pgPath) add(e *entry) {
	var c *chunk
	if k := len(g.chunks); k > 0 {
		last := g.chunks[k-1]
		if len(last.entries) < chunkPredicates && last.nparams+e.p.clause.nparams <= chunkParams {
			c = last
		}
	}
	if c == nil {
		c = &chunk{}
		g.chunks = append(g.chunks, c)
	}
	c.entries = append(c.entries, e)
	c.nparams += e.p.clause.nparams
	c.sql = ""
	e.chunk = c
	changed := false
	for _, name := range e.p.clause.columns {
		if g.cols[name]++; g.cols[name] == 1 {
			changed = true
		}
		if e.p.json[name] {
			g.json[name] = true
		}
	}
	if changed && len(g.json) > 0 {
		g.columnsChanged()
	}
}

func (g *pgPath) remove(e *entry) {
	c := e.chunk
	i := slices.Index(c.entries, e)
	c.entries = slices.Delete(c.entries, i, i+1)
	c.nparams -= e.p.clause.nparams
	c.sql = ""
	if len(c.entries) == 0 {
		i := slices.Index(g.chunks, c)
		g.chunks = slices.Delete(g.chunks, i, i+1)
	}
	changed := false
	for _, name := range e.p.clause.columns {
		if g.cols[name]--; g.cols[name] == 0 {
			delete(g.cols, name)
			delete(g.json, name)
			changed = true
		}
	}
	if changed && len(g.json) > 0 {
		g.columnsChanged()
	}
}

// query builds the chunk's query: its predicates' parameters come first,
// then the rows as $n::json.
func (g *pgPath) query(c *chunk) {
	if c.sql != "" {
		return
	}
	var b strings.Builder
	b.WriteString("SELECT pg_catalog.array_positions(ARRAY[")
	c.oids, c.vals = c.oids[:0], c.vals[:0]
	for i, e := range c.entries {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		b.WriteString(e.p.clause.sqlShifted(len(c.oids)))
		b.WriteString(")")
		c.oids = append(c.oids, e.p.paramOIDs...)
		for _, v := range e.p.params {
			c.vals = append(c.vals, []byte(v))
		}
	}
	b.WriteString("]::pg_catalog.bool[], true) FROM ")
	b.WriteString(g.from(len(c.oids) + 1))
	c.oids = append(c.oids, oidJSON)
	c.sql = b.String()
}

// single is the query evaluating one predicate.
func (g *pgPath) single(e *entry) string {
	return "SELECT (" + e.p.clause.sql + ") IS TRUE FROM " + g.from(e.p.clause.nparams+1)
}

// match adds to out the ids of the PostgreSQL-evaluated predicates true on
// each row. The rows are split in batches and every batch is sent to every
// chunk; these queries run at once on the Evaluator's connections. Errors
// predicates raise are told to the Set's OnError function from the calling
// goroutine, after the queries.
func (g *pgPath) match(ctx context.Context, s *Set, rows []rowRef, out [][]int) error {
	objs := make([][]byte, len(rows))
	for i, r := range rows {
		objs[i] = g.object(s, r)
	}
	for _, c := range g.chunks {
		g.query(c) // before the queries run: it writes the chunk
	}
	var jobs []*chunkJob
	for start := 0; start < len(rows); {
		end, size := start, 2
		for end < len(rows) && end-start < batchRows && (end == start || size+len(objs[end]) <= batchBytes) {
			size += len(objs[end]) + 1
			end++
		}
		for _, c := range g.chunks {
			jobs = append(jobs, &chunkJob{c: c, start: start, objs: objs[start:end]})
		}
		start = end
	}
	if err := runJobs(ctx, s.ev.conns(), jobs, func(ctx context.Context, j *chunkJob) error {
		return g.matchChunk(ctx, s, j)
	}); err != nil {
		return err
	}
	for _, j := range jobs {
		for i, ids := range j.ids {
			out[j.start+i] = append(out[j.start+i], ids...)
		}
		j.report(s)
	}
	return nil
}

// chunkJob is one query: a batch of rows (from row start) against a chunk,
// and what it found.
type chunkJob struct {
	c     *chunk
	start int
	objs  [][]byte
	ids   [][]int // per row of the batch, the ids of the predicates true on it
	errs  []predError
}

// predError is an error a predicate raised on a row.
type predError struct {
	id  int
	err error
}

func (j *chunkJob) report(s *Set) {
	if s.onError == nil {
		return
	}
	for _, e := range j.errs {
		s.onError(e.id, e.err)
	}
}

// runJobs runs f on every job, up to n at once; the first error cancels
// the others and is returned.
func runJobs[J any](ctx context.Context, n int, jobs []J, f func(context.Context, J) error) error {
	if len(jobs) == 1 || n <= 1 {
		for _, j := range jobs {
			if err := f(ctx, j); err != nil {
				return err
			}
		}
		return nil
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(n)
	for _, j := range jobs {
		eg.Go(func() error { return f(ctx, j) })
	}
	return eg.Wait()
}

func (g *pgPath) matchChunk(ctx context.Context, s *Set, j *chunkJob) error {
	c := j.c
	vals := append(slices.Clip(c.vals), jsonArray(j.objs))
	res, err := s.ev.query(ctx, c.sql, c.oids, vals, true)
	j.ids = make([][]int, len(j.objs))
	var ee *evalError
	if errors.As(err, &ee) {
		return g.fallback(ctx, s, j)
	}
	if err != nil {
		return err
	}
	if len(res) != len(j.objs) {
		return fmt.Errorf("evaluate: %d results for %d rows", len(res), len(j.objs))
	}
	for i, v := range res {
		if err := positions(v, func(p int) { j.ids[i] = append(j.ids[i], c.entries[p-1].id) }); err != nil {
			return err
		}
	}
	return nil
}

// fallback evaluates the predicates of a chunk one by one after the chunk
// raised an error, and a predicate that raises one row by row.
func (g *pgPath) fallback(ctx context.Context, s *Set, j *chunkJob) error {
	objs := j.objs
	for _, e := range j.c.entries {
		sql := g.single(e)
		oids := append(slices.Clip(e.p.paramOIDs), oidJSON)
		vals := textValues(append(slices.Clip(e.p.params), ""))
		try := func(objs [][]byte) ([][]byte, error) {
			vals[len(vals)-1] = jsonArray(objs)
			return s.ev.query(ctx, sql, oids, vals, false)
		}
		res, err := try(objs)
		var ee *evalError
		if errors.As(err, &ee) {
			res = make([][]byte, len(objs))
			for i := range objs {
				r, err := try(objs[i : i+1])
				if errors.As(err, &ee) {
					j.errs = append(j.errs, predError{id: e.id, err: err})
					continue
				}
				if err != nil {
					return err
				}
				if len(r) == 1 {
					res[i] = r[0]
				}
			}
		} else if err != nil {
			return err
		}
		for i, v := range res {
			if string(v) == "t" {
				j.ids[i] = append(j.ids[i], e.id)
			}
		}
	}
	return nil
}

// object is the JSON object of a row's values for the referenced columns,
// their text as strings, null for NULL; when json or jsonb columns are
// referenced, a pair of objects: the other values, the JSON values.
func (g *pgPath) object(s *Set, r rowRef) []byte {
	var b bytes.Buffer
	if len(g.json) == 0 {
		g.values(&b, s, r, false)
		return b.Bytes()
	}
	b.WriteByte('[')
	g.values(&b, s, r, false)
	b.WriteByte(',')
	g.values(&b, s, r, true)
	b.WriteByte(']')
	return b.Bytes()
}

func (g *pgPath) values(b *bytes.Buffer, s *Set, r rowRef, json bool) {
	b.WriteByte('{')
	first := true
	for name := range g.cols {
		if g.json[name] != json {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(b, name)
		b.WriteByte(':')
		if v := r.get(s.ordinal[name]); v == nil {
			b.WriteString("null")
		} else {
			writeJSONString(b, *v)
		}
	}
	b.WriteByte('}')
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // a string always marshals
	b.Write(enc)
}

func jsonArray(objs [][]byte) []byte {
	n := 2
	for _, o := range objs {
		n += len(o) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, o := range objs {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, o...)
	}
	return append(out, ']')
}

// positions reads the text of an int[] such as {1,3}.
func positions(v []byte, f func(int)) error {
	s := string(v)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return fmt.Errorf("evaluate: unexpected result %q", s)
	}
	if s = s[1 : len(s)-1]; s == "" {
		return nil
	}
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("evaluate: unexpected result %q", v)
		}
		f(n)
	}
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
