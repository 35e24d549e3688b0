package lifecycle

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/lease"
)

// releaseTimeout bounds sending the release to the broker.
const releaseTimeout = 5 * time.Second

// leases is the lease loop: it stands by until the broker grants the
// lease, replicates while holding it, releases it, and starts over, until
// ctx is done (nil) or the lease client fails.
func (w *worker) leases(ctx context.Context) error {
	for {
		if err := w.turn(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// turn is one round of the lease loop. While it stands by, a warm admin
// session (warmSession) waits for the grant beside Acquire; the first
// replication run under the lease takes it over.
func (w *worker) turn(ctx context.Context) error {
	w.tracker.Set(health.Waiting, nil)
	warm := newWarmSession(w.cfg.DatabaseURL, w.cfg.StreamID, w.log, w.metrics.prepared)
	var g errgroup.Group
	g.Go(func() error { return warm.run(ctx) })
	defer g.Wait()
	// The session, unless a run took it (take returns nil then).
	defer func() { closeSession(ctx, warm.take()) }()

	l, err := w.client.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.epoch.Set(l.Epoch)
	w.log.Info("lease granted", "epoch", l.Epoch, "slot", l.Slot, "publication", l.Publication, "ttl", l.TTL)
	w.metrics.replication.Epoch.Set(float64(l.Epoch))
	w.api.Hold(l)
	durable := w.holdLease(ctx, l, warm)
	w.api.Hold(nil)
	w.metrics.replication.Epoch.Set(0)
	w.tracker.Set(health.Waiting, nil)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	release := l.Release
	if ctx.Err() != nil {
		// The process is stopping (SIGTERM; Kubernetes stops the worker
		// before its broker): replication has drained, so the broker may
		// unlock at once for the standby pod.
		release = l.ReleaseStopping
	}
	err = release(rctx, durable)
	w.log.Info("lease released", "epoch", l.Epoch, "cause", context.Cause(l.Ctx()), "send_err", err)
	w.epoch.Set(0)
	return nil
}

// leaseContext returns a context derived from the lease's: it ends when
// the lease ends or ctx is done, with the cause of either. Call stop when
// done with it.
func leaseContext(ctx context.Context, l *lease.Lease) (lctx context.Context, stop func()) {
	lctx, cancel := context.WithCancelCause(l.Ctx())
	stopAfter := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	return lctx, func() {
		stopAfter()
		cancel(context.Canceled)
	}
}

// holdLease replicates under l until the lease ends or ctx is done,
// retrying failed runs with backoff while the lease is valid. It returns
// the last durable LSN. The first run takes warm's session; a retry opens
// its own.
func (w *worker) holdLease(ctx context.Context, l *lease.Lease, warm *warmSession) uint64 {
	lctx, stop := leaseContext(ctx, l)
	defer stop()
	// ended reports whether the lease ended or ctx is done (lctx follows
	// ctx a moment later).
	ended := func() bool { return lctx.Err() != nil || ctx.Err() != nil }
	var durable uint64
	delay := 100 * time.Millisecond
	for !ended() {
		w.tracker.Set(health.Starting, l)
		res, err := w.replicateOnce(lctx, l, warm)
		warm = nil
		durable = max(durable, res.Durable, res.Acked) // Acked is recorded durably
		if err == nil || ended() {
			return durable
		}
		if errors.Is(err, replication.ErrSuperseded) || errors.Is(err, shapes.ErrSuperseded) || errors.Is(err, storage.ErrFenced) {
			w.log.Error("a newer epoch owns the stream; giving the lease back", "epoch", l.Epoch, "err", err)
			return durable
		}
		// An unmet requirement explains the failure.
		if w.awaitRequirements(lctx, l) || ended() {
			continue
		}
		w.log.Error("replication failed; retrying while the lease is valid", "epoch", l.Epoch, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-lctx.Done():
			t.Stop()
		}
		delay = min(2*delay, 5*time.Second)
	}
	return durable
}
