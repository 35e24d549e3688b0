package replication

import "github.com/prometheus/client_golang/prometheus"

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
	return &Metrics{
		DurableLSN:   g("durable_lsn", "End LSN of the last transaction durable in storage."),
		AckedLSN:     g("acked_lsn", "Last flush position acknowledged to PostgreSQL."),
		Transactions: c("transactions_total", "Committed transactions stored."),
		Changes:      c("changes_total", "Row changes stored."),
		Syncs:        c("syncs_total", "Storage syncs (fsync batches)."),
		Epoch:        g("epoch", "Epoch of the current lease (0 when none)."),
		SlotRecreations: c("slot_recreations_total",
			"Replication slots found invalidated (wal_status lost) or dropped, and created anew; every shape is refetched after one."),
	}
}

// Collectors lists the metrics for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.DurableLSN, m.AckedLSN, m.Transactions, m.Changes, m.Syncs, m.Epoch, m.SlotRecreations}
}
