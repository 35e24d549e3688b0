package replication_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/storage"
)

// reportLease is a lease held for the whole test that checks, at every
// Progress, what lease.proto W10 promises: the slot's confirmed_flush_lsn
// never passes the last position reported.
type reportLease struct {
	ctx  context.Context
	conn *pgx.Conn
	slot string

	mu       sync.Mutex
	reported uint64
	calls    int
	problems []string
	called   chan struct{} // a value after each Progress
}

func (l *reportLease) Ctx() context.Context     { return l.ctx }
func (l *reportLease) Done() <-chan struct{}    { return l.ctx.Done() }
func (l *reportLease) Err() error               { return nil }
func (l *reportLease) Valid() bool              { return true }
func (l *reportLease) DrainDeadline() time.Time { return time.Time{} }

func (l *reportLease) Progress(lsn uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if c := l.confirmedLocked(); c > l.reported {
		l.problems = append(l.problems, fmt.Sprintf("before Progress(%s) the slot was confirmed up to %s, beyond the last position reported, %s",
			pglogrepl.LSN(lsn), pglogrepl.LSN(c), pglogrepl.LSN(l.reported)))
	}
	l.reported = max(l.reported, lsn)
	select {
	case l.called <- struct{}{}:
	default:
	}
	return nil
}

func (l *reportLease) confirmedLocked() uint64 {
	var s string
	if err := l.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", l.slot).Scan(&s); err != nil {
		l.problems = append(l.problems, "read the slot: "+err.Error())
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		l.problems = append(l.problems, "parse the slot's position: "+err.Error())
	}
	return uint64(lsn)
}

// syncSink is the stream's storage; afterSync is called with each durable
// position Sync returns.
type syncSink struct {
	*storage.Log
	afterSync func(uint64)
}

func (s syncSink) Sync() (uint64, error) {
	d, err := s.Log.Sync()
	if err == nil {
		s.afterSync(d)
	}
	return d, err
}

// TestReportedBeforeAcknowledged: the durable position is reported to the
// broker (Progress) before, or as, it is acknowledged to PostgreSQL
// (lease.proto W10), both by the periodic status updates and by the final
// acknowledgement of a graceful stop, so that the slot's
// confirmed_flush_lsn never passes what the broker was told.
func TestReportedBeforeAcknowledged(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	watch, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	const slot = "baton_slot_reported"
	for _, q := range []string{
		"CREATE TABLE items (id int PRIMARY KEY)",
		"CREATE PUBLICATION baton_pub_reported FOR TABLE items",
		"SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	leaseCtx, endLease := context.WithCancel(context.Background())
	defer endLease()
	l := &reportLease{ctx: leaseCtx, conn: watch, slot: slot, called: make(chan struct{}, 1)}
	l.mu.Lock()
	l.reported = l.confirmedLocked() // reported by whoever held the stream before
	l.mu.Unlock()

	log, err := storage.Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu       sync.Mutex
		durable  uint64
		stopAt   uint64 // stop the worker as soon as this is durable
		synced   = make(chan struct{}, 1)
		stopping bool
	)
	sink := syncSink{Log: log, afterSync: func(d uint64) {
		mu.Lock()
		defer mu.Unlock()
		durable = max(durable, d)
		if stopAt != 0 && d >= stopAt && !stopping {
			// The worker's own shutdown right after the sync: the final
			// acknowledgement is the first to carry this position.
			stopping = true
			stop()
		}
		select {
		case synced <- struct{}{}:
		default:
		}
	}}
	done := make(chan error, 1)
	go func() {
		_, err := replication.Run(runCtx, replication.Options{
			DatabaseURL: pg.URL(), StreamID: "reported", Slot: slot, Publication: "baton_pub_reported",
			Epoch: 1, WalSenderTimeout: 3 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, l, sink)
		done <- err
	}()
	insert := func(id int) uint64 {
		t.Helper()
		var lsn string
		if _, err := conn.Exec(ctx, "INSERT INTO items VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		at, err := pglogrepl.ParseLSN(lsn)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(at)
	}
	awaitDurable := func(lsn uint64) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			d := durable
			mu.Unlock()
			if d >= lsn {
				return
			}
			select {
			case <-synced:
			case <-deadline:
				t.Fatalf("the worker did not make %s durable (durable: %s)", pglogrepl.LSN(lsn), pglogrepl.LSN(d))
			}
		}
	}
	// Periodic status updates (every second here) while the stream
	// advances: a transaction made durable before each.
	for i := 1; i <= 4; i++ {
		awaitDurable(insert(i))
		select {
		case <-l.called:
		case <-time.After(30 * time.Second):
			t.Fatalf("no Progress after transaction %d", i)
		}
	}
	// A last transaction, durable just before the worker stops.
	mu.Lock()
	stopAt = insert(1000)
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its shutdown")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.confirmedLocked(); c > l.reported {
		l.problems = append(l.problems, fmt.Sprintf("after the graceful stop the slot is confirmed up to %s, beyond the last position reported, %s",
			pglogrepl.LSN(c), pglogrepl.LSN(l.reported)))
	}
	for _, p := range l.problems {
		t.Error(p)
	}
}

// TestProgressSoonAfterStart: the durable position is reported as soon as
// streaming starts (lease.proto W10: "soon after each grant"), not at the
// first periodic status update (10 s later with this wal_sender_timeout),
// and it is never behind the slot's confirmed position.
func TestProgressSoonAfterStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	watch, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	const slot = "baton_slot_soon"
	for _, q := range []string{
		"CREATE TABLE items (id int PRIMARY KEY)",
		"CREATE PUBLICATION baton_pub_soon FOR TABLE items",
		"SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	leaseCtx, endLease := context.WithCancel(context.Background())
	defer endLease()
	l := &reportLease{ctx: leaseCtx, conn: watch, slot: slot, called: make(chan struct{}, 1)}
	l.mu.Lock()
	l.reported = l.confirmedLocked() // reported by whoever held the stream before
	confirmed := l.reported
	l.mu.Unlock()
	log, err := storage.Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := replication.Run(runCtx, replication.Options{
			DatabaseURL: pg.URL(), StreamID: "soon", Slot: slot, Publication: "baton_pub_soon",
			Epoch: 1, WalSenderTimeout: 30 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, l, syncSink{Log: log, afterSync: func(uint64) {}})
		done <- err
	}()
	select {
	case <-l.called:
	case <-time.After(5 * time.Second):
		t.Fatal("no Progress within 5 s of the start (the first periodic status update is 10 s away)")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reported < confirmed {
		t.Errorf("reported %s, behind the slot's confirmed position %s", pglogrepl.LSN(l.reported), pglogrepl.LSN(confirmed))
	}
	for _, p := range l.problems {
		t.Error(p)
	}
}
