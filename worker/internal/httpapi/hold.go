package httpapi

// Holding a shape request across a handoff.
//
// A request this worker cannot serve right now is not answered 503 at
// once: around a handoff the stream is served again within a second or
// so, and the client should simply see a slower answer. The request waits
// (bounded by MaxHold from its arrival) for the first of:
//
//   - this worker serves the stream (its replication started under a new
//     lease): answered here;
//   - an active worker is named (SetActive): forwarded to it. A GET whose
//     forward failed before any byte of a response came back (refused,
//     reset, or answered by a worker that is not active either) waits
//     again and is forwarded to the next active worker named, or to the
//     same one after a short backoff: GETs are safe to repeat, and nothing
//     was sent to the client yet. So is a GET still waiting for its
//     response headers when another worker is named active (the one it
//     went to froze, or was partitioned away, and lost the stream).
//     Nothing is retried once a response has begun;
//   - MaxHold passes: 503 with Retry-After, saying what was missing.
//
// A request another worker forwarded here is never forwarded again (no
// loops): while this worker starts under a lease it is held like any
// other, otherwise it is answered at once 503 with the NotActive header,
// which tells the forwarding worker to try elsewhere.

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
)

// NotActive is the header of the 503 a worker answers to a forwarded
// request when it does not serve the stream (and may not forward again):
// the forwarding worker holds the request and tries the active worker it
// learns of next, instead of passing the 503 on.
const NotActive = "Baton-Not-Active"

// Backoff between forwards of a held GET to the same worker.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = time.Second
)

// route is what can be done with a shape request right now.
type route struct {
	// reg, when set, is the registry this worker serves: answer here.
	reg *shapes.Registry
	// starting: this worker holds a valid lease and starts replication;
	// leaseDone ends with that lease.
	starting  bool
	leaseDone <-chan struct{}
	// active is the worker to forward to (nil: none known).
	active *url.URL
	// changed is closed when any of the above may have changed.
	changed <-chan struct{}
}

func (s *Server) route() route {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rt := route{changed: s.changed}
	switch {
	case s.reg != nil && s.lease != nil && s.lease.Valid():
		rt.reg = s.reg
	case s.held != nil && s.held.Valid():
		rt.starting, rt.leaseDone = true, s.held.Done()
	default:
		rt.active = s.active
	}
	return rt
}

// elsewhere answers a shape request this worker does not serve right now:
// held until it can be served here (by local) or forwarded, bounded by
// MaxHold; see the comment at the top of this file.
func (s *Server) elsewhere(w http.ResponseWriter, r *http.Request, local func(http.ResponseWriter, *http.Request, *shapes.Registry)) {
	deadline := time.Now().Add(s.MaxHold)
	retryable := r.Method == http.MethodGet || r.Method == http.MethodHead
	var (
		why     string   // what the request waits for, for the 503
		failed  *url.URL // the worker the last forward failed on
		retryAt time.Time
		backoff = retryFirst
		held    bool
	)
	for {
		rt := s.route()
		backingOff := rt.active != nil && sameURL(failed, rt.active)
		switch {
		case rt.reg != nil:
			local(w, r, rt.reg)
			return
		case rt.starting:
			why = "This worker holds the stream's lease and is starting replication"
		case r.Header.Get(ForwardedBy) != "":
			s.refuseForwarded(w, r)
			return
		case rt.active == nil:
			why = "This worker does not hold the stream's lease and knows no active worker to forward to"
		case backingOff && time.Now().Before(retryAt):
			// Wait for another worker to be named, or for the backoff.
		default:
			err := s.forward(w, r, rt.active, retryable && time.Now().Before(deadline))
			if err == nil {
				return // answered
			}
			if errors.Is(err, errSuperseded) {
				// Another worker is active now: a fresh hold for it (the
				// time spent waiting on the old one was no hold).
				if d := time.Now().Add(s.MaxHold); d.After(deadline) {
					deadline = d
				}
			}
			why = fmt.Sprintf("This worker is a standby and could not reach the active worker at %s (%v)", rt.active, err)
			if !backingOff {
				backoff = retryFirst
			}
			failed, retryAt, backingOff = rt.active, time.Now().Add(backoff), true
			backoff = min(2*backoff, retryMax)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if failed != nil {
				s.proxied(http.StatusServiceUnavailable)
			}
			cors(w, r)
			unavailable(w, fmt.Sprintf("%s (waited %s); retry shortly.", why, s.MaxHold))
			return
		}
		if backingOff {
			wait = min(wait, max(time.Until(retryAt), 0))
		}
		if !held {
			held = true
			s.Log.Debug("shape request held", "why", why, "max_hold", s.MaxHold, "query", redactQuery(r.URL.RawQuery))
		}
		t := time.NewTimer(wait)
		select {
		case <-rt.changed:
		case <-rt.leaseDone:
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client left
		}
		t.Stop()
	}
}

func sameURL(a, b *url.URL) bool { return a != nil && b != nil && a.String() == b.String() }

// refuseForwarded answers a request another worker forwarded here while
// this worker does not serve the stream: 503 with NotActive, so that the
// forwarding worker tries the active worker instead.
func (s *Server) refuseForwarded(w http.ResponseWriter, r *http.Request) {
	cors(w, r)
	w.Header().Set(NotActive, s.ID)
	unavailable(w, fmt.Sprintf("This worker does not hold the stream's lease, and the request was already forwarded by %q: it is not forwarded again; retry shortly.", r.Header.Get(ForwardedBy)))
}

// ending reports whether err may come from the end of this worker's lease
// under the request rather than from a fault: the lease being served is
// over (ended, or past its deadline on this worker's clock) although
// serving has not been switched off yet, or the storage was closed or
// taken over by a newer lease.
func (s *Server) ending(err error) bool {
	if errors.Is(err, storage.ErrClosed) || errors.Is(err, storage.ErrFenced) {
		return true
	}
	s.mu.RLock()
	l := s.lease
	s.mu.RUnlock()
	if l == nil || !l.Valid() {
		return true
	}
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// served is the registry being served, whether or not its lease is still
// valid.
func (s *Server) served() *shapes.Registry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reg
}

// afterLease answers a request that failed because the lease of reg ended
// under it. That is not an internal error, and the client is not told of
// it: once this worker has stopped serving reg, the request is answered
// as any request then is (elsewhere: held, forwarded to the active worker,
// or served by a new lease's registry). If reg is still served after
// MaxHold, 503 with Retry-After.
func (s *Server) afterLease(w http.ResponseWriter, r *http.Request, reg *shapes.Registry, local func(http.ResponseWriter, *http.Request, *shapes.Registry)) {
	t := time.NewTimer(s.MaxHold)
	defer t.Stop()
	s.Log.Debug("shape request held until the ended lease stops being served", "query", redactQuery(r.URL.RawQuery))
	for {
		rt := s.route()
		if rt.reg != reg || reg == nil {
			s.elsewhere(w, r, local)
			return
		}
		select {
		case <-rt.changed:
		case <-t.C:
			cors(w, r)
			unavailable(w, fmt.Sprintf("This worker's lease ended during the request (waited %s for it to stop serving); retry shortly.", s.MaxHold))
			return
		case <-r.Context().Done():
			return // the client left
		}
	}
}

// localFor is how r is answered from a registry: a POST is a subset
// snapshot with its subset in the body, anything else a GET.
func (s *Server) localFor(r *http.Request) func(http.ResponseWriter, *http.Request, *shapes.Registry) {
	if r.Method == http.MethodPost {
		return s.servePost
	}
	return s.serveShape
}
