package where_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/jackc/pgx/v5"
)

// columns of the differential test's table and the values its rows take
// ("NULL" is NULL; the others are SQL literals).
var diffColumns = []struct {
	name, typ string
	vals      []string
}{
	{"i4", "int4", []string{"NULL", "0", "1", "-1", "5", "6", "2147483647", "-2147483648", "42", "100"}},
	{"i8", "int8", []string{"NULL", "0", "9007199254740993", "-9223372036854775808", "9223372036854775807", "5", "6", "100"}},
	{"i2", "int2", []string{"NULL", "0", "32767", "-32768", "5"}},
	{"n", "numeric(30,10)", []string{"NULL", "0", "5.5", "5", "-1.25", "99999999999999999999.1234567890", "0.0000000001", "'NaN'"}},
	{"f", "float8", []string{"NULL", "0", "'-0'", "1.5", "'NaN'", "'Infinity'", "'-Infinity'", "1e300", "0.1"}},
	{"t", "text", texts},
	{"tc", `text COLLATE "C"`, texts},
	{"ti", `text COLLATE "en-x-icu"`, texts},
	{"tnd", `text COLLATE nocase`, texts},
	{"v", "varchar(20)", []string{"NULL", "'abc'", "'ABC'", "'Abc '", "'x'"}},
	{"b", "bool", []string{"NULL", "true", "false"}},
	{"u", "uuid", []string{"NULL", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'"}},
	{"d", "date", []string{"NULL", "'2020-01-01'", "'infinity'", "'-infinity'", "'1999-12-31'", "'2024-02-29'"}},
	{"ts", "timestamptz", []string{"NULL", "'2020-03-29 01:30:00+00'", "'2020-03-29 03:30:00+02'", "'2020-10-25 02:30:00+01'", "'infinity'", "'-infinity'", "'2020-01-01 00:00:00-08'", "'1970-01-01 00:00:00+00'", "'2020-03-29 00:59:59.999999+00'"}},
	{"ia", "int4[]", []string{"NULL", "'{}'", "'{1,2}'", "'{1,NULL}'", "'{3}'", "'{1,2,3}'"}},
	{"ta", "text[]", []string{"NULL", "'{}'", "'{a,b}'", "'{A}'", `'{"x y",NULL}'`}},
	{"j", "jsonb", []string{"NULL", `'{"a":1}'`, `'{"a":"x","b":[1,2]}'`, "'[]'", `'"str"'`, "'null'", `'{"a":null}'`}},
	{`"Odd ""col"""`, "objdoc", []string{"NULL", `'{"a":"x"}'`, "'null'", "'[1]'"}},
}

var texts = []string{"NULL", "'Ärger'", "'zebra'", "'Zebra'", "'émile'", "''", "'apple'", "'a%b'", "'A_b'", "'x'", "'ZEBRA'", "'Emile'"}

const diffRows = 90

// fast: 1 must take a fast path, 0 must not, -1 either.
var diffClauses = []struct {
	expr   string
	params []string
	fast   int
}{
	{"i4 = $1", []string{"5"}, 1},
	{"$1", []string{"true"}, 0},
	{"$1 OR i4 = $2", []string{"off", "6"}, 0},
	{"i4 = 5.0", nil, 1},
	{"i4 = 5.5", nil, 1},
	{"i4 <> 5", nil, 1},
	{"i4 >= $1 AND i4 < $2", []string{"1", "42"}, 1},
	{"i4 BETWEEN -1 AND 6", nil, 1},
	{"i4 > 5.5", nil, 1},
	{"i4 <= -1.5", nil, 1},
	{"i4 < 'NaN'::numeric", nil, -1},
	{"i4 = 1e1", nil, 1},
	{"i4 = '5'", nil, 1},
	{"i4 >= ' 6 '", nil, 1},
	{"i4 < $1", []string{"-2147483648"}, 1},
	{"i4 > 2147483647", nil, 1},
	{"i4 > -2147483649", nil, 1},
	{"i8 = 9007199254740993", nil, 1},
	{"i8 > 9007199254740992", nil, 1},
	{"i8 = 9007199254740993::float8", nil, 0},
	{"i8 IN (5, 6, 100)", nil, 1},
	{"i8 NOT IN (5, 6)", nil, 1},
	{"i8 >= 99999999999999999999", nil, 1},
	{"i8 < 99999999999999999999", nil, 1},
	{"i8 > -9223372036854775808.5", nil, 1},
	{"i8 <= 9223372036854775807 AND i8 > 9223372036854775806", nil, 1},
	{"i2 = $1", []string{"32767"}, 1},
	{"i4 = ANY($1)", []string{"{1,5,42}"}, 0},
	{"i4 = $1 AND t = $2", []string{"5", "x"}, 1},
	{"i4 IS NULL", nil, 1},
	{"n IS NULL AND f IS NOT NULL", nil, 1},
	{"n = 5.5", nil, 0},
	{"n > 5", nil, 0},
	{"n = 'NaN'", nil, 0},
	{"n = $1", []string{"5.50"}, 0},
	{"f = 'NaN'", nil, 0},
	{"f = 0", nil, 0},
	{"f > 1e299", nil, 0},
	{"t = 'Zebra'", nil, 1},
	{"t = $1", []string{"émile"}, 1},
	{"t IN ('zebra', 'Ärger')", nil, 1},
	{"t <> ''", nil, 1},
	{"t < 'b'", nil, -1},
	{"tc < 'b'", nil, 1},
	{"tc >= 'Z' AND tc < 'a'", nil, 1},
	{"tc > 'Zebra'", nil, 1},
	{"ti < 'b'", nil, 0},
	{"ti = 'zebra'", nil, 1},
	{"tnd = 'ZEBRA'", nil, 0},
	{"tnd IN ('emile')", nil, 0},
	{`t = 'zebra' COLLATE "C"`, nil, 0},
	{"t LIKE 'a%'", nil, 0},
	{"t ILIKE 'z%'", nil, 0},
	{`t LIKE 'a\%b'`, nil, 0},
	{"t LIKE 'A_b'", nil, 0},
	{"t ~ '^[A-Z]'", nil, 0},
	{"t ~* 'EMILE'", nil, 0},
	{"lower(t) = 'zebra'", nil, 0},
	{"upper(t) = 'ÄRGER'", nil, 0},
	{"length(t) = 5", nil, 0},
	{"t || 'x' = 'xx'", nil, 0},
	{"t BETWEEN SYMMETRIC 'z' AND 'a'", nil, -1},
	{"v = 'abc'", nil, 1},
	{"v = $1", []string{"Abc "}, 1},
	{"v ILIKE 'abc%'", nil, 0},
	{"b", nil, 1},
	{"NOT b", nil, 1},
	{"b = $1", []string{"yes"}, 1},
	{"b IS NOT TRUE", nil, 0},
	{"b IS UNKNOWN", nil, 0},
	{"u = $1", []string{"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}, 1},
	{"u <> '00000000-0000-0000-0000-000000000000'", nil, 1},
	{"d = '2020-01-01'", nil, 0},
	{"d < '2000-01-01'", nil, 0},
	{"d = 'infinity'", nil, 0},
	{"ts > '2020-03-29 02:00:00+01'", nil, 0},
	{"ts = '2020-03-29 01:30:00+00'", nil, 0},
	{"ts::date = '2020-03-29'", nil, 0},
	{"extract(hour from ts) = 1", nil, 0},
	{"ts AT TIME ZONE 'Europe/Paris' >= '2020-03-29 03:00'", nil, 0},
	{"date_trunc('day', ts) = '2020-03-29'", nil, 0},
	{"ts < $1", []string{"2020-01-01 09:00:00+01"}, 0},
	{"ia @> '{1}'", nil, 0},
	{"ia <@ $1", []string{"{1,2,3}"}, 0},
	{"ia && ARRAY[3]", nil, 0},
	{"1 = ANY(ia)", nil, 0},
	{"array_length(ia, 1) = 2", nil, 0},
	{"cardinality(ia) = 0", nil, 0},
	{"ia[1] = 1", nil, 0},
	{"ia = '{}'", nil, 0},
	{"ta @> ARRAY['a']", nil, 0},
	{"'x y' = ANY(ta)", nil, 0},
	{"ta IS NULL", nil, 1},
	{`j @> '{"a":1}'`, nil, 0},
	{"j ->> 'a' = 'x'", nil, 0},
	{"j -> 'b' @> '[2]'", nil, 0},
	{`j = '"str"'`, nil, 0},
	{"jsonb_typeof(j) = 'null'", nil, 0},
	{"j IS NOT NULL", nil, 1},
	{"i4 IS DISTINCT FROM 5", nil, 0},
	{"i4 IS NOT DISTINCT FROM NULL", nil, 0},
	{"coalesce(i4, 0) = 0", nil, 0},
	{"nullif(i4, 5) IS NULL", nil, 0},
	{"greatest(i4, i2) > 100", nil, 0},
	{"CASE WHEN b THEN i4 ELSE i2 END = 5", nil, 0},
	{"i4 + i2 > 10", nil, 0},
	{"-i4 = 5 OR i8 % 2 = 0", nil, 0},
	{"n * 2 = 11 OR i4::numeric / 3 > 1", nil, 0},
	{"abs(i4) = 1 OR round(n) = 6 OR floor(n) = 5 OR mod(i4, 3) = 2", nil, 0},
	{"100 / i4 > 1", nil, 0},
	{"i4 + 2147483647 > 0", nil, 0},
	{"i4 = 5 OR t = 'x'", nil, 0},
	{"NOT (i4 = 5)", nil, 0},
	{"(i4 = 5) IS NOT TRUE", nil, 0},
	{"i4 NOT BETWEEN 1 AND 10", nil, 0},
	{"i4::text = '5'", nil, 0},
	{"starts_with(t, 'ze') AND replace(t, 'e', 'E') = 'zEbra'", nil, 0},
	{"substring(t from 1 for 2) = 'Ze' OR left(t, 1) = 'É' OR right(t, 1) = 'e'", nil, 0},
	{"btrim(v) = 'Abc' OR trim(both 'x' from t) = ''", nil, 0},
	{`"Odd ""col""" ->> 'a' = 'x' OR "Odd ""col""" = 'null'`, nil, 0},
	{`"Odd ""col""" IS NULL AND jsonb_typeof(j) = 'null'`, nil, 0},
}

func TestDifferential(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	exec(t, diffTableDDL("diff", diffRows, func(r, k int, vals []string) string {
		return vals[(r*(k+3)+k*k+r/len(vals))%len(vals)]
	}))
	tb := table(t, conn, "public", "diff")
	cols, rows := rowImages(t, conn, "SELECT * FROM diff ORDER BY id")

	ev := where.NewEvaluator(dial)
	t.Cleanup(func() { ev.Close() })
	set := where.NewSet(tb, ev)
	errs := map[int]int{}
	set.OnError(func(id int, err error) { errs[id]++ })
	for i, c := range diffClauses {
		cl, err := where.Parse(c.expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		p, err := where.Prepare(ctx, conn, tb, cl, c.params)
		if err != nil {
			t.Fatalf("Prepare(%q): %v", c.expr, err)
		}
		if c.fast >= 0 && p.Fast() != (c.fast == 1) {
			t.Errorf("%q: fast path %v, want %v", c.expr, p.Fast(), c.fast == 1)
		}
		set.Add(2*i, p)
		set.Add(2*i+1, where.SlowPath(p))
	}
	got, err := set.Match(ctx, cols, rows)
	if err != nil {
		t.Fatal(err)
	}
	matched := func(id int) []int {
		var ids []int
		for r, m := range got {
			if slices.Contains(m, id) {
				ids = append(ids, r)
			}
		}
		return ids
	}
	want := map[string][]int{}
	for i, c := range diffClauses {
		want[c.expr] = expected(t, conn, "diff", diffRows, c.expr, c.params)
		if fast, slow := matched(2*i), matched(2*i+1); !slices.Equal(fast, want[c.expr]) || !slices.Equal(slow, want[c.expr]) {
			t.Errorf("%q %q: PostgreSQL matches rows %v; Set matches %v (as prepared), %v (PostgreSQL path)", c.expr, c.params, want[c.expr], fast, slow)
		}
	}
	// The data tells the collations apart, and rows raising errors were reported.
	if slices.Equal(want["tc < 'b'"], want["ti < 'b'"]) {
		t.Errorf("C and en-x-icu order the test data alike: %v", want["tc < 'b'"])
	}
	for _, expr := range []string{"100 / i4 > 1", "i4 + 2147483647 > 0"} {
		i := slices.IndexFunc(diffClauses, func(c struct {
			expr   string
			params []string
			fast   int
		}) bool {
			return c.expr == expr
		})
		if errs[2*i+1] == 0 {
			t.Errorf("%q: no evaluation error reported", expr)
		}
	}
}

// rowImages reads rows as logical replication would deliver them: the text
// output of each value under the worker's session settings.
func rowImages(t testing.TB, conn *pgx.Conn, sql string) ([]string, [][]*string) {
	t.Helper()
	rr := conn.PgConn().ExecParams(context.Background(), sql, nil, nil, nil, nil)
	var cols []string
	for _, f := range rr.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	var rows [][]*string
	for rr.NextRow() {
		var row []*string
		for _, v := range rr.Values() {
			if v == nil {
				row = append(row, nil)
			} else {
				s := string(v)
				row = append(row, &s)
			}
		}
		rows = append(rows, row)
	}
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	return cols, rows
}

// diffTypes creates the types the differential tests' tables use.
var diffTypes sync.Once

// diffTableDDL creates the table name with the columns of diffColumns and
// rows 0..rows-1, the value of column k in row r being value(r, k, the
// column's values).
func diffTableDDL(name string, rows int, value func(r, k int, vals []string) string) string {
	var ddl strings.Builder
	diffTypes.Do(func() {
		ddl.WriteString(`CREATE DOMAIN objdoc AS jsonb CHECK (jsonb_typeof(VALUE) <> 'string');
			CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
			`)
	})
	fmt.Fprintf(&ddl, "CREATE TABLE %s (id int4 PRIMARY KEY", name)
	for _, c := range diffColumns {
		fmt.Fprintf(&ddl, ", %s %s", c.name, c.typ)
	}
	ddl.WriteString(");\n")
	for r := range rows {
		fmt.Fprintf(&ddl, "INSERT INTO %s VALUES (%d", name, r)
		for k, c := range diffColumns {
			fmt.Fprintf(&ddl, ", %s", value(r, k, c.vals))
		}
		ddl.WriteString(");\n")
	}
	return ddl.String()
}

// expected is PostgreSQL's answer: the ids of the rows of table tbl (ids
// 0..rows-1) the clause is true on. A clause that raises an error on a
// row is asked row by row; the rows it fails on do not match.
func expected(t testing.TB, conn *pgx.Conn, tbl string, rows int, expr string, params []string) []int {
	t.Helper()
	ctx := context.Background()
	vals := make([][]byte, len(params))
	for i, p := range params {
		vals[i] = []byte(p)
	}
	ids := func(sql string, vals [][]byte) ([]int, error) {
		res := conn.PgConn().ExecParams(ctx, sql, vals, nil, nil, nil).Read()
		if res.Err != nil {
			return nil, res.Err
		}
		var out []int
		for _, r := range res.Rows {
			var id int
			fmt.Sscan(string(r[0]), &id)
			out = append(out, id)
		}
		return out, nil
	}
	out, err := ids("SELECT id FROM "+tbl+" WHERE "+expr+" ORDER BY id", vals)
	if err == nil {
		return out
	}
	out = nil
	for r := range rows {
		one, err := ids(fmt.Sprintf("SELECT id FROM %s WHERE id = %d AND (%s)", tbl, r, expr), vals)
		if err == nil {
			out = append(out, one...)
		}
	}
	return out
}
