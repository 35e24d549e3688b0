package replication_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/internal/replication"
)

// TestSlotSampler: at each scrape the sampler reports the slot's retained
// WAL, whether it is active and its wal_status, follows WAL written while
// nobody consumes the slot, reports a missing slot as such, and leaves the
// slot out once the database is gone.
func TestSlotSampler(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	s := replication.NewSlotSampler(pg.URL(), "sampled", "baton_slot_sampled", 5*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// await waits until the sampled metrics match want (a subset of the
	// exposition, one line per series).
	await := func(what string, ok func(retained float64, status string, active float64) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			retained, status, active := -1.0, "", -1.0
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					switch mf.GetName() {
					case "baton_worker_slot_retained_wal_bytes":
						retained = m.GetGauge().GetValue()
					case "baton_worker_slot_active":
						active = m.GetGauge().GetValue()
					case "baton_worker_slot_wal_status":
						if m.GetGauge().GetValue() == 1 {
							status = m.GetLabel()[1].GetValue()
						}
					}
				}
			}
			if ok(retained, status, active) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: retained %v, wal_status %q, active %v", what, retained, status, active)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	await("no slot", func(r float64, st string, a float64) bool { return r == 0 && st == "missing" && a == 0 })
	exec(`SELECT pg_create_logical_replication_slot('baton_slot_sampled', 'pgoutput')`)
	var base float64
	await("slot created", func(r float64, st string, a float64) bool { base = r; return st == "reserved" && a == 0 })
	exec(`CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g`)
	await("WAL written while nobody consumes the slot", func(r float64, st string, a float64) bool { return r > base+5_000_000 })
	if n, err := testutil.GatherAndCount(reg, "baton_worker_slot_wal_status"); err != nil || n != len(replication.WALStatuses) {
		t.Fatalf("wal_status series: %d, %v; want %d", n, err, len(replication.WALStatuses))
	}
	conn.Close(ctx)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("with the database stopped: %d series, %v; want none", n, err)
	}
	if err := pg.StartAgain(); err != nil {
		t.Fatal(err)
	}
	await("the database back", func(r float64, st string, a float64) bool { return st == "reserved" })
}
