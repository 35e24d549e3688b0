package httpapi_test

import (
	"bufio"
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

// standby is a worker's HTTP API without a registry, as a standby serves
// it, and a stand-in for the active worker it forwards to.
type standby struct {
	api     *httpapi.Server
	url     string
	codes   []int
	mu      sync.Mutex
	active  *httptest.Server
	handler http.HandlerFunc
}

func startStandby(t *testing.T, active http.HandlerFunc) *standby {
	t.Helper()
	s := &standby{handler: active}
	s.active = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handler(w, r) }))
	t.Cleanup(s.active.Close)
	s.api = httpapi.New(slog.New(slog.DiscardHandler))
	s.api.Self, s.api.ID = "http://standby.test:3000", "worker@standby"
	// Answered at once, as without holding (hold_test.go holds).
	s.api.MaxHold = 0
	// DELETE is forwarded (secret_test.go refuses it).
	s.api.AllowDeletion = true
	s.api.Proxied = func(code int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.codes = append(s.codes, code)
	}
	mux := http.NewServeMux()
	s.api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *standby) proxied() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.codes...)
}

func do(t *testing.T, method, u string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// check503 asserts a 503 with Retry-After and a JSON message containing why.
func check503(t *testing.T, resp *http.Response, body, why string) {
	t.Helper()
	var msg struct{ Message string }
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		json.Unmarshal([]byte(body), &msg) != nil || !strings.Contains(msg.Message, why) {
		t.Fatalf("%d %v %q; want 503 with Retry-After and a message containing %q", resp.StatusCode, resp.Header, body, why)
	}
}

// Responses of the active worker reach the client as they are: status,
// headers (but hop-by-hop ones), body; the forwarded request carries the
// client's query and headers, and says who forwarded it.
func TestForwardPassesThrough(t *testing.T) {
	for _, c := range []struct {
		name, method, query string
		code                int
		hdr                 map[string]string
		body                string
	}{
		{"initial fetch", "GET", "table=items&offset=-1", 200,
			map[string]string{"electric-handle": "h-1", "electric-offset": "0_0", "electric-schema": `{"id":{"type":"int4"}}`, "ETag": `"h-1:-1:0_0"`}, `[{"key":"\"public\".\"items\"/\"1\""}]`},
		{"not modified", "GET", "table=items&offset=0_0&handle=h-1", 304, map[string]string{"ETag": `"x"`}, ""},
		{"stale handle", "GET", "table=items&offset=0_0&handle=old", 409,
			map[string]string{"electric-handle": "h-2", "Cache-Control": "public, max-age=60, must-revalidate"}, `[{"headers":{"control":"must-refetch"}}]`},
		{"bad request", "GET", "table=nope&offset=-1", 400, nil, `{"message":"Invalid request","errors":{"table":["does not exist"]}}`},
		{"delete", "DELETE", "table=items", 202, map[string]string{"Cache-Control": "no-cache"}, ""},
		{"no content", "DELETE", "table=items&handle=h-1", 204, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			forwarded := make(chan *http.Request, 1)
			s := startStandby(t, func(w http.ResponseWriter, r *http.Request) {
				forwarded <- r.Clone(context.Background())
				for k, v := range c.hdr {
					w.Header().Set(k, v)
				}
				w.Header().Set("Keep-Alive", "timeout=5")
				w.WriteHeader(c.code)
				_, _ = io.WriteString(w, c.body)
			})
			s.api.SetActive(s.active.URL)
			resp, body := do(t, c.method, s.url+"/v1/shape?"+c.query, http.Header{"If-None-Match": {`"x"`}, "Origin": {"https://app.test"}, "Proxy-Authorization": {"hop"}})
			if resp.StatusCode != c.code || body != c.body {
				t.Fatalf("%d %q; want %d %q", resp.StatusCode, body, c.code, c.body)
			}
			for k, v := range c.hdr {
				if resp.Header.Get(k) != v {
					t.Errorf("header %s = %q; want %q", k, resp.Header.Get(k), v)
				}
			}
			if resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("hop-by-hop header Keep-Alive passed to the client")
			}
			got := <-forwarded
			if got.Method != c.method || got.URL.RawQuery != c.query || got.Header.Get("If-None-Match") != `"x"` ||
				got.Header.Get("Origin") != "https://app.test" || got.Header.Get(httpapi.ForwardedBy) != "worker@standby" ||
				got.Header.Get("Proxy-Authorization") != "" {
				t.Errorf("forwarded %s %s %v; want the client's method, query and end-to-end headers, and %s", got.Method, got.URL, got.Header, httpapi.ForwardedBy)
			}
			if p := s.proxied(); len(p) != 1 || p[0] != c.code {
				t.Errorf("proxied counted %v; want [%d]", p, c.code)
			}
		})
	}
}

// A long-lived response (server-sent events, a long-poll's body) reaches
// the client as the active worker writes it, and a client that goes away
// ends the forwarded request.
func TestForwardStreams(t *testing.T) {
	release, ended := make(chan struct{}), make(chan struct{})
	s := startStandby(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "data: {\"headers\":{\"control\":\"up-to-date\"}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(ended)
		case <-release:
		}
	})
	defer close(release)
	s.api.SetActive(s.active.URL + "/")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/v1/shape?table=items&offset=0_0&handle=h&live=true&live_sse=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(resp.Body).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if !strings.HasPrefix(l, "data: ") {
			t.Fatalf("first line %q; want an event", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not reach the client while the active worker kept the response open")
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the forwarded request did not end when the client went away")
	}
}

type validLease bool

func (v validLease) Valid() bool { return bool(v) }

func (v validLease) Done() <-chan struct{} { return nil }

// Nothing is forwarded twice, to itself, while the worker holds a lease,
// or with no active worker known; those get 503 with Retry-After and a
// JSON message saying why. An unreachable active worker gives 503 too.
func TestForwardRefuses(t *testing.T) {
	var hits atomic.Int32
	s := startStandby(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	q := s.url + "/v1/shape?table=items&offset=-1"

	resp, body := do(t, "GET", q, nil)
	check503(t, resp, body, "knows no active worker")

	s.api.SetActive(s.api.Self)
	resp, body = do(t, "GET", q, nil)
	check503(t, resp, body, "knows no active worker")

	s.api.SetActive(s.active.URL)
	resp, body = do(t, "GET", q, http.Header{httpapi.ForwardedBy: {"worker@other"}})
	check503(t, resp, body, "already forwarded")
	if resp.Header.Get(httpapi.NotActive) != "worker@standby" {
		t.Errorf("a refused forwarded request says %s %q; want worker@standby", httpapi.NotActive, resp.Header.Get(httpapi.NotActive))
	}

	s.api.Hold(validLease(true))
	resp, body = do(t, "DELETE", s.url+"/v1/shape?table=items", nil)
	check503(t, resp, body, "starting replication")
	// A new lease forgets the previous holder; its end does not bring it back.
	s.api.Hold(nil)
	resp, body = do(t, "GET", q, nil)
	check503(t, resp, body, "knows no active worker")
	if n := hits.Load(); n != 0 {
		t.Fatalf("the active worker got %d requests; want none", n)
	}

	// An expired lease does not stop forwarding.
	s.api.Hold(validLease(false))
	s.api.SetActive(s.active.URL)
	if resp, _ := do(t, "GET", q, nil); resp.StatusCode != 200 || hits.Load() != 1 {
		t.Fatalf("with an expired lease: %d, %d forwarded; want 200, 1", resp.StatusCode, hits.Load())
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String()
	ln.Close()
	s.api.SetActive(gone)
	resp, body = do(t, "GET", q, nil)
	check503(t, resp, body, "could not reach the active worker")
	if p := s.proxied(); len(p) != 2 || p[1] != 503 {
		t.Errorf("proxied counted %v; want [200 503]", p)
	}
}
