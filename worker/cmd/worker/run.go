package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/httpapi"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/batonhq/baton/worker/lease"
)

var version = "dev"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version":
			fmt.Fprintln(stdout, "worker", version)
			return nil
		case "inspect":
			return runInspect(args[1:], getenv, stdout)
		case "check":
			return runCheck(ctx, args[1:], getenv, stdout)
		case "status":
			return runStatus(ctx, args[1:], getenv, stdout)
		case "help":
			args = []string{"-help"}
		}
	}
	cfg, err := config.Parse(args, getenv, help(stdout, "worker"))
	if err == nil {
		err = cfg.Access()
	}
	if err != nil {
		return err
	}
	var epoch settings.Epoch // while leased, every log line carries it
	log := settings.NewLogger(cfg.LogFormat, stderr, cfg.StreamID, &epoch)
	settings.RouteGRPCLog(log)
	host, _ := os.Hostname()
	id := fmt.Sprintf("worker@%s:%d", host, os.Getpid())

	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("listen BATON_HTTP_LISTEN: %w", err)
	}
	var tracker health.Tracker
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo(version))
	metrics := replication.NewMetrics(cfg.StreamID)
	reg.MustRegister(metrics.Collectors()...)
	sampler := replication.NewSlotSampler(cfg.DatabaseURL, cfg.StreamID, stream.SlotName(cfg.StreamID), slotReadTimeout, log)
	states := newShapeStates(cfg.StreamID)
	httpMetrics := httpapi.NewMetrics(cfg.StreamID, "/v1/shape", "/v1/health", "/metrics")
	reg.MustRegister(sampler, states)
	reg.MustRegister(httpMetrics.Collectors()...)
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "baton", Subsystem: "worker", Name: name,
			Help: help, ConstLabels: prometheus.Labels{"stream": cfg.StreamID}, Buckets: buckets})
		reg.MustRegister(h)
		return h
	}
	started := histogram("start_duration_seconds", "Time from a grant to streaming from the slot (the worker's part of a handoff).",
		[]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})
	expired := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: "shapes_expired_total",
		Help: "Shapes removed because no request used them within BATON_SHAPE_IDLE_TIMEOUT.", ConstLabels: prometheus.Labels{"stream": cfg.StreamID}})
	reg.MustRegister(expired)
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: name,
			Help: help, ConstLabels: prometheus.Labels{"stream": cfg.StreamID}})
		reg.MustRegister(c)
		return c
	}
	prepared := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baton", Subsystem: "worker", Name: "standby_prepared",
		Help: "1 while the worker stands by with its admin session open and warmed up for a takeover.", ConstLabels: prometheus.Labels{"stream": cfg.StreamID}})
	reg.MustRegister(prepared)
	shapeCounters := shapes.Counters{
		Compacted:   counter("shape_compactions_total", "Shape logs compacted to one message per row."),
		Invalidated: counter("shapes_invalidated_total", "Shapes removed because their table was truncated, dropped, renamed or altered."),
		WhereErrors: counter("where_errors_total", "Where clauses that raised an error on a changed row (the row is left out)."),
		Created: histogram("snapshot_duration_seconds", "Time to create a shape: its table's description, publication and snapshot.",
			[]float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/health", &tracker)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	api := httpapi.New(log)
	api.Self, api.ID = cfg.AdvertiseURL, id
	api.Secret, api.AllowDeletion = cfg.Secret, cfg.AllowShapeDeletion
	api.ChunkBytes, api.CacheMaxAge, api.CacheStaleAge = int(cfg.ShapeChunkBytes), cfg.CacheMaxAge, cfg.CacheStaleAge
	if cfg.Insecure {
		log.Warn("BATON_INSECURE=true: the shape API serves anyone, without a secret; set BATON_SECRET outside development")
	}
	proxied := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "baton", Subsystem: "worker", Name: "proxied_requests_total",
		Help: "Shape requests a standby forwarded to the active worker, by the status code its client got.", ConstLabels: prometheus.Labels{"stream": cfg.StreamID}},
		[]string{"code"})
	reg.MustRegister(proxied)
	api.Proxied = func(code int) { proxied.WithLabelValues(strconv.Itoa(code)).Inc() }
	api.Register(mux)
	var unmet unmetRequirement
	drain := httpapi.NewDrain(unmet.guard(mux))
	srv := &http.Server{Handler: httpMetrics.Instrument(drain), ReadHeaderTimeout: 5 * time.Second}

	broker := &brokerWatch{addr: cfg.BrokerAddr, log: log}
	client, err := lease.New(cfg.BrokerAddr, lease.Options{WorkerID: id, StreamID: cfg.StreamID, AdvertiseURL: cfg.AdvertiseURL,
		OnBroker: broker.report,
		// A standby forwards shape requests to the worker its broker says
		// is active.
		OnStandby: func(sb *batonv1.Standby) { api.SetActive(sb.GetHolder().GetWorkerUrl()) },
	})
	if err != nil {
		return err
	}
	defer client.Close()
	log.Info("worker starting", "version", version, "broker", cfg.BrokerAddr,
		"http", ln.Addr().String(), "advertise", cfg.AdvertiseURL, "storage", cfg.StorageDir)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return sampler.Run(gctx) })
	g.Go(func() error { return broker.Run(gctx) })
	leaseDone := make(chan struct{})
	g.Go(func() error {
		<-gctx.Done()
		return stopHTTP(ctx, srv, drain, leaseDone, log)
	})
	g.Go(func() error {
		defer close(leaseDone)
		w := &worker{cfg: cfg, client: client, tracker: &tracker, api: api, metrics: metrics, expired: expired, shapeCounters: shapeCounters, log: log, unmet: &unmet,
			prepared: prepared, states: states, started: started, epoch: &epoch}
		return w.leaseLoop(gctx)
	})
	return g.Wait()
}

// leaseLoop acquires the lease, replicates while holding it, releases it,
// and starts over, until ctx is done.
// worker is what the lease loop works with.
type worker struct {
	cfg     config.Config
	client  *lease.Client
	tracker *health.Tracker
	api     *httpapi.Server
	metrics *replication.Metrics
	expired prometheus.Counter // shapes removed for idleness
	// shapeCounters count compactions, invalidations and where errors.
	shapeCounters shapes.Counters
	log           *slog.Logger
	unmet         *unmetRequirement // shape requests get 503 naming it
	prepared      prometheus.Gauge  // baton_worker_standby_prepared
	states        *shapeStates      // baton_worker_shapes
	started       prometheus.Observer
	epoch         *settings.Epoch // the epoch log lines carry
}

func (w *worker) leaseLoop(ctx context.Context) error {
	client, tracker, log := w.client, w.tracker, w.log
	for {
		tracker.Set(health.Waiting, nil)
		// While standing by, an admin session waits for the grant.
		warm := startWarm(ctx, w.cfg.DatabaseURL, w.cfg.StreamID, log, w.prepared)
		l, err := client.Acquire(ctx)
		if err != nil {
			closeSession(ctx, warm.take())
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		w.epoch.Set(l.Epoch)
		log.Info("lease granted", "epoch", l.Epoch, "slot", l.Slot, "publication", l.Publication, "ttl", l.TTL)
		w.metrics.Epoch.Set(float64(l.Epoch))
		w.api.Hold(l)
		durable := w.holdLease(ctx, l, warm)
		w.api.Hold(nil)
		w.metrics.Epoch.Set(0)
		tracker.Set(health.Waiting, nil)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		release := l.Release
		if ctx.Err() != nil {
			// The process is stopping (SIGTERM; Kubernetes stops the worker
			// before its broker): replication has drained, so the broker may
			// unlock at once for the standby pod.
			release = l.ReleaseStopping
		}
		err = release(rctx, durable)
		cancel()
		log.Info("lease released", "epoch", l.Epoch, "cause", context.Cause(l.Ctx()), "send_err", err)
		w.epoch.Set(0)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// holdLease replicates under l until it ends or ctx is done, retrying
// failed runs with backoff while the lease is valid. It returns the last
// durable LSN. The first run takes warm's session; a retry opens its own.
func (w *worker) holdLease(ctx context.Context, l *lease.Lease, warm *warmSession) uint64 {
	tracker, log := w.tracker, w.log
	var durable uint64
	delay := 100 * time.Millisecond
	for l.Err() == nil && ctx.Err() == nil {
		tracker.Set(health.Starting, l)
		res, err := w.replicateOnce(ctx, l, warm)
		warm = nil
		durable = max(durable, res.Durable)
		if err == nil || l.Err() != nil || ctx.Err() != nil {
			return durable
		}
		if errors.Is(err, replication.ErrSuperseded) || errors.Is(err, shapes.ErrSuperseded) || errors.Is(err, storage.ErrFenced) {
			log.Error("a newer epoch owns the stream; giving the lease back", "epoch", l.Epoch, "err", err)
			return durable
		}
		if w.awaitRequirements(ctx, l) { // an unmet requirement explains the failure
			continue
		}
		log.Error("replication failed; retrying while the lease is valid", "epoch", l.Epoch, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-l.Done():
		case <-ctx.Done():
		}
		delay = min(2*delay, 5*time.Second)
	}
	if warm != nil {
		closeSession(ctx, warm.take())
	}
	return durable
}

// replicateOnce runs replication under l once. From the grant on, the
// replication connection opens (a new backend and walsender: the slowest
// step of a start) while the storage is opened and the publication's
// coverage checked and reconciled on one admin session, warm's when there
// is one; START_REPLICATION waits for all of them (replication.Run).
func (w *worker) replicateOnce(ctx context.Context, l *lease.Lease, warm *warmSession) (replication.Result, error) {
	cfg, tracker, api, log, metrics := w.cfg, w.tracker, w.api, w.log, w.metrics
	steps := replication.NewSteps(l.GrantedAt)
	dialing := replication.Dial(ctx, replication.Options{DatabaseURL: cfg.DatabaseURL, StreamID: cfg.StreamID, Epoch: l.Epoch})
	defer dialing.Close(ctx)
	admin, err := adminSession(ctx, warm, cfg.DatabaseURL, cfg.StreamID, l.Epoch)
	if err != nil {
		return replication.Result{}, fmt.Errorf("admin session: %w", err)
	}
	defer closeSession(ctx, admin)
	steps.Mark("admin")
	dir := filepath.Join(cfg.StorageDir, cfg.StreamID)
	store, err := storage.Open(dir, l.Epoch)
	if err != nil {
		return replication.Result{}, fmt.Errorf("open storage: %w", err)
	}
	defer store.Close()
	steps.Mark("storage")
	// Transactions the stream appends reach the router in memory.
	decoded := txn.NewCache()
	reg, err := shapes.Open(shapes.Options{Dir: dir, Epoch: l.Epoch, DatabaseURL: cfg.DatabaseURL, StreamID: cfg.StreamID,
		Publication: l.Publication, Stream: store, Log: log, Decoded: decoded, Counters: w.shapeCounters})
	if err != nil {
		return replication.Result{}, fmt.Errorf("open shapes: %w", err)
	}
	defer reg.Close()
	w.states.set(reg)
	defer w.states.set(nil)
	steps.Mark("shapes")
	// Shapes whose table the publication may not have covered since the
	// storage's position (another pod dropped it meanwhile) miss changes:
	// drop them before the publication is reconciled and streaming starts.
	_, end := store.Durable()
	if _, err := reg.CheckCoverage(ctx, admin, max(end, store.Acked())); err != nil {
		return replication.Result{}, fmt.Errorf("check publication coverage: %w", err)
	}
	steps.Mark("coverage")
	// The publication holds exactly the stored shapes' tables (a shape whose
	// table was removed from it would silently miss changes).
	if err := reg.ReconcileOn(ctx, admin); err != nil {
		return replication.Result{}, fmt.Errorf("reconcile publication: %w", err)
	}
	steps.Mark("reconcile")
	// The router lives as long as this run under the lease.
	rctx, stopRouter := context.WithCancel(ctx)
	defer context.AfterFunc(l.Ctx(), stopRouter)()
	routed := make(chan struct{})
	go func() {
		defer close(routed)
		// A failure of the router (a lost connection for where clauses, a
		// write error) is retried with backoff: shapes stay served from what
		// is stored meanwhile. A fenced shape log means a successor owns
		// the storage: shapes are no longer served by this worker.
		backoff := time.Second
		for {
			err := reg.Run(rctx)
			if err == nil || rctx.Err() != nil {
				return
			}
			if errors.Is(err, storage.ErrFenced) {
				log.Error("shape router stopped: the storage belongs to a newer lease; shapes are not served", "epoch", l.Epoch, "err", err)
				api.Serve(nil, nil)
				return
			}
			log.Error("shape router failed; restarting it", "epoch", l.Epoch, "err", err, "in", backoff)
			select {
			case <-rctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	// Idle expiry runs from when shapes are served (its restart grace
	// starts then) as long as the router.
	expiring := make(chan struct{})
	var startExpiry sync.Once
	expire := func() {
		go func() {
			defer close(expiring)
			_ = reg.Expire(rctx, shapes.ExpiryOptions{IdleTimeout: cfg.ShapeIdleTimeout, Expired: w.expired})
		}()
	}
	defer func() {
		api.Serve(nil, nil)
		stopRouter()
		<-routed
		startExpiry.Do(func() { close(expiring) })
		<-expiring
	}()
	return replication.Run(ctx, replication.Options{
		DatabaseURL: cfg.DatabaseURL,
		StreamID:    cfg.StreamID,
		Slot:        l.Slot,
		Publication: l.Publication,
		Epoch:       l.Epoch,
		Log:         log,
		// Shapes built on storage that cannot prove continuity with the
		// slot (slot created anew, or advanced by a consumer with other
		// storage) may have gaps: drop them, so clients refetch (409).
		OnDiscontinuity: func(string) error {
			n, err := reg.DropAll()
			if err != nil || n == 0 {
				return err // nothing dropped: the publication is reconciled
			}
			return reg.ReconcileOn(ctx, admin) // Run does not use admin meanwhile
		},
		Metrics: metrics,
		Decoded: decoded,
		Admin:   admin,
		Dialing: dialing,
		Steps:   steps,
		OnStreaming: func() {
			w.started.Observe(time.Since(l.GrantedAt).Seconds())
			tracker.Set(health.Active, l)
			api.Serve(reg, l)
			startExpiry.Do(expire)
		},
	}, l, store)
}
