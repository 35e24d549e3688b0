package lease

import (
	"context"
	"sync"
	"time"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// Lease is one grant. Its context ends, with a cause, when the grant ends:
// a *RevokedError, ErrExpired, ErrBrokerLost or ErrReleased.
type Lease struct {
	// Epoch is the fencing token: strictly greater than every earlier
	// grant's for the stream.
	Epoch uint64
	// TTL is the validity of the grant and of each renewal.
	TTL time.Duration
	// StreamID, Slot and Publication name what the worker consumes.
	StreamID    string
	Slot        string
	Publication string
	// Holder names the granting broker.
	Holder string
	// BrokerProtocol is the highest lease protocol version the broker
	// supports (Granted.protocol_version; 0 for a broker older than 2).
	BrokerProtocol uint32
	// GrantedAt is when the grant arrived (monotonic clock).
	GrantedAt time.Time

	s      *session
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	endedAt  time.Time
	// drainBy: until when the worker may finish after a Revoked (zero: no
	// Revoked received).
	drainBy time.Time
}

func newLease(s *session, g *batonv1.Granted, now time.Time) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	ttl := g.GetTtl().AsDuration()
	l := &Lease{
		Epoch:          g.GetEpoch(),
		TTL:            ttl,
		StreamID:       g.GetStreamId(),
		Slot:           g.GetSlotName(),
		Publication:    g.GetPublicationName(),
		Holder:         g.GetHolder(),
		BrokerProtocol: g.GetProtocolVersion(),
		GrantedAt:      now,
		s:              s,
		ctx:            ctx,
		cancel:         cancel,
		deadline:       now.Add(ttl),
	}
	l.mu.Lock()
	l.timer = time.AfterFunc(ttl, l.expire)
	l.mu.Unlock()
	return l
}

// Ctx is a context that ends when the lease does; context.Cause(l.Ctx())
// says why.
func (l *Lease) Ctx() context.Context { return l.ctx }

// Done is closed when the lease ends.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Err is nil while the lease is valid, else why it ended.
func (l *Lease) Err() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// Valid reports whether the lease is held right now: not ended, and its
// deadline not passed on the monotonic clock — even if the expiry timer has
// not fired yet (e.g. just after the process was resumed from SIGSTOP).
// Check it immediately before anything a successor could observe.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.endedAt.IsZero() && time.Now().Before(l.deadline) && l.ctx.Err() == nil
}

// Deadline is when the lease expires unless renewed (monotonic clock).
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// DrainDeadline is until when, on the monotonic clock, the worker may still
// finish with the stream after the broker revoked the lease: make durable
// what it received, acknowledge it, close its replication connection and
// Release (lease.proto W6). It is receipt + Revoked.drain_timeout (for a
// shutdown; none for lock_lost and replaced), shortened by a later Revoked
// or by the stream to the broker breaking. Zero when the broker did not
// revoke the lease (it expired, the broker was lost, the worker released):
// then there is nothing to drain into. A deadline in the past means stop at
// once: acknowledge nothing more.
func (l *Lease) DrainDeadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.drainBy
}

// revoked sets the drain deadline to t on the first Revoked of a valid
// lease, and moves it to t if a later one says sooner.
func (l *Lease) revoked(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.drainBy.IsZero() && l.endedAt.IsZero():
		l.drainBy = t
	case !l.drainBy.IsZero() && t.Before(l.drainBy):
		l.drainBy = t
	}
}

// shortenDrain moves the drain deadline of a revoked lease to t if sooner.
func (l *Lease) shortenDrain(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drainBy.IsZero() && t.Before(l.drainBy) {
		l.drainBy = t
	}
}

// EndedAt is when the lease ended (zero while valid).
func (l *Lease) EndedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.endedAt
}

func (l *Lease) renew(now time.Time, ttl time.Duration) {
	l.mu.Lock()
	if !l.endedAt.IsZero() {
		l.mu.Unlock()
		return
	}
	if !now.Before(l.deadline) {
		// Already expired; the timer just has not fired yet. A renewal
		// cannot revive a lease.
		l.mu.Unlock()
		l.end(ErrExpired)
		return
	}
	l.deadline = now.Add(ttl)
	l.timer.Reset(time.Until(l.deadline))
	l.mu.Unlock()
}

// expire runs when the timer fires; a renewal may have moved the deadline.
func (l *Lease) expire() {
	l.mu.Lock()
	if d := time.Until(l.deadline); d > 0 {
		l.timer.Reset(d)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.end(ErrExpired)
}

func (l *Lease) end(cause error) {
	l.mu.Lock()
	if l.endedAt.IsZero() {
		l.endedAt = time.Now()
		if l.timer != nil {
			l.timer.Stop()
		}
	}
	l.mu.Unlock()
	l.cancel(cause)
}

// Progress tells the broker the last durable position (informational).
func (l *Lease) Progress(lsn uint64) error {
	return l.s.send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Progress{Progress: &batonv1.Progress{
		Epoch: l.Epoch, DurableLsn: lsn,
	}}})
}

// Release ends the lease (if it has not ended) and tells the broker the
// worker has stopped consuming; call it after the replication connection is
// closed. A broker draining for shutdown unlocks when it receives this. The
// broker does not grant that stream again: the next Acquire asks on a new
// one. The error only says the message could not be sent (the broker then
// waits for the TTL instead). The broker keeps the lock for a worker that
// attaches again; a worker whose process is stopping calls ReleaseStopping.
func (l *Lease) Release(ctx context.Context, durableLSN uint64) error {
	return l.release(ctx, durableLSN, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED)
}

// ReleaseStopping is Release for a worker whose process is stopping (it got
// SIGTERM) and that has finished with the stream: drained, acknowledged,
// walsender ended. Its broker unlocks at once, so a standby pod takes over
// without waiting for BATON_WORKER_ABSENCE_TIMEOUT.
func (l *Lease) ReleaseStopping(ctx context.Context, durableLSN uint64) error {
	return l.release(ctx, durableLSN, batonv1.ReleaseReason_RELEASE_REASON_STOPPING)
}

func (l *Lease) release(ctx context.Context, durableLSN uint64, reason batonv1.ReleaseReason) error {
	l.end(ErrReleased)
	l.s.spent.Store(true)
	errc := make(chan error, 1)
	go func() {
		errc <- l.s.send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Released{Released: &batonv1.Released{
			Epoch: l.Epoch, DurableLsn: durableLSN, Reason: reason,
		}}})
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
