package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// Initial sync (issue 3): a table of N rows (id bigint primary key, text,
// int, timestamptz). Baton: a new client asks for a new shape of it
// (offset=-1; the worker takes the snapshot during that request) and
// follows every chunk until up to date, reading each body in full.
// Baseline in the same run: COPY <table> TO STDOUT (text) over pgx into a
// discarding writer, which is what reading the table costs PostgreSQL and
// one client.
//
// Rounds alternate COPY and a new shape; after each shape a second client
// reads the now existing shape from offset -1 (what every later client
// pays), then the shape is deleted so the next round creates it anew.

const syncTable = "sync_items"

type syncFetch struct {
	total     time.Duration // first request sent → last body read
	snapshot  time.Duration // first request sent → its response headers (the snapshot is taken inside it)
	requests  int
	bytes     int64
	workerCPU time.Duration
	pgCPU     time.Duration
}

type syncResults struct {
	rows       int
	tableBytes int64
	load       time.Duration
	copy       []time.Duration
	copyBytes  int64
	copyPGCPU  []time.Duration
	shape      []syncFetch
	existing   []syncFetch
	peakRSS    int64 // the worker's peak resident set size at the end (VmHWM)
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func runSync(ctx context.Context, cfg config, env *shapeEnv) (*syncResults, error) {
	res := &syncResults{rows: cfg.syncRows}
	fmt.Fprintf(os.Stderr, "bench: initial sync: loading %d rows into %s\n", cfg.syncRows, syncTable)
	t := time.Now()
	for _, q := range []string{
		`CREATE TABLE ` + syncTable + ` (id bigint PRIMARY KEY, title text NOT NULL, n int NOT NULL, at timestamptz NOT NULL)`,
		fmt.Sprintf(`INSERT INTO `+syncTable+` SELECT g, 'item ' || md5(g::text), (g %% 1000)::int, '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %d) g`, cfg.syncRows),
		`VACUUM (FREEZE, ANALYZE) ` + syncTable,
	} {
		if err := env.exec(ctx, q); err != nil {
			return nil, err
		}
	}
	res.load = time.Since(t)
	if err := env.conn.QueryRow(ctx, `SELECT pg_table_size('`+syncTable+`')`).Scan(&res.tableBytes); err != nil {
		return nil, fmt.Errorf("table size: %w", err)
	}
	// Warm-up: the table into the page cache.
	if _, _, err := copyOut(ctx, env, cfg.syncRows); err != nil {
		return nil, err
	}
	base := env.base()
	for i := range cfg.syncRounds {
		fmt.Fprintf(os.Stderr, "bench: initial sync: round %d/%d (COPY, new shape, existing shape)\n", i+1, cfg.syncRounds)
		pg0 := clusterCPU(env.pg.PID())
		d, n, err := copyOut(ctx, env, cfg.syncRows)
		if err != nil {
			return nil, err
		}
		res.copy = append(res.copy, d)
		res.copyPGCPU = append(res.copyPGCPU, clusterCPU(env.pg.PID())-pg0)
		res.copyBytes = n

		c := harness.NewShapeClient(base, url.Values{"table": {syncTable}})
		f, err := fetchAll(ctx, env, c, cfg.syncRows)
		if err != nil {
			return nil, fmt.Errorf("new shape of %s: %w", syncTable, err)
		}
		res.shape = append(res.shape, f)
		again := harness.NewShapeClient(base, url.Values{"table": {syncTable}})
		g, err := fetchAll(ctx, env, again, cfg.syncRows)
		if err != nil {
			return nil, fmt.Errorf("existing shape of %s, second client: %w", syncTable, err)
		}
		if again.Handle != c.Handle {
			return nil, fmt.Errorf("second client got handle %q, the first %q", again.Handle, c.Handle)
		}
		res.existing = append(res.existing, g)
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "bench: COPY %s; new shape %s (snapshot %s, %d requests); existing shape %s\n", d, f.total, f.snapshot, f.requests, g.total)
		}
		dctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err = c.Delete(dctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("delete the shape of %s: %w", syncTable, err)
		}
	}
	res.peakRSS = peakRSS(env.worker().PID())
	return res, nil
}

// copyOut runs COPY <table> TO STDOUT into a discarding writer.
func copyOut(ctx context.Context, env *shapeEnv, rows int) (time.Duration, int64, error) {
	qctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	var w countingWriter
	t := time.Now()
	tag, err := env.conn.PgConn().CopyTo(qctx, &w, `COPY `+syncTable+` TO STDOUT`)
	d := time.Since(t)
	if err != nil {
		return 0, 0, fmt.Errorf("COPY %s TO STDOUT: %w", syncTable, err)
	}
	if tag.RowsAffected() != int64(rows) {
		return 0, 0, fmt.Errorf("COPY %s TO STDOUT: %d rows, want %d", syncTable, tag.RowsAffected(), rows)
	}
	return d, w.n, nil
}

// insertMarker is how an insert message's header reads in the worker's
// JSON; counting it is how the benchmark checks that every row arrived
// without parsing hundreds of megabytes on the clock.
var insertMarker = []byte(`"operation":"insert"`)

// fetchAll follows c from offset -1 until up to date and checks that it
// read rows inserts.
func fetchAll(ctx context.Context, env *shapeEnv, c *harness.ShapeClient, rows int) (syncFetch, error) {
	var f syncFetch
	pg0 := clusterCPU(env.pg.PID())
	w0 := processCPU(env.worker().PID())
	t0 := time.Now()
	inserts := 0
	for {
		r, err := c.Next(ctx)
		if err != nil {
			return f, err
		}
		if f.requests == 0 {
			f.snapshot = r.HeaderAt.Sub(t0)
		}
		f.requests++
		f.bytes += int64(len(r.Body))
		inserts += bytes.Count(r.Body, insertMarker)
		if r.UpToDate() {
			f.total = r.BodyAt.Sub(t0)
			break
		}
	}
	f.workerCPU = processCPU(env.worker().PID()) - w0
	f.pgCPU = clusterCPU(env.pg.PID()) - pg0
	if inserts != rows {
		return f, fmt.Errorf("read %d insert messages (counted as %s) in %d responses up to offset %s, want %d: rows missing or doubled",
			inserts, insertMarker, f.requests, c.Offset, rows)
	}
	return f, nil
}
