package where_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

func TestParseAccepts(t *testing.T) {
	for _, c := range []struct {
		name, in, sql string
		cols          []string
		params        int
	}{
		{"equality", "id = $1", "id = $1", []string{"id"}, 1},
		{"and or not", "NOT (a > 1 OR b <= 2) AND c <> 3", "NOT (a > 1 OR b <= 2) AND c <> 3", []string{"a", "b", "c"}, 0},
		{"bang equals", "a != 1", "a <> 1", []string{"a"}, 0},
		{"null tests", "a IS NULL AND b IS NOT NULL", "a IS NULL AND b IS NOT NULL", []string{"a", "b"}, 0},
		{"distinct", "a IS DISTINCT FROM $1 OR a IS NOT DISTINCT FROM $2", "a IS DISTINCT FROM $1 OR a IS NOT DISTINCT FROM $2", []string{"a"}, 2},
		{"in", "a IN (1, 2, 3) AND b NOT IN ('x')", "a IN (1, 2, 3) AND b NOT IN ('x')", []string{"a", "b"}, 0},
		{"between", "a BETWEEN $1 AND $2 AND b NOT BETWEEN SYMMETRIC 1 AND 0", "a BETWEEN $1 AND $2 AND b NOT BETWEEN SYMMETRIC 1 AND 0", []string{"a", "b"}, 2},
		{"like", "a LIKE 'x%' AND b NOT ILIKE $1", "a LIKE 'x%' AND b NOT ILIKE $1", []string{"a", "b"}, 1},
		{"regex", "a ~ '^x' AND a !~* 'y'", "a ~ '^x' AND a !~* 'y'", []string{"a"}, 0},
		{"arithmetic", "(a + 1) * 2 - b / 3 % 4 > -a", "(((a + 1) * 2) - ((b / 3) % 4)) > (- a)", []string{"a", "b"}, 0},
		{"casts", "a::text = '1' AND CAST(b AS numeric(10,2)) > 1.5 AND c::int[] @> '{1}'", "a::pg_catalog.text = '1' AND b::numeric(10, 2) > 1.5 AND c::int[] @> '{1}'", []string{"a", "b", "c"}, 0},
		{"any", "a = ANY($1) AND b <> ALL(ARRAY[1,2])", "a = ANY($1) AND b <> ALL(ARRAY[1, 2])", []string{"a", "b"}, 1},
		{"arrays", "tags @> ARRAY['a'] AND tags <@ $1 AND tags && '{b}'", "tags @> ARRAY['a'] AND tags <@ $1 AND tags && '{b}'", []string{"tags"}, 1},
		{"functions", "lower(a) = upper(b) AND length(a) > abs(c)", "pg_catalog.lower(a) = pg_catalog.upper(b) AND pg_catalog.length(a) > pg_catalog.abs(c)", []string{"a", "b", "c"}, 0},
		{"qualified function", "pg_catalog.lower(a) = 'x'", "pg_catalog.lower(a) = 'x'", []string{"a"}, 0},
		{"sql syntax functions", "trim(both from a) = 'x' AND substring(a from 1 for 2) = 'x'", "TRIM (BOTH  FROM a) = 'x' AND SUBSTRING(a FROM 1 FOR 2) = 'x'", []string{"a"}, 0},
		{"conditionals", "coalesce(a, 0) = nullif(b, 1) AND greatest(a, b) < least(a, 3) AND CASE WHEN a THEN 1 ELSE 2 END = 1", "COALESCE(a, 0) = (NULLIF(b, 1)) AND GREATEST(a, b) < LEAST(a, 3) AND CASE WHEN a THEN 1 ELSE 2 END = 1", []string{"a", "b"}, 0},
		{"boolean tests", "a IS TRUE OR a IS NOT UNKNOWN", "a IS TRUE OR a IS NOT UNKNOWN", []string{"a"}, 0},
		{"collate", `a COLLATE "C" < 'b'`, `a COLLATE "C" < 'b'`, []string{"a"}, 0},
		{"subscripts and json", "a[1] = 2 AND j ->> 'k' = 'v'", "a[1] = 2 AND (j ->> 'k') = 'v'", []string{"a", "j"}, 0},
		{"quoted column", `"Weird ""Name""" = 1`, `"Weird ""Name""" = 1`, []string{`Weird "Name"`}, 0},
		{"param in string is not a param", `a = '$1' AND b = $1`, `a = '$1' AND b = $1`, []string{"a", "b"}, 1},
		{"comment", "a = 1 -- the rest", "a = 1", []string{"a"}, 0},
		{"bare boolean column", "active", "active", []string{"active"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := where.Parse(c.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.in, err)
			}
			if cl.SQL() != c.sql || !slices.Equal(cl.Columns(), c.cols) || cl.NumParams() != c.params {
				t.Errorf("Parse(%q) = %q %q %d; want %q %q %d", c.in, cl.SQL(), cl.Columns(), cl.NumParams(), c.sql, c.cols, c.params)
			}
			again, err := where.Parse(cl.SQL())
			if err != nil || again.SQL() != cl.SQL() {
				t.Errorf("canonical text does not parse to itself: %q, %v", again.SQL(), err)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ name, in, msg string }{
		{"empty", "  ", "where clause is empty"},
		{"syntax", "id = ", "syntax error at end of input"},
		{"subquery", "id IN (SELECT id FROM other)", "subqueries are not supported"},
		{"exists", "EXISTS (SELECT 1)", "subqueries are not supported"},
		{"now", "ts > now()", "now() is not supported: it is not deterministic"},
		{"current_timestamp", "ts > current_timestamp", "current_timestamp is not supported: it is not deterministic"},
		{"random", "random() < 0.5", "random() is not supported: it is not deterministic"},
		{"now as a literal", "ts > 'now'::timestamptz", "is relative to the current time"},
		{"current_user", "owner = current_user", "current_user is not supported"},
		{"unknown function", "pg_sleep(1) IS NULL", "function pg_sleep() is not supported"},
		{"schema function", "public.lower(a) = 'x'", "function public.lower() is not supported"},
		{"qualified column", "t.id = 1", `column reference "t.id" must be a plain column name`},
		{"schema column", "public.t.id = 1", `column reference "public.t.id" must be a plain column name`},
		{"star", "t.* IS NULL", "* is not supported"},
		{"two statements", "true; drop table x", `unescaped ";" causing statement split`},
		{"closing paren", "1) --", "syntax error"},
		{"from", "true FROM pg_class", `syntax error at or near "FROM"`},
		{"union", "true UNION SELECT false", "malformed query ending with SQL clauses"},
		{"alias", "true AS x", `syntax error at or near "AS"`},
		{"order by", "true ORDER BY 1", "malformed query ending with SQL clauses"},
		{"limit", "true LIMIT 1", "malformed query ending with SQL clauses"},
		{"group by", "true GROUP BY 1", "malformed query ending with SQL clauses"},
		{"for update", "true FOR UPDATE", "malformed query ending with SQL clauses"},
		{"list", "true, false", `syntax error at or near ","`},
		{"distinct", "DISTINCT true", `syntax error at or near "DISTINCT"`},
		{"aggregate", "count(*) > 1", "function count() is not supported"},
		{"window", "lower(a) OVER () = 'x'", "window functions"},
		{"similar", "a SIMILAR TO 'x'", "SIMILAR TO is not supported"},
		{"operator", "a <-> b < 1", "operator <-> is not supported"},
		{"schema operator", "a OPERATOR(public.=) 1", "operator public.= is not supported"},
		{"cast to regclass", "'pg_class'::regclass IS NULL", "cast to type regclass is not supported"},
		{"cast to user type", "a::mytype IS NULL", "cast to type mytype is not supported"},
		{"param gap", "a = $2", "parameter $1 is not used"},
		{"param zero", "a = $0", "parameters are numbered from $1"},
		{"named args", "lpad(a, len => 3) = 'x'", "named arguments"},
		{"field selection", "(a).b = 1", "field selection"},
		{"nul", "a = 'x\x00'", "NUL"},
		{"set returning", "generate_series(1, 2) = 1", "function generate_series() is not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := where.Parse(c.in)
			var we *where.Error
			if !errors.As(err, &we) || we.Field != "where" || !strings.Contains(we.Message, c.msg) {
				t.Errorf("Parse(%q) = %v; want a where error containing %q", c.in, err, c.msg)
			}
		})
	}
}

// Messages read like Electric's: a syntax error at PostgreSQL's position
// in "SELECT 1 WHERE <clause>" (counted from 0), a refused construct at its
// position in the clause.
func TestParseErrorLocations(t *testing.T) {
	for _, c := range []struct{ name, in, msg string }{
		{"syntax, Electric's example", "1 x 1", `At location 17: syntax error at or near "x"`},
		{"end of input", "id =", "At location 19: syntax error at end of input"},
		{"unterminated string", "a = 'x", `At location 19: unterminated quoted string at or near "'x"`},
		{"function", "frobnicate(a) > 1", "At location 0: function frobnicate() is not supported"},
		{"nested operator", "a <-> b < 1", "At location 2: operator <-> is not supported"},
		{"param", "a = $0", "At location 4: parameter $0 is not valid: parameters are numbered from $1"},
		{"qualified column", "id > 1 AND t.id = 1", `At location 11: column reference "t.id" must be a plain column name without table or schema`},
		{"now", "ts > now()", "At location 5: now() is not supported: it is not deterministic"},
		{"cast", "a::regclass IS NULL", "At location 1: cast to type regclass is not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := where.Parse(c.in)
			var we *where.Error
			if !errors.As(err, &we) || we.Field != "where" || we.Message != c.msg {
				t.Errorf("Parse(%q) = %v; want the where error %q", c.in, err, c.msg)
			}
		})
	}
}
