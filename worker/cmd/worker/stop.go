package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

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

// stopHTTP drains srv until httpDrain after leaseDone is closed, then
// shuts it down.
func stopHTTP(ctx context.Context, srv *http.Server, drain *httpapi.Drain, leaseDone <-chan struct{}, log *slog.Logger) error {
	drain.Start()
	<-leaseDone
	t := time.NewTimer(httpDrain)
	<-t.C
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpStopWait)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP requests still open when the stop's wait ended were cut", "err", err, "waited", httpStopWait)
		return srv.Close()
	}
	return nil
}
