package shapes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// routeBatch is how many stream records the router reads at once.
const routeBatch = 256

// router routes committed transactions from the stream log to the shapes:
// it is the one writer of the shape logs after their snapshot, and owns
// the routing positions (see the package doc, "Positions"). One router
// lives for one Run; the catalog keeps pos (Registry.routed) across runs.
type router struct {
	r   *Registry
	fan *fanout
	// gen is Registry.gen as of the last sync of fan; synced once there
	// was one.
	gen    uint64
	synced bool
	// floor is how far every caught-up shape is routed (stored as
	// Registry.floor for readers, see Shape.floor); behind are the shapes
	// that are not (new ones, and all of them when the router starts),
	// routed one by one until they reach the floor; nCaught is the number
	// of the others.
	floor   streamPos
	behind  map[*Shape]bool
	nCaught int
}

func newRouter(r *Registry) *router {
	rt := &router{r: r, fan: newFanout(r), behind: map[*Shape]bool{}}
	if p := r.floor.Load(); p != nil {
		rt.floor = *p // a restarted router: caught-up shapes stay so
	}
	return rt
}

func (rt *router) close() { rt.fan.close() }

// run routes until ctx ends or routing fails.
func (rt *router) run(ctx context.Context) error {
	r := rt.r
	for ctx.Err() == nil {
		// The channel and gen before the list: a shape added meanwhile
		// closes the one and moves the other.
		added := r.addedChan()
		gen := r.gen.Load()
		if !rt.current(gen) {
			invalid, err := rt.refresh(ctx, gen)
			if err != nil {
				return rt.stopErr(ctx, err)
			}
			if len(invalid) > 0 {
				if err := rt.invalidate(ctx, invalid); err != nil {
					return rt.stopErr(ctx, err)
				}
				continue
			}
		}
		if rt.fan.len() == 0 {
			select {
			case <-added:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		from := rt.from()
		recs, err := r.o.Stream.Read(from+1, routeBatch)
		if err != nil {
			return rt.stopErr(ctx, fmt.Errorf("read stream log: %w", err))
		}
		if len(recs) == 0 {
			if err := rt.waitStream(ctx, from, added); err != nil {
				return rt.stopErr(ctx, err)
			}
			continue
		}
		if err := rt.routeRecords(ctx, recs); err != nil {
			return rt.stopErr(ctx, err)
		}
	}
	return nil
}

func (rt *router) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, storage.ErrClosed) {
		return nil
	}
	return err
}

// current reports whether the router knows the shapes as of gen.
func (rt *router) current(gen uint64) bool { return rt.synced && gen == rt.gen }

// refresh brings the fanout up to the shapes listed at gen (the whole
// list at the router's first refresh, the changes since the last one
// after that: Registry.routerView), and the shapes it follows with it; it
// returns the shapes that can no longer be served.
func (rt *router) refresh(ctx context.Context, gen uint64) ([]*Shape, error) {
	add, drop, full := rt.r.routerView(!rt.synced)
	var ch synced
	var err error
	if full {
		ch, err = rt.fan.sync(ctx, add)
	} else {
		ch, err = rt.fan.apply(ctx, add, drop)
	}
	for _, s := range ch.removed {
		if rt.behind[s] {
			delete(rt.behind, s)
		} else if s.caught.Load() {
			rt.nCaught--
		}
	}
	for _, s := range ch.added {
		switch {
		case s.caught.Load():
			rt.nCaught++
		case rt.floor.seq > 0 && s.ownRoutedSeq() >= rt.floor.seq:
			// Made at or after the floor (the usual new shape): it is
			// caught up already, as routeRecords would find after its
			// next batch. Kept behind, it would cost every pass of the
			// loop until records come (from), which made creating many
			// shapes without writes quadratic.
			s.caught.Store(true)
			rt.nCaught++
		default:
			rt.behind[s] = true
		}
	}
	if err != nil {
		return nil, err
	}
	rt.gen, rt.synced = gen, true
	return ch.invalid, nil
}

// waitStream blocks until the stream log has a record after seq, a shape
// is added, or ctx ends.
func (rt *router) waitStream(ctx context.Context, seq uint64, added <-chan struct{}) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-added:
			cancel()
		case <-stop:
		}
	}()
	err := rt.r.o.Stream.Wait(wctx, seq)
	if wctx.Err() != nil && ctx.Err() == nil {
		return nil // a shape was added
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// from is the stream log seq every shape has been routed to: where the
// next batch starts.
func (rt *router) from() uint64 {
	from := uint64(math.MaxUint64)
	if rt.nCaught > 0 || len(rt.behind) == 0 {
		from = rt.floor.seq
	}
	for s := range rt.behind {
		from = min(from, s.routedSeq())
	}
	return from
}

// routeRecords applies recs to the shapes: the transactions not visible in
// a shape's snapshot become one record each in the logs of the shapes they
// touch. Then each touched log is written, and the records and how far the
// shapes were routed made visible to readers; the metadata (written by the
// persistence loop) syncs a log before it names how far it was routed.
func (rt *router) routeRecords(ctx context.Context, recs []storage.Record) error {
	var invalid []*Shape
	// start is where each shape the batch touches was routed to before it.
	start := map[*Shape]uint64{}
	startOf := func(s *Shape) uint64 {
		a, ok := start[s]
		if !ok {
			a = s.routedSeq()
			start[s] = a
		}
		return a
	}
	work := map[*Shape]*pending{}
	var err error

	last := recs[len(recs)-1]
	var lastLSN uint64
	for _, rec := range recs {
		tx := rt.r.o.Decoded.Take(rec.Seq)
		if tx == nil {
			if tx, err = txn.Decode(rec.Payload); err != nil {
				return fmt.Errorf("stream record %d: %w", rec.Seq, err)
			}
		}
		lastLSN = tx.CommitLSN
		fo, err := rt.fan.transaction(ctx, tx)
		if err != nil {
			return err
		}
		for _, s := range fo.invalid {
			if startOf(s) < rec.Seq && !s.meta.visible(tx.XID, tx.CommitLSN) && !slices.Contains(invalid, s) {
				invalid = append(invalid, s)
			}
		}
		for _, t := range fo.touched {
			s := t.s
			if startOf(s) >= rec.Seq || s.isGone() || slices.Contains(invalid, s) || s.meta.visible(tx.XID, tx.CommitLSN) {
				continue
			}
			u := s.meta.txMessages(tx, t.idx, t.in)
			if u.count == 0 {
				continue
			}
			seq, err := s.log.Append(storage.Record{CommitLSN: tx.CommitLSN, EndLSN: rec.EndLSN, Payload: u.payload(u.lastOp)})
			if err != nil {
				if s.isGone() {
					continue // deleted meanwhile
				}
				return fmt.Errorf("shape %s: %w", s.meta.Handle, err)
			}
			p := work[s]
			if p == nil {
				p = &pending{}
				work[s] = p
			}
			p.dirty = true
			if seq != 0 {
				p.entries = append(p.entries, entry{seq: seq, off: Offset{TX: tx.CommitLSN, Op: u.lastOp}, size: len(u.body), body: u.body})
			}
		}
	}
	if err := writeLogs(work); err != nil {
		return err
	}
	// The shapes that got records, and those behind, move on one by one
	// (advance leaves alone a shape routed this far already); the caught-up
	// ones all at once, with the router's position.
	for s, p := range work {
		s.advance(p.entries, lastLSN, last.Seq)
	}
	for s := range rt.behind {
		s.advance(nil, lastLSN, last.Seq)
	}
	if last.Seq > rt.floor.seq {
		rt.floor = streamPos{seq: last.Seq, lsn: max(rt.floor.lsn, lastLSN)}
		p := rt.floor
		rt.r.floor.Store(&p)
	}
	for s := range rt.behind {
		if s.ownRoutedSeq() >= rt.floor.seq {
			s.caught.Store(true)
			delete(rt.behind, s)
			rt.nCaught++
		}
	}
	return rt.invalidate(ctx, invalid)
}

// pending is what a batch wrote to one shape log.
type pending struct {
	entries []entry
	dirty   bool
}

// writeLogs makes the records appended to the logs of work readable. They
// are not fsynced here: a shape log is made again from the durable stream
// log after a crash of the machine (routing resumes from the applied_seq
// of the metadata, which persist writes only after syncing the log), so one
// disk flush per touched shape per batch is not needed.
//
// A batch that touches many logs writes them from several goroutines:
// each Write is a few system calls (the owner checks around the pwrite)
// that wait for the kernel, and the router would otherwise make them one
// after another on one core. Logs are independent; what is published is
// published only after every Write returned, as before.
func writeLogs(work map[*Shape]*pending) error {
	var dirty []*Shape
	for s, p := range work {
		if p.dirty {
			dirty = append(dirty, s)
		}
	}
	write := func(s *Shape) error {
		if err := s.log.Write(); err != nil && !s.isGone() {
			return fmt.Errorf("shape %s: %w", s.meta.Handle, err)
		}
		return nil
	}
	if len(dirty) < parallelWritesFrom {
		for _, s := range dirty {
			if err := write(s); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	g.SetLimit(writeGoroutines)
	for _, s := range dirty {
		g.Go(func() error { return write(s) })
	}
	return g.Wait()
}

// A batch touching at least parallelWritesFrom logs writes them from
// writeGoroutines goroutines.
const (
	parallelWritesFrom = 16
	writeGoroutines    = 4
)

// invalidate removes shapes whose table was truncated or changed, or whose
// where clause no longer fits it: their clients get 409 and refetch, and
// a new request makes a shape from the table as it is now.
func (rt *router) invalidate(ctx context.Context, shapes []*Shape) error {
	if len(shapes) == 0 {
		return nil
	}
	for _, s := range shapes {
		inc(rt.r.o.Counters.Invalidated)
		rt.r.o.Log.Info("table truncated or changed: the shape is removed, its clients refetch", "shape", s.meta.Handle, "table", s.meta.Definition.String())
		if err := rt.r.Delete(s); err != nil {
			return err
		}
	}
	if err := rt.r.Reconcile(ctx); err != nil {
		rt.r.o.Log.Warn("publication not reconciled after removing shapes", "err", err)
	}
	return nil
}
