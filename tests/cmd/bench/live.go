package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// Live latency (issue 3): a client long-polls the shape exactly as
// Electric's client does (live=true with the handle, offset and cursor of
// the previous response) while the benchmark commits single-row
// transactions one at a time. For each row: the commit's return to the
// committing client → the long-poll response carrying that row has been
// read in full.
//
// Baselines in the same run, on the same commits:
//   - PostgreSQL's commit round trip (an autocommit INSERT, one round trip
//     with a prepared statement): the floor of any "commit → seen" path
//     measured from the committer's side;
//   - a raw pgoutput consumer (this program, on its own slot, same
//     publication, reading the same WAL at the same time): commit returned
//     → its commit message arrived. This is how soon any logical
//     replication client can see the change.
//
// Each commit is made only once the client's next long-poll has been sent
// (plus 2–5 ms so that it waits in the worker), so every row is delivered
// to a waiting long-poll, the case the goal is about.

const (
	liveTable      = "live_items"
	liveSlot       = "bench_live"
	arrivalTimeout = 10 * time.Second
	liveWarmup     = 20
)

type liveResults struct {
	commits    int
	commitRTT  []time.Duration // INSERT sent → returned
	raw        []time.Duration // commit returned → the raw consumer's commit message
	baton      []time.Duration // commit returned → the long-poll response with the row read
	early      int             // rows whose response was read before the commit returned (counted as 0)
	rawEarly   int             // commits the raw consumer had before the commit returned (counted as 0)
	notWaiting int             // rows not delivered by a long-poll sent before the commit
	requests   int
	fsync      []time.Duration // the disk probe: 4 KiB append + fsync in the worker's storage folder
}

// delivery is a row read from a long-poll response.
type delivery struct {
	id       int64
	at, sent time.Time
	seq      int64 // the request's number
}

func runLive(ctx context.Context, cfg config, env *shapeEnv) (_ *liveResults, err error) {
	if err := env.exec(ctx, `CREATE TABLE `+liveTable+` (id bigint PRIMARY KEY, note text NOT NULL, committed_at timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		return nil, err
	}
	client := harness.NewShapeClient(env.base(), url.Values{"table": {liveTable}})
	if _, err := client.CatchUp(ctx); err != nil {
		return nil, fmt.Errorf("create the shape of %s: %w", liveTable, err)
	}
	// The shape put the table in the publication; the raw consumer's slot
	// starts after that.
	if err := env.exec(ctx, `SELECT pg_create_logical_replication_slot('`+liveSlot+`', 'pgoutput')`); err != nil {
		return nil, err
	}
	defer func() {
		if derr := env.dropSlot(context.WithoutCancel(ctx), liveSlot); derr != nil && err == nil {
			err = derr
		}
	}()
	rawCh := make(chan arrival, 64)
	raw, err := startRawConsumer(ctx, env.dbURL, liveSlot, publication, rawCh)
	if err != nil {
		return nil, err
	}
	defer raw.close()

	// The long-polling client.
	var sent atomic.Int64 // requests sent
	client.OnSend = func() { sent.Add(1) }
	batonCh := make(chan delivery, 64)
	followErr := make(chan error, 1)
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		for {
			resp, err := client.Next(fctx)
			if err != nil {
				if fctx.Err() == nil {
					followErr <- err
				}
				return
			}
			seq := sent.Load() // requests are sequential: this one's number
			ids, err := insertedIDs(resp.Body)
			if err != nil {
				followErr <- fmt.Errorf("GET %s: %w", resp.URL, err)
				return
			}
			for _, id := range ids {
				select {
				case batonCh <- delivery{id: id, at: resp.BodyAt, sent: resp.SentAt, seq: seq}:
				case <-fctx.Done():
					return
				}
			}
		}
	}()
	defer func() {
		stopFollow()
		<-followed
	}()

	res := &liveResults{commits: cfg.liveCommits}
	probe, err := startFsyncProbe(env.storage, 20*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("disk probe: %w", err)
	}
	probed := false
	defer func() {
		if !probed {
			_, _ = probe.finish()
		}
	}()
	fmt.Fprintf(os.Stderr, "bench: live: %d single-row commits (+%d warm-up), each to a waiting long-poll\n", cfg.liveCommits, liveWarmup)
	var lastSeq int64 // the request that delivered the previous row
	for i := range liveWarmup + cfg.liveCommits {
		id := int64(i + 1)
		// Commit once the next long-poll is on its way and waiting.
		if err := await(ctx, arrivalTimeout, "the client's next long-poll", func() (bool, error) {
			select {
			case err := <-followErr:
				return false, err
			default:
			}
			return sent.Load() > lastSeq, nil
		}); err != nil {
			return nil, err
		}
		time.Sleep(2*time.Millisecond + rand.N(3*time.Millisecond))
		qctx, cancel := context.WithTimeout(ctx, sqlTimeout)
		t0 := time.Now()
		_, err := env.conn.Exec(qctx, `INSERT INTO `+liveTable+` (id, note) VALUES ($1, 'live')`, id)
		t1 := time.Now()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("commit row %d: %w", id, err)
		}
		var rawAt time.Time
		var d delivery
		timer := time.NewTimer(arrivalTimeout)
		for rawAt.IsZero() || d.at.IsZero() {
			select {
			case a := <-rawCh:
				if a.id != id {
					timer.Stop()
					return nil, fmt.Errorf("raw pgoutput consumer: row %d arrived while waiting for row %d", a.id, id)
				}
				rawAt = a.at
			case d = <-batonCh:
				if d.id != id {
					timer.Stop()
					return nil, fmt.Errorf("shape long-poll: row %d arrived while waiting for row %d (client offset %s)", d.id, id, client.Offset)
				}
			case err := <-followErr:
				timer.Stop()
				return nil, fmt.Errorf("long-poll client: %w", err)
			case <-timer.C:
				what := "the raw pgoutput consumer"
				if rawAt.IsZero() && d.at.IsZero() {
					what = "the shape's long-poll client and " + what
				} else if d.at.IsZero() {
					what = fmt.Sprintf("the shape's long-poll client (live request %s pending; the raw consumer had it after %s)",
						client.Query(client.UpToDate).Encode(), rawAt.Sub(t1).Round(time.Microsecond))
				}
				return nil, fmt.Errorf("row %d (committed) did not reach %s within %s", id, what, arrivalTimeout)
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			}
		}
		timer.Stop()
		lastSeq = d.seq
		if i < liveWarmup {
			continue
		}
		res.commitRTT = append(res.commitRTT, t1.Sub(t0))
		if rawAt.Before(t1) {
			res.rawEarly++
		}
		res.raw = append(res.raw, max(rawAt.Sub(t1), 0))
		lat := d.at.Sub(t1)
		if lat < 0 {
			res.early++
			lat = 0
		}
		res.baton = append(res.baton, lat)
		if cfg.verbose && lat > goalLiveP99 {
			fmt.Fprintf(os.Stderr, "bench: live: row %d committed at %s: reached the long-poll client after %s (raw consumer %s, commit round trip %s)\n",
				id, t1.UTC().Format("15:04:05.000"), lat.Round(time.Microsecond), rawAt.Sub(t1).Round(time.Microsecond), t1.Sub(t0).Round(time.Microsecond))
		}
		if !d.sent.Before(t0) {
			res.notWaiting++
		}
	}
	res.requests = int(sent.Load())
	probed = true
	if res.fsync, err = probe.finish(); err != nil {
		return nil, fmt.Errorf("disk probe: %w", err)
	}
	select {
	case err := <-followErr:
		return nil, fmt.Errorf("long-poll client: %w", err)
	default:
	}
	if len(res.baton) == 0 {
		return nil, errors.New("no live commit measured")
	}
	return res, nil
}
