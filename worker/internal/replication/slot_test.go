package replication

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/tests/pgtest"
)

// TestEndOwnWalsender: when endOwnWalsender returns, PostgreSQL lists no
// walsender of this worker's application_name — one whose client just
// closed (it exits a moment later) and one that does not consume the slot
// (a proxy's leftover) alike — and the successor's walsender is left alone
// (lease.proto W7: Released promises the walsender is gone). Before, it
// ended only the slot's active walsender and did not wait: the conformance
// kit saw the Go worker's walsender still listed when its Released arrived.
func TestEndOwnWalsender(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('baton_slot_s', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	dial := func(app string) *pgconn.PgConn {
		t.Helper()
		cfg, err := pgconn.ParseConfig(pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "database"
		cfg.RuntimeParams["application_name"] = app
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	count := func(app string) int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1", app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	own, successor := "baton-worker:s:7", "baton-worker:s:8"
	// A leftover walsender of ours that does not consume the slot, and one
	// whose client is closing.
	dial(own)
	closing := dial(own)
	dial(successor)
	if n := count(own); n != 2 {
		t.Fatalf("%d walsenders named %s, want 2", n, own)
	}
	go closing.Close(context.Background())
	if err := endOwnWalsender(ctx, conn, "baton_slot_s", own); err != nil {
		t.Fatal(err)
	}
	if n := count(own); n != 0 {
		t.Errorf("%d walsenders named %s still listed after endOwnWalsender", n, own)
	}
	if n := count(successor); n != 1 {
		t.Errorf("%d walsenders named %s, want the successor's 1", n, successor)
	}
}
