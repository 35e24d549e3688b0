package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// sampleEvery is how often the observer reads PostgreSQL's views.
const sampleEvery = 20 * time.Millisecond

// Walsender is a replication connection's backend.
type Walsender struct {
	PID int    `json:"pid"`
	App string `json:"app"`
}

// Sample is what PostgreSQL's views said at one instant.
type Sample struct {
	At time.Time
	// Walsenders are every replication connection (pg_stat_activity,
	// backend_type walsender), whatever it reads.
	Walsenders []Walsender
	// SlotPID is the slot's active_pid (0: inactive or no slot).
	SlotPID int
	// Confirmed is the slot's confirmed_flush_lsn (0: no slot).
	Confirmed uint64
}

// WorkerEpoch returns the epoch in a worker's application_name
// "baton-worker:<stream>:<epoch>" (ok false for any other name).
func WorkerEpoch(app, streamID string) (uint64, bool) {
	rest, ok := strings.CutPrefix(app, "baton-worker:"+streamID+":")
	if !ok {
		return 0, false
	}
	e, err := strconv.ParseUint(rest, 10, 64)
	return e, err == nil
}

// observer samples PostgreSQL every sampleEvery on its own connection.
type observer struct {
	conn *pgx.Conn
	slot string

	mu      sync.Mutex
	samples []Sample
	err     error
}

func (o *observer) run(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		s, err := o.sample(ctx)
		o.mu.Lock()
		if err != nil {
			if ctx.Err() == nil && o.err == nil {
				o.err = err
			}
		} else {
			o.samples = append(o.samples, s)
		}
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const sampleQuery = `SELECT
	coalesce((SELECT json_agg(json_build_object('pid', pid, 'app', application_name) ORDER BY pid)
		FROM pg_stat_activity WHERE backend_type = 'walsender'), '[]')::text,
	coalesce((SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1), 0),
	coalesce((SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1), '0/0')`

func (o *observer) sample(ctx context.Context) (Sample, error) {
	var ws, lsn string
	var pid int
	if err := o.conn.QueryRow(ctx, sampleQuery, o.slot).Scan(&ws, &pid, &lsn); err != nil {
		return Sample{}, fmt.Errorf("sample views: %w", err)
	}
	s := Sample{At: time.Now(), SlotPID: pid}
	if err := json.Unmarshal([]byte(ws), &s.Walsenders); err != nil {
		return Sample{}, fmt.Errorf("decode walsenders: %w", err)
	}
	c, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return Sample{}, fmt.Errorf("confirmed_flush_lsn %q: %w", lsn, err)
	}
	s.Confirmed = uint64(c)
	return s, nil
}

// Samples returns the samples taken within [from, to].
func (o *observer) Samples(from, to time.Time) []Sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Sample
	for _, s := range o.samples {
		if !s.At.Before(from) && !s.At.After(to) {
			out = append(out, s)
		}
	}
	return out
}

// Err is the first failure to sample, if any.
func (o *observer) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// fmtLSN prints an LSN as PostgreSQL does.
func fmtLSN(l uint64) string { return pglogrepl.LSN(l).String() }
