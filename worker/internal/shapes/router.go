package shapes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/batonhq/baton/worker/internal/replication"
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
		shapes, _ := r.list()
		for _, s := range shapes {
			_ = s.persist()
		}
	}()
	err := r.routeLoop(rctx)
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
	type state struct{ applied, upTo uint64 }
	last := map[*Shape]state{}
	ticks := 0
	t := time.NewTicker(persistEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		shapes, _ := r.list()
		next := make(map[*Shape]state, len(shapes))
		for _, s := range shapes {
			s.mu.RLock()
			st := state{s.meta.AppliedSeq, s.upTo}
			s.mu.RUnlock()
			if prev, ok := last[s]; ok && prev == st {
				next[s] = st
				continue
			}
			if err := s.persist(); err != nil {
				if s.isGone() {
					continue
				}
				return fmt.Errorf("persist shape %s: %w", s.meta.Handle, err)
			}
			next[s] = st
		}
		last = next
		if ticks++; ticks%truncateEvery == 0 {
			if n, err := r.truncateStream(); err != nil {
				r.o.Log.Warn("stream log not truncated", "err", err)
			} else if n > 0 {
				r.o.Log.Info("stream log truncated: every shape has moved past it", "records", n)
			}
		}
	}
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
func (r *Registry) routeLoop(ctx context.Context) error {
	for ctx.Err() == nil {
		shapes, added := r.list()
		if len(shapes) == 0 {
			select {
			case <-added:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		from := shapes[0].applied()
		for _, s := range shapes[1:] {
			from = min(from, s.applied())
		}
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
		if err := r.route(recs, shapes); err != nil {
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

// route applies recs to every shape that has not seen them: the
// transactions not visible in the shape's snapshot that touch its table
// become one record each. Then each shape log is synced and the records
// published, with applied_seq: meta.json (written by another goroutine)
// never names a stream record whose messages are not durable.
func (r *Registry) route(recs []storage.Record, shapes []*Shape) error {
	type pending struct {
		entries []entry
		dirty   bool
		upTo    uint64
		applied uint64
	}
	work := make([]pending, len(shapes))
	for i, s := range shapes {
		work[i].applied = s.applied()
	}
	var truncated []*Shape
	for _, rec := range recs {
		tx := r.o.Decoded.Take(rec.Seq)
		if tx == nil {
			var err error
			if tx, err = replication.DecodeTransaction(rec.Payload); err != nil {
				return fmt.Errorf("stream record %d: %w", rec.Seq, err)
			}
		}
		for i, s := range shapes {
			if work[i].applied >= rec.Seq || s.isGone() {
				continue
			}
			work[i].applied = rec.Seq
			work[i].upTo = tx.CommitLSN
			if s.meta.visible(tx.XID) {
				continue
			}
			u, trunc, err := s.meta.txMessages(tx)
			if err != nil {
				return err
			}
			if trunc {
				truncated = append(truncated, s)
				continue
			}
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
			work[i].dirty = true
			if seq != 0 {
				work[i].entries = append(work[i].entries, entry{seq: seq, off: Offset{TX: tx.CommitLSN, Op: u.lastOp}, size: len(u.body)})
			}
		}
	}
	for i, s := range shapes {
		if work[i].dirty {
			if _, err := s.log.Sync(); err != nil {
				if s.isGone() {
					continue
				}
				return fmt.Errorf("shape %s: %w", s.meta.Handle, err)
			}
		}
		s.publish(work[i].entries, work[i].upTo, work[i].applied)
	}
	for _, s := range truncated {
		r.o.Log.Info("table truncated: the shape is rebuilt on the next request", "handle", s.meta.Handle)
		if err := r.Delete(s); err != nil {
			return err
		}
	}
	return nil
}

func (s *Shape) isGone() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gone
}
