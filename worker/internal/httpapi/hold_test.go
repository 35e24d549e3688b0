package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/httpapi"
)

// logged records the messages a Server logs, to await what it does.
type logged struct {
	mu   sync.Mutex
	msgs []string
	seen chan struct{}
}

func newLogged() *logged { return &logged{seen: make(chan struct{}, 1)} }

func (l *logged) Enabled(context.Context, slog.Level) bool { return true }
func (l *logged) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logged) WithGroup(string) slog.Handler            { return l }
func (l *logged) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	select {
	case l.seen <- struct{}{}:
	default:
	}
	return nil
}

func (l *logged) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// await waits until msg was logged n times, failing if the request whose
// result comes on res is answered first.
func (l *logged) await(t *testing.T, msg string, n int, res <-chan result) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for l.count(msg) < n {
		select {
		case <-l.seen:
		case r := <-res:
			t.Fatalf("answered %d %q (err %v) before %q was logged %d times; want it held", r.code, r.body, r.err, msg, n)
		case <-deadline:
			t.Fatalf("%q logged %d times after 10s; want %d", msg, l.count(msg), n)
		}
	}
}

const (
	heldMsg  = "shape request held"
	retryMsg = "forward failed before a response; held for another try"
)

// holding is a standby whose requests are held up to maxHold.
func holding(t *testing.T, maxHold time.Duration, active http.HandlerFunc) (*standby, *logged) {
	t.Helper()
	s := startStandby(t, active)
	l := newLogged()
	s.api.Log = slog.New(l)
	s.api.MaxHold = maxHold
	return s, l
}

// result is a response a goroutine got.
type result struct {
	code int
	hdr  http.Header
	body string
	err  error
	took time.Duration
}

// get sends a GET in the background.
func get(u string, hdr http.Header) <-chan result {
	out := make(chan result, 1)
	go func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- result{err: err, took: time.Since(start)}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- result{code: resp.StatusCode, hdr: resp.Header, body: string(b), err: err, took: time.Since(start)}
	}()
	return out
}

func wait(t *testing.T, c <-chan result) result {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no response within 20s")
		return result{}
	}
}

// goneURL is the URL of a worker that exited: its port refuses.
func goneURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// A GET whose active worker is unknown or gone — refused, connection reset
// before a response, or answered 503 NotActive by a worker that stopped
// serving — is held and forwarded to the active worker named next: the
// client gets that worker's answer, never a 503.
func TestHeldUntilActiveNamed(t *testing.T) {
	var resets, refusals atomic.Int32
	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resets.Add(1)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}))
	t.Cleanup(reset.Close)
	notActive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refusals.Add(1)
		w.Header().Set(httpapi.NotActive, "worker@old")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(notActive.Close)
	for _, c := range []struct {
		name  string
		first func(t *testing.T) string // "" : no active worker known
		await string
		hits  *atomic.Int32
	}{
		{"none known", func(*testing.T) string { return "" }, heldMsg, nil},
		{"refused", goneURL, retryMsg, nil},
		{"reset before a response", func(*testing.T) string { return reset.URL }, retryMsg, &resets},
		{"not active", func(*testing.T) string { return notActive.URL }, retryMsg, &refusals},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, l := holding(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("electric-handle", "h-1")
				w.WriteHeader(200)
				_, _ = io.WriteString(w, "[]")
			})
			s.api.SetActive(c.first(t))
			before := int32(0)
			if c.hits != nil {
				before = c.hits.Load()
			}
			res := get(s.url+"/v1/shape?table=items&offset=-1", nil)
			l.await(t, c.await, 1, res)
			// Tried again after a backoff while no other worker is named.
			if c.await == retryMsg {
				l.await(t, c.await, 2, res)
			}
			s.api.SetActive(s.active.URL)
			r := wait(t, res)
			if r.err != nil || r.code != 200 || r.body != "[]" || r.hdr.Get("electric-handle") != "h-1" {
				t.Fatalf("got %d %q %v; want the new active worker's 200", r.code, r.body, r.err)
			}
			if c.hits != nil && c.hits.Load()-before < 2 {
				t.Errorf("the gone worker got %d tries; want at least 2", c.hits.Load()-before)
			}
			if p := s.proxied(); len(p) != 1 || p[0] != 200 {
				t.Errorf("proxied counted %v; want [200]", p)
			}
		})
	}
}

// validUntil is a lease valid until it is ended.
type validUntil struct {
	done chan struct{}
	once sync.Once
}

func newLease() *validUntil { return &validUntil{done: make(chan struct{})} }

func (v *validUntil) Valid() bool {
	select {
	case <-v.done:
		return false
	default:
		return true
	}
}

func (v *validUntil) Done() <-chan struct{} { return v.done }

func (v *validUntil) end() { v.once.Do(func() { close(v.done) }) }

// While the worker starts replication under its new lease, a request is
// held, not answered 503; if the lease ends before replication runs, it
// goes where the stream is served then.
func TestHeldWhileStarting(t *testing.T) {
	s, l := holding(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	le := newLease()
	s.api.Hold(le)
	res := get(s.url+"/v1/shape?table=items&offset=-1", nil)
	l.await(t, heldMsg, 1, res)
	// The lease ends without replication having run; the broker names
	// another active worker.
	le.end()
	s.api.Hold(nil)
	s.api.SetActive(s.active.URL)
	if r := wait(t, res); r.err != nil || r.code != 200 {
		t.Fatalf("got %d %v; want 200 from the active worker", r.code, r.err)
	}
}

// Holding is bounded: with nobody serving the stream for MaxHold the client
// gets 503 with Retry-After, saying what was missing.
func TestHoldBounded(t *testing.T) {
	const maxHold = 300 * time.Millisecond
	for _, c := range []struct {
		name, why string
		set       func(*standby)
	}{
		{"no active worker", "knows no active worker", func(*standby) {}},
		{"starting", "starting replication", func(s *standby) { s.api.Hold(newLease()) }},
		{"active worker gone", "could not reach the active worker", func(s *standby) { s.api.SetActive(goneURL(t)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := holding(t, maxHold, func(w http.ResponseWriter, r *http.Request) {})
			c.set(s)
			r := wait(t, get(s.url+"/v1/shape?table=items&offset=-1", nil))
			var msg struct{ Message string }
			_ = json.Unmarshal([]byte(r.body), &msg)
			if r.err != nil || r.code != 503 || r.hdr.Get("Retry-After") == "" || !strings.Contains(msg.Message, c.why) {
				t.Fatalf("got %d %v %q; want 503 with Retry-After saying %q", r.code, r.err, r.body, c.why)
			}
			if r.took < maxHold {
				t.Errorf("answered after %s; want it held %s", r.took, maxHold)
			}
		})
	}
}

// A forward is repeated only when nothing of a response came back, and
// only for a GET: a response cut after its headers reaches the client as
// it is, and a DELETE that could not be forwarded gets 503 at once.
func TestNoRetryOnceAnswered(t *testing.T) {
	var hits atomic.Int32
	s, _ := holding(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "[{")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the active worker exits mid-response
	})
	s.api.SetActive(s.active.URL)
	r := wait(t, get(s.url+"/v1/shape?table=items&offset=-1", nil))
	if r.code != 200 || r.err == nil || hits.Load() != 1 {
		t.Fatalf("got %d, body error %v, %d forwards; want the 200 cut short, forwarded once", r.code, r.err, hits.Load())
	}

	s.api.SetActive(goneURL(t))
	start := time.Now()
	resp, body := do(t, "DELETE", s.url+"/v1/shape?table=items", nil)
	check503(t, resp, body, "could not reach the active worker")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("DELETE answered after %s; want at once", took)
	}
}

// A request another worker forwarded is not held by a worker that does
// not serve the stream: it is refused at once with NotActive, for the
// forwarding worker to hold.
func TestForwardedNotHeld(t *testing.T) {
	s, _ := holding(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {})
	s.api.SetActive(s.active.URL)
	start := time.Now()
	resp, body := do(t, "GET", s.url+"/v1/shape?table=items&offset=-1", http.Header{httpapi.ForwardedBy: {"worker@other"}})
	check503(t, resp, body, "already forwarded")
	if resp.Header.Get(httpapi.NotActive) == "" || time.Since(start) > 5*time.Second {
		t.Fatalf("refused after %s with %s %q; want at once, with it", time.Since(start), httpapi.NotActive, resp.Header.Get(httpapi.NotActive))
	}
}

// A GET forwarded to a worker that never answers (frozen, partitioned
// away) is not left waiting for it once another worker is named active:
// it is forwarded there, and the first forward is abandoned.
func TestForwardSuperseded(t *testing.T) {
	arrived, abandoned := make(chan struct{}, 1), make(chan struct{})
	frozen := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		close(abandoned)
	}))
	t.Cleanup(frozen.Close)
	s, _ := holding(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "[]")
	})
	s.api.SetActive(frozen.URL)
	res := get(s.url+"/v1/shape?table=items&offset=-1&handle=h-1&live=true", nil)
	select {
	case <-arrived:
	case r := <-res:
		t.Fatalf("answered %d %q (err %v) before the frozen worker got the request", r.code, r.body, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen worker got no request within 10s")
	}
	s.api.SetActive(s.active.URL)
	if r := wait(t, res); r.err != nil || r.code != 200 || r.body != "[]" {
		t.Fatalf("got %d %q %v; want the newly named active worker's 200", r.code, r.body, r.err)
	}
	select {
	case <-abandoned:
	case <-time.After(10 * time.Second):
		t.Fatal("the forward to the frozen worker was not abandoned")
	}
}
