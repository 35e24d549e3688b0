package shapes

import (
	"context"
	"time"
)

// truncateEvery is how often the stream log is truncated.
const truncateEvery = time.Minute

// truncateLoop truncates the stream log at once and then every
// truncateEvery until ctx ends; a failure is logged, and retried at the
// next round. The first round drops what the shapes had routed past when
// the last worker stopped: the next Open, which reads every segment's
// record headers, then reads about what was written since, not the whole
// history of a worker restarted more often than truncateEvery.
func (r *Registry) truncateLoop(ctx context.Context) error {
	round := func() error {
		if n, err := r.truncateStream(); err != nil {
			r.o.Log.Warn("stream log not truncated", "err", err)
		} else if n > 0 {
			r.o.Log.Info("stream log truncated: every shape has moved past it", "records", n)
		}
		return nil
	}
	round()
	return every(ctx, truncateEvery, round)
}

// truncateStream removes the stream log's segments that every shape has
// durably routed past, by the applied_seq of their persisted metadata
// (what a restart would resume from; no other writer can change it: see
// doc.go). It skips a round while a shape is being created (its starting
// point is not stored yet).
func (r *Registry) truncateStream() (int, error) {
	if !r.createMu.TryLock() {
		return 0, nil
	}
	defer r.createMu.Unlock()
	upTo, _ := r.o.Stream.Durable()
	shapes, _ := r.list()
	for _, s := range shapes {
		s.mu.RLock()
		upTo = min(upTo, s.durable.RoutedSeq)
		s.mu.RUnlock()
	}
	return r.o.Stream.TruncateBefore(upTo + 1)
}
