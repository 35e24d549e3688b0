package shapes

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"
)

// Run routes committed transactions from the stream log to the shapes,
// and does the shapes' upkeep beside it, until ctx ends, the router stops
// (a closed stream log) or one of them fails (a fenced shape log, a failed
// write). Each duty is a named loop in one errgroup, and the end of any
// ends the others:
//
//   - the router (router.run): the only writer of the shape logs after
//     their snapshot, and of how far each shape was routed;
//   - persistence (persistLoop): writes that position to the metadata;
//   - the schema watch (schemaLoop): removes shapes whose table changed;
//   - truncation (truncateLoop): drops the stream log every shape passed;
//   - compaction (compactLoop): rewrites shape logs that grew.
//
// Every shape is persisted once more before Run returns. Idle expiry runs
// apart (Expire), from when shapes are served. Run may be called again
// after it returned, never twice at once.
func (r *Registry) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	rt := newRouter(r)
	g.Go(func() error {
		defer cancel() // the router's end, even without an error, ends Run
		return rt.run(ctx)
	})
	g.Go(func() error { return r.persistLoop(ctx) })
	g.Go(func() error { return r.schemaLoop(ctx) })
	g.Go(func() error { return r.truncateLoop(ctx) })
	g.Go(func() error { return r.compactLoop(ctx) })
	err := g.Wait()
	rt.close()
	r.persistFinal()
	return err
}

// every calls fn every period until ctx ends (nil) or fn fails.
func every(ctx context.Context, period time.Duration, fn func() error) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := fn(); err != nil {
			return err
		}
	}
}
