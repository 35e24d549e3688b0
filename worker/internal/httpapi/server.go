// Package httpapi serves the shape API, compatible with ElectricSQL's HTTP
// API v1 (GET and DELETE /v1/shape), so that its official TypeScript client
// works against a Baton worker unchanged. Shapes are served only while the
// worker holds its lease and replicates. A standby worker forwards shape
// requests to the stream's active worker when it knows its URL (SetActive),
// streaming the response back as it comes.
//
// Around a handoff no worker can answer for a moment: the active worker
// stops, its successor starts replication, and standbys learn the new
// active worker's URL a little later. A shape request that arrives then is
// held, up to Server.MaxHold, and answered as soon as some worker can: here
// once replication runs, or forwarded to the newly named active worker — a
// GET is forwarded again when the worker it went to was gone before
// answering (hold.go). Only when nobody serves the stream for MaxHold does
// the client get 503 with Retry-After.
//
// Drain (drain.go) lets a stopping worker keep answering for a moment while
// telling clients to open their next connection elsewhere.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes"
)

// Defaults of Electric's API.
const (
	DefaultLongPoll      = 20 * time.Second
	DefaultCacheMaxAge   = 60 * time.Second
	DefaultCacheStaleAge = 300 * time.Second
)

// DefaultMaxHold is how long a shape request waits, at most, for a worker
// that serves the stream (a handoff: the successor starting replication,
// standbys learning its URL) before it is answered 503. Well above a
// graceful or crash handoff (DESIGN §6), below common client and proxy
// timeouts.
const DefaultMaxHold = 10 * time.Second

// exposed are the response headers a browser client must be able to read.
const exposed = "electric-cursor, electric-handle, electric-offset, electric-schema, electric-up-to-date, electric-internal-known-error, electric-snapshot, retry-after, etag"

// Server serves /v1/shape.
type Server struct {
	// LongPoll is how long a live request waits for new data.
	LongPoll time.Duration
	Log      *slog.Logger
	// Self is this worker's own advertised URL: never forwarded to.
	Self string
	// ID names this worker in the ForwardedBy header of what it forwards.
	ID string
	// Proxied, when set, counts each forwarded request by the status code
	// its client got (503 when the active worker could not be reached).
	Proxied func(code int)
	// MaxHold bounds how long a shape request waits for a worker that
	// serves the stream (see the package comment); 0: not at all.
	MaxHold time.Duration
	// Secret, when not empty, must be carried by every shape request as
	// its secret (or the older api_secret) query parameter; a request
	// without it is answered 401 before it is held or forwarded.
	Secret string
	// AllowDeletion lets DELETE /v1/shape remove shapes; without it a
	// DELETE is answered 405 (Electric's allow_shape_deletion).
	AllowDeletion bool
	// CacheMaxAge and CacheStaleAge are the max-age and
	// stale-while-revalidate (whole seconds) of a shape response that is
	// neither live nor from offset -1, as Electric's cache_max_age and
	// cache_stale_age.
	CacheMaxAge, CacheStaleAge time.Duration
	// SSEKeepAlive is how long an SSE response stays silent before a
	// keep-alive comment.
	SSEKeepAlive time.Duration

	transport http.RoundTripper

	mu    sync.RWMutex
	reg   *shapes.Registry
	lease Lease
	// held is the lease this worker holds, if any: nothing is forwarded
	// while it is valid.
	held Lease
	// active is the active worker's base URL; nil when none is known.
	active *url.URL
	// changed is closed and replaced whenever reg, lease, held or active
	// change, waking the requests held until one of them does.
	changed chan struct{}
}

// Lease is what serving depends on: Valid checks the lease's deadline on
// the monotonic clock (a worker resumed after a freeze stops serving at
// once); Done is closed when the lease ends, which ends every long-poll and
// SSE response at once, so clients ask again (and reach the active worker)
// instead of waiting on a worker that no longer replicates.
type Lease interface {
	Valid() bool
	Done() <-chan struct{}
}

// New returns a Server with no registry and no active worker to forward
// to (shape requests are held, then answered 503).
func New(log *slog.Logger) *Server {
	s := &Server{LongPoll: DefaultLongPoll, MaxHold: DefaultMaxHold, Log: log, changed: make(chan struct{}),
		CacheMaxAge: DefaultCacheMaxAge, CacheStaleAge: DefaultCacheStaleAge, SSEKeepAlive: DefaultSSEKeepAlive}
	s.transport = newTransport(func() time.Duration { return s.LongPoll + s.MaxHold })
	return s
}

// Serve makes reg the registry served while l is valid, until Serve is
// called again; a nil reg stops serving.
func (s *Server) Serve(reg *shapes.Registry, l Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reg, s.lease = reg, l
	s.notifyLocked()
}

// notifyLocked wakes the held requests; s.mu is held for writing.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// whileLeased returns a context that ends with the request or when the
// lease being served ends, whichever comes first.
func (s *Server) whileLeased(r *http.Request) (context.Context, context.CancelFunc) {
	s.mu.RLock()
	l := s.lease
	s.mu.RUnlock()
	ctx, cancel := context.WithCancel(r.Context())
	if l == nil {
		cancel()
		return ctx, cancel
	}
	stop := make(chan struct{})
	go func() {
		select {
		case <-l.Done():
			cancel()
		case <-stop:
		case <-ctx.Done():
		}
	}()
	return ctx, func() { close(stop); cancel() }
}

func (s *Server) current() *shapes.Registry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.reg == nil || s.lease == nil || !s.lease.Valid() {
		return nil
	}
	return s.reg
}

// Register adds the shape routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/shape", s.getShape)
	mux.HandleFunc("POST /v1/shape", s.postShape)
	mux.HandleFunc("DELETE /v1/shape", s.deleteShape)
	mux.HandleFunc("OPTIONS /v1/shape", s.options)
}

func cors(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	origin := r.Header.Get("Origin")
	if origin == "" {
		origin = "*"
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", exposed)
	h.Set("Access-Control-Allow-Methods", "GET, POST, HEAD, DELETE, OPTIONS")
	h.Add("Vary", "Origin")
}

func (s *Server) options(w http.ResponseWriter, r *http.Request) {
	cors(w, r)
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		w.Header().Set("Access-Control-Allow-Headers", req)
	}
	w.Header().Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusOK)
}

// internalError answers 500 without the error's text, which may tell a
// client about the worker's insides: it is logged with a request id, which
// the answer gives (body and X-Request-Id) so the two can be matched.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	id := newRequestID()
	s.Log.Error(what, "err", err, "request_id", id, "method", r.Method, "query", redactQuery(r.URL.RawQuery))
	w.Header().Set("X-Request-Id", id)
	errorJSON(w, http.StatusInternalServerError, errorBody{Message: "Internal server error; the worker logged it with request id " + id, RequestID: id})
}

// newRequestID is 20 random hexadecimal digits.
func newRequestID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errorJSON writes an error response that must never be cached.
func errorJSON(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Surrogate-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

type errorBody struct {
	Message   string              `json:"message"`
	Errors    map[string][]string `json:"errors,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
}

func invalid(w http.ResponseWriter, errs map[string][]string) {
	errorJSON(w, http.StatusBadRequest, errorBody{Message: "Invalid request", Errors: errs})
}

// unavailable answers 503 with Retry-After, saying why.
func unavailable(w http.ResponseWriter, why string) {
	w.Header().Set("Retry-After", "1")
	errorJSON(w, http.StatusServiceUnavailable, errorBody{Message: why})
}

// mustRefetch answers 409: the handle is stale; handle is the current one.
// As Electric, it is cached briefly (it redirects every client of a gone
// shape), for a second only without a handle to go to.
func mustRefetch(w http.ResponseWriter, handle string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=1, must-revalidate")
	if handle != "" {
		h.Set("Cache-Control", "public, max-age=60, must-revalidate")
		h.Set("electric-handle", handle)
	}
	w.WriteHeader(http.StatusConflict)
	_, _ = w.Write([]byte(`[{"headers":{"control":"must-refetch"}}]`))
}
