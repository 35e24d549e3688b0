package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// TestMetricsMove scrapes both processes of two pods during replication:
// every exposition is promlint-clean, every metric the README lists
// exists with the type and labels it says (and no other baton_ metric
// does), and the metrics move as they should: the replication lag rises
// while the active worker is SIGSTOPped and falls after, the WAL its slot
// retains grows meanwhile (reported by the standby pod's worker), live
// connections, shapes, snapshots and requests are counted, and a SIGTERM
// handoff counts a worker_stopping handoff with its duration.
func TestMetricsMove(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, pad text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	// A lease that outlives the freeze below: the frozen worker resumes
	// still holding it.
	settings := map[string]string{"BATON_LOCK_SESSION_TIMEOUT": "30s", "BATON_HEARTBEAT_INTERVAL": "1s", "BATON_LEASE_TTL": "20s"}
	pod := func(name string) *harness.Pod {
		return newPod(t, pg, harness.PodOptions{Name: name, StorageDir: t.TempDir(), BrokerSettings: settings, Advertise: true, AwaitBroker: true})
	}
	a := pod("a")
	if err := a.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	b := pod("b")
	if err := b.Worker().AwaitStatus("waiting", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s := newScraper(t)
	ab, aw := "http://"+a.Broker().MetricsAddr, a.URL()
	bb, bw := "http://"+b.Broker().MetricsAddr, b.URL()

	// A shape, followed live: a long-poll open on the active worker.
	c := harness.NewShapeClient(a.URL(), url.Values{"table": {"items"}})
	if _, err := c.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() { _, err := c.Request(ctx, true); polled <- err }()
	s.await(aw, "a long-poll counted as a live connection", 10*time.Second, func(m metrics) bool {
		return m.value("baton_worker_live_connections", "mode", "long_poll") == 1
	})
	m := s.scrape(aw)
	if m.value("baton_worker_shapes", "state", "in_use") != 1 || m.value("baton_worker_shapes", "state", "creating") != 0 ||
		m.count("baton_worker_snapshot_duration_seconds") != 1 || m.count("baton_worker_start_duration_seconds") != 1 ||
		m.value("baton_worker_http_requests_total", "route", "/v1/shape", "method", "GET", "code", "200") < 1 {
		t.Fatalf("active worker after a shape's creation, with a long-poll open:\n%s", m.text)
	}
	// The standby forwards a request to the active worker once its broker
	// named it.
	if err := harness.Await(20*time.Second, "a request to the standby forwarded", func() (bool, error) {
		r, err := harness.Get(ctx, b.URL(), url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
		return err == nil && r.Status == http.StatusOK, err
	}); err != nil {
		t.Fatal(err)
	}

	// Writes go on until the end.
	w := startPadWriter(t, pg)
	if err := <-polled; err != nil {
		t.Fatalf("long-poll: %v", err)
	}
	s.await(aw, "the long-poll ended, writes replicated", 20*time.Second, func(m metrics) bool {
		return m.value("baton_worker_live_connections", "mode", "long_poll") == 0 && m.value("baton_worker_transactions_total") > 10
	})
	m, mb := s.scrape(ab), s.scrape(bb)
	if m.value("baton_broker_lock_held") != 1 || m.value("baton_broker_lease_state") != 1 || m.value("baton_broker_epoch") < 1 ||
		mb.value("baton_broker_lock_held") != 0 || mb.value("baton_broker_lease_state") != 0 || mb.value("baton_broker_workers_attached") != 1 {
		t.Fatalf("brokers: holder\n%s\nstandby\n%s", m.text, mb.text)
	}
	s.await(bw, "the standby's sample of the slot", 20*time.Second, func(m metrics) bool {
		return m.value("baton_worker_slot_active") == 1 && m.value("baton_worker_slot_wal_status", "wal_status", "reserved") == 1 &&
			m.value("baton_worker_proxied_requests_total", "code", "200") >= 1 && m.value("baton_worker_standby_prepared") == 1
	})

	// The active worker frozen (shorter than the broker's keepalive, which
	// would end its lease stream): the WAL its slot retains grows, as the
	// standby's worker reports.
	var retainedAtStop float64
	if err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - restart_lsn)::float8 FROM pg_replication_slots WHERE slot_name = 'baton_slot_default'`).Scan(&retainedAtStop); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped, rowsAtStop := time.Now(), w.rows()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := a.Worker().Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	// A scrape of the frozen worker is answered when it resumes, alongside
	// the backlog.
	early := make(chan metrics, 1)
	go func() {
		m, _ := s.get(aw, 30*time.Second)
		early <- m
	}()
	if _, err := conn.Exec(ctx, `INSERT INTO items (pad) SELECT repeat('y', 400) FROM generate_series(1, 20000)`); err != nil {
		t.Fatal(err)
	}
	s.await(bw, "the standby to report the slot's retained WAL grown by 5 MB", 10*time.Second, func(m metrics) bool {
		return m.value("baton_worker_slot_retained_wal_bytes") > retainedAtStop+5<<20
	})
	if err := harness.Await(10*time.Second, "writes during the freeze", func() (bool, error) {
		return w.rows() >= rowsAtStop+2000, nil
	}); err != nil {
		t.Fatal(err)
	}
	resume()
	frozen := time.Since(stopped)
	t.Logf("worker frozen %s; %d rows written meanwhile", frozen.Round(time.Millisecond), w.rows()-rowsAtStop+20000)

	// Resumed, it works through what piled up: lag seen, then gone.
	var maxBytes, maxSeconds float64
	seen := func(m metrics) float64 {
		lb, ls := m.value("baton_worker_replication_lag_bytes"), m.value("baton_worker_replication_lag_seconds")
		maxBytes, maxSeconds = max(maxBytes, lb), max(maxSeconds, ls)
		return ls
	}
	if err := harness.AwaitEvery(30*time.Second, 10*time.Millisecond, "the lag to rise after the freeze and fall", func() (bool, error) {
		m, err := s.get(aw, 2*time.Second)
		if err != nil {
			return false, nil
		}
		ls := seen(m)
		return maxSeconds >= frozen.Seconds()/2 && maxBytes >= 1<<20 && ls < 1, nil
	}); err != nil {
		t.Fatalf("%v: lag at most %.0f bytes, %.3f s", err, maxBytes, maxSeconds)
	}
	seen(<-early)
	t.Logf("lag after the freeze: at most %.0f bytes, %.3f s", maxBytes, maxSeconds)
	w.stop()
	s.await(aw, "no lag once the writes stopped", 30*time.Second, func(m metrics) bool {
		return m.value("baton_worker_replication_lag_bytes") == 0 && m.value("baton_worker_replication_lag_seconds") < 1 &&
			m.value("baton_worker_durable_lsn") > 0 && m.value("baton_worker_acked_lsn") > 0
	})

	// The kubelet's stop order: the worker's SIGTERM hands the stream to
	// pod b.
	if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	mb = s.scrape(bb)
	for _, cause := range []string{"shutdown", "worker_absent", "released", "session_ended"} {
		if mb.value("baton_broker_handoffs_total", "cause", cause) != 0 {
			t.Fatalf("handoff counted with cause %s:\n%s", cause, mb.text)
		}
	}
	if mb.value("baton_broker_handoffs_total", "cause", "worker_stopping") != 1 || mb.count("baton_broker_handoff_duration_seconds") != 1 ||
		mb.sum("baton_broker_handoff_duration_seconds") <= 0 || mb.sum("baton_broker_handoff_duration_seconds") > 5 ||
		mb.value("baton_broker_lock_held") != 1 {
		t.Fatalf("standby broker after a SIGTERM handoff:\n%s", mb.text)
	}
	t.Logf("handoff: %.3f s from the release to the grant", mb.sum("baton_broker_handoff_duration_seconds"))
	if m := s.scrape(ab); m.value("baton_broker_stopping_releases_total") != 1 || m.value("baton_broker_lock_held") != 0 {
		t.Fatalf("stopped worker's broker:\n%s", m.text)
	}
	s.await(bw, "the new active worker's start counted", 10*time.Second, func(m metrics) bool {
		return m.count("baton_worker_start_duration_seconds") == 1 && m.value("baton_worker_epoch") > 1
	})

	s.checkREADME(t)
	s.checkMonitoring(t)
}

// metrics is one scrape: its text and its families by name.
type metrics struct {
	text string
	fams map[string]*dto.MetricFamily
}

// series returns the first series of name whose labels include the label
// pairs kv, or nil.
func (m metrics) series(name string, kv ...string) *dto.Metric {
	f := m.fams[name]
	if f == nil {
		return nil
	}
next:
	for _, s := range f.GetMetric() {
		for i := 0; i+1 < len(kv); i += 2 {
			if !slices.ContainsFunc(s.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == kv[i] && l.GetValue() == kv[i+1] }) {
				continue next
			}
		}
		return s
	}
	return nil
}

// value is the value of a gauge or counter series; -1 when there is none.
func (m metrics) value(name string, kv ...string) float64 {
	s := m.series(name, kv...)
	switch {
	case s == nil:
		return -1
	case s.Gauge != nil:
		return s.GetGauge().GetValue()
	case s.Counter != nil:
		return s.GetCounter().GetValue()
	}
	return -1
}

// count and sum are a histogram's; -1 when there is none.
func (m metrics) count(name string, kv ...string) float64 {
	if s := m.series(name, kv...); s != nil && s.Histogram != nil {
		return float64(s.GetHistogram().GetSampleCount())
	}
	return -1
}

func (m metrics) sum(name string, kv ...string) float64 {
	if s := m.series(name, kv...); s != nil && s.Histogram != nil {
		return s.GetHistogram().GetSampleSum()
	}
	return -1
}

// scraper scrapes /metrics, checks each exposition with promlint and
// keeps every baton_ family seen, with the label names of its series.
type scraper struct {
	t      *testing.T
	mu     sync.Mutex
	types  map[string]dto.MetricType
	labels map[string]map[string]bool
}

func newScraper(t *testing.T) *scraper {
	return &scraper{t: t, types: map[string]dto.MetricType{}, labels: map[string]map[string]bool{}}
}

// get scrapes base/metrics, bounded by timeout.
func (s *scraper) get(base string, timeout time.Duration) (metrics, error) {
	ctx, cancel := context.WithTimeout(s.t.Context(), timeout)
	defer cancel()
	r, err := harness.Fetch(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return metrics{}, err
	}
	if r.Status != http.StatusOK {
		return metrics{}, fmt.Errorf("GET %s/metrics: %d", base, r.Status)
	}
	text := r.Text()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		return metrics{}, fmt.Errorf("promlint %s: %w", base, err)
	}
	for _, p := range problems {
		s.t.Errorf("promlint %s: %s: %s", base, p.Metric, p.Text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return metrics{}, fmt.Errorf("parse %s/metrics: %w", base, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, f := range fams {
		if !strings.HasPrefix(name, "baton_") {
			continue
		}
		s.types[name] = f.GetType()
		if s.labels[name] == nil {
			s.labels[name] = map[string]bool{}
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				s.labels[name][l.GetName()] = true
			}
		}
	}
	return metrics{text: text, fams: fams}, nil
}

// scrape is get failing the test.
func (s *scraper) scrape(base string) metrics {
	s.t.Helper()
	m, err := s.get(base, 10*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// await scrapes base until ok or the timeout, failing the test then.
func (s *scraper) await(base, what string, timeout time.Duration, ok func(metrics) bool) {
	s.t.Helper()
	var last metrics
	err := harness.AwaitEvery(timeout, 100*time.Millisecond, what, func() (bool, error) {
		m, err := s.get(base, 2*time.Second)
		if err != nil {
			return false, nil
		}
		last = m
		return ok(m), nil
	})
	if err != nil {
		s.t.Fatalf("%v; last scrape of %s:\n%s", err, base, last.text)
	}
}

// readmeMetric is a row of the README's table of metrics.
var readmeMetric = regexp.MustCompile("(?m)^\\| `(baton_[a-z_]+)` \\| (gauge|counter|histogram) \\|([^|]*)\\|")

// checkREADME compares the README's table of metrics with every baton_
// family scraped: the same names, types and labels (besides stream).
func (s *scraper) checkREADME(t *testing.T) {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, row := range readmeMetric.FindAllStringSubmatch(string(readme), -1) {
		name, typ := row[1], row[2]
		documented[name] = true
		var want []string
		for _, l := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(row[3], -1) {
			want = append(want, l[1])
		}
		got, ok := s.types[name]
		if !ok {
			t.Errorf("README lists %s, which no process exported", name)
			continue
		}
		if strings.ToUpper(typ) != got.String() {
			t.Errorf("README says %s is a %s, it is a %s", name, typ, got)
		}
		var have []string
		for l := range s.labels[name] {
			if l != "stream" {
				have = append(have, l)
			}
		}
		slices.Sort(have)
		slices.Sort(want)
		if !slices.Equal(have, want) {
			t.Errorf("README lists labels %v for %s, it has %v", want, name, have)
		}
	}
	if len(documented) < 30 {
		t.Fatalf("README's table of metrics not found (%d rows)", len(documented))
	}
	for name := range s.types {
		if !documented[name] {
			t.Errorf("%s is not in the README's table of metrics", name)
		}
	}
}

// checkMonitoring checks that the alert rules and the dashboard in
// deploy/monitoring name only metrics some process exported (their
// PromQL is parsed by deploy/monitoring's own test).
func (s *scraper) checkMonitoring(t *testing.T) {
	t.Helper()
	for _, f := range []string{"../../deploy/monitoring/alerts.yaml", "../../deploy/monitoring/dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := regexp.MustCompile(`\bbaton_[a-z_]+`).FindAllString(string(b), -1)
		if len(names) < 10 {
			t.Fatalf("%s names %d metrics", f, len(names))
		}
		for _, n := range names {
			_, ok := s.types[n]
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(n, suffix); cut && !ok {
					ok = s.types[base] == dto.MetricType_HISTOGRAM
				}
			}
			if !ok {
				t.Errorf("%s names %s, which no process exported", f, n)
			}
		}
	}
}

// padWriter inserts rows into items from its own connection until stopped.
type padWriter struct {
	t      *testing.T
	n      atomic.Int64
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startWriter starts inserting 20 rows of 400 bytes every 10 ms; the test
// fails if an insert fails before stop.
func startPadWriter(t *testing.T, pg *pgtest.Cluster) *padWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &padWriter{t: t, cancel: cancel, done: make(chan error, 1)}
	conn := connect(t, pg)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				w.done <- nil
				return
			case <-tick.C:
			}
			if _, err := conn.Exec(ctx, `INSERT INTO items (pad) SELECT repeat('x', 400) FROM generate_series(1, 20)`); err != nil {
				if ctx.Err() != nil {
					w.done <- nil
				} else {
					w.done <- err
				}
				return
			}
			w.n.Add(20)
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *padWriter) rows() int64 { return w.n.Load() }

// stop ends the writes and waits for the writer.
func (w *padWriter) stop() {
	w.once.Do(func() {
		w.cancel()
		if err := <-w.done; err != nil {
			w.t.Errorf("writer: %v", err)
		}
	})
}
