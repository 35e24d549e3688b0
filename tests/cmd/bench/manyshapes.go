package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// Many shapes (the shapes section): write processing with 1 to 10,000
// shapes with where clauses on one table, against the same workload with
// one whole-table shape. For each kind of filter (equality `id = $1` with
// one id per shape, disjoint integer ranges `id >= $1 AND id < $2` that
// cover the table) and each number of shapes N:
//
//   - the N shapes are created (GET offset=-1, a few requests at a time);
//   - throughput: bursts of row updates, committed by one server-side loop
//     with a COMMIT every k rows, each update hitting a row that is in
//     exactly one shape; from the loop's start to a client following the
//     shape of the last update reading the response that holds it (its
//     offset passes the WAL position noted before the last transaction):
//     every earlier transaction was routed before it;
//   - latency: long-poll clients on a few shapes; single-row updates of a
//     row of one of them, committed one at a time once that client's next
//     long-poll waits in the worker; commit returned → response read.
//
// Shapes cannot be removed one by one here (DELETE /v1/shape finds the
// shape by its table only, not by its where clause), so every
// configuration starts on a fresh worker: the worker is stopped, its
// shapes folder removed, and a new worker started on the same storage.

const (
	manyTable = "many_items"
	// ElectricSQL's published benchmarks (electric-sql.com/docs/reference/benchmarks,
	// "write throughput with optimised where clauses" and "many disjoint
	// shapes"): 0.17–0.27 ms per change, flat in the number of
	// `field = constant` shapes, and 6 ms from write to client.
	electricChangesLo = 4000
	electricChangesHi = 6000
	electricLatency   = 6 * time.Millisecond
	// goalManyFactor: Baton's goal is this many times Electric's throughput.
	goalManyFactor     = 10
	manyLatencyTargets = 3
)

// manyKind is a kind of filter.
type manyKind string

const (
	kindWhole    manyKind = "whole table"
	kindEquality manyKind = "equality"
	kindRange    manyKind = "range"
	// kindConjunction: `id = $1 AND lower(note) <> $2`, one id per shape:
	// the second conjunct has no Go fast path, so PostgreSQL evaluates the
	// clause, on the rows the first one (the pre-filter) lets through.
	kindConjunction manyKind = "conjunction"
)

// perID: the kind's shapes hold one id each (equality, conjunction).
func (k manyKind) perID() bool { return k == kindEquality || k == kindConjunction }

// manyRun is one configuration: a kind and a number of shapes.
type manyRun struct {
	kind     manyKind
	n        int
	created  int           // shapes created for this run (equality: the new ones)
	creation time.Duration // creating them
	bursts   map[int][]burst
	latency  []time.Duration
	rtt      []time.Duration
	requests int
}

// burst is one measured burst of updates.
type burst struct {
	wall      time.Duration // loop start → last change read by a client
	gen       time.Duration // the loop alone (PostgreSQL committing)
	workerCPU time.Duration
	pgCPU     time.Duration
	responses int
}

type manyResults struct {
	cfg  config
	rows int
	base *manyRun
	runs []*manyRun
}

// manyShape is one shape of a run: its where clause and a row in it.
type manyShape struct {
	def url.Values // where, params
	lo  int64      // a row in it
}

func (k manyKind) shapes(n, rows int) []manyShape {
	switch k {
	case kindEquality:
		out := make([]manyShape, n)
		for i := range n {
			id := int64(i + 1)
			out[i] = manyShape{def: url.Values{"where": {"id = $1"}, "params[1]": {strconv.FormatInt(id, 10)}}, lo: id}
		}
		return out
	case kindConjunction:
		out := make([]manyShape, n)
		for i := range n {
			id := int64(i + 1)
			out[i] = manyShape{def: url.Values{"where": {"id = $1 AND lower(note) <> $2"},
				"params[1]": {strconv.FormatInt(id, 10)}, "params[2]": {"none"}}, lo: id}
		}
		return out
	case kindRange:
		out := make([]manyShape, n)
		for i := range n {
			lo, hi := 1+int64(i)*int64(rows)/int64(n), 1+int64(i+1)*int64(rows)/int64(n)
			out[i] = manyShape{def: url.Values{"where": {"id >= $1 AND id < $2"},
				"params[1]": {strconv.FormatInt(lo, 10)}, "params[2]": {strconv.FormatInt(hi, 10)}}, lo: lo}
		}
		return out
	}
	return []manyShape{{lo: 1}}
}

// shapeOf is the shape of shapes holding row id.
func (k manyKind) shapeOf(shapes []manyShape, id int64) manyShape {
	if k.perID() {
		return shapes[id-1]
	}
	i := len(shapes) - 1
	for i > 0 && shapes[i].lo > id {
		i--
	}
	return shapes[i]
}

// idSQL is the SQL expression of the row the j-th update of a burst hits:
// every update hits a row that is in one shape.
func (k manyKind) idSQL(n, rows int) string {
	if k.perID() {
		return fmt.Sprintf("1 + j %% %d", n)
	}
	return fmt.Sprintf("1 + j %% %d", rows)
}

func (k manyKind) idOf(j, n, rows int) int64 {
	if k.perID() {
		return int64(1 + j%n)
	}
	return int64(1 + j%rows)
}

type manyBench struct {
	cfg  config
	env  *shapeEnv
	rows int
}

func runManyShapes(ctx context.Context, cfg config, env *shapeEnv) (*manyResults, error) {
	rows := max(cfg.manyRows, 1)
	for _, n := range cfg.manyN {
		rows = max(rows, n)
	}
	b := &manyBench{cfg: cfg, env: env, rows: rows}
	res := &manyResults{cfg: cfg, rows: rows}
	fmt.Fprintf(os.Stderr, "bench: shapes: table %s of %s rows (REPLICA IDENTITY FULL, as a where clause needs)\n", manyTable, thousands(float64(rows)))
	if err := env.exec(ctx, `CREATE TABLE `+manyTable+` (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL)`); err != nil {
		return nil, err
	}
	if err := env.exec(ctx, `ALTER TABLE `+manyTable+` REPLICA IDENTITY FULL`); err != nil {
		return nil, err
	}
	if err := env.exec(ctx, fmt.Sprintf(`INSERT INTO `+manyTable+` SELECT g, 0, 'row ' || g FROM generate_series(1, %d) g`, rows)); err != nil {
		return nil, err
	}
	if err := env.exec(ctx, `VACUUM ANALYZE `+manyTable); err != nil {
		return nil, err
	}

	var err error
	if res.base, err = b.run(ctx, kindWhole, 1, nil); err != nil {
		return nil, fmt.Errorf("whole-table shape: %w", err)
	}
	for _, k := range cfg.manyKinds {
		kind := manyKind(k)
		if err := b.fresh(ctx); err != nil {
			return nil, err
		}
		var have []manyShape // per-id shapes are a prefix of the next run's
		for _, n := range cfg.manyN {
			if kind == kindRange && len(have) > 0 {
				if err := b.fresh(ctx); err != nil {
					return nil, err
				}
				have = nil
			}
			r, err := b.run(ctx, kind, n, have)
			if err != nil {
				return nil, fmt.Errorf("%s, %d shapes: %w", kind, n, err)
			}
			res.runs = append(res.runs, r)
			have = kind.shapes(n, rows)
		}
	}
	return res, nil
}

// fresh restarts the worker without shapes.
func (b *manyBench) fresh(ctx context.Context) error {
	if err := b.env.stopWorker(); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(b.env.storage, shapeStream, "shapes")); err != nil {
		return err
	}
	if _, err := b.env.startWorker(); err != nil {
		return err
	}
	return b.env.awaitActive(ctx)
}

// client is a client of the shape of manyTable with def (where, params),
// the whole table when def is nil.
func (b *manyBench) client(def url.Values) *harness.ShapeClient {
	shape := url.Values{"table": {manyTable}}
	for k, v := range def {
		shape[k] = v
	}
	return harness.NewShapeClient(b.env.base(), shape)
}

// run creates the shapes of kind and n that are not in have, then measures.
func (b *manyBench) run(ctx context.Context, kind manyKind, n int, have []manyShape) (*manyRun, error) {
	shapes := kind.shapes(n, b.rows)
	r := &manyRun{kind: kind, n: n, bursts: map[int][]burst{}}
	todo := shapes[len(have):]
	r.created = len(todo)
	fmt.Fprintf(os.Stderr, "bench: shapes: %s, %d shapes: creating %d\n", kind, n, len(todo))
	t0 := time.Now()
	if err := b.create(ctx, todo); err != nil {
		return nil, err
	}
	r.creation = time.Since(t0)
	fmt.Fprintf(os.Stderr, "bench: shapes: %s, %d shapes: created %d in %s; bursts\n", kind, n, len(todo), r.creation.Round(time.Millisecond))
	for _, k := range b.cfg.manyTxSizes {
		for round := range b.cfg.manyRounds {
			x, err := b.burst(ctx, kind, n, shapes, k)
			if err != nil {
				return nil, fmt.Errorf("burst of %d-row transactions, round %d: %w", k, round+1, err)
			}
			if b.cfg.verbose {
				fmt.Fprintf(os.Stderr, "bench: shapes: %s, %d shapes, %d-row transactions: %s (loop %s), worker CPU %s\n",
					kind, n, k, x.wall.Round(time.Millisecond), x.gen.Round(time.Millisecond), x.workerCPU)
			}
			r.bursts[k] = append(r.bursts[k], x)
		}
	}
	if err := b.latency(ctx, kind, n, shapes, r); err != nil {
		return nil, fmt.Errorf("latency: %w", err)
	}
	return r, nil
}

// create creates shapes, cfg.manyCreators requests at a time.
func (b *manyBench) create(ctx context.Context, shapes []manyShape) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.cfg.manyCreators)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range b.cfg.manyCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(shapes) || cctx.Err() != nil {
					return
				}
				c := b.client(shapes[i].def)
				if _, err := c.Next(cctx); err != nil {
					errs <- fmt.Errorf("create shape %s: %w", defString(shapes[i].def), err)
					cancel()
					return
				}
				c.HTTP.CloseIdleConnections()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs)
}

// burst commits cfg.manyChanges updates in transactions of k rows and
// follows the shape of the last one until it holds it.
func (b *manyBench) burst(ctx context.Context, kind manyKind, n int, shapes []manyShape, k int) (burst, error) {
	var x burst
	w := b.cfg.manyChanges
	lastID := kind.idOf(w-1, n, b.rows)
	c := b.client(kind.shapeOf(shapes, lastID).def)
	if _, err := c.CatchUp(ctx); err != nil {
		return x, fmt.Errorf("follow the shape of row %d: %w", lastID, err)
	}
	update := fmt.Sprintf(`UPDATE `+manyTable+` SET n = n + 1 WHERE id = %s`, kind.idSQL(n, b.rows))
	wcpu0, pg0 := processCPU(b.env.worker().PID()), clusterCPU(b.env.pg.PID())
	t0 := time.Now()
	if w > k {
		if err := b.env.exec(ctx, fmt.Sprintf(`DO $$
BEGIN
  FOR j IN 0..%d LOOP
    %s;
    IF j %% %d = %d THEN COMMIT; END IF;
  END LOOP;
END $$`, w-k-1, update, k, k-1)); err != nil {
			return x, err
		}
	}
	before, err := b.env.currentLSN(ctx)
	if err != nil {
		return x, err
	}
	if err := b.env.exec(ctx, fmt.Sprintf(`DO $$
BEGIN
  FOR j IN %d..%d LOOP
    %s;
  END LOOP;
END $$`, w-k, w-1, update)); err != nil {
		return x, err
	}
	x.gen = time.Since(t0)
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	for {
		resp, err := c.Next(cctx)
		if err != nil {
			return x, fmt.Errorf("waiting for the last transaction (after %s) in the shape of row %d: %w", formatLSN(before), lastID, err)
		}
		x.responses++
		off, err := harness.ParseOffset(resp.Offset())
		if err != nil {
			return x, err
		}
		if off.TX > before {
			x.wall = resp.BodyAt.Sub(t0)
			break
		}
	}
	x.workerCPU = processCPU(b.env.worker().PID()) - wcpu0
	x.pgCPU = clusterCPU(b.env.pg.PID()) - pg0
	return x, nil
}

// latency follows a few shapes with long-poll clients and commits
// single-row updates of their rows, one at a time.
func (b *manyBench) latency(ctx context.Context, kind manyKind, n int, shapes []manyShape, r *manyRun) error {
	// The rows: first, middle and last row of the shapes; one client per
	// distinct shape.
	var ids []int64
	var clients []*harness.ShapeClient
	byDef := map[string]int{}
	last := shapes[len(shapes)-1].lo
	if !kind.perID() {
		last = int64(b.rows)
	}
	for _, id := range []int64{1, (last + 1) / 2, last}[:min(manyLatencyTargets, len(shapes)*3)] {
		s := kind.shapeOf(shapes, id)
		key := s.def.Encode()
		if _, ok := byDef[key]; !ok {
			c := b.client(s.def)
			if _, err := c.CatchUp(ctx); err != nil {
				return fmt.Errorf("follow the shape of row %d: %w", id, err)
			}
			byDef[key] = len(clients)
			clients = append(clients, c)
		}
		ids = append(ids, id)
	}
	type got struct {
		client int
		id, n  int64
		at     time.Time
		seq    int64 // the client's request that delivered it
	}
	sent := make([]atomic.Int64, len(clients))
	ch := make(chan got, 64)
	errc := make(chan error, len(clients))
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, c := range clients {
		c.OnSend = func() { sent[i].Add(1) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := c.Next(fctx)
				if err != nil {
					if fctx.Err() == nil {
						errc <- err
					}
					return
				}
				seq := sent[i].Load() // a client's requests are sequential
				rows, err := changedRows(resp.Body)
				if err != nil {
					errc <- err
					return
				}
				for _, row := range rows {
					select {
					case ch <- got{client: i, id: row.id, n: row.n, at: resp.BodyAt, seq: seq}:
					case <-fctx.Done():
						return
					}
				}
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
		for i := range clients {
			r.requests += int(sent[i].Load())
		}
	}()
	lastSeen := make([]int64, len(clients))
	for i := range liveWarmup + b.cfg.manyLive {
		id := ids[i%len(ids)]
		ci := byDef[kind.shapeOf(shapes, id).def.Encode()]
		if err := await(ctx, arrivalTimeout, "the client's next long-poll", func() (bool, error) {
			select {
			case err := <-errc:
				return false, err
			default:
			}
			return sent[ci].Load() > lastSeen[ci], nil
		}); err != nil {
			return err
		}
		time.Sleep(2*time.Millisecond + rand.N(3*time.Millisecond))
		qctx, cancel := context.WithTimeout(ctx, sqlTimeout)
		t0 := time.Now()
		var n int64
		err := b.env.conn.QueryRow(qctx, `UPDATE `+manyTable+` SET n = n + 1 WHERE id = $1 RETURNING n`, id).Scan(&n)
		t1 := time.Now()
		cancel()
		if err != nil {
			return fmt.Errorf("update row %d: %w", id, err)
		}
		var g got
		timer := time.NewTimer(arrivalTimeout)
	wait:
		for {
			select {
			case g = <-ch:
				if g.client == ci && g.id == id && (g.n == n || g.n < 0) {
					break wait
				}
				if g.id == id && g.n < n && g.n >= 0 {
					// An earlier change of the row (a burst's last, routed
					// into this shape just after its client's catch-up was
					// up to date: the router makes the shapes of a batch
					// visible one by one). Delivered once, late: not this
					// commit's.
					continue
				}
				if kind != kindWhole || g.id != id {
					timer.Stop()
					return fmt.Errorf("row %d arrived at the client of shape %s while waiting for row %d (in the response to its request %d; row %d had come in the response to request %d)",
						g.id, defString(clients[g.client].Shape), id, g.seq, g.id, lastSeen[g.client])
				}
			case err := <-errc:
				timer.Stop()
				return fmt.Errorf("long-poll client: %w", err)
			case <-timer.C:
				return fmt.Errorf("row %d (committed) did not reach its long-poll client within %s", id, arrivalTimeout)
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			}
		}
		timer.Stop()
		lastSeen[ci] = g.seq
		if i < liveWarmup {
			continue
		}
		r.rtt = append(r.rtt, t1.Sub(t0))
		r.latency = append(r.latency, max(g.at.Sub(t1), 0))
	}
	return nil
}

// defString is a shape's where clause with its params, for messages.
func defString(def url.Values) string {
	if def.Get("where") == "" {
		return "(whole table)"
	}
	w := def.Get("where")
	for i := 1; ; i++ {
		v, ok := def["params["+strconv.Itoa(i)+"]"]
		if !ok {
			return w
		}
		w = strings.Replace(w, "$"+strconv.Itoa(i), v[0], 1)
	}
}
