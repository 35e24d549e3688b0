package httpapi

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes"
)

// cursorEpoch is Electric's reference time for live cursors.
var cursorEpoch = time.Date(2024, 10, 9, 0, 0, 0, 0, time.UTC)

// nextCursor is Electric's live cache buster: the end of the current
// long-poll interval, moved on at random if the client already has it.
func nextCursor(interval time.Duration, prev string) string {
	sec := int64(max(interval/time.Second, 1))
	diff := int64(time.Since(cursorEpoch) / time.Second)
	next := (diff + sec - 1) / sec * sec
	if strconv.FormatInt(next, 10) == prev {
		next += 1 + rand.Int64N(3600)
	}
	return strconv.FormatInt(next, 10)
}

func (s *Server) getShape(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	reg := s.current()
	if reg == nil {
		s.elsewhere(w, r, s.serveShape)
		return
	}
	s.serveShape(w, r, reg)
}

// serveShape answers a GET from reg, the registry this worker serves.
func (s *Server) serveShape(w http.ResponseWriter, r *http.Request, reg *shapes.Registry) {
	cors(w, r)
	q := r.URL.Query()
	p, errs := parseParams(q)
	if errs != nil {
		invalid(w, errs)
		return
	}
	if sub := subsetFromQuery(q); sub != nil {
		s.serveSubset(w, r, reg, p, sub)
		return
	}
	sh, ok := s.resolve(w, r, reg, p)
	if !ok {
		return
	}
	// In use, for idle expiry, until the response (a long-poll or SSE
	// window included) ends.
	done := sh.Use()
	defer done()
	if p.now {
		s.respond(w, r, p, sh, sh.Now(), false)
		return
	}
	plan, err := sh.Plan(p.offset)
	if err != nil {
		s.planErr(w, r, reg, p, err)
		return
	}
	if p.sse {
		s.serveSSE(w, r, reg, p, sh, plan)
		return
	}
	noChange := false
	if p.live && plan.Empty() {
		// A long-poll never outlives the lease: when it ends, the client
		// is told nothing new arrived and asks again (another pod, or this
		// one forwarding to the active worker).
		leased, stop := s.whileLeased(r)
		ctx, cancel := context.WithTimeout(leased, s.LongPoll)
		newer, err := sh.Wait(ctx, p.offset)
		cancel()
		stop()
		switch {
		case errors.Is(err, shapes.ErrGone) && s.current() != reg:
			// The registry was closed under the poll: this worker stopped
			// serving (its lease is ending). As when the lease ends: nothing
			// new, ask again — the next request finds out whether the
			// shape is still there.
			newer = false
		case err != nil:
			s.planErr(w, r, reg, p, err)
			return
		}
		if r.Context().Err() != nil {
			return
		}
		if newer {
			if plan, err = sh.Plan(p.offset); err != nil {
				s.planErr(w, r, reg, p, err)
				return
			}
		} else {
			noChange = true
		}
	}
	s.respond(w, r, p, sh, plan, noChange)
}

// resolve finds the shape of the request, creating it when it has no
// handle; a handle that is not the definition's current one gets 409.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request, reg *shapes.Registry, p params) (*shapes.Shape, bool) {
	if p.handle != "" {
		if sh := reg.Lookup(p.def); sh != nil && sh.Handle() == p.handle {
			return sh, true
		}
	}
	sh, err := reg.GetOrCreate(r.Context(), p.def)
	if err != nil {
		if p.handle != "" && !p.now && !p.offset.BeforeAll {
			s.goneErr(w, r, err)
		} else {
			s.createErr(w, r, err)
		}
		return nil, false
	}
	// As Electric: with offset -1 or now the handle is not checked (the
	// client starts over anyway); otherwise a stale one gets 409.
	if p.handle != "" && sh.Handle() != p.handle && !p.now && !p.offset.BeforeAll {
		mustRefetch(w, sh.Handle())
		return nil, false
	}
	return sh, true
}

func (s *Server) createErr(w http.ResponseWriter, r *http.Request, err error) {
	var ie *shapes.InvalidError
	switch {
	case errors.As(err, &ie):
		invalid(w, map[string][]string{ie.Field: {ie.Problem}})
	case r.Context().Err() != nil:
	case s.current() == nil:
		// The lease ended under the request: answered where the stream
		// is served now.
		s.elsewhere(w, r, s.localFor(r))
	case s.ending(err):
		s.afterLease(w, r, s.served(), s.localFor(r))
	default:
		s.internalError(w, r, "shape request failed", err)
	}
}

// goneErr answers a client following a shape that is gone and cannot be
// made again (its table was dropped or renamed, its where clause no longer
// fits): 409 must-refetch without a handle, so that the client drops the
// rows it holds; its next request, from offset -1, gets the 400 saying why.
func (s *Server) goneErr(w http.ResponseWriter, r *http.Request, err error) {
	var ie *shapes.InvalidError
	if errors.As(err, &ie) {
		mustRefetch(w, "")
		return
	}
	s.createErr(w, r, err)
}

func (s *Server) planErr(w http.ResponseWriter, r *http.Request, reg *shapes.Registry, p params, err error) {
	switch {
	case errors.Is(err, shapes.ErrOutOfBounds):
		invalid(w, map[string][]string{"offset": {"out of bounds for this shape"}})
	case errors.Is(err, shapes.ErrGone), errors.Is(err, shapes.ErrOtherLog):
		if s.current() == nil {
			s.elsewhere(w, r, s.serveShape)
			return
		}
		sh, cerr := reg.GetOrCreate(r.Context(), p.def)
		if cerr != nil {
			s.goneErr(w, r, cerr)
			return
		}
		mustRefetch(w, sh.Handle())
	case s.ending(err):
		s.afterLease(w, r, reg, s.localFor(r))
	default:
		s.internalError(w, r, "shape read failed", err)
	}
}

func upToDate(lsn uint64) string {
	return `{"headers":{"control":"up-to-date","global_last_seen_lsn":"` + strconv.FormatUint(lsn, 10) + `"}}`
}

// respond writes a 200 (or 304) with the planned records.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, p params, sh *shapes.Shape, plan *shapes.Plan, noChange bool) {
	h := w.Header()
	reqOffset := p.offset.String()
	if p.now {
		reqOffset = "now"
	}
	upToDateResp := plan.UpToDate && !p.offset.BeforeAll || p.now
	switch {
	case p.offset.BeforeAll && !p.now:
		h.Set("Cache-Control", "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
	case p.live:
		h.Set("Cache-Control", "public, max-age=5, stale-while-revalidate=5")
	default:
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.CacheMaxAge/time.Second))+
			", stale-while-revalidate="+strconv.Itoa(int(s.CacheStaleAge/time.Second)))
	}
	if p.live {
		h.Set("electric-cursor", nextCursor(s.LongPoll, p.cursor))
	} else {
		h.Set("electric-schema", sh.Schema())
	}
	// A response that ends at a chunk boundary is the same forever: the
	// etag names its range. One that runs to the end of the log (up to
	// date) ends with the global_last_seen_lsn of now: the etag names
	// that too, so that a cache revalidating it gets the new body.
	etag := sh.Handle() + ":" + reqOffset + ":" + plan.Last.String()
	if upToDateResp {
		etag += ":" + strconv.FormatUint(plan.GlobalLSN, 10)
	}
	if noChange {
		etag += ":" + strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	h.Set("ETag", `"`+etag+`"`)
	h.Set("electric-handle", sh.Handle())
	h.Set("electric-offset", plan.Last.String())
	if upToDateResp {
		h.Set("electric-up-to-date", "")
	}
	h.Set("Content-Type", "application/json")
	for _, v := range r.Header.Values("If-None-Match") {
		for _, t := range strings.Split(v, ",") {
			if strings.Trim(strings.TrimSpace(t), `"`) == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write([]byte{'['})
	// A snapshot chunk still being written goes out as its records
	// become durable.
	flush := func() error { return nil }
	if plan.Streaming() {
		rc := http.NewResponseController(w)
		flush = rc.Flush
		_ = flush()
	}
	first := true
	err := sh.Bodies(r.Context(), plan, func(body []byte) error {
		if len(body) == 0 {
			return nil
		}
		if !first {
			if _, err := w.Write([]byte{','}); err != nil {
				return err
			}
		}
		first = false
		if _, err := w.Write(body); err != nil {
			return err
		}
		return flush()
	})
	if err != nil {
		// Headers are sent: end the response short so the client retries.
		s.Log.Warn("shape response cut short", "handle", sh.Handle(), "err", err)
		panic(http.ErrAbortHandler)
	}
	if upToDateResp {
		if !first {
			_, _ = w.Write([]byte{','})
		}
		_, _ = w.Write([]byte(upToDate(plan.GlobalLSN)))
	}
	_, _ = w.Write([]byte{']'})
}

func (s *Server) deleteShape(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) || !s.deletionAllowed(w, r) {
		return
	}
	reg := s.current()
	if reg == nil {
		s.elsewhere(w, r, s.serveDelete)
		return
	}
	s.serveDelete(w, r, reg)
}

// serveDelete answers a DELETE from reg, the registry this worker serves.
// As Electric's: with a table, the shape is the one of the definition
// (table, where, params, columns, replica, log) and a handle, when given,
// must be its current one (else 400); with a handle alone, the shape is
// the one of that handle.
func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, reg *shapes.Registry) {
	cors(w, r)
	q := r.URL.Query()
	handle := q.Get("handle")
	var sh *shapes.Shape
	if q.Get("table") == "" && handle != "" {
		sh = reg.LookupHandle(handle)
	} else {
		errs := map[string][]string{}
		d := parseDefinition(q, func(f, msg string) { errs[f] = append(errs[f], msg) })
		if len(errs) > 0 {
			invalid(w, errs)
			return
		}
		sh = reg.Lookup(d)
		if sh != nil && handle != "" && handle != sh.Handle() {
			errorJSON(w, http.StatusBadRequest, errorBody{Message: definitionMismatch})
			return
		}
	}
	if sh == nil {
		errorJSON(w, http.StatusNotFound, errorBody{Message: "No existing shape found"})
		return
	}
	if err := reg.Delete(sh); err != nil {
		if s.ending(err) {
			s.afterLease(w, r, reg, s.serveDelete)
			return
		}
		s.internalError(w, r, "shape not deleted", err)
		return
	}
	if err := reg.Reconcile(r.Context()); err != nil {
		s.Log.Warn("publication not reconciled after a shape was removed", "err", err)
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusAccepted)
}

// definitionMismatch is Electric's answer to a handle that is not the
// current one of the definition given with it.
const definitionMismatch = "The specified shape definition and handle do not match. " +
	"Please ensure the shape definition is correct or omit the shape handle from the request to obtain a new one."
