package leader

import (
	"context"
	"errors"
	"strings"
	"time"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"

	"github.com/batonhq/baton/broker/internal/lease"
	"github.com/batonhq/baton/broker/internal/lock"
	"github.com/batonhq/baton/broker/internal/metrics"
)

// holding is one period of holding the lock: the claim owns the stream's
// epoch.
type holding struct {
	*Loop
	claim *lock.Claim
	// released: the claim was released (Claim.Release returned nil).
	released bool
	// claimedFor is the worker the claim already recorded as grantee.
	claimedFor *lease.Worker
	// handoff, until the first grant, is the handoff the claim made; the
	// grant ends it.
	handoff *handoff
}

// renewWindow is how long after a heartbeat started a renewal may still be
// sent: PostgreSQL cannot end the session (idle_session_timeout) before the
// heartbeat started plus the session timeout, and the worker's lease runs
// TTL from receipt, so renewing within (session timeout - TTL) of the
// heartbeat's start keeps every lease inside the lock's life.
func (h *holding) renewWindow() time.Duration {
	return h.cfg.Lock.SessionTimeout - h.cfg.LeaseTTL
}

// period is the heartbeat and renewal period: the heartbeat interval, but at
// least three renewals per TTL.
func (h *holding) period() time.Duration {
	return min(h.cfg.HeartbeatInterval, h.cfg.LeaseTTL/3)
}

func (h *holding) run(ctx context.Context) error {
	defer h.setLeader(false)
	defer h.metrics.LeaseState.Set(metrics.LeaseNone)
	tick := time.NewTicker(h.period())
	defer tick.Stop()
	var absence, retry *time.Timer
	defer func() {
		stopTimer(absence)
		stopTimer(retry)
	}()
	for {
		if e, ok := h.hub.Stopped(); ok && h.claim.Granted() && e == h.claim.Epoch() {
			return h.releaseStopped(ctx)
		}
		wait, err := h.tryGrant(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return h.drain(ctx)
			}
			return h.lost(err)
		}
		if wait > 0 && retry == nil {
			retry = time.NewTimer(wait)
		}
		attached := h.hub.Attached()
		h.report(attached)
		switch {
		case attached == 0 && absence == nil:
			absence = time.NewTimer(h.cfg.AbsenceTimeout)
			h.log.Info("holding the lock with no worker attached", "release_in", h.cfg.AbsenceTimeout)
		case attached > 0 && absence != nil:
			stopTimer(absence)
			absence = nil
		}
		select {
		case <-ctx.Done():
			return h.drain(ctx)
		case <-tick.C:
			if err := h.beat(ctx, true); err != nil {
				if ctx.Err() != nil {
					return h.drain(ctx)
				}
				return h.lost(err)
			}
		case <-h.hub.Events():
		case <-timerC(retry):
			retry = nil
		case <-timerC(absence):
			absence = nil
			if h.hub.Attached() == 0 {
				return h.releaseAbsent(ctx)
			}
		}
	}
}

// tryGrant grants the lease to the next attached worker when no grant is
// current. It returns how long to wait when a previous grant may still be
// live on its worker's clock.
func (h *holding) tryGrant(ctx context.Context) (time.Duration, error) {
	w, notBefore := h.hub.Candidate()
	if w == nil {
		return 0, nil
	}
	if d := time.Until(notBefore); d > 0 {
		h.hub.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_PREVIOUS_GRANT})
		return d, nil
	}
	// Statements while holding the lock are never cancelled midway (that
	// closes the session and frees the lock before the drain); they are
	// bounded by the renewal window instead, and a grant that took longer
	// than the window is not handed out (its lease could outlive the lock).
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.renewWindow())
	start := time.Now()
	next, err := h.claim.Grant(gctx, grantee(w), w == h.claimedFor)
	cancel()
	if err != nil {
		return 0, err
	}
	if time.Since(start) >= h.renewWindow() {
		return 0, nil // retry with a fresh epoch on the next pass
	}
	h.metrics.Epoch.Set(float64(next))
	h.setLogEpoch(next)
	if !h.hub.Grant(w, next) {
		return 0, nil // the worker left meanwhile; the next grant bumps again
	}
	h.metrics.Grants.Inc()
	args := []any{keyEpoch, next, keyWorker, w.ID}
	if h.handoff != nil {
		took := time.Since(h.handoff.from)
		h.metrics.HandoffDuration.Observe(took.Seconds())
		args = append(args, "handoff", h.handoff.cause, "handoff_took", took.Round(time.Microsecond))
		h.handoff = nil
	}
	h.log.Info("lease granted", args...)
	// After the grant is on its way: the brokers waiting (and the one that
	// just let go) read the new holder now, not at their next poll.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.renewWindow())
	if err := h.claim.Announce(actx); err != nil {
		h.log.Debug("grant not announced; other brokers learn it at their next poll", keyEpoch, next, "err", err)
	}
	cancel()
	return 0, nil
}

// report publishes readiness, leadership and lease state.
func (h *holding) report(attached int) {
	g, ok := h.hub.Current()
	h.setReady(attached > 0)
	h.setLeader(ok && !g.Revoked)
	switch {
	case !ok:
		h.metrics.LeaseState.Set(metrics.LeaseNone)
	case g.Revoked:
		h.metrics.LeaseState.Set(metrics.LeaseRevoking)
	default:
		h.metrics.LeaseState.Set(metrics.LeaseGranted)
	}
}

// beat runs one heartbeat and, if renew and it was quick enough, renews the
// grant.
func (h *holding) beat(ctx context.Context, renew bool) error {
	window := h.renewWindow()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), window)
	defer cancel()
	start := time.Now()
	if err := h.claim.Heartbeat(bctx, h.hub.DurableLSN()); err != nil {
		h.metrics.HeartbeatFailures.Inc()
		return err
	}
	took := time.Since(start)
	h.metrics.HeartbeatLatency.Observe(took.Seconds())
	if renew && took < window {
		h.hub.RenewFrom(h.claim.Epoch(), start)
	}
	return nil
}

// lost ends a holding period whose lock session failed: the grant is revoked
// at once; the session is closed by the caller.
func (h *holding) lost(err error) error {
	reason := batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST
	if errors.Is(err, lock.ErrReplaced) {
		reason = batonv1.RevokeReason_REVOKE_REASON_REPLACED
	}
	if _, ok := h.hub.Current(); ok {
		h.metrics.Revocations.WithLabelValues(reasonLabel(reason)).Inc()
	}
	h.hub.Revoke(reason, 0, err.Error())
	h.setLeader(false)
	h.log.Error("lock lost; lease revoked", keyEpoch, h.claim.Epoch(), "reason", reasonLabel(reason), "err", err)
	return err
}

// drain is the graceful stop: revoke with reason shutdown, wait for the
// worker's release (at most the drain timeout, and never less than the
// revoked lease's remaining life), heartbeating meanwhile, then record the
// release and unlock.
func (h *holding) drain(ctx context.Context) error {
	dctx := context.WithoutCancel(ctx)
	h.hub.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_SHUTTING_DOWN})
	deadline := time.Now().Add(h.cfg.DrainTimeout)
	if g, ok := h.hub.Current(); ok {
		h.hub.Revoke(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, drainSent(h.cfg.DrainTimeout), "broker shutting down")
		h.metrics.Revocations.WithLabelValues(reasonLabel(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN)).Inc()
		h.setLeader(false)
		h.metrics.LeaseState.Set(metrics.LeaseRevoking)
		h.log.Info("lease revoked for shutdown; waiting for the worker to release", keyEpoch, g.Epoch, keyWorker, g.Worker.ID)
		if err := h.await(dctx, deadline, func() bool { _, ok := h.hub.Current(); return !ok }); err != nil {
			return h.lost(err)
		}
		if g, ok := h.hub.Current(); ok {
			h.log.Warn("worker did not release within the drain timeout; waiting for its lease to expire",
				keyEpoch, g.Epoch, "drain_timeout", h.cfg.DrainTimeout)
			expiry := g.LastRenewal.Add(h.cfg.LeaseTTL + max(100*time.Millisecond, h.cfg.LeaseTTL/10))
			if err := h.await(dctx, expiry, func() bool { return false }); err != nil {
				return h.lost(err)
			}
		}
	}
	// A grant that ended without Released may still be live on its worker.
	if err := h.await(dctx, h.hub.NotBefore(), func() bool { return false }); err != nil {
		return h.lost(err)
	}
	if err := h.release(dctx, lock.ReleaseShutdown); err != nil {
		h.log.Error("release failed; the lock ends with the session", "err", err)
		return errShutdown
	}
	h.log.Info("lock released", keyEpoch, h.claim.Epoch())
	return errShutdown
}

// drainSent is the drain time told to the worker in a shutdown's Revoked:
// the drain timeout less a margin for delivery (the worker counts from
// receipt, this broker from before sending), so that a worker that uses
// all of it has released before the broker stops waiting.
func drainSent(timeout time.Duration) time.Duration {
	return max(timeout-max(100*time.Millisecond, timeout/10), 0)
}

// releaseAbsent lets go of the lock after the worker absence timeout.
func (h *holding) releaseAbsent(ctx context.Context) error {
	if err := h.await(ctx, h.hub.NotBefore(), func() bool { return false }); err != nil {
		return h.lost(err)
	}
	if err := h.release(ctx, lock.ReleaseWorkerAbsent); err != nil {
		return err
	}
	h.setReady(false)
	h.log.Warn("no worker attached within the absence timeout; lock released", keyEpoch, h.claim.Epoch(),
		"absence_timeout", h.cfg.AbsenceTimeout)
	return errAbsent
}

// releaseStopped lets go of the lock at once after the grantee released
// saying its process is stopping (Kubernetes stops a native sidecar's main
// container before the sidecar): a standby pod takes over without waiting
// for this broker's own SIGTERM or the absence timeout. The broker then
// waits, not ready, for a worker to attach again.
func (h *holding) releaseStopped(ctx context.Context) error {
	dctx := context.WithoutCancel(ctx)
	// A grant that ended without Released may still be live on its worker.
	if err := h.await(dctx, h.hub.NotBefore(), func() bool { return false }); err != nil {
		return h.lost(err)
	}
	start := time.Now()
	if err := h.release(dctx, lock.ReleaseWorkerStopping); err != nil {
		// The caller closes the session, which ends the lock too.
		h.log.Error("release failed; the lock ends with the session", keyEpoch, h.claim.Epoch(), "err", err)
	}
	h.setLeader(false)
	h.setReady(false)
	h.metrics.StoppingReleases.Inc()
	h.log.Info("lease released by its stopping worker; lock released for a handoff", keyEpoch, h.claim.Epoch(),
		"took", time.Since(start).Round(time.Microsecond))
	return errStopped
}

func (h *holding) release(ctx context.Context, cause string) error {
	rctx, cancel := context.WithTimeout(ctx, h.cfg.Lock.SessionTimeout)
	defer cancel()
	err := h.claim.Release(rctx, h.hub.DurableLSN(), cause)
	h.released = err == nil
	return err
}

// await heartbeats (without renewing) until done() or the deadline.
func (h *holding) await(ctx context.Context, deadline time.Time, done func() bool) error {
	tick := time.NewTicker(h.period())
	defer tick.Stop()
	for !done() {
		d := time.Until(deadline)
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-h.hub.Events():
		case <-t.C:
		case <-tick.C:
			if err := h.beat(ctx, false); err != nil {
				t.Stop()
				return err
			}
		}
		t.Stop()
	}
	return nil
}

func reasonLabel(r batonv1.RevokeReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "REVOKE_REASON_"))
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
