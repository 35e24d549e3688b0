package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/lease"
)

// A worker that restarts (its process stopping, then a new one attaching
// to the same broker) is granted again on the broker's lock session of
// before: the broker keeps the session it released the lock on, so the
// restart does not wait for a new connection. The lock is still free in
// between (a standby pod may take it).
func TestWorkerRestartReusesLockSession(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	acquire := func(id string) (*lease.Client, *lease.Lease, int32) {
		t.Helper()
		c, err := lease.New(a.Addr, lease.Options{WorkerID: id, StreamID: "default"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := c.Acquire(ctx)
		if err != nil {
			t.Fatalf("%s: acquire: %v", id, err)
		}
		held, _ := lockHolders(t, conn, "default")
		if len(held) != 1 {
			t.Fatalf("%s granted: lock holders %v, want one", id, held)
		}
		return c, l, held[0]
	}
	c1, l1, pid1 := acquire("w1")
	if err := l1.ReleaseStopping(ctx, 0); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	if err := harness.Await(5*time.Second, "the lock to be released", func() (bool, error) {
		held, _ := lockHolders(t, conn, "default")
		return len(held) == 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	c2, l2, pid2 := acquire("w2")
	if l2.Epoch <= l1.Epoch {
		t.Fatalf("second grant epoch %d, want above %d", l2.Epoch, l1.Epoch)
	}
	if pid2 != pid1 {
		t.Fatalf("lock session backend %d after the restart, want the kept session's %d", pid2, pid1)
	}

	// With no worker coming back, the broker closes the kept session
	// itself at half the session timeout (10 s by default), before
	// PostgreSQL would end it for being idle at the full timeout.
	if err := l2.ReleaseStopping(ctx, 0); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	c2.Close()
	if err := harness.Await(8*time.Second, "the kept lock session to be closed", func() (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid2).Scan(&n)
		return n == 0, err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("kept session closed %s after the release", time.Since(released).Round(time.Millisecond))
}
