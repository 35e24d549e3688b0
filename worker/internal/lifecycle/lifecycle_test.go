package lifecycle_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/worker/lease"
)

// A stop while the shape router keeps failing and restarting (its where
// evaluator cannot reach PostgreSQL) is not held up by the router's
// backoff: replication stops gracefully — everything received made
// durable and acknowledged — and the lease is released at once, saying
// the process is stopping.
func TestShutdownWhileRouterRestarts(t *testing.T) {
	e := newEnv(t)
	proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", cluster.Port()))
	w := e.startWorker(viaProxy(t, proxy))
	w.awaitHealth("active", 20*time.Second)
	tbl := e.table(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// lower(name) is evaluated by PostgreSQL, on the router's evaluator
	// session.
	r, err := w.shape(ctx, url.Values{"table": {tbl}, "where": {"lower(name) = 'row 1'"}})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("shape: %v %v", r, err)
	}
	exec(t, e.db, fmt.Sprintf("INSERT INTO %s VALUES (4, 'ROW 1')", tbl))
	where := "baton-worker-where:" + e.stream + ":%"
	await(t, 10*time.Second, "the router's evaluator session", func() bool {
		return count(t, e.db, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1", where) == 1
	})
	// From now on PostgreSQL cannot be reached on a new connection; the
	// evaluator's session ends.
	proxy.set(refuse)
	exec(t, e.db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1", where)
	exec(t, e.db, fmt.Sprintf("INSERT INTO %s VALUES (5, 'row 1')", tbl))
	var lsn string
	if err := e.db.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	// The router fails on the change, then at each restart (it cannot
	// prepare the shape's where clause): wait until it waits 8 s.
	w.awaitLog(30*time.Second, `msg="shape router failed; restarting it"`, "in=8s")

	stopped := time.Now()
	w.stop(30 * time.Second)
	released := w.logs.find(`msg="lease released"`)
	if released.IsZero() {
		t.Fatal("no lease released")
	}
	d := released.Sub(stopped)
	t.Logf("lease released %s after the stop", d.Round(time.Millisecond))
	if d > 6*time.Second {
		t.Errorf("lease released %s after the stop, want at once (the router's backoff was 8 s)", d.Round(time.Millisecond))
	}
	if w.logs.find(`msg="replication stopped gracefully"`).IsZero() {
		t.Error("replication did not stop gracefully")
	}
	var cause string
	var durable bool
	if err := e.db.QueryRow(ctx, "SELECT release_cause, durable_lsn >= $2::pg_lsn FROM baton.streams WHERE stream_id = $1",
		e.stream, lsn).Scan(&cause, &durable); err != nil {
		t.Fatal(err)
	}
	if cause != "worker_stopping" || !durable {
		t.Errorf("release cause %q, durable past the last insert (%s): %v; want worker_stopping, true", cause, lsn, durable)
	}
}

// A lease that ends while a shape's snapshot waits (here on a lock) ends
// the snapshot with it: the lease is released without waiting for the
// snapshot, and under the next lease the shape is made whole.
func TestLeaseEndsMidSnapshot(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(cluster.URL())
	w.awaitHealth("active", 20*time.Second)
	tbl := e.table(100)
	first := e.epoch()

	lock := connect(t)
	exec(t, lock, "BEGIN")
	exec(t, lock, fmt.Sprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", tbl))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type answer struct {
		r   *harness.Response
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		r, err := w.shape(ctx, url.Values{"table": {tbl}})
		answered <- answer{r, err}
	}()
	await(t, 10*time.Second, "the snapshot waiting for the table's lock", func() bool {
		return count(t, e.db, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 AND wait_event_type = 'Lock'`,
			"baton-worker-%:"+e.stream+":"+strconv.FormatUint(first, 10)) > 0
	})

	e.loseLock()
	w.awaitLog(10*time.Second, `msg="lease released"`, "epoch="+strconv.FormatUint(first, 10)+" ")
	w.awaitLog(10*time.Second, `msg="lease granted"`, "epoch="+strconv.FormatUint(first+1, 10)+" ")
	exec(t, lock, "ROLLBACK")
	w.awaitHealth("active", 20*time.Second)

	// The request in flight gets an answer: the shape from the new lease
	// (held across the handoff), or a 503 the client retries.
	select {
	case a := <-answered:
		if a.err != nil {
			t.Fatalf("the request in flight: %v", a.err)
		}
		if a.r.Status != http.StatusOK && a.r.Status != http.StatusServiceUnavailable {
			t.Fatalf("the request in flight: %d %s", a.r.Status, a.r.Body)
		}
	case <-ctx.Done():
		t.Fatal("the request in flight got no answer")
	}
	r, err := w.shape(ctx, url.Values{"table": {tbl}})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("shape: %v %v", r, err)
	}
	msgs, err := r.Messages()
	if err != nil {
		t.Fatal(err)
	}
	inserts := 0
	for _, m := range msgs {
		if m.Op() == "insert" {
			inserts++
		}
	}
	if inserts != 100 {
		t.Errorf("the shape has %d rows, want 100", inserts)
	}
}

// A lease that ends while the worker starts replicating under it (here
// its admin session waits on a lock) stops the start at once: the lease
// is released, and the next one starts from scratch.
func TestLeaseLostWhileStarting(t *testing.T) {
	e := newEnv(t)
	w := e.startWorker(cluster.URL())
	w.awaitHealth("active", 20*time.Second)
	first := e.epoch()

	// The start's first write (pruning baton.publication_changes, which
	// the first start created) waits for this lock.
	lock := connect(t)
	exec(t, lock, "BEGIN")
	exec(t, lock, "LOCK TABLE baton.publication_changes IN SHARE MODE")
	e.loseLock()
	second := strconv.FormatUint(first+1, 10)
	w.awaitLog(10*time.Second, `msg="lease granted"`, "epoch="+second+" ")
	await(t, 10*time.Second, "the start waiting for the lock", func() bool {
		return count(t, e.db, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
			"baton-worker-admin:"+e.stream+":"+second) == 1
	})
	if h := w.health(); h != "starting" {
		t.Fatalf("health %s while starting, want starting", h)
	}

	lost := time.Now()
	e.loseLock()
	released := w.awaitLog(10*time.Second, `msg="lease released"`, "epoch="+second+" ")
	t.Logf("lease released %s after it was lost", released.Sub(lost).Round(time.Millisecond))
	if d := released.Sub(lost); d > 5*time.Second {
		t.Errorf("lease released %s after it was lost, want at once", d.Round(time.Millisecond))
	}
	if w.logs.count(`msg=replicating`) != 1 {
		t.Errorf("replicating %d times, want only under the first lease", w.logs.count(`msg=replicating`))
	}
	exec(t, lock, "ROLLBACK")
	w.awaitHealth("active", 20*time.Second)
	tbl := e.table(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := w.shape(ctx, url.Values{"table": {tbl}}); err != nil || r.Status != http.StatusOK {
		t.Fatalf("shape: %v %v", r, err)
	}
}

// A stop while the worker stands by returns at once and leaves no session
// behind, whether its admin session is prepared or still being dialed.
func TestStopWhileStandingBy(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode proxyMode
	}{
		{"prepared", forward},
		{"dialing", stall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			// Another worker holds the lease.
			c, err := lease.New(e.broker.Addr, lease.Options{WorkerID: "holder", StreamID: e.stream})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := c.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", cluster.Port()))
			proxy.set(tc.mode)
			w := e.startWorker(viaProxy(t, proxy))
			standby := "baton-worker-admin:" + e.stream + ":standby"
			switch tc.mode {
			case forward:
				await(t, 10*time.Second, "the standby session prepared", func() bool { return w.metric("baton_worker_standby_prepared") == 1 })
				if n := count(t, e.db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", standby); n != 1 {
					t.Fatalf("%d standby sessions, want 1", n)
				}
			case stall:
				await(t, 10*time.Second, "the standby session dialing", func() bool { return proxy.accepted() > 0 })
			}
			if h := w.health(); h != "waiting" {
				t.Fatalf("health %s, want waiting", h)
			}

			// Run returns once the HTTP drain (2 s) passed.
			// (A dial that ignored the stop would take warmTimeout, 5 s.)
			d := w.stop(10 * time.Second)
			t.Logf("Run returned %s after the stop", d.Round(time.Millisecond))
			if d > 5*time.Second {
				t.Errorf("Run returned %s after the stop", d.Round(time.Millisecond))
			}
			await(t, 5*time.Second, "no standby session", func() bool {
				return count(t, e.db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", standby) == 0
			})
			if l.Err() != nil {
				t.Errorf("the holder's lease ended: %v", l.Err())
			}
			_ = l.Release(ctx, 0)
		})
	}
}
