package shapes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// truncateEvery is how often the stream log is truncated.
const truncateEvery = time.Minute

// truncateLoop truncates the stream log every truncateEvery until ctx
// ends; a failure is logged, and retried at the next round.
func (r *Registry) truncateLoop(ctx context.Context) error {
	return every(ctx, truncateEvery, func() error {
		if n, err := r.truncateStream(); err != nil {
			r.o.Log.Warn("stream log not truncated", "err", err)
		} else if n > 0 {
			r.o.Log.Info("stream log truncated: every shape has moved past it", "records", n)
		}
		return nil
	})
}

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
