package lifecycle

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batonhq/baton/worker/internal/httpapi"
)

// How the HTTP server stops (on SIGTERM, or when the lease loop failed),
// while the lease loop, at the same moment, stops replicating and releases
// the lease so that the standby pod takes over: the handoff never waits
// for the HTTP server.
const (
	// httpDrain: from the stop until this long after the lease loop ended
	// (the lease released), the server still accepts connections and
	// answers, every response saying "Connection: close", so that clients
	// move to another pod (Kubernetes removes a terminating pod from a
	// Service's endpoints asynchronously: new connections may arrive for a
	// moment) and no request sent on a kept-alive connection is lost. What
	// this worker no longer serves once its lease is released is held and
	// forwarded to the successor (httpapi).
	httpDrain = 2 * time.Second
	// httpStopWait then bounds the wait for the requests still being
	// answered: a held request (httpapi.DefaultMaxHold) and a long-poll
	// forwarded at its end. Requests still open after it are cut. With
	// httpDrain it stays well inside the manifests'
	// terminationGracePeriodSeconds (40 s), which also covers the broker.
	httpStopWait = 25 * time.Second
)

// newHTTP builds the HTTP server: the shape API (held, forwarded or
// served, httpapi), /v1/health and /metrics, behind the unmet-requirement
// guard and the drain.
func (w *worker) newHTTP() {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/health", &w.tracker)
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.metrics.registry, promhttp.HandlerOpts{}))
	w.api = httpapi.New(w.log)
	w.api.Self, w.api.ID = w.cfg.AdvertiseURL, w.id
	w.api.Secret, w.api.AllowDeletion = w.cfg.Secret, w.cfg.AllowShapeDeletion
	w.api.CacheMaxAge, w.api.CacheStaleAge = w.cfg.CacheMaxAge, w.cfg.CacheStaleAge
	if w.cfg.Insecure {
		w.log.Warn("BATON_INSECURE=true: the shape API serves anyone, without a secret; set BATON_SECRET outside development")
	}
	w.api.Proxied = w.metrics.proxied
	w.api.Register(mux)
	w.drain = httpapi.NewDrain(w.unmet.guard(mux))
	w.srv = &http.Server{Handler: w.metrics.http.Instrument(w.drain), ReadHeaderTimeout: 5 * time.Second}
}

// stopHTTP drains the server until httpDrain after leasesDone is closed,
// then shuts it down.
func (w *worker) stopHTTP(ctx context.Context, leasesDone <-chan struct{}) error {
	w.drain.Start()
	<-leasesDone
	t := time.NewTimer(httpDrain)
	<-t.C
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpStopWait)
	defer cancel()
	if err := w.srv.Shutdown(sctx); err != nil {
		w.log.Warn("HTTP requests still open when the stop's wait ended were cut", "err", err, "waited", httpStopWait)
		return w.srv.Close()
	}
	return nil
}
