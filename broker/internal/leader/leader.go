// Package leader runs the broker's leader loop: connect the lock session,
// wait for the stream's advisory lock, claim the stream (bump the epoch),
// grant the lease to an attached worker, heartbeat and renew, and let go —
// on SIGTERM after the worker has released, on a failed heartbeat at once,
// at once when the worker released saying its process is stopping, and
// after BATON_WORKER_ABSENCE_TIMEOUT without a worker.
//
// It is the only goroutine that touches the lock session, and it reports
// what it does through health statuses, metrics and logs.
package leader

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"

	"github.com/batonhq/baton/broker/internal/lease"
	"github.com/batonhq/baton/broker/internal/lock"
	"github.com/batonhq/baton/broker/internal/metrics"
)

// Health service names (DESIGN §4).
const (
	ServiceLiveness  = "liveness"
	ServiceReadiness = "readiness"
	ServiceLeader    = "leader"
)

// Health is where the loop reports readiness and leadership.
type Health interface {
	SetServingStatus(service string, status healthpb.HealthCheckResponse_ServingStatus)
}

// Config is what the loop needs to know.
type Config struct {
	Lock              lock.Options
	HeartbeatInterval time.Duration
	LeaseTTL          time.Duration
	AbsenceTimeout    time.Duration
	DrainTimeout      time.Duration
	// LogEpoch, when set, is told the epoch while the loop holds the
	// stream (the claim's, then each grant's) and 0 when it lets go, for
	// the log lines to carry it.
	LogEpoch interface{ Set(epoch uint64) }
}

// Loop is the leader loop. Create it with New and call Run once.
type Loop struct {
	cfg     Config
	hub     *lease.Hub
	health  Health
	metrics *metrics.Broker
	log     *slog.Logger

	ready  bool
	leader bool

	// kept is the session of the last holding when it let go of the lock
	// cleanly (see reuse), from keptAt on; nil if there is none.
	kept   *lock.Session
	keptAt time.Time
}

// New returns a leader loop driving hub.
func New(cfg Config, hub *lease.Hub, health Health, m *metrics.Broker, log *slog.Logger) *Loop {
	return &Loop{cfg: cfg, hub: hub, health: health, metrics: m, log: log}
}

// Log attribute keys.
const (
	keyEpoch  = "epoch"
	keyWorker = "worker"
	keyPID    = "backend_pid"
)

// holderWatchFirst is how soon a broker that let go of the lock reads the
// holder first: a successor is usually granted within milliseconds.
const holderWatchFirst = 50 * time.Millisecond

// errShutdown ends a holding period because Run's context is done.
var errShutdown = errors.New("shutting down")

// errAbsent ends a holding period because no worker attached in time.
var errAbsent = errors.New("no worker attached")

// errStopped ends a holding period because the worker released saying its
// process is stopping.
var errStopped = errors.New("worker stopped")

// Run loops until ctx is done. On return the lock is released (after the
// worker released or the drain timeout passed) and the session closed. It
// returns nil on a clean shutdown, or an error that the broker cannot recover
// from (a lock session that is not direct).
func (l *Loop) Run(ctx context.Context) error {
	defer l.setReady(false)
	defer l.setLeader(false)
	defer l.dropKept(ctx)
	needWorker := false
	backoff := newBackoff()
	for ctx.Err() == nil {
		if needWorker {
			l.hub.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_CONNECTING})
			if err := l.awaitWorker(ctx); err != nil {
				return nil
			}
			needWorker = false
		}
		err := l.session(ctx, backoff)
		switch {
		case errors.Is(err, errShutdown) || ctx.Err() != nil:
			return nil
		case errors.Is(err, errAbsent) || errors.Is(err, errStopped):
			needWorker = true
		case errors.Is(err, lock.ErrNotDirect):
			return err
		case err != nil:
			// Not connected (or not usable) until the next session is up.
			l.setReady(false)
			l.metrics.SessionErrors.Inc()
			d := backoff.next()
			l.log.Warn("lock session failed; reconnecting", "err", err, "retry_in", d.Round(time.Millisecond))
			if sleep(ctx, d) != nil {
				return nil
			}
		}
	}
	return nil
}

// session runs one lock session: connect, wait, hold. It returns why the
// session ended.
func (l *Loop) session(ctx context.Context, bo *backoff) error {
	l.hub.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_CONNECTING})
	s, st, err := l.connect(ctx)
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if keep {
			l.kept, l.keptAt = s, time.Now()
		} else {
			s.Close(ctx)
		}
	}()
	l.hub.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT, Holder: holderOf(st)})
	l.setReady(true)
	if st.Held {
		l.log.Info("waiting for the stream's lock", "holder", st.Holder, "holder_epoch", st.Epoch,
			"holder_pid", st.HeldByPID, "last_heartbeat", st.LastHeartbeat)
	} else {
		l.log.Info("waiting for the stream's lock (free)", keyPID, s.PID())
	}
	start := time.Now()
	stopWatch := l.watchHolder(ctx, batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT, l.cfg.HeartbeatInterval)
	err = s.Acquire(ctx)
	stopWatch()
	if err != nil {
		if ctx.Err() != nil {
			return errShutdown
		}
		return err
	}
	wait := time.Since(start)
	l.metrics.LockWait.Observe(wait.Seconds())
	// When a worker is waiting, the first grant is recorded by the claim
	// itself: one statement between the lock and the grant.
	var claimedFor *lease.Worker
	if w, notBefore := l.hub.Candidate(); w != nil && !time.Now().Before(notBefore) {
		claimedFor = w
	}
	claimStart := time.Now()
	claim, err := s.Claim(ctx, grantee(claimedFor))
	if err != nil {
		return err
	}
	if time.Since(claimStart) >= l.cfg.Lock.SessionTimeout-l.cfg.LeaseTTL {
		claimedFor = nil // too slow to grant on: record the grant again
	}
	if wait := previousLeaseLeft(claim.Previous(), claim.ServerStartedAt(), claim.AcquiredAt(), l.cfg.Lock.SessionTimeout, l.cfg.LeaseTTL); wait > 0 {
		// On this broker's clock, from now: later than from the claim.
		l.hub.DelayGrants(time.Now().Add(wait))
		claimedFor = nil // granted later: recorded then
		l.log.Info("PostgreSQL restarted while the previous holder held the lock: waiting until its worker's lease has expired before granting",
			"previous_epoch", claim.Previous().Epoch, "previous_heartbeat", claim.Previous().LastHeartbeat,
			"server_started", claim.ServerStartedAt(), "wait", wait.Round(time.Millisecond))
	}
	bo.reset()
	l.setLogEpoch(claim.Epoch())
	defer l.setLogEpoch(0)
	l.metrics.Acquisitions.Inc()
	l.metrics.LockHeld.Set(1)
	l.metrics.Epoch.Set(float64(claim.Epoch()))
	defer l.metrics.LockHeld.Set(0)
	h := &holding{Loop: l, claim: claim, claimedFor: claimedFor}
	prev := claim.Previous()
	args := []any{keyEpoch, claim.Epoch(), keyPID, s.PID(), "waited", wait.Round(time.Millisecond)}
	if prev.Recorded {
		args = append(args, "previous_holder", prev.Holder, "previous_epoch", prev.Epoch)
	}
	if h.handoff = handoffOf(st, prev, claim.AcquiredAt(), claimStart); h.handoff != nil {
		l.metrics.Handoffs.WithLabelValues(h.handoff.cause).Inc()
		args = append(args, "handoff", h.handoff.cause)
	}
	l.log.Info("lock acquired", args...)
	l.hub.SetHolding(lease.HolderFrom(l.cfg.Lock.Holder, claim.Epoch(), int32(s.PID()), claim.AcquiredAt(), claim.AcquiredAt()))
	defer l.hub.SetHolding(nil)
	err = h.run(ctx)
	keep = (errors.Is(err, errStopped) || errors.Is(err, errAbsent)) && h.released && !s.IsClosed()
	return err
}

// connect returns a lock session, with the stream's status read on it:
// the kept one (see reuse) if it still answers, else a new one.
func (l *Loop) connect(ctx context.Context) (*lock.Session, lock.Status, error) {
	if s := l.reuse(ctx); s != nil {
		st, err := s.Status(ctx)
		if err == nil && !(st.Held && st.HeldByPID == int32(s.PID())) {
			return s, st, nil
		}
		// It failed, or (never seen) it still holds the lock: a new one.
		s.Close(ctx)
		l.log.Debug("kept lock session not reused; connecting a new one", "err", err)
	}
	s, err := lock.Connect(ctx, l.cfg.Lock)
	if err != nil {
		return nil, lock.Status{}, err
	}
	if err := s.EnsureSchema(ctx); err != nil {
		s.Close(ctx)
		return nil, lock.Status{}, err
	}
	st, err := s.Status(ctx)
	if err != nil {
		s.Close(ctx)
		return nil, lock.Status{}, err
	}
	return s, st, nil
}

// reuse hands over the kept session: that of a holding that released the
// lock cleanly (a stopping worker, or no worker within the absence
// timeout) and then waited for a worker. Waiting for the lock again on it
// spares a connection, its checks and the schema check at the start of
// the next session, which is on the path of a worker's restart. The
// session holds no lock, and PostgreSQL ends it once idle for the session
// timeout (idle_session_timeout), so it is used only if it waited less
// than half of that; otherwise it is closed. It returns nil when there is
// none.
func (l *Loop) reuse(ctx context.Context) *lock.Session {
	s := l.kept
	l.kept = nil
	if s == nil {
		return nil
	}
	if time.Since(l.keptAt) >= l.cfg.Lock.SessionTimeout/2 || s.IsClosed() {
		s.Close(ctx)
		return nil
	}
	return s
}

// dropKept closes the kept session, if any.
func (l *Loop) dropKept(ctx context.Context) {
	if l.kept != nil {
		l.kept.Close(ctx)
		l.kept = nil
	}
}

// A handoff is an acquisition that took the stream over from a holding
// that overlapped this broker's wait for the lock: the lock was held when
// the wait began (waiting.Held), or taken by someone after it (the
// previous holding began after waiting.Now). A broker that finds the
// stream free, or last held before it began to wait, starts it: no
// handoff.
type handoff struct {
	// cause is the previous holding's release cause (lock.Release*),
	// "released" for a release with no recorded cause, or
	// "session_ended" when it ended without a release.
	cause string
	// from is when the previous holding ended (lock.Previous.End), on
	// this process's clock.
	from time.Time
}

// handoffOf returns the handoff of a claim made at acquiredAt on
// PostgreSQL's clock and claimStart on ours, or nil.
func handoffOf(waiting lock.Status, prev lock.Previous, acquiredAt, claimStart time.Time) *handoff {
	if !prev.Recorded || !(waiting.Held || prev.AcquiredAt.After(waiting.Now)) {
		return nil
	}
	cause := "session_ended"
	if prev.ReleasedAt != nil {
		cause = cmp.Or(prev.ReleaseCause, "released")
	}
	return &handoff{cause: cause, from: claimStart.Add(-acquiredAt.Sub(prev.End()))}
}

// previousLeaseLeft is how long, from the claim, the previous holder's
// worker may still hold a lease it believes valid, or 0.
//
// I1 (no two valid leases at once) rests on the lease TTL being shorter
// than the lock session timeout: a holder's session ends without a
// release only after the session timeout since its last heartbeat (a
// freeze, a partition), or at once when its broker dies, whose worker
// then sees its lease stream end and stops. A PostgreSQL restart ends the
// session at once while its broker lives on: that broker learns of it
// only when its next heartbeat fails, and may renew until then, so its
// worker's lease can outlive the session by up to the session timeout.
// The randomized fault test saw the next epoch granted 165 ms before the
// old broker revoked, and the old worker open the slot again meanwhile.
// A renewal is sent at most sessionTimeout - ttl after the start of the
// heartbeat it follows and is valid for ttl from its receipt, so such a
// lease ends by the last heartbeat plus the session timeout, plus a
// delivery margin (as the Hub allows for its own grants). So when the
// previous holder did not release and PostgreSQL started after its last
// heartbeat, the grant waits until then. Both times are PostgreSQL's
// clock.
func previousLeaseLeft(prev lock.Previous, serverStart, acquiredAt time.Time, sessionTimeout, ttl time.Duration) time.Duration {
	if !prev.Recorded || prev.ReleasedAt != nil || !serverStart.After(prev.LastHeartbeat) {
		return 0
	}
	end := prev.LastHeartbeat.Add(sessionTimeout + max(100*time.Millisecond, ttl/10))
	return max(end.Sub(acquiredAt), 0)
}

// watchHolder keeps the holder shown to standby workers current while
// this broker does not hold the lock: on a connection of its own it reads
// the state table at once, then whenever a broker announces a grant of the
// stream (lock.HolderChannel) and at least every period — first, doubling
// up to the heartbeat interval — and the Hub tells the workers (with
// reason) again when the holder, its epoch, its worker or the worker's URL
// changed (a new grant on another pod). A failed connection is dialled
// again after the period. stop ends it and waits for it.
func (l *Loop) watchHolder(ctx context.Context, reason batonv1.StandbyReason, first time.Duration) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var w *lock.Watcher
		defer func() {
			if w != nil {
				w.Close(wctx)
			}
		}()
		period := min(first, l.cfg.HeartbeatInterval)
		for wait := false; ; wait = true {
			if wait && w != nil {
				if _, err := w.AwaitChange(wctx, period); err != nil {
					l.log.Debug("holder watch failed", "err", err)
					w.Close(wctx)
					w = nil
				}
			} else if wait && sleep(wctx, period) != nil {
				return
			}
			if wctx.Err() != nil {
				return
			}
			period = min(2*period, l.cfg.HeartbeatInterval)
			if w == nil {
				var err error
				if w, err = lock.DialWatcher(wctx, l.cfg.Lock); err != nil {
					l.log.Debug("holder watch failed", "err", err)
					continue
				}
			}
			rctx, rcancel := context.WithTimeout(wctx, l.cfg.Lock.SessionTimeout)
			st, err := w.Status(rctx)
			rcancel()
			if err != nil {
				l.log.Debug("holder watch failed", "err", err)
				w.Close(wctx)
				w = nil
				continue
			}
			l.hub.SetStandby(lease.Standby{Reason: reason, Holder: holderOf(st)})
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// awaitWorker blocks until a worker that may be granted is attached (one
// whose stream has not released a grant: a worker that released because
// its process is stopping stays attached until it exits). Meanwhile the
// attached workers are told who holds the stream: a stopping worker learns
// its successor's URL within moments of the grant, and forwards the shape
// requests that still reach it there while it drains.
func (l *Loop) awaitWorker(ctx context.Context) error {
	l.setReady(false)
	stopWatch := l.watchHolder(ctx, batonv1.StandbyReason_STANDBY_REASON_CONNECTING, holderWatchFirst)
	defer stopWatch()
	// The kept session (see reuse) is closed once too old to be used,
	// before PostgreSQL ends it for being idle (which it logs as FATAL).
	var stale <-chan time.Time
	if l.kept != nil {
		t := time.NewTimer(time.Until(l.keptAt.Add(l.cfg.Lock.SessionTimeout / 2)))
		defer t.Stop()
		stale = t.C
	}
	for {
		if w, _ := l.hub.Candidate(); w != nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.hub.Events():
		case <-stale:
			l.dropKept(ctx)
			stale = nil
		}
	}
	l.log.Info("worker attached; waiting for the lock again")
	return nil
}

func (l *Loop) setLogEpoch(e uint64) {
	if l.cfg.LogEpoch != nil {
		l.cfg.LogEpoch.Set(e)
	}
}

func (l *Loop) setReady(v bool) {
	if v == l.ready {
		return
	}
	l.ready = v
	l.health.SetServingStatus(ServiceReadiness, status(v))
}

func (l *Loop) setLeader(v bool) {
	if v == l.leader {
		return
	}
	l.leader = v
	l.health.SetServingStatus(ServiceLeader, status(v))
}

func status(v bool) healthpb.HealthCheckResponse_ServingStatus {
	if v {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

func holderOf(st lock.Status) *batonv1.Holder {
	if !st.Recorded {
		return nil
	}
	hd := lease.HolderFrom(st.Holder, st.Epoch, st.BackendPID, st.AcquiredAt, st.LastHeartbeat)
	hd.Worker, hd.WorkerUrl = st.Worker, st.WorkerURL
	return hd
}

// backoff is a capped, jittered exponential backoff for reconnecting.
type backoff struct{ n int }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) reset() { b.n = 0 }

func (b *backoff) next() time.Duration {
	const base, ceiling = 100 * time.Millisecond, 5 * time.Second
	d := base << min(b.n, 6)
	b.n++
	d = min(d, ceiling)
	// Full jitter in [d/2, d): brokers restarted together do not reconnect in
	// lock step.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func grantee(w *lease.Worker) lock.Grantee {
	if w == nil {
		return lock.Grantee{}
	}
	return lock.Grantee{ID: w.ID, URL: w.URL}
}
