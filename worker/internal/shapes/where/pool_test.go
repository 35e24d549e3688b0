package where_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/jackc/pgx/v5"
)

// dialAs is dial with an application_name, to find the connections in
// pg_stat_activity.
func dialAs(app string) func(ctx context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := c.Exec(ctx, "SET application_name = "+pgx.Identifier{app}.Sanitize()); err != nil {
			c.Close(ctx)
			return nil, err
		}
		return c, nil
	}
}

// poolSets are Sets of the same PostgreSQL-path predicates over table
// pool on two Evaluators: one connection, and a pool named app; small has
// the first of them, on the pool.
func poolSets(t *testing.T, preds int, app string) (one, pool, small *where.Set) {
	t.Helper()
	ctx := context.Background()
	exec(t, `CREATE TABLE IF NOT EXISTS pool (id int8 PRIMARY KEY, name text, n int4)`)
	conn := connect(t)
	tb := table(t, conn, "public", "pool")
	c, err := where.Parse("id % 1000 = $1 AND lower(name) = $2 OR n * 10 = $3")
	if err != nil {
		t.Fatal(err)
	}
	ev1 := where.NewEvaluatorConns(dial, 1)
	evN := where.NewEvaluatorConns(dialAs(app), 4)
	t.Cleanup(func() { ev1.Close(); evN.Close() })
	one, pool, small = where.NewSet(tb, ev1), where.NewSet(tb, evN), where.NewSet(tb, evN)
	for i := range preds {
		p, err := where.Prepare(ctx, conn, tb, c, []string{strconv.Itoa(i % 1000), "x" + strconv.Itoa(i%3), strconv.Itoa(i % 50)})
		if err != nil {
			t.Fatal(err)
		}
		if p.Fast() {
			t.Fatal("the clause has a fast path")
		}
		one.Add(i, p)
		pool.Add(i, p)
		if i == 0 {
			small.Add(i, p)
		}
	}
	return one, pool, small
}

// poolRows are n rows, some with NULLs.
func poolRows(n int) ([]string, [][]*string) {
	var rows [][]*string
	for i := range n {
		id, name, k := strconv.Itoa(i*7), "X"+strconv.Itoa(i%4), strconv.Itoa(i%11)
		row := []*string{&id, &name, &k}
		if i%13 == 0 {
			row[1] = nil
		}
		if i%17 == 0 {
			row[2] = nil
		}
		rows = append(rows, row)
	}
	return []string{"id", "name", "n"}, rows
}

// The pool's answer is the single connection's, and a
// Match whose connections are all terminated while it runs goes on on
// new ones and still gives that answer.
func TestPoolMatchesOneConnection(t *testing.T) {
	ctx := context.Background()
	const app = "where-pool-test"
	one, pool, small := poolSets(t, 600, app) // 3 chunks
	cols, rows := poolRows(5000)              // 3 batches: 9 queries
	want, err := one.Match(ctx, cols, rows)
	if err != nil {
		t.Fatal(err)
	}
	if n := matches(want); n == 0 {
		t.Fatal("no row matches: the test proves nothing")
	}
	got, err := pool.Match(ctx, cols, rows)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("pool and one connection differ: %d vs %d matches", matches(got), matches(want))
	}

	// Once several connections work at once, terminate them all.
	admin := connect(t)
	done := make(chan error, 1)
	go func() {
		var err error
		got, err = pool.Match(ctx, cols, rows)
		done <- err
	}()
	active := func() int {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for seen := 0; seen < 2; seen = active() {
		select {
		case err := <-done:
			t.Fatalf("Match ended (%v) before two connections were seen working at once", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("never two connections working at once")
		}
	}
	var killed int
	if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	t.Logf("terminated %d connections", killed)
	if err := <-done; err != nil {
		t.Fatalf("Match after the connections were terminated: %v", err)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the connections were terminated, pool and one connection differ: %d vs %d matches", matches(got), matches(want))
	}
	open := func() int {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := open(); n < 1 || n > 4 {
		t.Errorf("%d pool connections open; want 1 to 4", n)
	}

	// Idle connections terminated between two Matches: a query tried on
	// one of them is tried again on a new connection, not on the other
	// dead ones.
	if got, err = pool.Match(ctx, cols, rows); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 4 {
		t.Fatalf("%d pool connections open after a Match of 9 queries; want 4", n)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app); err != nil {
		t.Fatal(err)
	}
	for n := open(); n > 0; n = open() {
		if time.Now().After(deadline) {
			t.Fatalf("%d terminated connections still there", n)
		}
	}
	got, err = small.Match(ctx, cols, rows[:100]) // one query
	if err != nil {
		t.Fatalf("Match after the idle connections were terminated: %v", err)
	}
	for i := range got {
		if slices.Contains(want[i], 0) != slices.Contains(got[i], 0) {
			t.Fatalf("after the idle connections were terminated, row %d: %v; want 0 in it: %v", i, got[i], slices.Contains(want[i], 0))
		}
	}
}

func matches(out [][]int) int {
	n := 0
	for _, ids := range out {
		n += len(ids)
	}
	return n
}
