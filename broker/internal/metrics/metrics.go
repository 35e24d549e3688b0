// Package metrics defines the broker's Prometheus metrics and serves them on
// /metrics. Metrics live in their own registry (no global state); the leader
// loop updates them as state changes.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Lease states reported by baton_broker_lease_state.
const (
	LeaseNone     = 0 // no grant
	LeaseGranted  = 1 // a worker holds the lease
	LeaseRevoking = 2 // revoked, waiting for the worker's release
)

// Broker holds the broker's metrics.
type Broker struct {
	Registry   *prometheus.Registry
	LockHeld   prometheus.Gauge
	Epoch      prometheus.Gauge
	LeaseState prometheus.Gauge
	// WorkersAttached reads, at each scrape, how many workers are attached
	// (standing by or granted).
	WorkersAttached prometheus.GaugeFunc
	LockWait        prometheus.Histogram
	Acquisitions    prometheus.Counter
	// Handoffs counts acquisitions that took the stream over from a
	// holding that overlapped this broker's wait, by the way that holding
	// ended (HandoffCauses); HandoffDuration observes, at the first grant
	// after one, the time from that end to the grant.
	Handoffs          *prometheus.CounterVec
	HandoffDuration   prometheus.Histogram
	Grants            prometheus.Counter
	Revocations       *prometheus.CounterVec
	StoppingReleases  prometheus.Counter
	HeartbeatFailures prometheus.Counter
	HeartbeatLatency  prometheus.Histogram
	SessionErrors     prometheus.Counter
	// WorkerDurableLSN reads, at each scrape, the durable position the
	// granted worker last reported.
	WorkerDurableLSN prometheus.GaugeFunc
}

// HandoffCauses are the values of baton_broker_handoffs_total's cause: the
// previous holder released the lock for its shutdown, because its worker
// was stopping, or because no worker attached in time; released with no
// cause recorded (an older broker); or its session ended without a release
// (crash, freeze, partition, PostgreSQL restart).
var HandoffCauses = []string{"shutdown", "worker_stopping", "worker_absent", "released", "session_ended"}

// Hub is what the metrics read of the lease hub at each scrape.
type Hub interface {
	// DurableLSN is the last durable position (WAL byte position) the
	// granted worker reported, 0 before any report.
	DurableLSN() uint64
	// Attached is the number of workers attached.
	Attached() int
}

// New creates and registers the broker's metrics for stream, and
// baton_build_info for version.
func New(stream, version string, hub Hub) *Broker {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo("broker", version))
	labels := prometheus.Labels{"stream": stream}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "baton", Subsystem: "broker", Name: name, Help: help, ConstLabels: labels}
	}
	b := &Broker{
		Registry:   reg,
		LockHeld:   prometheus.NewGauge(prometheus.GaugeOpts(f("lock_held", "1 while this broker holds the stream's advisory lock."))),
		Epoch:      prometheus.NewGauge(prometheus.GaugeOpts(f("epoch", "Epoch of this broker's latest acquisition or grant (0 before the first)."))),
		LeaseState: prometheus.NewGauge(prometheus.GaugeOpts(f("lease_state", "0 no grant, 1 granted to a worker, 2 revoked and waiting for the worker's release."))),
		WorkersAttached: prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("workers_attached", "Worker lease streams attached to this broker.")),
			func() float64 { return float64(hub.Attached()) }),
		LockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "baton", Subsystem: "broker", Name: "lock_wait_seconds", ConstLabels: labels,
			Help:    "Time from starting to wait for the advisory lock to holding it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
		Acquisitions: prometheus.NewCounter(prometheus.CounterOpts(f("acquisitions_total", "Advisory lock acquisitions by this broker."))),
		Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts(f("handoffs_total",
			"Acquisitions that took the stream over from a holder that held it while this broker waited, by how that holding ended.")), []string{"cause"}),
		HandoffDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "baton", Subsystem: "broker", Name: "handoff_duration_seconds", ConstLabels: labels,
			Help:    "Time from the end of the previous holding (its release, or its last heartbeat when it ended without one) to this broker's first grant after taking the stream over.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80},
		}),
		Grants:            prometheus.NewCounter(prometheus.CounterOpts(f("grants_total", "Leases granted to a worker."))),
		Revocations:       prometheus.NewCounterVec(prometheus.CounterOpts(f("revocations_total", "Leases revoked, by reason.")), []string{"reason"}),
		StoppingReleases:  prometheus.NewCounter(prometheus.CounterOpts(f("stopping_releases_total", "Locks released at once because the granted worker released saying its process is stopping (kubelet stop order)."))),
		HeartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts(f("heartbeat_failures_total", "Lock-session heartbeats that failed or showed the lock lost."))),
		HeartbeatLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "baton", Subsystem: "broker", Name: "heartbeat_seconds", ConstLabels: labels,
			Help:    "Round trip of successful lock-session heartbeats.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		SessionErrors: prometheus.NewCounter(prometheus.CounterOpts(f("session_errors_total", "Lock-session connection attempts or sessions that failed."))),
		WorkerDurableLSN: prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("worker_durable_lsn",
			"Last WAL position (LSN as a byte position) the granted worker reported durable and acknowledged (lease Progress or Released); 0 before any report.")),
			func() float64 { return float64(hub.DurableLSN()) }),
	}
	reg.MustRegister(b.LockHeld, b.Epoch, b.LeaseState, b.WorkersAttached, b.LockWait, b.Acquisitions,
		b.Handoffs, b.HandoffDuration, b.Grants, b.Revocations, b.StoppingReleases, b.HeartbeatFailures, b.HeartbeatLatency, b.SessionErrors,
		b.WorkerDurableLSN)
	for _, c := range HandoffCauses {
		b.Handoffs.WithLabelValues(c)
	}
	for _, r := range []string{"shutdown", "lock_lost", "replaced"} {
		b.Revocations.WithLabelValues(r)
	}
	return b
}

// BuildInfo is baton_build_info: 1, labelled with the program, its
// version (set at build time), the Go version and the VCS revision the
// binary was built from ("unknown" when not recorded).
func BuildInfo(program, version string) prometheus.Collector {
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
		ConstLabels: prometheus.Labels{"program": program, "version": version, "goversion": runtime.Version(), "revision": revision}})
	g.Set(1)
	return g
}

// Serve serves /metrics on ln until ctx is done, then shuts down.
func (b *Broker) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.Registry, promhttp.HandlerOpts{Registry: b.Registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
