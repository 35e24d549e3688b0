package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/internal/shapes"
)

// Timings of the warm session.
const (
	// warmPing is how often a standby runs the warm-up again (its
	// keepalive; it also reloads what a catalog change invalidated).
	warmPing = 15 * time.Second
	// warmTimeout bounds a dial and a warm-up.
	warmTimeout = 5 * time.Second
	// warmRetry is the pause after a failure.
	warmRetry = 5 * time.Second
	// firstUseTimeout bounds the first statement after a grant: a session
	// that died without a word must not hold up the start (a new one is
	// opened instead).
	firstUseTimeout = 2 * time.Second
)

// warmSession keeps a normal PostgreSQL session open while the worker
// stands by, so that a lease's start finds its admin session (coverage,
// publication, slot state) ready instead of waiting for a new backend, and
// that backend's catalog caches loaded: it runs the start's reads
// (shapes.WarmUp, replication.WarmUp) once connected and then every
// warmPing, discarding their results. It writes nothing and touches no
// slot; its application_name says standby until take hands it to a lease,
// which names it with the epoch first. One idle backend per standby
// worker is its cost. Create it with newWarmSession; run keeps it.
type warmSession struct {
	url, streamID string
	log           *slog.Logger
	// prepared is 1 while a warmed-up session waits for the grant.
	prepared prometheus.Gauge

	stop chan struct{} // closed by take
	done chan struct{} // closed when run returned
	conn *pgx.Conn     // run's; take's once done is closed
}

func newWarmSession(url, streamID string, log *slog.Logger, prepared prometheus.Gauge) *warmSession {
	return &warmSession{url: url, streamID: streamID, log: log, prepared: prepared, stop: make(chan struct{}), done: make(chan struct{})}
}

// run opens the session and keeps it (warm-up every warmPing, a new dial
// after a failure) until take or ctx is done (then it closes it).
// prepared reports whether it is ready. It returns nil.
func (w *warmSession) run(ctx context.Context) error {
	defer close(w.done)
	defer w.prepared.Set(0)
	for {
		if err := w.refresh(ctx); err != nil {
			if ctx.Err() == nil {
				w.log.Debug("warm session failed", "err", err, "retry_in", warmRetry)
			}
			w.close()
			w.prepared.Set(0)
		} else {
			w.prepared.Set(1)
		}
		every := warmPing
		if w.conn == nil {
			every = warmRetry
		}
		t := time.NewTimer(every)
		select {
		case <-w.stop:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			w.close()
			return nil
		case <-t.C:
		}
	}
}

// refresh dials when there is no session, and runs the warm-up.
func (w *warmSession) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	if w.conn == nil {
		c, err := replication.ConnectAdmin(ctx, w.url, "baton-worker-admin:"+w.streamID+":standby")
		if err != nil {
			return err
		}
		w.conn = c
	}
	if err := replication.WarmUp(ctx, w.conn, stream.SlotName(w.streamID), stream.PublicationName(w.streamID)); err != nil {
		return err
	}
	return shapes.WarmUp(ctx, w.conn, w.streamID, stream.PublicationName(w.streamID))
}

func (w *warmSession) close() {
	if w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		w.conn.Close(ctx)
		cancel()
		w.conn = nil
	}
}

// take stops run (waiting for a dial or ping in progress) and returns the
// session, or nil when there is none (or it was taken). The caller owns
// it. Call it from one goroutine only, after run was started.
func (w *warmSession) take() *pgx.Conn {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	c := w.conn
	w.conn = nil
	return c
}

// adminSession is the admin session of the lease of epoch: the warm
// session (if any) renamed for the epoch — the statement that renames it
// also proves it alive — or else a new one. The caller closes it.
func adminSession(ctx context.Context, warm *warmSession, url, streamID string, epoch uint64) (*pgx.Conn, error) {
	app := fmt.Sprintf("baton-worker-admin:%s:%d", streamID, epoch)
	if warm != nil {
		if c := warm.take(); c != nil {
			sctx, cancel := context.WithTimeout(ctx, firstUseTimeout)
			_, err := c.Exec(sctx, "SELECT set_config('application_name', $1, false)", app)
			cancel()
			if err == nil {
				return c, nil
			}
			warm.log.Debug("warm session unusable; opening a new one", "err", err)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			c.Close(cctx)
			cancel()
		}
	}
	return replication.ConnectAdmin(ctx, url, app)
}

// admining is an admin session being readied (adminSession) in the
// background.
type admining struct {
	done chan struct{}
	c    *pgx.Conn
	err  error
}

// startAdmin starts adminSession. Call conn for the session, and close
// once done with it (in every case: it waits for the dial and closes the
// session).
func startAdmin(ctx context.Context, warm *warmSession, url, streamID string, epoch uint64) *admining {
	a := &admining{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.c, a.err = adminSession(ctx, warm, url, streamID, epoch)
	}()
	return a
}

// conn waits for the session.
func (a *admining) conn() (*pgx.Conn, error) {
	<-a.done
	return a.c, a.err
}

// close waits for the dial and closes the session, if any.
func (a *admining) close(ctx context.Context) {
	<-a.done
	closeSession(ctx, a.c)
}

// closeSession closes c (nil is fine), bounded.
func closeSession(ctx context.Context, c *pgx.Conn) {
	if c == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	c.Close(cctx)
}
