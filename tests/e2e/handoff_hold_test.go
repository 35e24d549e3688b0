package e2e_test

// Around a graceful handoff no request gets 503 or is lost (issue 9): the
// successor holds shape requests while it starts replication and answers
// them once it serves; the stopping worker keeps answering for a moment
// after its lease is released — forwarding to its successor, whose URL
// its broker tells it — and closes each connection after answering on it,
// so a request sent on a connection kept alive from before the stop is
// answered, not dropped.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// keptConn is a client connection used for several requests in a row, as
// a keep-alive client (or a Service's connection) uses it.
type keptConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKept(t *testing.T, addr string) *keptConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{c: c, br: bufio.NewReader(c)}
}

type keptResult struct {
	code  int
	close bool // the response said Connection: close
	body  string
	err   error
}

// get sends a GET on the connection and returns a channel with its response.
func (k *keptConn) get(path string) <-chan keptResult {
	out := make(chan keptResult, 1)
	if _, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: worker\r\n\r\n"); err != nil {
		out <- keptResult{err: err}
		return out
	}
	go func() {
		_ = k.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, err := http.ReadResponse(k.br, nil)
		if err != nil {
			out <- keptResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		out <- keptResult{code: resp.StatusCode, close: resp.Close, body: string(b), err: err}
	}()
	return out
}

func TestHandoffHoldsRequests(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 20) g")
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), Advertise: true})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir(), Advertise: true})
	if err := b.Worker().AwaitStatus("waiting", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	baseB := b.URL()
	initial := url.Values{"table": {"items"}, "offset": {"-1"}}
	if err := harness.Await(15*time.Second, "the standby forwarding a shape request", func() (bool, error) {
		code, _, _ := get(t, baseB, initial)
		return code == 200, nil
	}); err != nil {
		t.Fatal(err)
	}
	kept := dialKept(t, a.Worker().HTTPAddr)
	path := "/v1/shape?" + initial.Encode()
	if r := <-kept.get(path); r.err != nil || r.code != 200 || r.close {
		t.Fatalf("before the stop: %d close=%v %v; want 200 on a kept-alive connection", r.code, r.close, r.err)
	}

	// The successor's start-up stalls while this transaction locks the
	// table its publication-coverage check writes.
	ctx := context.Background()
	conn := connect(t, pg)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE baton.publication_changes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	// Kubernetes' order: the worker first.
	if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("starting", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().WaitOutput("lease released", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	toB := protoGetAsync(baseB, initial, nil)
	toA := kept.get(path) // on the connection opened before the stop
	// Neither is answered while the successor starts (a bounded look: the
	// lock holds it as long as the test wants).
	held := time.After(time.Second)
look:
	for toB != nil || toA != nil {
		select {
		case r := <-toB:
			t.Errorf("the starting successor answered %d %.200s (err %v); want the request held until it serves", r.r.Status, r.r.Text(), r.err)
			toB = nil
		case r := <-toA:
			t.Errorf("the stopping worker answered %d %.200s (err %v) while its successor starts; want it held, then forwarded", r.code, r.body, r.err)
			toA = nil
		case <-held:
			break look
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if s, _, _ := b.Worker().Health(); s != "starting" {
		t.Fatalf("the successor says %q; want it still starting while the lock is held", s)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := protoAwait(t, toB).r; r.Status != 200 || r.Header.Get("electric-handle") == "" {
		t.Fatalf("the request held by the successor: %d %v %.200s; want 200", r.Status, r.Header, r.Text())
	}
	select {
	case r := <-toA:
		if r.err != nil || r.code != 200 || !r.close {
			t.Fatalf("the request sent to the stopping worker on its kept-alive connection: %d close=%v %v %.200s; want 200 (forwarded to the successor) with Connection: close", r.code, r.close, r.err, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request sent to the stopping worker got no answer within 30 s")
	}
	mustContain(t, a.Worker().Output(), "standby forwards shape requests to the active worker", "the stopping worker's log")
	if code, err := a.Worker().Wait(45 * time.Second); err != nil || code != 0 {
		t.Fatalf("worker a exit %d %v; want 0", code, err)
	}
	if err := a.Broker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := a.Broker().Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("broker a exit %d %v; want 0", code, err)
	}
}
