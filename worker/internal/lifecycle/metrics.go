package lifecycle

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/httpapi"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
)

// slotReadTimeout bounds the read of the stream's slot at each scrape of
// /metrics (replication.SlotSampler).
const slotReadTimeout = 2 * time.Second

// metrics are the worker's Prometheus metrics, all of them built and
// registered by newMetrics, in a registry of their own served on /metrics.
type metrics struct {
	registry    *prometheus.Registry
	replication *replication.Metrics
	// sampler reads the stream's slot at each scrape; its Run is a part of
	// the process.
	sampler *replication.SlotSampler
	// states counts the shapes of the registry served, by state.
	states *shapeStates
	// http counts the requests by route, method and code.
	http *httpapi.Metrics
	// started observes the time from a grant to streaming.
	started prometheus.Observer
	// shapes count compactions, invalidations and where errors, and time
	// creations.
	shapes shapes.Counters
	// expired counts shapes removed for idleness.
	expired prometheus.Counter
	// prepared is 1 while a standby's warm session is ready.
	prepared prometheus.Gauge
	// proxied counts the shape requests a standby forwarded, by the status
	// code its client got.
	proxied func(code int)
}

func newMetrics(cfg config.Config, version string, log *slog.Logger) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo(version))
	labels := prometheus.Labels{"stream": cfg.StreamID}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: name, Help: help, ConstLabels: labels})
		reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "baton", Subsystem: "worker", Name: name,
			Help: help, ConstLabels: labels, Buckets: buckets})
		reg.MustRegister(h)
		return h
	}
	m := &metrics{
		registry:    reg,
		replication: replication.NewMetrics(cfg.StreamID),
		sampler:     replication.NewSlotSampler(cfg.DatabaseURL, cfg.StreamID, stream.SlotName(cfg.StreamID), slotReadTimeout, log),
		states:      newShapeStates(cfg.StreamID),
		http:        httpapi.NewMetrics(cfg.StreamID, "/v1/shape", "/v1/health", "/metrics"),
	}
	reg.MustRegister(m.replication.Collectors()...)
	reg.MustRegister(m.sampler, m.states)
	reg.MustRegister(m.http.Collectors()...)
	m.started = histogram("start_duration_seconds", "Time from a grant to streaming from the slot (the worker's part of a handoff).",
		[]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})
	m.expired = counter("shapes_expired_total", "Shapes removed because no request used them within BATON_SHAPE_IDLE_TIMEOUT.")
	m.prepared = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "standby_prepared",
		Help: "1 while the worker stands by with its admin session open and warmed up for a takeover.", ConstLabels: labels})
	reg.MustRegister(m.prepared)
	m.shapes = shapes.Counters{
		Compacted:   counter("shape_compactions_total", "Shape logs compacted to one message per row."),
		Invalidated: counter("shapes_invalidated_total", "Shapes removed because their table was truncated, dropped, renamed or altered."),
		WhereErrors: counter("where_errors_total", "Where clauses that raised an error on a changed row (the row is left out)."),
		Created: histogram("snapshot_duration_seconds", "Time to create a shape: its table's description, publication and snapshot.",
			[]float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
	}
	proxied := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: "proxied_requests_total",
		Help: "Shape requests a standby forwarded to the active worker, by the status code its client got.", ConstLabels: labels},
		[]string{"code"})
	reg.MustRegister(proxied)
	m.proxied = func(code int) { proxied.WithLabelValues(strconv.Itoa(code)).Inc() }
	return m
}

// buildInfo is baton_build_info: 1, labelled with the program, its version
// (set at build time), the Go version and the VCS revision the binary was
// built from ("unknown" when not recorded). The broker exports the same.
func buildInfo(version string) prometheus.Collector {
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baton", Name: "build_info",
		Help:        "1, labelled with the program (broker or worker), its version, the Go version and the VCS revision it was built from.",
		ConstLabels: prometheus.Labels{"program": "worker", "version": version, "goversion": runtime.Version(), "revision": revision}})
	g.Set(1)
	return g
}

// shapeStates is baton_worker_shapes{state}: the shapes of the registry
// served under the current lease, counted at each scrape (none without a
// lease). Safe for concurrent use.
type shapeStates struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	reg  *shapes.Registry
}

func newShapeStates(stream string) *shapeStates {
	return &shapeStates{desc: prometheus.NewDesc("baton_worker_shapes",
		"Shapes of the registry this worker serves under its lease, by state: creating (snapshot being taken), in_use (a request holds it, a live one included), idle; 0 without a lease.",
		[]string{"state"}, prometheus.Labels{"stream": stream})}
}

// set makes reg the registry counted (nil: none).
func (s *shapeStates) set(reg *shapes.Registry) {
	s.mu.Lock()
	s.reg = reg
	s.mu.Unlock()
}

func (s *shapeStates) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *shapeStates) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	reg := s.reg
	s.mu.Unlock()
	var n map[string]int
	if reg != nil {
		n = reg.Count()
	}
	for _, st := range shapes.States {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n[st]), st)
	}
}
