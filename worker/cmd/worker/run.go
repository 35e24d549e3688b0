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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/httpapi"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
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
			return runInspect(args[1:], getenv, stdout, stderr)
		}
	}
	cfg, err := config.Parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogFormat, stderr)
	host, _ := os.Hostname()
	id := fmt.Sprintf("worker@%s:%d", host, os.Getpid())

	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("listen BATON_HTTP_LISTEN: %w", err)
	}
	var tracker health.Tracker
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /v1/health", &tracker)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	api := httpapi.New(log)
	api.Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	client, err := lease.New(cfg.BrokerAddr, lease.Options{WorkerID: id, StreamID: cfg.StreamID})
	if err != nil {
		return err
	}
	defer client.Close()
	log.Info("worker starting", "version", version, "stream", cfg.StreamID, "broker", cfg.BrokerAddr,
		"http", ln.Addr().String(), "storage", cfg.StorageDir)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error {
		return leaseLoop(gctx, cfg, client, &tracker, api, log)
	})
	return g.Wait()
}

// leaseLoop acquires the lease, replicates while holding it, releases it,
// and starts over, until ctx is done.
func leaseLoop(ctx context.Context, cfg config.Config, client *lease.Client, tracker *health.Tracker, api *httpapi.Server, log *slog.Logger) error {
	for {
		tracker.Set(health.Waiting, nil)
		l, err := client.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Info("lease granted", "epoch", l.Epoch, "slot", l.Slot, "publication", l.Publication, "ttl", l.TTL)
		durable := holdLease(ctx, cfg, l, tracker, api, log)
		tracker.Set(health.Waiting, nil)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = l.Release(rctx, durable)
		cancel()
		log.Info("lease released", "epoch", l.Epoch, "cause", context.Cause(l.Ctx()), "send_err", err)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// holdLease replicates under l until it ends or ctx is done, retrying
// failed runs with backoff while the lease is valid. It returns the last
// durable LSN.
func holdLease(ctx context.Context, cfg config.Config, l *lease.Lease, tracker *health.Tracker, api *httpapi.Server, log *slog.Logger) uint64 {
	var durable uint64
	delay := 100 * time.Millisecond
	for l.Err() == nil && ctx.Err() == nil {
		tracker.Set(health.Starting, l.Done())
		res, err := replicateOnce(ctx, cfg, l, tracker, api, log)
		durable = max(durable, res.Durable)
		if err == nil || l.Err() != nil || ctx.Err() != nil {
			return durable
		}
		if errors.Is(err, replication.ErrSuperseded) || errors.Is(err, storage.ErrFenced) {
			log.Error("a newer epoch owns the stream; giving the lease back", "epoch", l.Epoch, "err", err)
			return durable
		}
		log.Error("replication failed; retrying while the lease is valid", "epoch", l.Epoch, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-l.Done():
		case <-ctx.Done():
		}
		delay = min(2*delay, 5*time.Second)
	}
	return durable
}

func replicateOnce(ctx context.Context, cfg config.Config, l *lease.Lease, tracker *health.Tracker, api *httpapi.Server, log *slog.Logger) (replication.Result, error) {
	dir := filepath.Join(cfg.StorageDir, cfg.StreamID)
	store, err := storage.Open(dir, l.Epoch)
	if err != nil {
		return replication.Result{}, fmt.Errorf("open storage: %w", err)
	}
	defer store.Close()
	reg, err := shapes.Open(shapes.Options{Dir: dir, Epoch: l.Epoch, DatabaseURL: cfg.DatabaseURL, StreamID: cfg.StreamID,
		Publication: l.Publication, Stream: store, Log: log})
	if err != nil {
		return replication.Result{}, fmt.Errorf("open shapes: %w", err)
	}
	defer reg.Close()
	// The router lives as long as this run under the lease.
	rctx, stopRouter := context.WithCancel(ctx)
	defer context.AfterFunc(l.Ctx(), stopRouter)()
	routed := make(chan struct{})
	go func() {
		defer close(routed)
		if err := reg.Run(rctx); err != nil {
			log.Error("shape router stopped; shapes are not served", "epoch", l.Epoch, "err", err)
			api.Serve(nil, nil)
		}
	}()
	defer func() {
		api.Serve(nil, nil)
		stopRouter()
		<-routed
	}()
	return replication.Run(ctx, replication.Options{
		DatabaseURL: cfg.DatabaseURL,
		StreamID:    cfg.StreamID,
		Slot:        l.Slot,
		Publication: l.Publication,
		Epoch:       l.Epoch,
		Log:         log,
		OnSlotCreated: func() {
			if err := reg.DropAll(); err != nil {
				log.Error("could not drop the shapes of a lost stream", "err", err)
			}
		},
		OnStreaming: func() {
			tracker.Set(health.Active, l.Done())
			api.Serve(reg, l.Done())
		},
	}, l, store)
}

func newLogger(format string, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
