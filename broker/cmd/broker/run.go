package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batonhq/baton/broker/internal/config"
	"github.com/batonhq/baton/broker/internal/leader"
	"github.com/batonhq/baton/broker/internal/lease"
	"github.com/batonhq/baton/broker/internal/lock"
	"github.com/batonhq/baton/broker/internal/metrics"
	"github.com/batonhq/baton/broker/internal/server"
	"github.com/batonhq/baton/settings"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole broker: it returns when ctx is done (after a graceful
// handoff) or on a fatal error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return runStatus(ctx, args[1:], getenv, stdout)
		case "config":
			return runConfig(args[1:], getenv, stdout)
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "broker", version)
			return nil
		case "help":
			args = []string{"-help"}
		}
	}
	cfg, err := config.Parse(args, getenv, help(stdout, "broker"))
	if err != nil {
		return err
	}
	var epoch settings.Epoch // while holding the stream, every log line carries it
	log := settings.NewLogger(cfg.LogFormat, stderr, cfg.StreamID, &epoch)
	settings.RouteGRPCLog(log)
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("host name: %w", err)
	}
	holder := fmt.Sprintf("baton-broker:%s:%s", cfg.StreamID, host)

	grpcLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen BATON_BROKER_LISTEN: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("listen BATON_METRICS_LISTEN: %w", err)
	}

	hub := lease.NewHub(cfg.StreamID, holder, cfg.LeaseTTL)
	m := metrics.New(cfg.StreamID, version, hub)
	hub.SetRenewalWindow(cfg.LockSessionTimeout - cfg.LeaseTTL)
	srv := server.New(cfg.StreamID, hub, log)
	loop := leader.New(leader.Config{
		Lock: lock.Options{
			DatabaseURL:    cfg.DatabaseURL,
			StreamID:       cfg.StreamID,
			Holder:         holder,
			SessionTimeout: cfg.LockSessionTimeout,
		},
		HeartbeatInterval: cfg.HeartbeatInterval,
		LeaseTTL:          cfg.LeaseTTL,
		AbsenceTimeout:    cfg.WorkerAbsenceTimeout,
		DrainTimeout:      cfg.DrainTimeout,
		LogEpoch:          &epoch,
	}, hub, srv.Health, m, log)

	log.Info("broker starting", "version", version, "holder", holder,
		"grpc", grpcLn.Addr().String(), "metrics", metricsLn.Addr().String(),
		"lock_session_timeout", cfg.LockSessionTimeout, "heartbeat_interval", cfg.HeartbeatInterval,
		"lease_ttl", cfg.LeaseTTL)

	g, gctx := errgroup.WithContext(ctx)
	metricsCtx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMetrics()
	g.Go(func() error { return srv.Serve(grpcLn) })
	g.Go(func() error { return m.Serve(metricsCtx, metricsLn) })
	g.Go(func() error {
		// The gRPC server must outlive the leader loop: the drain sends the
		// revoke and waits for the worker's release over it.
		err := loop.Run(gctx)
		hub.Close()
		srv.Stop(2 * time.Second)
		stopMetrics()
		return err
	})
	if err := g.Wait(); err != nil {
		if errors.Is(err, lock.ErrNotDirect) {
			return &config.Error{Setting: "DATABASE_URL", Problem: err.Error()}
		}
		return err
	}
	log.Info("broker stopped")
	return nil
}
