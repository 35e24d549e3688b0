package harness

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/batonhq/baton/worker/lease"
)

// Event is something that happened to a test worker's lease.
type Event struct {
	Kind  string // "granted" or "ended"
	Epoch uint64
	At    time.Time
	Cause error // for "ended"
}

// Release is a release a test worker sent.
type Release struct {
	Epoch uint64
	At    time.Time // right before it was sent
	Err   error
}

// LeaseWorker is an in-process worker built on worker/lease: it acquires
// the lease again and again, records every grant and end, and releases
// each lease when it ends (after OnEnd, when set), recording the release.
type LeaseWorker struct {
	ID     string
	c      *lease.Client
	cancel context.CancelFunc
	done   chan struct{}
	// OnEnd runs after a lease ended and before it is released.
	OnEnd func(*lease.Lease)

	mu       sync.Mutex
	events   []Event
	releases []Release
	cur      *lease.Lease
	wake     chan struct{} // closed and replaced on every event and release
}

// StartLeaseWorker attaches a worker with options o (its WorkerID, and
// StreamID, OnStandby ... when set) to the broker at addr.
func StartLeaseWorker(addr string, o lease.Options, onEnd func(*lease.Lease)) (*LeaseWorker, error) {
	c, err := lease.New(addr, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &LeaseWorker{ID: o.WorkerID, c: c, cancel: cancel, done: make(chan struct{}), OnEnd: onEnd, wake: make(chan struct{})}
	go w.loop(ctx)
	return w, nil
}

func (w *LeaseWorker) loop(ctx context.Context) {
	defer close(w.done)
	for {
		l, err := w.c.Acquire(ctx)
		if err != nil {
			return
		}
		w.record(Event{Kind: "granted", Epoch: l.Epoch, At: l.GrantedAt}, l)
		select {
		case <-l.Done():
		case <-ctx.Done():
			_ = l.Release(context.Background(), 0)
			return
		}
		w.record(Event{Kind: "ended", Epoch: l.Epoch, At: l.EndedAt(), Cause: l.Err()}, nil)
		if w.OnEnd != nil {
			w.OnEnd(l)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		at := time.Now()
		err = l.Release(rctx, 0)
		cancel()
		w.mu.Lock()
		w.releases = append(w.releases, Release{Epoch: l.Epoch, At: at, Err: err})
		w.notify()
		w.mu.Unlock()
	}
}

func (w *LeaseWorker) record(e Event, cur *lease.Lease) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, e)
	w.cur = cur
	w.notify()
}

// notify wakes the waiters; w.mu is held.
func (w *LeaseWorker) notify() {
	close(w.wake)
	w.wake = make(chan struct{})
}

// Events returns a copy of what happened so far.
func (w *LeaseWorker) Events() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Event(nil), w.events...)
}

// Current is the lease being held (nil when none).
func (w *LeaseWorker) Current() *lease.Lease {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != nil && w.cur.Err() != nil {
		return nil
	}
	return w.cur
}

// AwaitEvent waits for the first event at index >= from with kind, and
// returns it with its index; it gives up after timeout or when ctx ends.
func (w *LeaseWorker) AwaitEvent(ctx context.Context, kind string, from int, timeout time.Duration) (Event, int, error) {
	var e Event
	i := -1
	err := w.await(ctx, timeout, fmt.Sprintf("a %q event", kind), func() bool {
		for k := from; k < len(w.events); k++ {
			if w.events[k].Kind == kind {
				e, i = w.events[k], k
				return true
			}
		}
		return false
	})
	return e, i, err
}

// AwaitRelease waits until the worker sent the release of the lease of
// epoch and returns it; it gives up after timeout or when ctx ends.
func (w *LeaseWorker) AwaitRelease(ctx context.Context, epoch uint64, timeout time.Duration) (Release, error) {
	var r Release
	err := w.await(ctx, timeout, fmt.Sprintf("the release of epoch %d", epoch), func() bool {
		for _, x := range w.releases {
			if x.Epoch == epoch {
				r = x
				return true
			}
		}
		return false
	})
	return r, err
}

// await waits until found, called with w.mu held, returns true.
func (w *LeaseWorker) await(ctx context.Context, timeout time.Duration, what string, found func() bool) error {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		ok, wake := found(), w.wake
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-wake:
		case <-deadline:
			return fmt.Errorf("worker %s: no %s within %s (events: %v)", w.ID, what, timeout, w.Events())
		case <-ctx.Done():
			return fmt.Errorf("worker %s: waiting for %s: %w", w.ID, what, context.Cause(ctx))
		}
	}
}

// Close stops the worker (releasing a held lease) and closes its client.
func (w *LeaseWorker) Close() {
	w.cancel()
	<-w.done
	w.c.Close()
}
