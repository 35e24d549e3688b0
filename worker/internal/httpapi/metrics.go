package httpapi

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of a request, as the metrics label them: a shape request with
// live=true (a long-poll), one with live_sse=true (server-sent events), or
// any other request.
const (
	ModeRequest  = "request"
	ModeLongPoll = "long_poll"
	ModeSSE      = "sse"
)

// Metrics count and time the worker's HTTP requests. Create them with
// NewMetrics, register Collectors, and wrap the server's handler with
// Instrument. They are safe for concurrent use.
type Metrics struct {
	// Requests counts answered requests by route, method and status code.
	Requests *prometheus.CounterVec
	// Duration times requests by route, method and mode, from the handler's
	// start to its return (a long-poll's wait and an SSE window included).
	Duration *prometheus.HistogramVec
	// Live counts the long-poll and SSE requests being answered.
	Live *prometheus.GaugeVec
	// routes are the paths labelled as themselves; any other is "other".
	routes []string
}

// NewMetrics creates the HTTP metrics of stream's worker; routes are the
// paths it serves (the route label of any other path is "other").
func NewMetrics(stream string, routes ...string) *Metrics {
	l := prometheus.Labels{"stream": stream}
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: "http_requests_total",
			Help: "HTTP requests answered, by route, method and status code.", ConstLabels: l}, []string{"route", "method", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "baton", Subsystem: "worker", Name: "http_request_duration_seconds",
			Help:        "Time to answer an HTTP request, by route, method and mode (request, long_poll: live=true, sse: live_sse=true); a long-poll's wait and an SSE window are included.",
			ConstLabels: l, Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60}},
			[]string{"route", "method", "mode"}),
		Live: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "live_connections",
			Help: "Live shape requests being answered (held open for new changes), by mode: long_poll (live=true) or sse (live_sse=true).", ConstLabels: l},
			[]string{"mode"}),
		routes: routes,
	}
	for _, mode := range []string{ModeLongPoll, ModeSSE} {
		m.Live.WithLabelValues(mode)
	}
	return m
}

// Collectors lists the metrics for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Requests, m.Duration, m.Live}
}

// Instrument returns h counted and timed by m.
func (m *Metrics) Instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "other"
		if slices.Contains(m.routes, r.URL.Path) {
			route = r.URL.Path
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions, http.MethodPost:
		default:
			method = "other"
		}
		mode := requestMode(r)
		if mode != ModeRequest {
			g := m.Live.WithLabelValues(mode)
			g.Inc()
			defer g.Dec()
		}
		start := time.Now()
		cw := &codeWriter{ResponseWriter: w}
		defer func() {
			code := cw.code
			if code == 0 {
				code = http.StatusOK // net/http's answer to a handler that wrote nothing
			}
			m.Requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
			m.Duration.WithLabelValues(route, method, mode).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(cw, r)
	})
}

// requestMode is how the shape API answers r: a long-poll, server-sent
// events, or a plain request. A request whose parameters do not parse is
// answered 400 at once: a plain request.
func requestMode(r *http.Request) string {
	if r.Method != http.MethodGet || r.URL.Path != "/v1/shape" {
		return ModeRequest
	}
	q := r.URL.Query()
	if live, ok := parseBool(q.Get("live")); !ok || !live {
		return ModeRequest
	}
	for _, k := range []string{"live_sse", "experimental_live_sse"} {
		if sse, _ := parseBool(q.Get(k)); sse {
			return ModeSSE
		}
	}
	return ModeLongPoll
}

// codeWriter records the status code of a response.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// Flush sends what was written so far (server-sent events, forwarded
// long-polls).
func (c *codeWriter) Flush() {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the server's ResponseWriter.
func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
