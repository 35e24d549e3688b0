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

// LeaseWorker is an in-process worker built on worker/lease: it acquires
// the lease again and again, records every grant and end, and releases
// each lease when it ends (after OnEnd, when set).
type LeaseWorker struct {
	ID     string
	c      *lease.Client
	cancel context.CancelFunc
	done   chan struct{}
	// OnEnd runs after a lease ended and before it is released.
	OnEnd func(*lease.Lease)

	mu     sync.Mutex
	events []Event
	cur    *lease.Lease
	wake   chan struct{}
}

// StartLeaseWorker attaches a worker to the broker at addr.
func StartLeaseWorker(addr, id string, onEnd func(*lease.Lease)) (*LeaseWorker, error) {
	c, err := lease.New(addr, lease.Options{WorkerID: id})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &LeaseWorker{ID: id, c: c, cancel: cancel, done: make(chan struct{}), OnEnd: onEnd, wake: make(chan struct{})}
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
		_ = l.Release(rctx, 0)
		cancel()
	}
}

func (w *LeaseWorker) record(e Event, cur *lease.Lease) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, e)
	w.cur = cur
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
// returns it with its index.
func (w *LeaseWorker) AwaitEvent(kind string, from int, timeout time.Duration) (Event, int, error) {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for i := from; i < len(w.events); i++ {
			if w.events[i].Kind == kind {
				e := w.events[i]
				w.mu.Unlock()
				return e, i, nil
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			return Event{}, -1, fmt.Errorf("worker %s: no %q event within %s (events: %v)", w.ID, kind, timeout, w.Events())
		}
	}
}

// Close stops the worker (releasing a held lease) and closes its client.
func (w *LeaseWorker) Close() {
	w.cancel()
	<-w.done
	w.c.Close()
}
