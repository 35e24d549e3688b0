package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/lease"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// Two brokers on one stream: one lock, one leader, the other ready and
// waiting. A broker on a second stream leads independently.
func TestOneLeaderPerStream(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b"})
	startWorker(t, a, "wa")
	startWorker(t, b, "wb")

	lead := awaitLeader(t, 10*time.Second, a, b)
	standby := other(lead, a, b)
	if err := standby.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := lead.AwaitHealth("readiness", serving, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := harness.Await(5*time.Second, "one holder and one waiter in pg_locks", func() (bool, error) {
		held, waiting := lockHolders(t, conn, "default")
		return len(held) == 1 && waiting == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	if standby.IsLeader() {
		t.Fatal("standby reports leader")
	}
	for _, svc := range []string{"", "liveness"} {
		for _, br := range []*harness.Broker{a, b} {
			if s, err := br.Health(context.Background(), svc); err != nil || s != serving {
				t.Fatalf("%s health %q = %v, %v; want SERVING", br.Name, svc, s, err)
			}
		}
	}

	c := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), StreamID: "orders", Name: "c"})
	startWorker(t, c, "wc")
	if err := c.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !lead.IsLeader() {
		t.Fatal("the first stream's leader lost leadership when a second stream started")
	}
	held, _ := lockHolders(t, conn, "orders")
	if len(held) != 1 {
		t.Fatalf("stream orders: %d holders, want 1", len(held))
	}
}

// SIGTERM of the holder: its worker is told revoked (shutdown) while the
// lock is still held, the standby leads next with epoch+1, the holder exits 0.
func TestSigtermHandsOver(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	wa := startWorker(t, a, "wa")
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b"})
	wb := startWorker(t, b, "wb")
	if err := b.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	granted, _, err := wa.AwaitEvent(t.Context(), "granted", 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	epoch := storedEpoch(t, conn, "default")
	if granted.Epoch != epoch {
		t.Fatalf("worker a granted epoch %d, state table says %d", granted.Epoch, epoch)
	}

	// When a's worker learns of the revoke, a must still hold the lock.
	var mu sync.Mutex
	var heldAtRevoke []int32
	var drain time.Duration
	wa.OnEnd = func(l *lease.Lease) {
		held, _ := lockHolders(t, conn, "default")
		mu.Lock()
		heldAtRevoke = held
		drain = l.DrainDeadline().Sub(l.EndedAt())
		mu.Unlock()
	}
	// a's lock session pid, from the state table.
	var aPID int32
	if err := conn.QueryRow(context.Background(), "SELECT backend_pid FROM baton.streams WHERE stream_id = 'default'").Scan(&aPID); err != nil {
		t.Fatal(err)
	}

	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ended, _, err := wa.AwaitEvent(t.Context(), "ended", 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := lease.Revoked(ended.Cause); !ok || r != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN {
		t.Fatalf("worker a's lease ended with %v, want revoked (shutdown)", ended.Cause)
	}
	gb, _, err := wb.AwaitEvent(t.Context(), "granted", 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if gb.Epoch != epoch+1 {
		t.Fatalf("standby granted epoch %d, want %d", gb.Epoch, epoch+1)
	}
	if gb.At.Before(ended.At) {
		t.Fatalf("standby granted at %v, before the old worker's lease ended at %v", gb.At, ended.At)
	}
	mu.Lock()
	if len(heldAtRevoke) != 1 || heldAtRevoke[0] != aPID {
		t.Fatalf("at revoke, lock holders were %v; want only a's session %d", heldAtRevoke, aPID)
	}
	// The revoke said how long the worker may drain: BATON_DRAIN_TIMEOUT
	// (20 s) less the broker's delivery margin (lease.proto B4).
	if drain < 17*time.Second || drain > 18*time.Second {
		t.Fatalf("worker a may drain for %v after the revoke, want about 18s", drain)
	}
	mu.Unlock()
	code, err := a.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("broker a exit = %d, %v; want 0", code, err)
	}
	if err := b.AwaitHealth("leader", serving, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mustContain(t, a.Output(), "lock released", "broker a log")
}

// SIGKILL of the holder: the standby leads within 2 s.
func TestSigkillTakeover(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	startWorker(t, a, "wa")
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b"})
	wb := startWorker(t, b, "wb")
	if err := b.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := a.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g, _, err := wb.AwaitEvent(t.Context(), "granted", 0, 2*time.Second)
	if err != nil {
		t.Fatalf("standby not granted within 2 s of SIGKILL: %v", err)
	}
	t.Logf("SIGKILL → grant: %s", g.At.Sub(killed))
}

// SIGSTOP of the holder: the standby leads within the session timeout + 3 s;
// the frozen broker's worker saw its lease expire before that; after SIGCONT
// the old broker does not lead and waits again.
func TestSigstopTakeover(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	wa := startWorker(t, a, "wa")
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b", Settings: fastSettings})
	wb := startWorker(t, b, "wb")
	if err := b.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wa.AwaitEvent(t.Context(), "granted", 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Signal(syscall.SIGCONT) })
	const bound = 3*time.Second + 3*time.Second
	g, _, err := wb.AwaitEvent(t.Context(), "granted", 0, bound)
	if err != nil {
		t.Fatalf("standby not granted within %s of SIGSTOP: %v", bound, err)
	}
	t.Logf("SIGSTOP → grant: %s", g.At.Sub(stopped))
	ea, _, err := wa.AwaitEvent(t.Context(), "ended", 0, time.Second)
	if err != nil {
		t.Fatalf("frozen broker's worker never saw its lease end: %v", err)
	}
	if !errors.Is(ea.Cause, lease.ErrExpired) {
		t.Fatalf("frozen broker's worker lease ended with %v, want expiry", ea.Cause)
	}
	if !ea.At.Before(g.At) {
		t.Fatalf("old lease ended at %v, not before the new grant at %v", ea.At, g.At)
	}

	if err := a.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// a finds its session gone, revokes, and waits again; b keeps leading.
	if err := a.WaitOutput("lock lost", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if a.IsLeader() {
		t.Fatal("thawed broker reports leader")
	}
	if !b.IsLeader() {
		t.Fatal("new leader lost leadership after the old broker thawed")
	}
	if n := len(wa.Events()); n != 2 {
		t.Fatalf("thawed broker's worker has %d events (%v), want granted+ended only", n, wa.Events())
	}
}

// A holder whose worker is gone releases the lock after the absence timeout
// and reports not ready.
func TestWorkerAbsenceReleases(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	settings := map[string]string{"BATON_WORKER_ABSENCE_TIMEOUT": "2s", "BATON_LEASE_TTL": "1s",
		"BATON_HEARTBEAT_INTERVAL": "300ms", "BATON_LOCK_SESSION_TIMEOUT": "3s"}
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: settings})
	wa, err := harness.StartLeaseWorker(a.Addr, lease.Options{WorkerID: "wa", StreamID: a.StreamID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	wa.Close()
	if err := harness.Await(10*time.Second, "the lock to be released", func() (bool, error) {
		held, _ := lockHolders(t, conn, "default")
		return len(held) == 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(gone); d < 2*time.Second {
		t.Fatalf("lock released %s after the worker left, before the 2 s absence timeout", d)
	}
	if err := a.AwaitHealth("readiness", notServing, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// A worker attaching again makes the broker take the stream again.
	w2 := startWorker(t, a, "wa2")
	if _, _, err := w2.AwaitEvent(t.Context(), "granted", 0, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// PostgreSQL restart: every session ends; afterwards exactly one broker
// leads, with a higher epoch.
func TestPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b", Settings: fastSettings})
	startWorker(t, a, "wa")
	startWorker(t, b, "wb")
	awaitLeader(t, 10*time.Second, a, b)
	before := storedEpoch(t, connect(t, pg), "default")

	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	// Both lock sessions died; wait until a leader with a newer epoch.
	conn := connect(t, pg)
	if err := harness.Await(30*time.Second, "a leader with a higher epoch", func() (bool, error) {
		if !a.IsLeader() && !b.IsLeader() {
			return false, nil
		}
		var e int64
		if err := conn.QueryRow(context.Background(), "SELECT epoch FROM baton.streams WHERE stream_id = 'default'").Scan(&e); err != nil {
			return false, err
		}
		return uint64(e) > before, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The old holder still says leader until its next heartbeat finds its
	// session gone (at most one heartbeat interval): two leaders may show
	// for that long here, and then exactly one must.
	if err := harness.Await(5*time.Second, "exactly one leader after the restart", func() (bool, error) {
		return a.IsLeader() != b.IsLeader(), nil
	}); err != nil {
		t.Fatal(err)
	}
	// The other broker reconnects (with backoff) and waits again.
	if err := harness.Await(15*time.Second, "one holder and one waiter after the restart", func() (bool, error) {
		held, waiting := lockHolders(t, conn, "default")
		if len(held) > 1 {
			return false, fmt.Errorf("%d holders", len(held))
		}
		return len(held) == 1 && waiting == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	awaitLeader(t, time.Second, a, b)
}

// TestPostgresRestartNoLeaseOverlap: after a PostgreSQL restart, the
// broker that takes the lock grants only once the previous holder's lease
// has ended on its worker (I1). The restart ends the old broker's lock
// session at once, and that broker learns of it only at its next
// heartbeat: before the fix the next epoch was granted while the old
// worker still held a valid lease (found by the randomized fault test).
// Several restarts, until the lock changed brokers four times; every
// lease, of either worker, must have ended before the next epoch's grant.
func TestPostgresRestartNoLeaseOverlap(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b", Settings: fastSettings})
	workers := []*harness.LeaseWorker{startWorker(t, a, "wa"), startWorker(t, b, "wb")}
	awaitLeader(t, 10*time.Second, a, b)
	holder := func() int {
		for i, w := range workers {
			if w.Current() != nil {
				return i
			}
		}
		return -1
	}
	if err := harness.Await(10*time.Second, "a worker holding the lease", func() (bool, error) { return holder() >= 0, nil }); err != nil {
		t.Fatal(err)
	}
	moves := 0
	for round := 1; round <= 20 && moves < 4; round++ {
		before := holder()
		epoch := workers[before].Current().Epoch
		if err := pg.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := harness.Await(30*time.Second, "a lease of a newer epoch after the restart", func() (bool, error) {
			i := holder()
			return i >= 0 && workers[i].Current() != nil && workers[i].Current().Epoch > epoch, nil
		}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if holder() != before {
			moves++
		}
	}
	if moves < 4 {
		t.Fatalf("the lock changed brokers %d times in 20 restarts; want 4 to check the grants", moves)
	}
	// Every lease as its worker saw it: from its grant to its end.
	type span struct {
		worker     string
		epoch      uint64
		start, end time.Time
	}
	var spans []span
	for _, w := range workers {
		open := map[uint64]time.Time{}
		for _, e := range w.Events() {
			switch e.Kind {
			case "granted":
				open[e.Epoch] = e.At
			case "ended":
				spans = append(spans, span{w.ID, e.Epoch, open[e.Epoch], e.At})
				delete(open, e.Epoch)
			}
		}
		for ep, at := range open {
			spans = append(spans, span{w.ID, ep, at, time.Now().Add(time.Hour)})
		}
	}
	for _, x := range spans {
		for _, y := range spans {
			if x.epoch < y.epoch && y.start.Before(x.end) {
				t.Errorf("epoch %d granted to %s at %s while epoch %d of %s was live until %s (%s of overlap)",
					y.epoch, y.worker, y.start.Format("15:04:05.000"), x.epoch, x.worker, x.end.Format("15:04:05.000"), x.end.Sub(y.start).Round(time.Millisecond))
			}
		}
	}
	t.Logf("%d leases, the lock changed brokers %d times", len(spans), moves)
}

// A statement timeout or cancel imposed from outside on the standby's lock
// wait (a provider's timeout, a proxy killing long queries) does not end the
// wait: the standby keeps waiting on the same session and wakes when the
// holder lets go.
func TestLockWaitSurvivesCancel(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	startWorker(t, a, "wa")
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b"})
	wb := startWorker(t, b, "wb")
	var waiter int32
	if err := harness.Await(10*time.Second, "the standby waiting in pg_locks", func() (bool, error) {
		err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks
			WHERE locktype = 'advisory' AND classid = 1650553966 AND objsubid = 2 AND NOT granted`).Scan(&waiter)
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	const canceled = "canceling statement due to user request"
	for i := 1; i <= 3; i++ {
		if _, err := conn.Exec(context.Background(), "SELECT pg_cancel_backend($1)", waiter); err != nil {
			t.Fatal(err)
		}
		if err := harness.Await(5*time.Second, "the wait cancelled, then waiting again on the same backend", func() (bool, error) {
			if strings.Count(pg.Log(), canceled) < i {
				return false, nil
			}
			var n int
			err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
				WHERE locktype = 'advisory' AND classid = 1650553966 AND objsubid = 2 AND NOT granted AND pid = $1`, waiter).Scan(&n)
			return err == nil && n == 1, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(b.Output(), "reconnecting") {
		t.Fatalf("the standby reconnected instead of waiting again:\n%s", b.Output())
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wb.AwaitEvent(t.Context(), "granted", 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
