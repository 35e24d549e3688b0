package e2e_test

// Shapes with where clauses, column lists and replica=full, followed by
// ElectricSQL's TypeScript client through a randomized workload and
// compared with what PostgreSQL itself returns for
// SELECT <columns> FROM t WHERE <where>.
//
// Written ahead of the feature: until the worker serves where/columns
// (it answers 400 "not supported yet"), these tests fail at the first
// await, naming the client's error. They are not skipped on purpose.

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

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/pgtest"
)

const whereTable = `CREATE TABLE t (
	id int PRIMARY KEY,
	i4 int4, i8 int8, n numeric(30,10), f float8, tx text, vc varchar(20), b bool,
	u uuid, d date, ts timestamptz, arr int4[], tags text[])`

// whereColumns are t's columns with the type names of the shape schema.
var whereColumns = []column{
	{"id", "int4"}, {"i4", "int4"}, {"i8", "int8"}, {"n", "numeric"}, {"f", "float8"},
	{"tx", "text"}, {"vc", "varchar"}, {"b", "bool"}, {"u", "uuid"}, {"d", "date"},
	{"ts", "timestamptz"}, {"arr", "int4[]"}, {"tags", "text[]"},
}

// wherePool holds, per column, SQL literals the workload draws from:
// NULLs, the boundaries of the where clauses below, extremes, mixed case
// and non-ASCII text, time stamps across time zones and DST changes.
// Values are chosen so that no clause below errs in PostgreSQL (no
// arithmetic overflow), since a clause is only defined where it evaluates.
var wherePool = map[string][]string{
	"i4": {"NULL", "0", "1", "-1", "5", "6", "7", "10", "11", "42", "2147483647", "-2147483648"},
	"i8": {"NULL", "0", "-5", "999", "1000", "1001", "9007199254740992", "9007199254740993", "9223372036854775807", "-9223372036854775808"},
	"n":  {"NULL", "0", "1.5", "1.4999999999", "-1.5", "0.0000000001", "12345678901234.5678901234", "100", "3"},
	"f":  {"NULL", "0", "'-0'", "0.1", "1.5", "2.5", "1e300", "-1e-300", "'NaN'", "'Infinity'", "'-Infinity'", "100"},
	"tx": {"NULL", "''", "'zebra '", "'Ärger'", "'ärger'", "'zebra'", "'Zebra'", "'émile'", "'Émile'", "'abc'", "'a%b'", "'a_b'", "'axb'",
		"'hello world'", "'it''s'", `'back\slash'`, "'1 and 10'"},
	"vc": {"NULL", "''", "'alpha'", "'Beta'", "'gamma%'", "'gammaX'", "'ümlaut'", "'ÜMLAUT'", "'x'"},
	"b":  {"NULL", "true", "false"},
	"u": {"NULL", "'00000000-0000-0000-0000-000000000000'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
		"'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'"},
	"d": {"NULL", "'2024-02-29'", "'2024-03-01'", "'1999-12-31'", "'2000-01-01'", "'infinity'", "'-infinity'", "'0001-01-01'", "'0044-03-15 BC'"},
	"ts": {"NULL", "'2024-03-10 01:59:59-05'", "'2024-03-10 03:00:00-04'", "'2024-03-10 02:30:00 America/New_York'",
		"'2024-03-31 00:59:59.999999+00'", "'2024-03-31 03:00:00 Europe/Berlin'", "'2024-10-27 02:30:00+01'",
		"'2024-10-27 02:30:00+02'", "'2024-01-01 00:00:00+14'", "'2023-12-31 23:59:59-12'", "'2024-01-01 00:00:00+00'",
		"'infinity'", "'-infinity'", "'2024-06-15 12:00:00+05:30'"},
	"arr":  {"NULL", "'{}'", "'{1,2,3}'", "'{5}'", "'{NULL,1}'", "'{2,4}'", "'{-1,0,2147483647}'", "'{1,2}'"},
	"tags": {"NULL", "'{}'", "'{a,b}'", `'{"x y",NULL}'`, "'{Zebra}'", "'{zebra,émile}'", `'{""}'`, "'{a}'", `'{"NULL"}'`},
}

// whereSpecs are the shapes of TestWhereDifferential: every supported
// construct, with NULLs and boundary values in the data.
func whereSpecs() []shapeSpec {
	clauses := []string{
		// comparison and boolean logic (three-valued)
		"i4 > 5",
		"i4 <= 10 AND i4 <> 7",
		"i4 = 42 OR i8 >= 1000",
		"NOT (i4 < 10)",
		"NOT (i4 < 10 OR b)",
		"i4 IS NULL",
		"tx IS NOT NULL AND b",
		"NOT b",
		"i4 IS DISTINCT FROM 5",
		"tx IS NOT DISTINCT FROM 'zebra'",
		"i4 IN (1, 5, 42, -2147483648)",
		"tx NOT IN ('zebra', 'Zebra')",
		"tx NOT IN ('zebra', NULL)",
		"i4 BETWEEN 0 AND 10",
		"i8 NOT BETWEEN -5 AND 1000",
		// text: case, non-ASCII, C-locale ordering, LIKE escapes
		"tx LIKE 'Z%'",
		"tx ILIKE '%ÄR%'",
		"tx NOT LIKE '%e%'",
		`tx LIKE 'a\_b' OR vc LIKE 'gamma\%'`,
		"tx > 'Zebra' AND tx < 'émile'",
		"vc >= 'alpha'",
		"lower(tx) = 'zebra'",
		"upper(vc) LIKE 'ÜM%'",
		// arithmetic and casts
		"i4::int8 * 2 + 1 > 21",
		"i4 / 2 = 3",
		"n * 2 >= 3",
		"n::int8 = 2",
		"f + 1 > 2.5",
		"f < 1e300",
		"i4::text LIKE '1%'",
		"ts::date = '2024-03-10'",
		"ts >= '2024-03-10 07:00:00+00' AND ts < '2024-03-31 01:00:00+00'",
		"d < '2000-01-01'",
		"u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' OR u > 'b0000000-0000-0000-0000-000000000000'",
		// arrays
		"5 = ANY(arr)",
		"arr @> '{1,2}'",
		"arr <@ '{1,2,3,5}'",
		"tags && '{zebra,Zebra}'",
		"'a' = ANY(tags)",
		// values a Go fast path could get wrong: precision, NaN, -0,
		// spellings PostgreSQL normalizes
		"i8 = 9007199254740993",
		"i4 > 5.5",
		"i4 = 5.0",
		"n = 1.5",
		"n > 1.49999999995",
		"f = 'NaN'::float8",
		"f > 100",
		"f = 0",
		"f = 0.1",
		"u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
		"ts = '2024-03-10 02:30:00 America/New_York'",
		"ts < 'infinity' AND d > '-infinity'",
		"b = 'yes'",
		"i4 = '5'",
		"tx = 'zebra '",
	}
	var specs []shapeSpec
	for i, w := range clauses {
		specs = append(specs, shapeSpec{Name: fmt.Sprintf("w%02d", i+1), Table: "t", Where: w})
	}
	specs = append(specs,
		// params: the client's array and object forms, untyped and typed
		shapeSpec{Name: "p1", Table: "t", Where: "i4 > $1", Params: []string{"5"}},
		shapeSpec{Name: "p2", Table: "t", Where: "tx = $1 OR vc = $2", Params: map[string]string{"1": "Ärger", "2": "alpha"}},
		shapeSpec{Name: "p3", Table: "t", Where: "i8 >= $1::int8", Params: []string{"9007199254740993"}},
		shapeSpec{Name: "p4", Table: "t", Where: "ts < $1::timestamptz", Params: []string{"2024-03-10 07:00:00+00"}},
		shapeSpec{Name: "p5", Table: "t", Where: "$1 = ANY(tags)", Params: []string{"zebra"}},
		shapeSpec{Name: "p6", Table: "t", Where: "b = $1 AND i4 BETWEEN $2 AND $3", Params: []string{"true", "0", "10"}},
		shapeSpec{Name: "p7", Table: "t", Where: "d > $1", Params: map[string]string{"1": "2024-02-29"}},
		// columns and replica=full
		shapeSpec{Name: "c1", Table: "t", Where: "i4 > 5", Columns: []string{"id", "tx", "i4"}},
		shapeSpec{Name: "c2", Table: "t", Where: "b", Columns: []string{"id", "ts", "tags"}},
		shapeSpec{Name: "r1", Table: "t", Where: "i4 BETWEEN 0 AND 10", Replica: "full"},
		shapeSpec{Name: "r2", Table: "t", Where: "n >= 1.5", Columns: []string{"id", "i4", "n"}, Replica: "full"},
		shapeSpec{Name: "all", Table: "t"},
		shapeSpec{Name: "allfull", Table: "t", Replica: "full"},
	)
	return specs
}

// whereWorkload generates transactions of inserts, updates (moving rows
// across every clause's boundary, PK changes, multi-row updates) and
// deletes on t, keeping track of the ids in use.
type whereWorkload struct {
	rng  *rand.Rand
	ids  []int
	next int
}

func (w *whereWorkload) pick(col string) string {
	p := wherePool[col]
	return "(" + p[w.rng.IntN(len(p))] + ")::" + typeOf(col)
}

func typeOf(col string) string {
	i := slices.IndexFunc(whereColumns, func(c column) bool { return c.name == col })
	switch t := whereColumns[i].typ; t {
	case "varchar":
		return "varchar(20)"
	case "numeric":
		return "numeric(30,10)"
	default:
		return t
	}
}

// insert returns an INSERT of a new row with random values (a row of all
// NULLs now and then).
func (w *whereWorkload) insert(id int) string {
	var names, vals []string
	for _, c := range whereColumns[1:] {
		if w.rng.IntN(8) == 0 {
			continue // left to its default, NULL
		}
		names = append(names, c.name)
		vals = append(vals, w.pick(c.name))
	}
	if len(names) == 0 {
		return fmt.Sprintf("INSERT INTO t (id) VALUES (%d)", id)
	}
	return fmt.Sprintf("INSERT INTO t (id, %s) VALUES (%d, %s)", strings.Join(names, ", "), id, strings.Join(vals, ", "))
}

func (w *whereWorkload) sets(n int) []string {
	var out []string
	for _, k := range w.rng.Perm(len(whereColumns) - 1)[:n] {
		c := whereColumns[k+1].name
		out = append(out, c+" = "+w.pick(c))
	}
	return out
}

func (w *whereWorkload) newID() int {
	w.next += 1 + w.rng.IntN(3)
	return w.next
}

func (w *whereWorkload) remove(id int) {
	w.ids = slices.DeleteFunc(w.ids, func(x int) bool { return x == id })
}

// statement returns one random statement.
func (w *whereWorkload) statement() string {
	if len(w.ids) < 5 {
		id := w.newID()
		w.ids = append(w.ids, id)
		return w.insert(id)
	}
	id := w.ids[w.rng.IntN(len(w.ids))]
	switch r := w.rng.IntN(100); {
	case r < 30:
		nid := w.newID()
		w.ids = append(w.ids, nid)
		return w.insert(nid)
	case r < 68:
		return fmt.Sprintf("UPDATE t SET %s WHERE id = %d", strings.Join(w.sets(1+w.rng.IntN(3)), ", "), id)
	case r < 75: // PK change, alone or with other columns
		nid := w.newID()
		w.remove(id)
		w.ids = append(w.ids, nid)
		set := append([]string{fmt.Sprintf("id = %d", nid)}, w.sets(w.rng.IntN(3))...)
		return fmt.Sprintf("UPDATE t SET %s WHERE id = %d", strings.Join(set, ", "), id)
	case r < 79: // an update that changes nothing
		return fmt.Sprintf("UPDATE t SET i4 = i4, tx = tx WHERE id = %d", id)
	case r < 84: // several rows at once
		c := whereColumns[1+w.rng.IntN(len(whereColumns)-1)].name
		return fmt.Sprintf("UPDATE t SET %s = %s WHERE id %% %d = %d", c, w.pick(c), 2+w.rng.IntN(4), w.rng.IntN(2))
	case r < 89: // delete and insert again under the same id
		w.remove(id)
		w.ids = append(w.ids, id)
		return fmt.Sprintf("DELETE FROM t WHERE id = %d; %s", id, w.insert(id))
	default:
		w.remove(id)
		return fmt.Sprintf("DELETE FROM t WHERE id = %d", id)
	}
}

func whereSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATON_WHERE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BATON_WHERE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("workload seed %d (rerun with BATON_WHERE_SEED=%d)", seed, seed)
	return seed
}

// runTx runs stmts in one transaction.
func runTx(t *testing.T, conn *pgx.Conn, stmts []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("workload statement %s: %v", s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// Every where construct the worker supports, followed by the TypeScript
// client through a seeded random workload, ends equal to PostgreSQL's own
// answer for the same query: after the initial snapshot, half-way through
// the workload and at its end.
func TestWhereDifferential(t *testing.T) {
	runWhereDifferential(t, whereSpecs())
}

func runWhereDifferential(t *testing.T, specs []shapeSpec) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, whereTable)
	conn := displayConn(t, pg.URL())
	w := &whereWorkload{rng: rand.New(rand.NewPCG(whereSeed(t), 0))}
	var initial []string
	for range 80 {
		initial = append(initial, w.statement())
	}
	w.ids = append(w.ids, 0)
	initial = append(initial, "INSERT INTO t (id) VALUES (0)") // all NULLs
	runTx(t, conn, initial)

	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	cols := map[string][]column{"t": whereColumns}
	f := startMultiFollower(t, base, specs)
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 40*time.Second, "initial snapshot")

	const txs = 10
	for i := range txs {
		var stmts []string
		for range 15 + w.rng.IntN(20) {
			stmts = append(stmts, w.statement())
		}
		runTx(t, conn, stmts)
		if i == txs/2-1 {
			f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, fmt.Sprintf("after %d transactions", i+1))
		}
	}
	f.awaitRows(t, specs, pgShapes(t, conn, specs, cols), 30*time.Second, "after the workload")
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d shapes equal to PostgreSQL; %d rows in t", len(specs), n)
}
