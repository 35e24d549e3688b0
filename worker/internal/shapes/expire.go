package shapes

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Idle expiry: a shape no request has used for the idle timeout is removed
// with its storage, and the publication reconciled, as DELETE /v1/shape
// does.
//
// A shape is in use while a request holds it (Use, until its done func is
// called: a long-poll or SSE response waiting for changes counts) and was
// used when such a request began or ended. The last use is kept in memory
// and written to the shape's metadata with its other fields (at most once per
// usePersistEvery for use alone, and at shutdown with the router's last
// write), so a restart neither resets idleness for good nor expires a shape
// whose clients were active: after a start, no shape expires within
// min(timeout, restartGrace), and one with no recorded last use not within
// the timeout.

// restartGrace bounds the time after expiry starts in which no shape
// expires: long enough for the clients of a shape in use to come back after
// a restart or handoff, whatever its recorded last use.
const restartGrace = time.Minute

// usePersistEvery bounds how often a shape's metadata is written only
// because it was used.
const usePersistEvery = time.Minute

// use is what idle expiry knows of a shape's requests.
type use struct {
	last     atomic.Int64 // unix nanoseconds of the last use; 0: unknown
	inFlight atomic.Int32 // requests holding the shape
}

func (u *use) touch(now time.Time) { u.last.Store(now.UnixNano()) }

// lastTime is the last use, or the zero time when unknown.
func (u *use) lastTime() time.Time {
	if n := u.last.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// restore sets the last use read from the metadata (the zero time: unknown).
func (u *use) restore(t time.Time) {
	if !t.IsZero() {
		u.last.Store(t.UnixNano())
	}
}

// Use marks the shape in use by a request until the returned func is
// called; the shape does not expire meanwhile. Safe for concurrent use; a
// request may still find the shape gone (deleted, or expired just before
// Use), and then gets ErrGone from it as for any removal.
func (s *Shape) Use() (done func()) {
	s.use.inFlight.Add(1)
	s.use.touch(time.Now())
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			s.use.touch(time.Now())
			s.use.inFlight.Add(-1)
		}
	}
}

// ExpiryOptions configure Registry.Expire.
type ExpiryOptions struct {
	// IdleTimeout is how long a shape may go without a request before it
	// is removed; 0 or less disables expiry.
	IdleTimeout time.Duration
	// Expired, when set, counts the shapes removed for idleness.
	Expired Counter
}

// expiryClock decides when a shape is idle. start is when expiry began
// (after a restart or handoff, when shapes began to be served again).
type expiryClock struct {
	start   time.Time
	timeout time.Duration
}

// idleSince is the time from which s counts as idle, given the last use
// recorded (zero: unknown): never before start-timeout+grace, so no shape
// expires within the grace after start; a shape with no recorded use is
// idle from start.
func (c expiryClock) idleSince(last time.Time) time.Time {
	if last.IsZero() {
		return c.start
	}
	floor := c.start.Add(min(c.timeout, restartGrace) - c.timeout)
	if last.Before(floor) {
		return floor
	}
	return last
}

// expired reports whether a shape last used at last (zero: unknown) and
// with inFlight requests holding it is past the idle timeout at now.
func (c expiryClock) expired(now, last time.Time, inFlight int32) bool {
	return inFlight <= 0 && now.Sub(c.idleSince(last)) >= c.timeout
}

// expiryTick is how often shapes are checked: a fraction of the timeout,
// between 100 ms and a minute.
func expiryTick(timeout time.Duration) time.Duration {
	return min(max(timeout/4, 100*time.Millisecond), time.Minute)
}

// Expire removes shapes idle for o.IdleTimeout (with Delete, then
// Reconcile of the publication, one change at a time) until ctx ends, and
// writes the last use of shapes in use to their metadata at most once per
// usePersistEvery. It returns nil when ctx ends, at once when expiry is
// disabled. A failed removal or reconciliation is logged and retried at
// the next check. Start it when shapes begin to be served: its start is the
// origin of the restart grace.
func (r *Registry) Expire(ctx context.Context, o ExpiryOptions) error {
	if o.IdleTimeout <= 0 {
		return nil
	}
	c := expiryClock{start: time.Now(), timeout: o.IdleTimeout}
	t := time.NewTicker(expiryTick(o.IdleTimeout))
	defer t.Stop()
	reconcile := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if r.expireIdle(ctx, c, time.Now(), o.Expired) {
			reconcile = true
		}
		if reconcile && ctx.Err() == nil {
			if err := r.Reconcile(ctx); err != nil {
				if ctx.Err() != nil {
					return nil // reconciled at the next start
				}
				r.o.Log.Warn("publication not reconciled after shapes expired; retrying", "err", err)
				continue
			}
			reconcile = false
		}
	}
}

// expireIdle removes the shapes idle at now and persists the last use of
// the others when due; it reports whether it removed any. It removes
// nothing once ctx ends (ctx ends with the lease: a successor may own the
// storage).
func (r *Registry) expireIdle(ctx context.Context, c expiryClock, now time.Time, expired Counter) bool {
	shapes, _ := r.list()
	removed := false
	// The last uses due to be written, several at once (their fsyncs
	// overlap): with thousands of shapes in use, one at a time would take
	// longer than a tick.
	var g errgroup.Group
	g.SetLimit(persistConcurrency)
	defer g.Wait()
	for _, s := range shapes {
		if ctx.Err() != nil {
			return removed
		}
		if s.use.inFlight.Load() > 0 {
			s.use.touch(now) // a waiting request is a use
		}
		// A shape seen for the first time with no recorded use (created
		// since the last check, or stored without one) counts as used now.
		s.use.last.CompareAndSwap(0, now.UnixNano())
		last := s.use.lastTime()
		if !c.expired(now, last, s.use.inFlight.Load()) {
			if r.usePersistDue(s, last) {
				g.Go(func() error {
					r.persistUse(s)
					return nil
				})
			}
			continue
		}
		idle := now.Sub(c.idleSince(last)).Round(time.Second)
		if err := r.Delete(s); err != nil {
			r.o.Log.Error("idle shape not removed", "shape", s.meta.Handle, "err", err)
			continue
		}
		removed = true
		if expired != nil {
			expired.Inc()
		}
		r.o.Log.Info("shape expired: no request within the idle timeout", "shape", s.meta.Handle,
			"table", s.meta.Definition.String(), "idle", idle.String(), "timeout", c.timeout.String())
	}
	return removed
}

// usePersistDue reports whether the shape's last use is usePersistEvery
// past the one its metadata holds.
func (r *Registry) usePersistDue(s *Shape, last time.Time) bool {
	if last.IsZero() {
		return false
	}
	s.mu.RLock()
	stored := s.meta.LastUsedAt
	s.mu.RUnlock()
	return last.Sub(stored) >= usePersistEvery
}

// persistUse writes the shape's metadata, with its last use.
func (r *Registry) persistUse(s *Shape) {
	if err := s.persist(); err != nil && !s.isGone() {
		r.o.Log.Warn("last use of a shape not persisted", "shape", s.meta.Handle, "err", err)
	}
}
