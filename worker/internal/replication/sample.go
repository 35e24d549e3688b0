package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// WALStatuses are the values of baton_worker_slot_wal_status's wal_status:
// pg_replication_slots.wal_status, and "missing" when there is no slot.
var WALStatuses = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// SlotSampler reports the stream's slot as pg_replication_slots shows it,
// read at each scrape (a prometheus.Collector) on a connection of its own,
// whether or not this worker holds the lease: the WAL a slot retains grows
// most when its consumer is gone or frozen, and then the other pods of the
// stream still report it. Scrapes are served one at a time, each read
// bounded by the timeout; when the database cannot be read, the slot's
// metrics are left out of that scrape.
type SlotSampler struct {
	url, slot, appName string
	timeout            time.Duration
	log                *slog.Logger

	retained, active, status *prometheus.Desc

	mu      sync.Mutex
	conn    *pgx.Conn
	closed  bool
	failing bool // the last read failed (logged once)
}

// slotSample is one reading of the slot.
type slotSample struct {
	exists    bool
	walStatus string // "" for a slot with no WAL reserved yet
	retained  int64  // current WAL position - restart_lsn
	active    bool
}

// NewSlotSampler returns a collector of the stream's slot; Run closes its
// connection at the end.
func NewSlotSampler(databaseURL, streamID, slot string, timeout time.Duration, log *slog.Logger) *SlotSampler {
	l := prometheus.Labels{"stream": streamID}
	return &SlotSampler{url: databaseURL, slot: slot, appName: "baton-worker-sample:" + streamID, timeout: timeout, log: log,
		retained: prometheus.NewDesc("baton_worker_slot_retained_wal_bytes",
			"WAL the stream's slot keeps on the server: the current WAL position minus the slot's restart_lsn, read at the scrape; 0 when there is no slot.", nil, l),
		active: prometheus.NewDesc("baton_worker_slot_active",
			"1 while a backend consumes the stream's slot (pg_replication_slots.active), read at the scrape.", nil, l),
		status: prometheus.NewDesc("baton_worker_slot_wal_status",
			"1 for the stream's slot's pg_replication_slots.wal_status (missing: no slot), 0 for the others, read at the scrape.", []string{"wal_status"}, l),
	}
}

// Describe implements prometheus.Collector.
func (s *SlotSampler) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.retained
	ch <- s.active
	ch <- s.status
}

// Collect implements prometheus.Collector: it reads the slot.
func (s *SlotSampler) Collect(ch chan<- prometheus.Metric) {
	smp, ok := s.read()
	if !ok {
		return
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(s.retained, prometheus.GaugeValue, float64(smp.retained))
	ch <- prometheus.MustNewConstMetric(s.active, prometheus.GaugeValue, b2f(smp.active))
	status := smp.walStatus
	if !smp.exists {
		status = "missing"
	}
	for _, v := range WALStatuses {
		ch <- prometheus.MustNewConstMetric(s.status, prometheus.GaugeValue, b2f(v == status), v)
	}
}

// Run waits until ctx is done, then closes the connection; it returns nil.
func (s *SlotSampler) Run(ctx context.Context) error {
	<-ctx.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn != nil {
		closeSampler(ctx, s.conn)
		s.conn = nil
	}
	return nil
}

// read reads the slot, connecting first when needed; ok is false when it
// could not. A failed read closes the connection; the next one opens
// another.
func (s *SlotSampler) read() (slotSample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return slotSample{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var err error
	if s.conn == nil {
		s.conn, err = ConnectAdmin(ctx, s.url, s.appName)
	}
	var smp slotSample
	if err == nil {
		smp, err = s.sample(ctx, s.conn)
	}
	if err != nil {
		if s.conn != nil {
			closeSampler(ctx, s.conn)
			s.conn = nil
		}
		if !s.failing {
			// The replication and lease paths say loudly what is wrong
			// with the database; the metrics just go away.
			s.log.Info("reading the slot for /metrics failed; its metrics are left out until a read succeeds", "slot", s.slot, "err", err)
		}
		s.failing = true
		return slotSample{}, false
	}
	s.failing = false
	return smp, true
}

// sample reads the slot once.
func (s *SlotSampler) sample(ctx context.Context, conn *pgx.Conn) (slotSample, error) {
	smp := slotSample{exists: true}
	var status *string
	var retained *int64
	err := conn.QueryRow(ctx, `
		SELECT s.wal_status, s.active,
		       ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) - s.restart_lsn)::int8
		FROM pg_replication_slots s WHERE s.slot_name = $1`, s.slot).Scan(&status, &smp.active, &retained)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotSample{}, nil
	}
	if err != nil {
		return smp, fmt.Errorf("read slot %s: %w", s.slot, err)
	}
	if status != nil {
		smp.walStatus = *status
	}
	if retained != nil {
		smp.retained = max(*retained, 0)
	}
	return smp, nil
}

func closeSampler(ctx context.Context, c *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = c.Close(cctx)
}
