package httpapi

// A standby worker forwards shape requests to the active worker of its
// stream, whose URL its broker tells it (Standby.holder.worker_url), so
// that every pod behind a Service answers them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ForwardedBy is the request header a standby adds to what it forwards. A
// request that carries it is never forwarded again (it is answered 503 with
// NotActive), so two workers that each believe the other active cannot pass
// a request back and forth.
const ForwardedBy = "Baton-Forwarded-By"

// Bounds of a forwarded request until the active worker's response
// headers arrive; bodies (long-polls, server-sent events) are streamed for
// as long as the active worker sends them and the client reads.
const (
	forwardDialTimeout = 3 * time.Second
	// forwardHeaderWait: a request that is not a long-poll (creating a
	// shape takes a snapshot of its table first).
	forwardHeaderWait = 2 * time.Minute
	// liveHeaderGrace is added to LongPoll and MaxHold for a live
	// long-poll, which the active worker answers only once there is news
	// or the poll ends (after holding it, if it was starting).
	liveHeaderGrace = 10 * time.Second
)

// errNoHeaders ends a forwarded request that got no response headers in time.
var errNoHeaders = errors.New("no response headers in time")

// errNotActive is a forward answered 503 with NotActive.
var errNotActive = errors.New("it does not serve the stream either")

// errSuperseded abandons a forward that got no response headers yet when
// another worker is named active.
var errSuperseded = errors.New("another worker was named active before it answered")

// SetActive records the base URL of the stream's active worker as the
// broker reports it ("" when none is known); shape requests are forwarded
// there while this worker holds no valid lease, and the requests held for
// want of one are forwarded at once. A URL that is this worker's
// own (Self) or not an absolute http(s) URL counts as none. Safe for
// concurrent use; it does not block.
func (s *Server) SetActive(raw string) {
	var u *url.URL
	if raw != "" && strings.TrimSuffix(raw, "/") != strings.TrimSuffix(s.Self, "/") {
		if p, err := url.Parse(raw); err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" {
			u = p
		}
	}
	s.mu.Lock()
	changed := urlString(u) != urlString(s.active)
	s.active = u
	if changed {
		s.notifyLocked()
	}
	s.mu.Unlock()
	if !changed {
		return
	}
	if u != nil {
		s.Log.Info("standby forwards shape requests to the active worker", "active", u.String())
	} else {
		s.Log.Info("standby knows no active worker to forward to; shape requests are held", "reported", raw, "max_hold", s.MaxHold)
	}
}

// Hold tells the server whether this worker holds a lease (nil: none).
// While l is valid nothing is forwarded: requests are held and served
// locally once replication runs (Serve). A new lease forgets the active
// URL, which named the previous holder; requests already forwarded go on
// until the worker they went to ends them.
func (s *Server) Hold(l Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = l
	if l != nil {
		s.active = nil
	}
	s.notifyLocked()
}

// forward sends r to target and streams its response back. It returns nil
// once the client has its answer: the target's response, or 503 when the
// target could not answer and retry is false. With retry, a forward that
// failed before any byte of a response (target unreachable, connection
// closed before the response headers, or answered 503 NotActive) writes
// nothing and returns why, so the caller may try again; so does a forward
// still waiting for the target's response headers when another worker is
// named active (the target froze or was partitioned away and lost the
// stream: it may never answer).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, target *url.URL, retry bool) error {
	var failed error
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	// answered is set once the target's response headers are in: from then
	// on the forward is not abandoned.
	var mu sync.Mutex
	answered := false
	if retry {
		defer s.onSuperseded(target, func() {
			mu.Lock()
			defer mu.Unlock()
			if !answered {
				cancel(errSuperseded)
			}
		})()
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Header.Set(ForwardedBy, s.ID)
		},
		Transport: s.transport,
		// Write every byte as it arrives: long-polls and server-sent events
		// must not wait in a buffer.
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
		ModifyResponse: func(resp *http.Response) error {
			mu.Lock()
			answered = true
			mu.Unlock()
			if err := context.Cause(ctx); errors.Is(err, errSuperseded) {
				return err // abandoned just before the headers came
			}
			if retry && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(NotActive) != "" {
				return errNotActive
			}
			s.proxied(resp.StatusCode)
			return nil
		},
		// Called only before anything was written to w.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			if r.Context().Err() != nil {
				failed = r.Context().Err()
				return // the client left
			}
			if errors.Is(context.Cause(ctx), errSuperseded) {
				err = errSuperseded
			}
			if retry && !errors.Is(err, errNoHeaders) {
				s.Log.Debug("forward failed before a response; held for another try", "active", target.String(), "err", err)
				failed = err
				return
			}
			s.proxied(http.StatusServiceUnavailable)
			s.Log.Warn("forwarding to the active worker failed", "active", target.String(), "err", err)
			cors(w, r)
			unavailable(w, fmt.Sprintf("This worker is a standby and could not reach the active worker at %s (%v); retry shortly.", target, err))
		},
	}
	p.ServeHTTP(w, r.WithContext(ctx))
	if failed != nil && r.Context().Err() != nil {
		return nil // nobody to answer
	}
	return failed
}

// onSuperseded calls fn, once, when target is no longer where shape
// requests go: another worker is named active, or this worker holds a lease
// (and serves, or will serve, them itself). No active worker known is not
// enough: the broker may just be reconnecting. stop ends the watch.
func (s *Server) onSuperseded(target *url.URL, fn func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			rt := s.route()
			if rt.reg != nil || rt.starting || (rt.active != nil && !sameURL(rt.active, target)) {
				fn()
				return
			}
			select {
			case <-rt.changed:
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

func urlString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}

func (s *Server) proxied(code int) {
	if s.Proxied != nil {
		s.Proxied(code)
	}
}

// newTransport is the client side of forwarding: a bounded dial and wait
// for response headers, bodies passed through as they are (no transparent
// decompression), many connections kept to the one active worker. A live
// long-poll waits up to liveWait() (LongPoll + MaxHold) + liveHeaderGrace.
func newTransport(liveWait func() time.Duration) http.RoundTripper {
	t := &http.Transport{
		Proxy:                 nil, // the active worker is a pod of the cluster: never an HTTP proxy
		DialContext:           (&net.Dialer{Timeout: forwardDialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   forwardDialTimeout,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &headerDeadline{rt: t, wait: func(r *http.Request) time.Duration {
		q := r.URL.Query()
		if q.Get("live") == "true" && q.Get("live_sse") != "true" && q.Get("experimental_live_sse") != "true" {
			return liveWait() + liveHeaderGrace
		}
		return forwardHeaderWait
	}}
}

// headerDeadline bounds the wait for a response's headers per request (a
// live long-poll may rightly wait its whole poll); the body is not bounded.
type headerDeadline struct {
	rt   http.RoundTripper
	wait func(*http.Request) time.Duration
}

func (h *headerDeadline) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(r.Context())
	timer := time.AfterFunc(h.wait(r), func() { cancel(errNoHeaders) })
	resp, err := h.rt.RoundTrip(r.WithContext(ctx))
	if !timer.Stop() && err == nil {
		resp.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), errNoHeaders) {
			err = fmt.Errorf("%w (waited %s)", errNoHeaders, h.wait(r))
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose ends a response's request context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}
