package replication

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batonhq/baton/worker/internal/storage"
)

// Metrics are the replication loop's Prometheus metrics. Create them with
// NewMetrics and register Collectors on the worker's registry.
type Metrics struct {
	DurableLSN   prometheus.Gauge
	AckedLSN     prometheus.Gauge
	Transactions prometheus.Counter
	Changes      prometheus.Counter
	Syncs        prometheus.Counter
	Epoch        prometheus.Gauge
	// SlotRecreations counts slots found invalidated (their WAL removed) or
	// missing after this storage streamed from them, and created anew;
	// every shape is refetched after one.
	SlotRecreations prometheus.Counter
	// LagBytes and LagSeconds are computed at each scrape from lag.
	LagBytes   prometheus.GaugeFunc
	LagSeconds prometheus.GaugeFunc
	// OpenSegments and SegmentReopens are the process's open log segment
	// files (storage.OpenFiles), read at each scrape.
	OpenSegments   prometheus.GaugeFunc
	SegmentReopens prometheus.CounterFunc

	lag lag
}

// lag is how far the stream being consumed is behind the server, updated
// by the run as it reads and makes transactions durable, read by scrapes.
// Zero values: no stream (no lag).
type lag struct {
	// serverEnd is the newest WAL position the server sent (a keepalive's
	// WAL end, a message's position).
	serverEnd atomic.Uint64
	// accounted is the position up to which every change is durable or
	// known to need nothing (a keepalive's WAL end with nothing pending):
	// what may be acknowledged.
	accounted atomic.Uint64
	// commitNanos is the commit time (Unix nanoseconds, the server's
	// clock) of the last durable transaction; 0 before the first one of
	// the run, when startNanos (when the run began streaming) stands in.
	commitNanos atomic.Int64
	startNanos  atomic.Int64
	// delayNanos is how old the last durable transaction was when it
	// became durable; a keepalive accounted for (the server had nothing
	// more to send) sets it to 0.
	delayNanos atomic.Int64
}

// NewMetrics creates the metrics for stream.
func NewMetrics(stream string) *Metrics {
	l := prometheus.Labels{"stream": stream}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: name, Help: help, ConstLabels: l})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: name, Help: help, ConstLabels: l})
	}
	m := &Metrics{
		DurableLSN:   g("durable_lsn", "End LSN of the last transaction durable in storage."),
		AckedLSN:     g("acked_lsn", "Last flush position acknowledged to PostgreSQL."),
		Transactions: c("transactions_total", "Committed transactions stored."),
		Changes:      c("changes_total", "Row changes stored."),
		Syncs:        c("syncs_total", "Storage syncs (fsync batches)."),
		Epoch:        g("epoch", "Epoch of the current lease (0 when none)."),
		SlotRecreations: c("slot_recreations_total",
			"Replication slots found invalidated (wal_status lost) or dropped, and created anew; every shape is refetched after one."),
	}
	m.LagBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "replication_lag_bytes",
		Help: "WAL the server has sent (the newest keepalive WAL end or message position) beyond what the worker made durable or passed over; 0 when not replicating.", ConstLabels: l},
		func() float64 { return float64(m.lag.bytes()) })
	m.LagSeconds = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "replication_lag_seconds",
		Help: "While the worker is behind what the server sent: now minus the commit time of the last durable transaction (before one: the stream's start); otherwise how old that transaction was when it became durable, 0 once the server had nothing more to send or when not replicating.", ConstLabels: l},
		func() float64 { return m.lag.seconds(time.Now()).Seconds() })
	m.OpenSegments = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "open_segment_files",
		Help: "Log segment files (stream and shape logs) held open for writing; at most half the process's open-file limit, beyond which the least recently written are closed.", ConstLabels: l},
		func() float64 { open, _ := storage.OpenFiles(); return float64(open) })
	m.SegmentReopens = prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: "segment_reopens_total",
		Help: "Log segment files reopened for a write after being closed to stay within the open-file limit.", ConstLabels: l},
		func() float64 { _, n := storage.OpenFiles(); return float64(n) })
	return m
}

// Collectors lists the metrics for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.DurableLSN, m.AckedLSN, m.Transactions, m.Changes, m.Syncs, m.Epoch, m.SlotRecreations,
		m.LagBytes, m.LagSeconds, m.OpenSegments, m.SegmentReopens}
}

// start begins measuring the lag of a stream starting at pos.
func (l *lag) start(pos uint64) {
	l.commitNanos.Store(0)
	l.delayNanos.Store(0)
	l.startNanos.Store(time.Now().UnixNano())
	l.accounted.Store(pos)
	l.serverEnd.Store(pos)
}

// stop ends measuring: no stream, no lag.
func (l *lag) stop() {
	l.serverEnd.Store(0)
	l.accounted.Store(0)
	l.delayNanos.Store(0)
}

// sent records a position the server sent.
func (l *lag) sent(pos uint64) {
	for {
		cur := l.serverEnd.Load()
		if pos <= cur || l.serverEnd.CompareAndSwap(cur, pos) {
			return
		}
	}
}

// durable records the accounted position after a sync; commit is the
// commit time of the last transaction made durable (zero: none new).
func (l *lag) durable(pos uint64, commit time.Time) {
	if !commit.IsZero() {
		l.commitNanos.Store(commit.UnixNano())
		l.delayNanos.Store(max(int64(time.Since(commit)), 0))
	}
	l.raise(pos)
}

// caughtUp records a keepalive's WAL end accounted for: the server had
// nothing more to send.
func (l *lag) caughtUp(pos uint64) {
	l.delayNanos.Store(0)
	l.raise(pos)
}

// raise raises the accounted position to pos.
func (l *lag) raise(pos uint64) {
	for {
		cur := l.accounted.Load()
		if pos <= cur || l.accounted.CompareAndSwap(cur, pos) {
			return
		}
	}
}

func (l *lag) bytes() uint64 {
	end, acc := l.serverEnd.Load(), l.accounted.Load()
	if end <= acc {
		return 0
	}
	return end - acc
}

func (l *lag) seconds(now time.Time) time.Duration {
	if l.bytes() == 0 {
		return time.Duration(l.delayNanos.Load())
	}
	at := l.commitNanos.Load()
	if at == 0 {
		at = l.startNanos.Load()
	}
	return max(now.Sub(time.Unix(0, at)), 0)
}
