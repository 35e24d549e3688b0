// Package lifecycle runs a worker process: it serves the HTTP API (shapes,
// /v1/health, /metrics) the whole time, stands by with a warmed-up admin
// session until its broker grants the stream's lease, replicates and
// serves shapes while it holds the lease, releases it, and stands by
// again, until the process stops.
//
// Every long-lived part is a Run(ctx) error function in an errgroup:
//
//   - the process (Run): the HTTP server, its stop (stopHTTP), the slot
//     sampler of /metrics, the warnings while the broker cannot be reached
//     (brokerWatch) and the lease loop (leases);
//   - a lease's standby (standby): the warm admin session (warmSession.run)
//     beside the wait for the grant;
//   - a replication run under the lease (replicateOnce), in one errgroup
//     derived from the lease's context: replication, the shape router and
//     its restarts (route), serving (serve) and idle expiry (expire).
//
// Losing the lease ends the run's context, which stops every part of it
// without any of them checking. A process stop (ctx) stops replication
// gracefully: everything received is made durable and acknowledged, and
// the lease is released with ReleaseStopping so that the broker unlocks at
// once for the standby pod; the HTTP server drains meanwhile (stopHTTP).
//
// Where data could be lost or doubled, the packages below decide:
// replication acknowledges only what storage made durable and nothing
// after the lease ended; storage and shapes fence every write with the
// lease's epoch. This package only orders them: storage and shapes are
// opened before replication starts and closed after every part of the run
// returned, and the coverage of the publication is checked (shapes that
// may have missed changes dropped) before it is reconciled and before
// streaming starts.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"golang.org/x/sync/errgroup"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/httpapi"
	"github.com/batonhq/baton/worker/lease"
)

// Options configure Run.
type Options struct {
	Config config.Config
	// Listener, when set, is where the HTTP API is served instead of
	// Config.HTTPListen. Run closes it.
	Listener net.Listener
	// ID names the worker to its broker and in the requests it forwards;
	// default worker@<host>:<pid>.
	ID string
	// Version is logged when the worker starts.
	Version string
	Log     *slog.Logger
	// Epoch, when set, is set to the lease's epoch while the worker holds
	// one (the logger's lines carry it, settings.NewLogger).
	Epoch *settings.Epoch
}

// worker is what the parts of a worker process share.
type worker struct {
	cfg     config.Config
	id      string
	log     *slog.Logger
	epoch   *settings.Epoch
	client  *lease.Client
	metrics *metrics
	tracker health.Tracker
	api     *httpapi.Server
	// unmet is the requirement of PostgreSQL that keeps the worker from
	// replicating under its lease; shape requests get 503 naming it.
	unmet unmetRequirement
	drain *httpapi.Drain
	srv   *http.Server
}

// Run runs the worker until ctx is done (then it stops replicating
// gracefully, releases the lease saying the process is stopping, drains
// the HTTP server and returns nil) or a part fails. It blocks; it closes
// the listener and every connection it opened before returning.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	ln := o.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return fmt.Errorf("listen BATON_HTTP_LISTEN: %w", err)
		}
	}
	id := o.ID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("worker@%s:%d", host, os.Getpid())
	}
	w := &worker{cfg: cfg, id: id, log: o.Log, epoch: o.Epoch, metrics: newMetrics(cfg, o.Version, o.Log)}
	if w.epoch == nil {
		w.epoch = new(settings.Epoch)
	}
	w.newHTTP()
	broker := &brokerWatch{addr: cfg.BrokerAddr, log: w.log}
	client, err := lease.New(cfg.BrokerAddr, lease.Options{WorkerID: id, StreamID: cfg.StreamID, AdvertiseURL: cfg.AdvertiseURL,
		OnBroker: broker.report,
		// A standby forwards shape requests to the worker its broker says
		// is active.
		OnStandby: func(sb *batonv1.Standby) { w.api.SetActive(sb.GetHolder().GetWorkerUrl()) },
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer client.Close()
	w.client = client
	w.log.Info("worker starting", "version", o.Version, "broker", cfg.BrokerAddr,
		"http", ln.Addr().String(), "advertise", cfg.AdvertiseURL, "storage", cfg.StorageDir)

	g, gctx := errgroup.WithContext(ctx)
	leasesDone := make(chan struct{})
	g.Go(func() error {
		if err := w.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return w.metrics.sampler.Run(gctx) })
	g.Go(func() error { return broker.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		return w.stopHTTP(ctx, leasesDone)
	})
	g.Go(func() error {
		defer close(leasesDone)
		err := w.leases(gctx)
		// The lease loop is over: a grant made while the HTTP server
		// drains is given back at once (the stream stays open for the
		// standby's forwarding until Close).
		client.Stop()
		return err
	})
	return g.Wait()
}
