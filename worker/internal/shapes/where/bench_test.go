package where_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

var benchTable sync.Once

// benchSet is a Set of n shapes over table bench, shape i having the clause
// expr with the params of i, on an Evaluator of where.DefaultConns
// connections.
func benchSet(b *testing.B, n int, expr string, params func(i int) []string) *where.Set {
	return benchSetConns(b, n, where.DefaultConns, expr, params)
}

// benchSetConns is benchSet on an Evaluator of conns connections.
func benchSetConns(b *testing.B, n, conns int, expr string, params func(i int) []string) *where.Set {
	return benchSetWith(b, n, conns, expr, params, func(p *where.Predicate) *where.Predicate { return p })
}

// benchSetWith is benchSetConns adding f(p) for each predicate p.
func benchSetWith(b *testing.B, n, conns int, expr string, params func(i int) []string, f func(*where.Predicate) *where.Predicate) *where.Set {
	b.Helper()
	benchTable.Do(func() { exec(b, `CREATE TABLE bench (id int8 PRIMARY KEY, name text, n int4)`) })
	ctx := context.Background()
	conn := connect(b)
	tb := table(b, conn, "public", "bench")
	ev := where.NewEvaluatorConns(dial, conns)
	b.Cleanup(func() { ev.Close() })
	set := where.NewSet(tb, ev)
	c, err := where.Parse(expr)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		p, err := where.Prepare(ctx, conn, tb, c, params(i))
		if err != nil {
			b.Fatal(err)
		}
		set.Add(i, f(p))
	}
	return set
}

// benchMatch matches batches of 100 rows whose ids fall in [0, span) and
// reports row changes per second.
func benchMatch(b *testing.B, set *where.Set, span int, want func(matches int) bool) {
	b.Helper()
	benchMatchRows(b, set, span, 100, want)
}

// benchMatchRows is benchMatch with batches of the given size.
func benchMatchRows(b *testing.B, set *where.Set, span, batch int, want func(matches int) bool) {
	b.Helper()
	cols := []string{"id", "name", "n"}
	rnd := rand.New(rand.NewPCG(1, 2))
	batches := make([][][]*string, 64)
	for k := range batches {
		for range batch {
			id, name, n := strconv.Itoa(rnd.IntN(span)), "x", "1"
			batches[k] = append(batches[k], []*string{&id, &name, &n})
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	matched := 0
	for i := 0; b.Loop(); i++ {
		out, err := set.Match(ctx, cols, batches[i%len(batches)])
		if err != nil {
			b.Fatal(err)
		}
		for _, ids := range out {
			matched += len(ids)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
	if !want(matched) {
		b.Fatalf("%d matches", matched)
	}
}

var benchSizes = []int{1, 100, 1000, 10000}

func BenchmarkMatchEquality(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			set := benchSet(b, n, "id = $1", func(i int) []string { return []string{strconv.Itoa(i)} })
			benchMatch(b, set, n, func(m int) bool { return m > 0 })
		})
	}
}

func BenchmarkMatchRange(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			set := benchSet(b, n, "id >= $1 AND id < $2", func(i int) []string {
				return []string{strconv.Itoa(i * 10), strconv.Itoa(i*10 + 10)}
			})
			benchMatch(b, set, n*10, func(m int) bool { return m > 0 })
		})
	}
}

func BenchmarkMatchBetween(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			set := benchSet(b, n, "id BETWEEN $1 AND $2", func(i int) []string {
				return []string{strconv.Itoa(i * 10), strconv.Itoa(i*10 + 19)} // overlapping
			})
			benchMatch(b, set, n*10, func(m int) bool { return m > 0 })
		})
	}
}

// slowClause has no fast path: PostgreSQL evaluates it.
const slowClause = "id % 1000 = $1 AND lower(name) = 'x'"

// BenchmarkMatchPostgres measures the path without a fast path.
func BenchmarkMatchPostgres(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			set := benchSet(b, n, slowClause, func(i int) []string { return []string{strconv.Itoa(i)} })
			benchMatch(b, set, 1000, func(m int) bool { return m > 0 })
		})
	}
}

// BenchmarkMatchPostgresConns measures 1,000 shapes without a fast path on
// one connection (the baseline) and on the pool, batches of 100 and of
// 1,000 rows (the pool splits a Match by chunk and by batch of rows).
func BenchmarkMatchPostgresConns(b *testing.B) {
	for _, conns := range []int{1, where.DefaultConns} {
		for _, rows := range []int{100, 1000} {
			b.Run(fmt.Sprintf("conns=%d/rows=%d", conns, rows), func(b *testing.B) {
				set := benchSetConns(b, 1000, conns, slowClause, func(i int) []string { return []string{strconv.Itoa(i)} })
				benchMatchRows(b, set, 1000, rows, func(m int) bool { return m > 0 })
			})
		}
	}
}

// BenchmarkMatchPreFilter measures shapes `id = $1 AND <slow part>`, one
// id each: found through the equality index by their pre-filter, the
// whole clause evaluated by PostgreSQL on the rows with that id
// (pre-filter), against the same clauses without the pre-filter (every
// row evaluated by PostgreSQL against every predicate: pure-slow). Rows
// have ids in [0, shapes), so each matches one shape.
func BenchmarkMatchPreFilter(b *testing.B) {
	const expr = "id = $1 AND lower(name) = 'x'"
	for _, n := range []int{1000, 10000} {
		for _, mode := range []string{"pre-filter", "pure-slow"} {
			b.Run(fmt.Sprintf("%d/%s", n, mode), func(b *testing.B) {
				f := func(p *where.Predicate) *where.Predicate {
					if !where.PreFiltered(p) {
						b.Fatal("no pre-filter")
					}
					return p
				}
				if mode == "pure-slow" {
					f = where.NoPreFilter
				}
				set := benchSetWith(b, n, where.DefaultConns, expr, func(i int) []string { return []string{strconv.Itoa(i)} }, f)
				benchMatch(b, set, n, func(m int) bool { return m > 0 })
			})
		}
	}
}
