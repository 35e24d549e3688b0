package e2e_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/lease"
)

// Kubernetes stops a native sidecar's main container first: SIGTERM reaches
// the active worker alone, and its broker only after the worker exited.
// The worker drains, releases saying its process is stopping, and its
// broker unlocks at once, so the standby pod's worker is active well before
// the 30 s worker absence timeout (measured in the bench). Meanwhile the
// slot is never held by an older epoch after a newer one and the two
// workers never say active at once (I1), and with shared storage every row
// is stored exactly once (I2).
func TestWorkerSigtermHandoff(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	dir := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir})
	if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	shapeItems(t, a.Worker())
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir})
	if err := b.Broker().AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("waiting", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	slots := startSlotSampler(t, pg)
	healths := startActiveSampler(a.Worker(), b.Worker())
	w := startWriter(t, pg)
	if err := harness.Await(10*time.Second, "rows stored by the first worker", func() (bool, error) {
		return len(storedIDs(t, dir)) > 20, nil
	}); err != nil {
		t.Fatal(err)
	}

	sigterm := time.Now()
	if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Well under BATON_WORKER_ABSENCE_TIMEOUT (30 s, the default here): the
	// broker did not wait for it.
	if err := b.Worker().AwaitStatus("active", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(sigterm)
	if code, err := a.Worker().Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("worker a exit %d %v; want 0", code, err)
	}
	// The old broker let go and says so; it is not ready, still running,
	// and waits for a worker to attach again.
	if err := a.Broker().AwaitHealth("readiness", notServing, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if a.Broker().IsLeader() {
		t.Fatal("broker a still says leader after its worker stopped")
	}
	// Logged once the unlock returned, a moment after readiness changed.
	if err := harness.Await(5*time.Second, "broker a's log of its stopping release", func() (bool, error) {
		return strings.Contains(a.Broker().Output(), "lease released by its stopping worker; lock released for a handoff"), nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, a.Broker().Output())
	}
	for name, want := range map[string]string{
		"baton_broker_lock_held":               "0",
		"baton_broker_stopping_releases_total": "1",
	} {
		if got := metric(t, "http://"+a.Broker().MetricsAddr, name); got != want {
			t.Fatalf("broker a %s = %s, want %s", name, got, want)
		}
	}
	// Its own SIGTERM then ends it at once.
	if err := a.Broker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := a.Broker().Wait(5 * time.Second); err != nil || code != 0 {
		t.Fatalf("broker a exit %d %v; want 0", code, err)
	}

	last := w.finish()
	if err := harness.Await(15*time.Second, fmt.Sprintf("row %d stored", last), func() (bool, error) {
		ids := storedIDs(t, dir)
		return len(ids) > 0 && ids[len(ids)-1] == last, nil
	}); err != nil {
		t.Fatal(err)
	}
	epochs, err := slots.finish()
	if err != nil {
		t.Fatalf("I1: %v (epochs seen %v)", err, epochs)
	}
	if len(epochs) < 2 {
		t.Fatalf("slot holders seen: %v; want the old and the new epoch", epochs)
	}
	if err := healths.finish(); err != nil {
		t.Fatalf("I1: %v", err)
	}
	checkExactlyOnce(t, storedIDs(t, dir), last)
	t.Logf("SIGTERM to the active worker -> standby's worker active: %s (%d rows, slot epochs %v)",
		took.Round(time.Millisecond), last, epochs)
}

// activeSampler polls the /v1/health of an old and a new worker and fails
// if the old one answers active to a request sent after the new one was
// seen active (both would then be active at once: the new one stays
// active).
type activeSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func startActiveSampler(old, next *harness.Worker) *activeSampler {
	s := &activeSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var nextActive time.Time // when the new worker was first seen active
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			sent := time.Now()
			if st, _, err := old.Health(); err == nil && st == "active" && !nextActive.IsZero() && sent.After(nextActive) {
				s.mu.Lock()
				s.err = fmt.Errorf("%s said active at %s, after %s was seen active at %s",
					old.Name, sent.Format(time.StampMicro), next.Name, nextActive.Format(time.StampMicro))
				s.mu.Unlock()
				return
			}
			if nextActive.IsZero() {
				if st, _, err := next.Health(); err == nil && st == "active" {
					nextActive = time.Now()
				}
			}
			time.Sleep(2 * time.Millisecond) // sampling period, not a wait for a condition
		}
	}()
	return s
}

func (s *activeSampler) finish() error {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// holderLog records every Standby holder a lease client is told.
type holderLog struct {
	mu      sync.Mutex
	holders []*batonv1.Holder
}

func (h *holderLog) add(s *batonv1.Standby) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holders = append(h.holders, s.GetHolder())
}

// await waits until the last holder told has worker and url.
func (h *holderLog) await(t *testing.T, who, worker, url string, timeout time.Duration) {
	t.Helper()
	var last *batonv1.Holder
	err := harness.Await(timeout, fmt.Sprintf("%s to be told holder worker %q at %q", who, worker, url), func() (bool, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if n := len(h.holders); n > 0 {
			last = h.holders[n-1]
		}
		return last.GetWorker() == worker && last.GetWorkerUrl() == url, nil
	})
	if err != nil {
		t.Fatalf("%v (last holder %v)", err, last)
	}
}

// leaseClient attaches an in-process lease client that advertises url and
// logs its standby holders; acquired yields its lease once granted.
func leaseClient(t *testing.T, b *harness.Broker, id, url string) (*holderLog, <-chan *lease.Lease) {
	t.Helper()
	log := &holderLog{}
	c, err := lease.New(b.Addr, lease.Options{WorkerID: id, StreamID: b.StreamID, AdvertiseURL: url, OnStandby: log.add})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	acquired := make(chan *lease.Lease, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if l, err := c.Acquire(ctx); err == nil {
			acquired <- l
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = c.Close()
	})
	return log, acquired
}

func awaitLease(t *testing.T, who string, ch <-chan *lease.Lease) *lease.Lease {
	t.Helper()
	select {
	case l := <-ch:
		return l
	case <-time.After(15 * time.Second):
		t.Fatalf("%s was not granted", who)
		return nil
	}
}

// The grantee's advertised URL is recorded with the holder in the state
// table, shown by `broker status`, and told to workers waiting on other
// brokers (read from the state table while they wait for the lock), again
// within a few heartbeats when another pod's worker is granted; a release
// clears it.
func TestStandbyHolderWorkerURL(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	const urlA, urlB = "http://10.0.0.1:3000", "http://10.0.0.2:3000"

	ba := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	logA, grantedA := leaseClient(t, ba, "worker-a", urlA)
	la := awaitLease(t, "worker-a", grantedA)

	bb := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b", Settings: fastSettings})
	logB, grantedB := leaseClient(t, bb, "worker-b", urlB)
	logB.await(t, "worker-b", "worker-a", urlA, 10*time.Second)
	bc := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "c", Settings: fastSettings})
	logC, _ := leaseClient(t, bc, "worker-c", "")
	logC.await(t, "worker-c", "worker-a", urlA, 10*time.Second)

	var recorded *string
	if err := conn.QueryRow(context.Background(), "SELECT worker_url FROM baton.streams WHERE stream_id = 'default'").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded == nil || *recorded != urlA {
		t.Fatalf("state table worker_url = %v, want %q", recorded, urlA)
	}
	out, err := exec.Command(bins["broker"], "status", "--database-url", pg.URL()).CombinedOutput()
	if err != nil {
		t.Fatalf("broker status: %v\n%s", err, out)
	}
	mustContain(t, string(out), "worker url", "broker status")
	mustContain(t, string(out), urlA, "broker status")

	// Kubelet order: worker a stops and says so; broker b (first in the
	// lock's queue) takes over; c, still waiting, learns b's worker URL.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := la.ReleaseStopping(ctx, 0); err != nil {
		t.Fatal(err)
	}
	lb := awaitLease(t, "worker-b", grantedB)
	logC.await(t, "worker-c", "worker-b", urlB, 10*time.Second)
	// The stopping worker, still attached while it drains, learns its
	// successor's URL too (to forward what still reaches it), well within
	// a heartbeat interval.
	logA.await(t, "worker-a", "worker-b", urlB, 10*time.Second)
	if err := ba.AwaitHealth("readiness", notServing, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// With c gone, b's stopping release leaves the stream released, with no
	// worker and no URL recorded.
	bc.Close()
	if err := lb.ReleaseStopping(ctx, 0); err != nil {
		t.Fatal(err)
	}
	err = harness.Await(10*time.Second, "the release recorded", func() (bool, error) {
		var released bool
		var worker, url *string
		err := conn.QueryRow(context.Background(), `SELECT released_at IS NOT NULL, worker, worker_url
			FROM baton.streams WHERE stream_id = 'default'`).Scan(&released, &worker, &url)
		if err != nil {
			return false, err
		}
		if released && (worker != nil || url != nil) {
			return false, fmt.Errorf("released row keeps worker %v, url %v", worker, url)
		}
		return released, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Broker c's session may still be queued for the lock when c is
	// killed (a backend waiting for a lock notices its client gone only
	// later): it may take the lock for a moment once b unlocks, then ends.
	// b itself, alive, must not hold it.
	err = harness.Await(10*time.Second, "the lock free after the last stopping release", func() (bool, error) {
		held, _ := lockHolders(t, conn, "default")
		return len(held) == 0, nil
	})
	if err != nil {
		held, _ := lockHolders(t, conn, "default")
		t.Fatalf("%v: held by %v", err, held)
	}
	// The broker logs the release once its unlock returned, so a moment
	// after the lock is seen free.
	if err := harness.Await(5*time.Second, "broker b's log of its stopping release", func() (bool, error) {
		return strings.Contains(bb.Output(), "lease released by its stopping worker"), nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, bb.Output())
	}
}

// A state table created before the column worker_url gets it when a broker
// starts; `broker status` reads either.
func TestStateTableGainsWorkerURL(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		`CREATE SCHEMA baton`,
		`CREATE TABLE baton.streams (
			stream_id      text PRIMARY KEY,
			epoch          bigint NOT NULL,
			holder         text NOT NULL,
			backend_pid    integer NOT NULL,
			worker         text,
			acquired_at    timestamptz NOT NULL,
			granted_at     timestamptz,
			last_heartbeat timestamptz NOT NULL,
			released_at    timestamptz
		)`,
		`INSERT INTO baton.streams VALUES ('default', 41, 'baton-broker:default:old', 1, NULL, now(), NULL, now(), now())`)
	out, err := exec.Command(bins["broker"], "status", "--database-url", pg.URL()).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("broker status on the old table: %v, want exit 3 (not held)\n%s", err, out)
	}
	mustContain(t, string(out), "baton-broker:default:old", "broker status on the old table")

	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	_, granted := leaseClient(t, b, "worker-a", "http://10.0.0.1:3000")
	if l := awaitLease(t, "worker-a", granted); l.Epoch != 42 {
		t.Fatalf("epoch %d, want 42 (continued from the old table)", l.Epoch)
	}
	var url *string
	conn := connect(t, pg)
	if err := conn.QueryRow(context.Background(), "SELECT worker_url FROM baton.streams WHERE stream_id = 'default'").Scan(&url); err != nil {
		t.Fatal(err)
	}
	if url == nil || *url != "http://10.0.0.1:3000" {
		t.Fatalf("worker_url = %v after migration", url)
	}
}

// A standby pod that is being deleted (its worker got SIGTERM and drains
// its HTTP server for a while) may still be first in line for the lock
// when the active worker hands off: its broker then grants the lease to a
// worker that will not replicate. That worker gives the grant back at once,
// saying it stops, so its broker unlocks and the next standby (c) takes
// over while the stopping worker still drains; before, the grant stayed
// unclaimed until the worker's exit and its broker waited out the TTL (a
// 15 s gap in a rolling update in CI).
func TestStoppingStandbyGivesBackItsGrant(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	a := newActivePod(t, pg, "a", t.TempDir())
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir()})
	if err := b.Worker().AwaitStatus("waiting", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := harness.Await(10*time.Second, "broker b waiting for the lock", func() (bool, error) {
		return strings.Contains(b.Broker().Output(), "waiting for the stream's lock"), nil
	}); err != nil {
		t.Fatal(err)
	}
	c := newPod(t, pg, harness.PodOptions{Name: "c", StorageDir: t.TempDir()})
	if err := c.Worker().AwaitStatus("waiting", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := harness.Await(10*time.Second, "broker c waiting for the lock", func() (bool, error) {
		return strings.Contains(c.Broker().Output(), "waiting for the stream's lock"), nil
	}); err != nil {
		t.Fatal(err)
	}

	// b's pod is deleted first, then a's: b's broker is first in line.
	if err := b.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, b.LogTails(20))
	}
	bExited := b.Worker().Exited()
	if code, err := b.Worker().Wait(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("worker b exit %d %v; want 0", code, err)
	}
	if !strings.Contains(b.Broker().Output(), `msg="lease granted"`) {
		t.Skip("broker b never granted the lease: c's broker got the lock first, the case this test is about did not happen")
	}
	mustContain(t, b.Broker().Output(), "lease released by its stopping worker; lock released for a handoff", "broker b log")
	if strings.Contains(b.Broker().Output(), "holding the lock with no worker attached") {
		t.Fatalf("broker b held the lock for a worker that was gone:\n%s", b.LogTails(20))
	}
	if bExited {
		t.Fatalf("c became active only after the stopping worker b exited: its grant was not given back\n%s", b.LogTails(20))
	}
}
