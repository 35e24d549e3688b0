package where_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

// Conjuncts of the randomized differential test. %v is a constant of the
// column named first: a literal or a parameter.
var (
	// fast conjuncts that pin a column or bound an integer one: a
	// clause with one of them and a slow one is pre-filtered.
	conjIndexed = []string{
		"i4 = %v", "i4 IN (%v, %v)", "i4 BETWEEN %v AND %v", "i4 > 5.5", "i4 = 5.5",
		"i8 = %v", "i8 >= %v", "i2 = %v", "t = %v", "t IN (%v, %v)", "v = %v", "u = %v", "ti = %v",
	}
	conjFast = []string{"b", "NOT b", "i2 IS NULL", "t IS NOT NULL", "tc >= 'Z'", "i4 <> %v"}
	conjSlow = []string{
		"lower(t) = 'zebra'", "100 / i4 > 1", "i4 + 2147483647 > 0", "f > 0.5", "ia @> '{1}'", "i8 % 3 = 1",
		"j ->> 'a' = 'x'", `"Odd ""col""" ->> 'a' = 'x'`, "t ~ '^[A-Z]'", "n * 2 = 11", "coalesce(i4, 0) = 0",
		"ts::date = '2020-03-29'", "tnd = 'ZEBRA'", "length(ti) > 4", "i4 IS DISTINCT FROM 5",
		"(i4 = 5 OR t = 'x')", "d < '2000-01-01'", "NOT (i2 = 5)", "100 / i2 < 1",
	}
)

// conjClause is a random conjunction of fast and slow conjuncts, its
// constants drawn from the values of the columns.
func conjClause(rng *rand.Rand) (string, []string) {
	var parts []string
	for range rng.IntN(3) {
		if rng.IntN(4) > 0 {
			parts = append(parts, conjIndexed[rng.IntN(len(conjIndexed))])
		} else {
			parts = append(parts, conjFast[rng.IntN(len(conjFast))])
		}
	}
	for range 1 + rng.IntN(2) {
		parts = append(parts, conjSlow[rng.IntN(len(conjSlow))])
	}
	rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	var params []string
	for i, p := range parts {
		col := strings.Fields(p)[0]
		var vals []string
		for _, c := range diffColumns {
			if c.name == col {
				vals = c.vals[1:] // not NULL
			}
		}
		var args []any
		for range strings.Count(p, "%v") {
			lit := vals[rng.IntN(len(vals))]
			if rng.IntN(2) == 0 {
				args = append(args, lit)
				continue
			}
			if strings.HasPrefix(lit, "'") {
				lit = strings.ReplaceAll(lit[1:len(lit)-1], "''", "'")
			}
			params = append(params, lit)
			args = append(args, "$"+strconv.Itoa(len(params)))
		}
		if len(args) > 0 {
			parts[i] = fmt.Sprintf(p, args...)
		}
	}
	if len(parts) > 2 && rng.IntN(2) == 0 {
		parts[0] = "(" + parts[0] + " AND " + parts[1] + ")"
		parts = slices.Delete(parts, 1, 2)
	}
	return strings.Join(parts, " AND "), params
}

// fixed conjunctions: errors in the slow part on rows the pre-filter
// passes, NULLs, a contradiction, a JSON column.
var conjFixed = []struct {
	expr   string
	params []string
}{
	{"i4 = 0 AND 100 / i4 > 1", nil},
	{"100 / i4 > 1 AND i4 IN (0, 5)", nil},
	{"i4 = $1 AND (i2 IS NULL OR 100 / i2 > 1)", []string{"5"}},
	{"t = $1 AND lower(t) = $2", []string{"Zebra", "zebra"}},
	{"i4 = 5.5 AND lower(t) = 'zebra'", nil},
	{"i8 >= $1 AND j IS NOT NULL AND j ->> 'a' = 'x'", []string{"5"}},
	{"u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AND b IS NOT TRUE", nil},
}

// Randomized differential test of conjunctions mixing fast and slow
// conjuncts: over random rows, a Set (the pool, pre-filters) gives
// PostgreSQL's answer, and the answer of a Set evaluating every clause
// wholly in PostgreSQL on one connection. BATON_WHERE_SEED replays a run.
func TestDifferentialConjunctions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATON_WHERE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BATON_WHERE_SEED: %v", err)
		}
	}
	t.Logf("seed %d (BATON_WHERE_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 14))
	const rows = 200
	exec(t, "DROP TABLE IF EXISTS conj;\n"+diffTableDDL("conj", rows, func(r, k int, vals []string) string {
		if rng.IntN(5) == 0 {
			return "NULL"
		}
		return vals[rng.IntN(len(vals))]
	}))
	ctx := context.Background()
	conn := connect(t)
	tb := table(t, conn, "public", "conj")
	cols, images := rowImages(t, conn, "SELECT * FROM conj ORDER BY id")

	pool := where.NewEvaluator(dial)
	one := where.NewEvaluatorConns(dial, 1)
	t.Cleanup(func() { pool.Close(); one.Close() })
	set, ref := where.NewSet(tb, pool), where.NewSet(tb, one)
	// safe has the clauses that raise no error, so that no query of its
	// falls back to smaller ones.
	safe := where.NewSet(tb, pool)
	raises := func(expr string) bool {
		return strings.Contains(expr, "100 /") || strings.Contains(expr, "+ 2147483647")
	}
	safe.OnError(func(id int, err error) { t.Errorf("%d: %v", id, err) })
	errs, refErrs := map[int]int{}, map[int]int{}
	set.OnError(func(id int, err error) { errs[id]++ })
	ref.OnError(func(id int, err error) { refErrs[id]++ })

	type clause struct {
		expr   string
		params []string
		pre    bool
	}
	var clauses []clause
	for _, c := range conjFixed {
		clauses = append(clauses, clause{expr: c.expr, params: c.params})
	}
	for range 120 {
		expr, params := conjClause(rng)
		clauses = append(clauses, clause{expr: expr, params: params})
	}
	// Families: many predicates of one clause, their parameters bound as
	// arrays (values that need quoting in an array's text among them).
	odd := []string{`a"b`, `c\d`, `{x,y}`, ` sp `, "NULL", `""`, `é"\`, "", "'"}
	i4s := diffColumns[0].vals[1:]
	for range 40 {
		v := odd[rng.IntN(len(odd))]
		clauses = append(clauses, clause{expr: "i4 = $1 AND length($2) = $3",
			params: []string{i4s[rng.IntN(len(i4s))], v, strconv.Itoa(len([]rune(v)))}})
		lit := texts[1+rng.IntN(len(texts)-1)]
		lit = lit[1 : len(lit)-1]
		clauses = append(clauses, clause{expr: "t = $1 AND lower(t) = lower($2)", params: []string{lit, lit}})
	}
	pre := 0
	for i := range clauses {
		c := &clauses[i]
		cl, err := where.Parse(c.expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		p, err := where.Prepare(ctx, conn, tb, cl, c.params)
		if err != nil {
			t.Fatalf("Prepare(%q, %q): %v", c.expr, c.params, err)
		}
		if c.pre = where.PreFiltered(p); c.pre {
			pre++
		}
		set.Add(i, p)
		ref.Add(i, where.SlowPath(p))
		if !raises(c.expr) {
			safe.Add(i, p)
		}
	}
	if pre < len(clauses)/4 {
		t.Fatalf("only %d of %d clauses pre-filtered", pre, len(clauses))
	}
	got, err := set.Match(ctx, cols, images)
	if err != nil {
		t.Fatal(err)
	}
	gotRef, err := ref.Match(ctx, cols, images)
	if err != nil {
		t.Fatal(err)
	}
	gotSafe, err := safe.Match(ctx, cols, images)
	if err != nil {
		t.Fatal(err)
	}
	matched := func(out [][]int, id int) []int {
		var rs []int
		for r, m := range out {
			if slices.Contains(m, id) {
				rs = append(rs, r)
			}
		}
		return rs
	}
	for i, c := range clauses {
		want := expected(t, conn, "conj", rows, c.expr, c.params)
		if g, r := matched(got, i), matched(gotRef, i); !slices.Equal(g, want) || !slices.Equal(r, want) {
			t.Errorf("%q %q (pre-filtered %v): PostgreSQL matches rows %v; the Set %v, one connection without pre-filter %v",
				c.expr, c.params, c.pre, want, g, r)
		}
		if g := matched(gotSafe, i); !raises(c.expr) && !slices.Equal(g, want) {
			t.Errorf("%q %q (pre-filtered %v): PostgreSQL matches rows %v; the Set of clauses that raise no error %v",
				c.expr, c.params, c.pre, want, g)
		}
		// A pre-filter leaves out rows (and so the errors they would
		// raise); otherwise the same errors are reported.
		if c.pre && errs[i] > refErrs[i] || !c.pre && errs[i] != refErrs[i] {
			t.Errorf("%q (pre-filtered %v): %d errors reported; %d without pre-filter", c.expr, c.pre, errs[i], refErrs[i])
		}
	}
	if errs[0] == 0 {
		t.Errorf("%q: no error reported (no row has i4 = 0?)", clauses[0].expr)
	}

	// Removing predicates leaves the others' matches as they were.
	for i := range clauses {
		if i%2 == 0 {
			set.Remove(i)
		}
	}
	again, err := set.Match(ctx, cols, images)
	if err != nil {
		t.Fatal(err)
	}
	for r := range got {
		want := slices.DeleteFunc(slices.Clone(got[r]), func(id int) bool { return id%2 == 0 })
		if !slices.Equal(again[r], want) {
			t.Errorf("row %d after removing the even ids: %v, want %v", r, again[r], want)
		}
	}
}
