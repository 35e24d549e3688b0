package replication_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/storage"
)

// expiringLease is a lease held until expire is called: then, as a lease
// whose deadline passed on the worker's clock before its timer fired,
// Valid is false while Err is still nil.
type expiringLease struct {
	ctx     context.Context
	expired atomic.Bool
}

func (l *expiringLease) Ctx() context.Context     { return l.ctx }
func (l *expiringLease) Done() <-chan struct{}    { return l.ctx.Done() }
func (l *expiringLease) Err() error               { return nil }
func (l *expiringLease) Valid() bool              { return !l.expired.Load() }
func (l *expiringLease) DrainDeadline() time.Time { return time.Time{} }
func (l *expiringLease) Progress(uint64) error    { return nil }

// gateSink holds the stream in Append of the first transaction until
// released, and runs onSync before every Sync.
type gateSink struct {
	*storage.Log
	release chan struct{}
	once    sync.Once
	onSync  func()
}

func (s *gateSink) Append(r storage.Record) (uint64, error) {
	s.once.Do(func() { <-s.release })
	return s.Log.Append(r)
}

func (s *gateSink) Sync() (uint64, error) {
	s.onSync()
	return s.Log.Sync()
}

// TestNoAcknowledgementAfterExpiryDuringDrain: a worker stopping on its
// own (its context done, the lease valid) drains what it received; when
// its lease's deadline passes during that drain (here: while it makes the
// last transactions durable), it acknowledges nothing more (lease.proto
// W4: validity is checked before every acknowledgement).
func TestNoAcknowledgementAfterExpiryDuringDrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const slot = "baton_slot_expiry"
	for _, q := range []string{
		"CREATE TABLE items (id int PRIMARY KEY)",
		"CREATE PUBLICATION baton_pub_expiry FOR TABLE items",
		"SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	confirmed := func() pglogrepl.LSN {
		t.Helper()
		var s string
		if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
			t.Fatal(err)
		}
		lsn, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	start := confirmed()
	leaseCtx, endLease := context.WithCancel(context.Background())
	defer endLease()
	l := &expiringLease{ctx: leaseCtx}
	log, err := storage.Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	sink := &gateSink{Log: log, release: make(chan struct{}), onSync: func() {
		if runCtx.Err() != nil {
			l.expired.Store(true) // the deadline passes while the drain syncs
		}
	}}
	done := make(chan error, 1)
	go func() {
		_, err := replication.Run(runCtx, replication.Options{
			DatabaseURL: pg.URL(), StreamID: "expiry", Slot: slot, Publication: "baton_pub_expiry",
			Epoch: 1, WalSenderTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, l, sink)
		done <- err
	}()
	defer close(sink.release)
	// The first transaction holds the stream in Append; the second is sent
	// meanwhile and waits, received, for the stream to take it.
	var end pglogrepl.LSN
	for i := 1; i <= 2; i++ {
		var lsn string
		if _, err := conn.Exec(ctx, "INSERT INTO items VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		if end, err = pglogrepl.ParseLSN(lsn); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var sent bool
		if err := conn.QueryRow(ctx, "SELECT coalesce(bool_or(sent_lsn >= $1::pg_lsn), false) FROM pg_stat_replication", end.String()).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		if sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the walsender did not send up to %s", end)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	// The worker stops on its own; the transactions it received are
	// drained, and the lease's deadline passes while they are synced.
	stop()
	sink.release <- struct{}{}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its shutdown")
	}
	if !l.expired.Load() {
		t.Fatal("the drain synced nothing: the test did not reach the case it is about")
	}
	if c := confirmed(); c != start {
		t.Errorf("the slot was confirmed up to %s after the lease's deadline passed (before: %s); want nothing acknowledged", c, start)
	}
}
