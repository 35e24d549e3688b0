package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/batonhq/baton/worker/lease"
)

// Backoff of the shape router's restarts.
const (
	routerBackoff    = time.Second
	routerBackoffMax = 30 * time.Second
)

// replicateOnce runs replication under l once; ctx is the lease's
// (leaseContext). From the grant on, the replication connection opens (a
// new backend and walsender: the slowest step of a start) while the
// storage is opened and the publication's coverage checked and reconciled
// on one admin session, warm's when there is one; START_REPLICATION waits
// for all of them (replication.Run). Then the run's parts (leaseRun) go
// on in one errgroup until replication returns, ctx ends or the lease
// does; storage and shapes are closed after all of them returned.
func (w *worker) replicateOnce(ctx context.Context, l *lease.Lease, warm *warmSession) (replication.Result, error) {
	cfg := w.cfg
	steps := replication.NewSteps(l.GrantedAt)
	dialing := replication.Dial(ctx, replication.Options{DatabaseURL: cfg.DatabaseURL, StreamID: cfg.StreamID, Epoch: l.Epoch})
	defer dialing.Close(ctx)
	// The admin session (a new backend unless warm has one ready) is
	// readied while the storage and the shapes are opened: neither needs
	// it.
	admining := startAdmin(ctx, warm, cfg.DatabaseURL, cfg.StreamID, l.Epoch)
	defer admining.close(ctx)
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
		Publication: l.Publication, Stream: store, Log: w.log, Decoded: decoded, Counters: w.metrics.shapes, ChunkBytes: cfg.ShapeChunkBytes})
	if err != nil {
		return replication.Result{}, fmt.Errorf("open shapes: %w", err)
	}
	defer reg.Close()
	w.metrics.states.set(reg)
	defer w.metrics.states.set(nil)
	steps.Mark("shapes")
	admin, err := admining.conn()
	if err != nil {
		return replication.Result{}, fmt.Errorf("admin session: %w", err)
	}
	steps.Mark("admin")
	// Shapes whose table the publication may not have covered since the
	// storage's position (another pod dropped it meanwhile) miss changes:
	// drop them before the publication is reconciled and streaming starts.
	_, end := store.Durable()
	if _, err := reg.CheckCoverage(ctx, admin, max(end, store.Acked()), store.PreviousEpoch()); err != nil {
		return replication.Result{}, fmt.Errorf("check publication coverage: %w", err)
	}
	steps.Mark("coverage")
	// The publication holds exactly the stored shapes' tables (a shape whose
	// table was removed from it would silently miss changes).
	if err := reg.ReconcileOn(ctx, admin); err != nil {
		return replication.Result{}, fmt.Errorf("reconcile publication: %w", err)
	}
	steps.Mark("reconcile")

	r := &leaseRun{w: w, l: l, reg: reg, streaming: make(chan struct{}), fenced: make(chan struct{})}
	g, gctx := errgroup.WithContext(ctx)
	// The end of replication ends the other parts.
	gctx, stop := context.WithCancel(gctx)
	defer stop()
	var res replication.Result
	g.Go(func() error {
		defer stop()
		var err error
		res, err = replication.Run(gctx, replication.Options{
			DatabaseURL: cfg.DatabaseURL,
			StreamID:    cfg.StreamID,
			Slot:        l.Slot,
			Publication: l.Publication,
			Epoch:       l.Epoch,
			Log:         w.log,
			// Shapes built on storage that cannot prove continuity with
			// the slot (slot created anew, or advanced by a consumer with
			// other storage) may have gaps: drop them, so clients refetch
			// (409).
			OnDiscontinuity: func(string) error {
				n, err := reg.DropAll()
				if err != nil || n == 0 {
					return err // nothing dropped: the publication is reconciled
				}
				return reg.ReconcileOn(gctx, admin) // Run does not use admin meanwhile
			},
			Metrics: w.metrics.replication,
			Decoded: decoded,
			Admin:   admin,
			Dialing: dialing,
			Steps:   steps,
			OnStreaming: func() {
				w.metrics.started.Observe(time.Since(l.GrantedAt).Seconds())
				w.tracker.Set(health.Active, l)
				close(r.streaming)
			},
		}, l, store)
		return err
	})
	g.Go(func() error { return r.route(gctx) })
	g.Go(func() error { return r.serve(gctx) })
	g.Go(func() error { return r.expire(gctx) })
	err = g.Wait()
	return res, err
}

// leaseRun is what the parts of one replication run share.
type leaseRun struct {
	w   *worker
	l   *lease.Lease
	reg *shapes.Registry
	// streaming is closed once replication streams from the slot.
	streaming chan struct{}
	// fenced is closed when the router found that a newer lease owns the
	// storage.
	fenced chan struct{}
}

// route runs the shape router (and the shapes' upkeep, Registry.Run) until
// ctx ends. A failure (a lost connection for where clauses, a write error)
// is retried with backoff: shapes stay served from what is stored
// meanwhile. A fenced shape log means a successor owns the storage: the
// router stops and shapes are no longer served by this worker.
func (r *leaseRun) route(ctx context.Context) error {
	backoff := routerBackoff
	for {
		err := r.reg.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, storage.ErrFenced) {
			r.w.log.Error("shape router stopped: the storage belongs to a newer lease; shapes are not served", "epoch", r.l.Epoch, "err", err)
			close(r.fenced)
			return nil
		}
		r.w.log.Error("shape router failed; restarting it", "epoch", r.l.Epoch, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, routerBackoffMax)
	}
}

// serve serves the shapes from when replication streams until ctx ends or
// the router stopped for a fenced storage. It is the only part that
// switches serving on and off.
func (r *leaseRun) serve(ctx context.Context) error {
	select {
	case <-r.streaming:
	case <-r.fenced:
		return nil
	case <-ctx.Done():
		return nil
	}
	r.w.api.Serve(r.reg, r.l)
	defer r.w.api.Serve(nil, nil)
	select {
	case <-r.fenced:
	case <-ctx.Done():
	}
	return nil
}

// expire removes idle shapes (Registry.Expire) from when shapes are served
// (its restart grace starts then) until ctx ends.
func (r *leaseRun) expire(ctx context.Context) error {
	select {
	case <-r.streaming:
	case <-ctx.Done():
		return nil
	}
	return r.reg.Expire(ctx, shapes.ExpiryOptions{IdleTimeout: r.w.cfg.ShapeIdleTimeout, Expired: r.w.metrics.expired})
}
