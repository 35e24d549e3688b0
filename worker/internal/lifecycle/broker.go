package lifecycle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// brokerWarnEvery is how often a worker that cannot reach its broker says
// so again.
const brokerWarnEvery = 5 * time.Second

// brokerWatch tells the log whether the worker reaches its broker: at once
// when a lease stream cannot be opened (at info level: the broker may just
// be starting beside it), as a warning every brokerWarnEvery while that
// lasts, and when the broker is reached again. report is the lease
// client's OnBroker; Run repeats the warning. Safe for concurrent use.
type brokerWatch struct {
	addr string
	log  *slog.Logger

	mu    sync.Mutex
	since time.Time // when the broker became unreachable; zero: reachable
	err   error
}

// report records that the broker is unreachable (err) or reachable (nil).
func (b *brokerWatch) report(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil && b.since.IsZero():
		b.since, b.err = time.Now(), err
		b.log.Info("cannot reach the broker; standing by until it answers",
			"broker", b.addr, "err", err)
	case err != nil:
		b.err = err
	case !b.since.IsZero():
		b.log.Info("broker reached", "broker", b.addr, "after", time.Since(b.since).Round(time.Millisecond))
		b.since, b.err = time.Time{}, nil
	}
}

// Run warns every brokerWarnEvery while the broker has been unreachable
// that long, until ctx is done; it returns nil.
func (b *brokerWatch) Run(ctx context.Context) error {
	t := time.NewTicker(brokerWarnEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		b.mu.Lock()
		if !b.since.IsZero() && time.Since(b.since) >= brokerWarnEvery {
			b.log.Warn("still cannot reach the broker", "broker", b.addr, "for", time.Since(b.since).Round(time.Second), "err", b.err)
		}
		b.mu.Unlock()
	}
}
