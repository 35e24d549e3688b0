package httpapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// With a secret, a shape request that does not carry it is answered 401
// by the worker it reaches, before it is forwarded; one that carries it
// (secret=, or Electric's older api_secret=) is forwarded with it, and the
// active worker checks it again. OPTIONS (a browser's preflight) needs no
// secret, as in Electric.
func TestSecretCheckedBeforeForwarding(t *testing.T) {
	var reached atomic.Int32
	var lastQuery atomic.Value
	s := startStandby(t, func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		lastQuery.Store(r.URL.RawQuery)
		w.WriteHeader(http.StatusOK)
	})
	s.api.Secret = "s3cret"
	s.api.SetActive(s.active.URL)
	for _, c := range []struct {
		name, method, query string
		code                int
	}{
		{"no secret", "GET", "table=items&offset=-1", 401},
		{"wrong secret", "GET", "table=items&offset=-1&secret=guess", 401},
		{"empty secret", "GET", "table=items&offset=-1&secret=", 401},
		{"secret twice", "GET", "table=items&offset=-1&secret=s3cret&secret=guess", 401},
		{"wrong secret, right api_secret", "GET", "table=items&offset=-1&secret=guess&api_secret=s3cret", 401},
		{"delete without secret", "DELETE", "table=items", 401},
		{"secret", "GET", "table=items&offset=-1&secret=s3cret", 200},
		{"api_secret", "GET", "table=items&offset=-1&api_secret=s3cret", 200},
		{"delete with secret", "DELETE", "table=items&secret=s3cret", 200},
		{"preflight", "OPTIONS", "table=items&offset=-1", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := reached.Load()
			resp, body := do(t, c.method, s.url+"/v1/shape?"+c.query, nil)
			if resp.StatusCode != c.code {
				t.Fatalf("%d %q; want %d", resp.StatusCode, body, c.code)
			}
			forwarded := reached.Load() != before
			switch {
			case c.code == 401:
				var e struct{ Message string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Message != "Unauthorized - Invalid API secret" ||
					resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("401 %v %q; want Electric's JSON message, not cached", resp.Header, body)
				}
				if forwarded {
					t.Errorf("a request without the secret was forwarded to the active worker")
				}
			case c.method != "OPTIONS":
				if !forwarded || lastQuery.Load() != c.query {
					t.Errorf("forwarded %v with query %v; want the client's query %q", forwarded, lastQuery.Load(), c.query)
				}
			}
		})
	}
}

// DELETE removes shapes only with AllowDeletion (Electric's
// allow_shape_deletion); otherwise it is answered 405 where it arrives,
// never forwarded.
func TestDeleteRefusedUnlessAllowed(t *testing.T) {
	var reached atomic.Int32
	s := startStandby(t, func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})
	s.api.AllowDeletion = false
	s.api.SetActive(s.active.URL)
	resp, body := do(t, "DELETE", s.url+"/v1/shape?handle=h-1", nil)
	var e struct{ Message string }
	if resp.StatusCode != http.StatusMethodNotAllowed || json.Unmarshal([]byte(body), &e) != nil || e.Message == "" || reached.Load() != 0 {
		t.Fatalf("%d %q, forwarded %d times; want 405 with a JSON message, not forwarded", resp.StatusCode, body, reached.Load())
	}
	s.api.AllowDeletion = true
	if resp, body := do(t, "DELETE", s.url+"/v1/shape?handle=h-1", nil); resp.StatusCode != http.StatusAccepted || reached.Load() != 1 {
		t.Fatalf("with AllowDeletion: %d %q, forwarded %d times; want the active worker's 202", resp.StatusCode, body, reached.Load())
	}
}

// The secret never reaches a log line (a held request's query is logged)
// or the answer of a failed forward.
func TestSecretNotLogged(t *testing.T) {
	s := startStandby(t, func(w http.ResponseWriter, r *http.Request) {})
	var logs bytes.Buffer
	s.api.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.api.Secret = "s3cret"
	s.api.MaxHold = 200 * time.Millisecond
	s.active.Close() // unreachable: the request is held, retried, then 503
	s.api.SetActive(s.active.URL)
	resp, body := do(t, "GET", s.url+"/v1/shape?table=items&offset=-1&secret=s3cret", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d %q; want 503", resp.StatusCode, body)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(body, "s3cret") {
		t.Errorf("the secret is in the log or the answer:\n%s\n%s", logs.String(), body)
	}
	if !strings.Contains(logs.String(), "secret=REDACTED") {
		t.Errorf("log %q; want the held request's query, its secret redacted", logs.String())
	}
}
