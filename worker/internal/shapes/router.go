package shapes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sync/errgroup"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// routeBatch is how many stream records the router reads at once.
const routeBatch = 256

// persistEvery bounds how often applied_seq is written to meta.json; a
// late write only means some transactions are routed again, and skipped.
const persistEvery = time.Second

// Run routes committed transactions from the stream log to the shapes
// until ctx ends or a shape log is fenced. It is the only writer of the
// shape logs after their snapshot, and of applied_seq.
func (r *Registry) Run(ctx context.Context) error {
	// meta.json is written by its own goroutine, so that its fsyncs do not
	// delay routing; it stops, and every shape is persisted once more,
	// before Run returns.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var persistErr error
	persisted := make(chan struct{})
	go func() {
		defer close(persisted)
		if err := r.persistLoop(rctx); err != nil {
			persistErr = err
			cancel()
		}
	}()
	defer func() {
		cancel()
		<-persisted
		r.persistFinal()
	}()
	f := newFanout(r)
	defer f.close()
	err := r.routeLoop(rctx, f)
	cancel()
	<-persisted
	if persistErr != nil {
		return persistErr
	}
	return err
}

// persistLoop writes the meta.json of every shape routed further since its
// last write, once every persistEvery, until ctx ends.
func (r *Registry) persistLoop(ctx context.Context) error {
	last := map[*Shape]persisted{}
	ticks := 0
	watch := &schemaWatch{r: r, last: time.Now()}
	defer watch.close()
	t := time.NewTicker(persistEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := watch.check(ctx); err != nil && ctx.Err() == nil {
			r.o.Log.Warn("tables of the shapes not checked", "err", err)
		}
		if err := r.persistSome(last); err != nil {
			return err
		}
		if ticks++; ticks%truncateEvery == 0 {
			if n, err := r.truncateStream(); err != nil {
				r.o.Log.Warn("stream log not truncated", "err", err)
			} else if n > 0 {
				r.o.Log.Info("stream log truncated: every shape has moved past it", "records", n)
			}
		}
		r.compactShapes(ctx, ticks)
	}
}

// persistFinal writes, as the router stops, the meta.json of the shapes
// that got records since theirs was written, several at once: with
// thousands of shapes, writing every one in turn would outlast a drain.
// The others only lose how far transactions that did not touch them were
// routed (routed again after a restart, and skipped).
func (r *Registry) persistFinal() {
	shapes, _ := r.list()
	var g errgroup.Group
	g.SetLimit(16)
	for _, s := range shapes {
		if s.unpersisted() {
			g.Go(func() error {
				_ = s.persist()
				return nil
			})
		}
	}
	_ = g.Wait()
}

// persisted is what a shape's meta.json was last written with, and when.
type persisted struct {
	applied, upTo uint64
	records       int
	at            time.Time
}

// Bounds on meta.json writes: a shape that only moved on (transactions
// that did not touch it) is written at most every idlePersistEvery, and
// at most persistPerTick shapes are written per tick, those waiting
// longest first. A late write only means transactions routed again
// after a restart (and skipped) and an older global_last_seen_lsn.
const (
	idlePersistEvery   = time.Minute
	persistPerTick     = 64
	persistConcurrency = 16 // their fsyncs overlap
)

// persistSome writes the meta.json of the shapes that need it, updating
// last (and dropping shapes that are gone from it).
func (r *Registry) persistSome(last map[*Shape]persisted) error {
	shapes, _ := r.list()
	now := time.Now()
	type due struct {
		s  *Shape
		st persisted
		at time.Time
	}
	var todo []due
	live := make(map[*Shape]bool, len(shapes))
	for _, s := range shapes {
		live[s] = true
		fl := s.floor()
		s.mu.RLock()
		st := persisted{applied: max(s.meta.AppliedSeq, fl.seq), upTo: s.upToLocked(fl), records: len(s.index), at: now}
		s.mu.RUnlock()
		prev, ok := last[s]
		if ok && prev.applied == st.applied && prev.upTo == st.upTo && prev.records == st.records {
			continue
		}
		if ok && prev.records == st.records && now.Sub(prev.at) < idlePersistEvery {
			continue
		}
		todo = append(todo, due{s, st, prev.at})
	}
	for s := range last {
		if !live[s] {
			delete(last, s)
		}
	}
	slices.SortFunc(todo, func(a, b due) int { return a.at.Compare(b.at) })
	todo = todo[:min(len(todo), persistPerTick)]
	errs := make([]error, len(todo))
	var g errgroup.Group
	g.SetLimit(persistConcurrency)
	for i, d := range todo {
		g.Go(func() error {
			if err := d.s.persist(); err != nil && !d.s.isGone() {
				errs[i] = fmt.Errorf("persist shape %s: %w", d.s.meta.Handle, err)
			}
			return nil
		})
	}
	_ = g.Wait()
	for i, d := range todo {
		if errs[i] != nil {
			return errs[i]
		}
		last[d.s] = d.st
	}
	return nil
}

// truncateEvery is how many persistEvery ticks pass between stream log
// truncations.
const truncateEvery = 60

// truncateStream removes the stream log's segments that every shape has
// durably routed past, by the applied_seq in their meta.json on disk (what
// a restart would resume from). It skips a round while a shape is being
// created (its starting point is not on disk yet).
func (r *Registry) truncateStream() (int, error) {
	if !r.createMu.TryLock() {
		return 0, nil
	}
	defer r.createMu.Unlock()
	upTo, _ := r.o.Stream.Durable()
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		m, err := readMeta(filepath.Join(r.dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // a creation that did not finish: be safe
		}
		if err != nil {
			return 0, err
		}
		upTo = min(upTo, m.AppliedSeq)
	}
	return r.o.Stream.TruncateBefore(upTo + 1)
}

// routeLoop routes until ctx ends or routing fails.
func (r *Registry) routeLoop(ctx context.Context, f *fanout) error {
	for ctx.Err() == nil {
		// The channel and gen before the list: a shape added meanwhile
		// closes the one and moves the other.
		added := r.addedChan()
		gen := r.gen.Load()
		if !f.current(gen) {
			shapes, _ := r.list()
			invalid, err := f.refresh(ctx, shapes, gen)
			if err != nil {
				return r.stopErr(ctx, err)
			}
			if len(invalid) > 0 {
				if err := f.invalidate(ctx, invalid); err != nil {
					return r.stopErr(ctx, err)
				}
				continue
			}
		}
		if len(f.ids) == 0 {
			select {
			case <-added:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		from := f.from()
		recs, err := r.o.Stream.Read(from+1, routeBatch)
		if err != nil {
			return r.stopErr(ctx, fmt.Errorf("read stream log: %w", err))
		}
		if len(recs) == 0 {
			if err := r.waitStream(ctx, from, added); err != nil {
				return r.stopErr(ctx, err)
			}
			continue
		}
		if err := f.routeRecords(ctx, recs); err != nil {
			return r.stopErr(ctx, err)
		}
	}
	return nil
}

func (r *Registry) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, storage.ErrClosed) {
		return nil
	}
	return err
}

// waitStream blocks until the stream log has a record after seq, a shape
// is added, or ctx ends.
func (r *Registry) waitStream(ctx context.Context, seq uint64, added <-chan struct{}) error {
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
	err := r.o.Stream.Wait(wctx, seq)
	if wctx.Err() != nil && ctx.Err() == nil {
		return nil // a shape was added
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Shape) isGone() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gone
}
