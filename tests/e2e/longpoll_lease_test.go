package e2e_test

import (
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// A long-poll never outlives the lease it was accepted under: when the
// worker's broker freezes, the lease expires on the worker's clock after
// the TTL and every waiting long-poll is answered at once (200, up to date,
// nothing new) instead of at the end of its 20 s window, so its client asks
// again and reaches whichever worker is active.
func TestLongPollEndsWithLease(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
	const ttl = 2 * time.Second
	p := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), BrokerSettings: map[string]string{
		"BATON_LOCK_SESSION_TIMEOUT": "5s", "BATON_HEARTBEAT_INTERVAL": "1s", "BATON_LEASE_TTL": ttl.String(),
	}})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	base := p.URL()
	code, h, body := get(t, base, url.Values{"table": {"t"}, "offset": {"-1"}})
	if code != 200 {
		t.Fatalf("initial fetch: %d %s", code, body)
	}
	handle, offset := h.Get("electric-handle"), h.Get("electric-offset")

	type answer struct {
		code int
		body string
		took time.Duration
	}
	done := make(chan answer, 1)
	started := time.Now()
	go func() {
		code, _, body := get(t, base, url.Values{"table": {"t"}, "handle": {handle}, "offset": {offset}, "live": {"true"}})
		done <- answer{code, body, time.Since(started)}
	}()
	// Let the long-poll park, then freeze the broker: no renewal arrives.
	select {
	case a := <-done:
		t.Fatalf("long-poll answered before anything happened: %d %s", a.code, a.body)
	case <-time.After(500 * time.Millisecond):
	}
	if err := p.Broker().Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Broker().Signal(syscall.SIGCONT) })
	// The 20 s window would end at started+20s; the lease ends within
	// about a TTL of the freeze.
	select {
	case a := <-done:
		if a.code != 200 || !strings.Contains(a.body, "up-to-date") {
			t.Fatalf("long-poll at the end of the lease: %d %s; want 200 up-to-date", a.code, a.body)
		}
		if a.took >= 15*time.Second {
			t.Fatalf("long-poll answered after %s: it waited for its window, not for the lease (TTL %s)", a.took, ttl)
		}
		t.Logf("long-poll answered %s after it started (lease TTL %s)", a.took, ttl)
	case <-time.After(15 * time.Second):
		t.Fatalf("long-poll still waiting 15 s after the broker froze (lease TTL %s)", ttl)
	}
}
