package httpapi

import (
	"net/http"
	"sync/atomic"
)

// Drain wraps a worker's HTTP handler for a graceful stop. After Start,
// every response — those already being served, such as long-polls, and
// those of requests arriving on connections opened before — carries
// "Connection: close": the server closes each connection once it has
// answered on it, and the client opens its next one elsewhere (a Service
// no longer sends new connections to a terminating pod), while this server
// still accepts and answers.
//
// This is what http.Server.Shutdown and SetKeepAlivesEnabled(false) do
// not do: both close idle keep-alive connections at once, and a request a
// client sent on one just before is lost (the client sees a reset or EOF,
// HTTP/1.1 having no way to refuse it). Call Start, keep serving for a
// while, then Shutdown: only connections that stayed idle all that while
// are closed unused.
//
// A Drain is safe for concurrent use.
type Drain struct {
	h       http.Handler
	closing atomic.Bool
}

// NewDrain returns h wrapped, not draining.
func NewDrain(h http.Handler) *Drain { return &Drain{h: h} }

// Start makes every response from now on close its connection. It does not
// block.
func (d *Drain) Start() { d.closing.Store(true) }

// Draining reports whether Start was called.
func (d *Drain) Draining() bool { return d.closing.Load() }

func (d *Drain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.h.ServeHTTP(&closingWriter{ResponseWriter: w, d: d}, r)
}

// closingWriter adds "Connection: close" to the response's headers when
// they are written during a drain.
type closingWriter struct {
	http.ResponseWriter
	d     *Drain
	wrote bool
}

func (c *closingWriter) WriteHeader(code int) {
	if !c.wrote && code >= 200 {
		c.wrote = true
		if c.d.closing.Load() {
			c.Header().Set("Connection", "close")
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closingWriter) Write(b []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(b)
}

// Flush sends what was written so far (server-sent events, forwarded
// long-polls).
func (c *closingWriter) Flush() {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the server's ResponseWriter.
func (c *closingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
