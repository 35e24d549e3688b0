package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/tests/harness"
)

// grant is a Granted one pod's proxy forwarded.
type grant struct {
	pod   *pod
	epoch uint64
	at    time.Time
	index int // in the pod's proxy events
}

func (k *kit) awaitGrant(ctx context.Context, p *pod, from int, timeout time.Duration) (grant, error) {
	e, i, err := p.proxy.awaitGranted(ctx, from, timeout)
	if err != nil {
		if werr := p.workerExited(); werr != nil {
			return grant{}, fmt.Errorf("%w; %w", err, werr)
		}
		return grant{}, err
	}
	return grant{pod: p, epoch: e.Broker.GetGranted().GetEpoch(), at: e.At, index: i}, nil
}

// scenario runs the pods through the lease's life: first grant, standby,
// a frozen broker (handoff a to b), a broker's shutdown (handoff b to a),
// a lost lock, a killed worker; and checks each obligation on the way.
func (k *kit) scenario(ctx context.Context) error {
	a, b := k.pods[0], k.pods[1]
	slot := stream.SlotName(StreamID)

	// 1. Pod a starts while the kit holds the stream's lock: its worker
	// waits, then is granted.
	lock, err := k.pg.Connect(ctx)
	if err != nil {
		return &setupError{err}
	}
	defer lock.Close(context.WithoutCancel(ctx))
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", stream.LockNamespace, stream.LockKey(StreamID)); err != nil {
		return &setupError{fmt.Errorf("take the stream's lock: %w", err)}
	}
	if err := a.startBroker(); err != nil {
		return &setupError{err}
	}
	if err := a.startWorker(); err != nil {
		return &setupError{err}
	}
	start := time.Now()
	if _, _, err := a.proxy.await(ctx, 0, startTimeout, "Standby", func(e Event) bool { return e.Broker.GetStandby() != nil }); err != nil {
		return k.stepFailed(a, "no-replication-before-granted/a", err)
	}
	if err := sleep(ctx, standbyWindow); err != nil {
		return err
	}
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", stream.LockNamespace, stream.LockKey(StreamID)); err != nil {
		return &setupError{err}
	}
	ga, err := k.awaitGrant(ctx, a, 0, startTimeout)
	if err != nil {
		return k.stepFailed(a, "no-replication-before-granted/a", err)
	}
	k.checkNoReplication("no-replication-before-granted/a", start, ga.at, 0)
	if err := k.reached(); err != nil {
		return err
	}
	if err := k.checkEpochInApp(ctx, "epoch-in-application-name/a", ga); err != nil {
		return err
	}
	k.startWriting()
	if err := k.reached(); err != nil {
		return err
	}
	// W11, W9: a message of a kind the worker does not know, and a Revoked
	// for another epoch, change nothing.
	if err := k.checkIgnored(ctx, "ignores-unknown-messages/a", ga, unknownKind()); err != nil {
		return err
	}
	if err := k.checkIgnored(ctx, "ignores-other-epochs/a", ga, &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Revoked{Revoked: &batonv1.Revoked{
		Epoch: ga.epoch + 1, Reason: batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, Message: "conformance kit: a Revoked for another epoch", DrainTimeout: durationpb.New(0),
	}}}); err != nil {
		return err
	}
	if err := k.reached(); err != nil {
		return err
	}

	// 2. Pod b starts while a holds the stream: its worker waits.
	if err := b.startBroker(); err != nil {
		return &setupError{err}
	}
	if err := b.startWorker(); err != nil {
		return &setupError{err}
	}
	start = time.Now()
	if _, _, err := b.proxy.await(ctx, 0, startTimeout, "Standby", func(e Event) bool { return e.Broker.GetStandby() != nil }); err != nil {
		return k.stepFailed(b, "no-replication-before-granted/b", err)
	}
	// a reports a durable position meanwhile.
	_, _, perr := a.proxy.await(ctx, ga.index, progressTimeout, "Progress with a durable position", func(e Event) bool {
		return e.Worker.GetProgress().GetDurableLsn() > 0
	})
	if time.Since(start) < standbyWindow {
		if err := sleep(ctx, standbyWindow-time.Since(start)); err != nil {
			return err
		}
	}
	k.checkNoReplication("no-replication-before-granted/b", start, time.Now(), ga.epoch)
	if perr != nil {
		k.fail("progress-reported/a", "%v", perr)
	} else {
		k.pass("progress-reported/a", "durable %s reported under epoch %d", fmtLSN(a.durable(time.Now())), ga.epoch)
	}
	if err := k.reached(); err != nil {
		return err
	}

	// 3. Pod a's broker freezes: a's worker must stop within the TTL of
	// the last renewal, before b is granted.
	if err := a.broker.Signal(syscall.SIGSTOP); err != nil {
		return &setupError{err}
	}
	frozen := time.Now()
	last := ga.at
	for _, e := range a.proxy.Events() {
		if e.Broker.GetRenewed() != nil || e.Broker.GetGranted() != nil {
			last = e.At
		}
	}
	gb, err := k.awaitGrant(ctx, b, 0, sessionTimeout+20*time.Second)
	if err != nil {
		_ = a.broker.Signal(syscall.SIGCONT)
		return k.stepFailed(b, "stops-within-ttl/a", err)
	}
	if err := sleep(ctx, 300*time.Millisecond); err != nil { // samples after the grant
		return err
	}
	k.checkStopped(ga.epoch, frozen, last, gb)
	k.checkHandoff("handoff-frozen/a-to-b", a, gb)
	if err := a.broker.Signal(syscall.SIGCONT); err != nil {
		return &setupError{err}
	}
	if err := k.reached(); err != nil {
		return err
	}
	if err := k.checkEpochInApp(ctx, "epoch-in-application-name/b", gb); err != nil {
		return err
	}

	// 4. Pod b's broker stops (SIGTERM): Revoked shutdown; b's worker
	// drains and releases; a is granted.
	nb := len(b.proxy.Events())
	na := len(a.proxy.Events())
	if _, _, err := b.proxy.await(ctx, gb.index, progressTimeout, "Progress with a durable position", func(e Event) bool {
		return e.Worker.GetProgress().GetDurableLsn() > 0
	}); err != nil {
		k.fail("revoked-shutdown-drains/b", "before the shutdown: %v", err)
	}
	if err := b.broker.Signal(syscall.SIGTERM); err != nil {
		return &setupError{err}
	}
	k.checkRelease(ctx, "revoked-shutdown-drains/b", b, gb, nb, true)
	ga2, err := k.awaitGrant(ctx, a, na, drainTimeout+startTimeout)
	if err != nil {
		return k.stepFailed(a, "handoff-graceful/b-to-a", err)
	}
	k.checkHandoff("handoff-graceful/b-to-a", b, ga2)
	if err := k.reached(); err != nil {
		return err
	}
	if _, err := b.broker.Wait(drainTimeout + 5*time.Second); err != nil {
		return &setupError{err}
	}
	b.broker.Close()
	if err := b.startBroker(); err != nil {
		return &setupError{err}
	}

	// 5. a's worker gets SIGTERM (Kubernetes stops a pod's worker before
	// its broker): it releases saying it stops, and b takes over.
	if err := k.awaitSlotHeldBy(ctx, ga2, startTimeout); err != nil {
		k.fail("sigterm-release-stopping/a", "before SIGTERM: %v", err)
		return err
	}
	na, nb = len(a.proxy.Events()), len(b.proxy.Events())
	if err := a.worker.SignalGroup(syscall.SIGTERM); err != nil {
		return &setupError{err}
	}
	k.checkRelease(ctx, "sigterm-release-stopping/a", a, ga2, na, false)
	gb2, err := k.awaitGrant(ctx, b, nb, startTimeout)
	if err != nil {
		return k.stepFailed(b, "handoff-sigterm/a-to-b", err)
	}
	k.checkHandoff("handoff-sigterm/a-to-b", a, gb2)
	if _, err := a.worker.Wait(drainTimeout + 5*time.Second); err != nil {
		k.fail("handoff-sigterm/a-to-b", "pod a's worker did not exit after SIGTERM: %v", err)
		return err
	}
	if err := a.startWorker(); err != nil {
		return &setupError{err}
	}
	if err := k.reached(); err != nil {
		return err
	}

	// 6. b's broker loses its lock session; the kit holds the lock a
	// while, then lets the brokers have it again.
	if err := k.awaitSlotHeldBy(ctx, gb2, startTimeout); err != nil {
		k.fail("lock-lost-stops", "before the lock was lost: %v", err)
		return err
	}
	na, nb = len(a.proxy.Events()), len(b.proxy.Events())
	if err := k.stealLock(ctx, lock); err != nil {
		return &setupError{err}
	}
	// Pod a's broker, waiting for the lock, may have had it (and granted
	// it) for a moment before the kit took it: its grant is lost too.
	rv, _, err := b.proxy.await(ctx, nb, 10*time.Second, "Revoked", func(e Event) bool { return e.Broker.GetRevoked() != nil })
	if err != nil {
		_, _ = lock.Exec(ctx, "SELECT pg_advisory_unlock_all()")
		k.fail("lock-lost-stops", "%v", err)
		return err
	}
	if err := sleep(ctx, 2*leaseTTL); err != nil {
		return err
	}
	// A grant made just before the kit took the lock may reach its
	// proxy late: the next grant is one above every grant seen by now.
	var granted uint64
	for _, p := range k.pods {
		for _, e := range p.proxy.Events() {
			granted = max(granted, e.Broker.GetGranted().GetEpoch())
		}
	}
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		return &setupError{err}
	}
	g, err := k.awaitEither(ctx, na, nb, granted, startTimeout)
	if err != nil {
		k.fail("lock-lost-stops", "no grant after the lock came back: %v", err)
		return err
	}
	revokes := []Event{rv}
	for _, c := range []struct {
		p    *pod
		from int
	}{{a, na}, {b, nb}} {
		for _, e := range c.p.proxy.Events()[c.from:] {
			if e.Broker.GetRevoked() != nil && e.At.Before(g.at) && !e.At.Equal(rv.At) {
				revokes = append(revokes, e)
			}
		}
	}
	k.checkLockLost(revokes, gb2.epoch, g)
	if err := k.reached(); err != nil {
		return err
	}

	// 7. The holder's worker is killed and started again on its storage.
	if err := k.checkKill(ctx, g); err != nil {
		return err
	}

	// 8. Over the whole run.
	k.checkDelivered(ctx)
	k.checkWholeRun()
	_ = slot
	return nil
}

// stepFailed fails check with err (and how the worker ended, if it did)
// and returns err to end the run.
func (k *kit) stepFailed(p *pod, check string, err error) error {
	if werr := p.workerExited(); werr != nil && !strings.Contains(err.Error(), werr.Error()) {
		err = fmt.Errorf("%w; %w", err, werr)
	}
	if b := p.broker; b != nil {
		select {
		case <-b.Done():
			err = fmt.Errorf("%w; %s exited (%s), its output ends:\n%s", err, b.Name, b.ExitStatus(), harness.Tail(b.Output(), 5))
		default:
		}
	}
	k.fail(check, "%v", err)
	return err
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

// checkNoReplication: from from until to, no replication connection other
// than one of the holder's epoch (0: none at all) was seen.
func (k *kit) checkNoReplication(name string, from, to time.Time, holder uint64) {
	samples := k.obs.Samples(from, to)
	for _, s := range samples {
		for _, w := range s.Walsenders {
			if e, ok := WorkerEpoch(w.App, StreamID); holder != 0 && ok && e == holder {
				continue
			}
			k.fail(name, "replication connection %q (pid %d) seen %s after the worker started, before it was granted", w.App, w.PID, s.At.Sub(from).Round(time.Millisecond))
			return
		}
	}
	if len(samples) == 0 {
		k.fail(name, "no sample of PostgreSQL's views in the window")
		return
	}
	k.pass(name, "no replication connection in %d samples over %s before the grant", len(samples), to.Sub(from).Round(time.Millisecond))
}

// checkEpochInApp waits until the slot's consumer is a walsender and checks
// its application_name carries g's epoch.
func (k *kit) checkEpochInApp(ctx context.Context, name string, g grant) error {
	want := fmt.Sprintf("baton-worker:%s:%d", StreamID, g.epoch)
	var seen string
	err := harness.AwaitContext(ctx, startTimeout, sampleEvery, "the slot's consumer", func() (bool, error) {
		ss := k.obs.Samples(g.at, time.Now())
		if len(ss) == 0 {
			return false, nil
		}
		s := ss[len(ss)-1]
		for _, w := range s.Walsenders {
			if w.PID == s.SlotPID {
				seen = w.App
				return true, nil
			}
		}
		return false, g.pod.workerExited()
	})
	if err != nil {
		k.fail(name, "no walsender consumed the slot within %s of the grant: %v", startTimeout, err)
		return err
	}
	k.check(name, seen == want, "the slot's walsender is %q, want %q", seen, want)
	return nil
}

// awaitSlotHeldBy waits until the slot's consumer carries g's epoch.
func (k *kit) awaitSlotHeldBy(ctx context.Context, g grant, timeout time.Duration) error {
	want := fmt.Sprintf("baton-worker:%s:%d", StreamID, g.epoch)
	return harness.AwaitContext(ctx, timeout, sampleEvery, want+" consuming the slot", func() (bool, error) {
		ss := k.obs.Samples(g.at, time.Now())
		if len(ss) == 0 {
			return false, nil
		}
		s := ss[len(ss)-1]
		for _, w := range s.Walsenders {
			if w.PID == s.SlotPID && w.App == want {
				return true, nil
			}
		}
		return false, g.pod.workerExited()
	})
}

// walsendersOf are the walsenders of samples carrying epoch.
func walsenderOf(s Sample, epoch uint64) (Walsender, bool) {
	for _, w := range s.Walsenders {
		if e, ok := WorkerEpoch(w.App, StreamID); ok && e == epoch {
			return w, true
		}
	}
	return Walsender{}, false
}

// checkStopped: after the broker froze, the walsender of epoch was gone
// within the TTL of the last renewal, and before the successor's grant.
func (k *kit) checkStopped(epoch uint64, frozen, last time.Time, succ grant) {
	deadline := last.Add(leaseTTL + stopTolerance)
	var lastSeen time.Time
	for _, s := range k.obs.Samples(frozen, time.Now()) {
		if _, ok := walsenderOf(s, epoch); ok {
			lastSeen = s.At
		}
	}
	switch {
	case lastSeen.IsZero():
		k.pass("stops-within-ttl/a", "no walsender of epoch %d after the broker froze", epoch)
	case lastSeen.After(deadline):
		k.fail("stops-within-ttl/a", "the walsender of epoch %d was still there %s after the last renewal (TTL %s)", epoch, lastSeen.Sub(last).Round(time.Millisecond), leaseTTL)
	default:
		k.pass("stops-within-ttl/a", "the walsender of epoch %d last seen %s after the last renewal (TTL %s)", epoch, lastSeen.Sub(last).Round(time.Millisecond), leaseTTL)
	}
	if !lastSeen.IsZero() && !lastSeen.Before(succ.at) {
		k.fail("stops-before-successor-granted/a", "the walsender of epoch %d was still there %s after pod %s was granted epoch %d", epoch, lastSeen.Sub(succ.at).Round(time.Millisecond), succ.pod.name, succ.epoch)
	} else {
		k.pass("stops-before-successor-granted/a", "gone before pod %s was granted epoch %d (%s after the last renewal)", succ.pod.name, succ.epoch, succ.at.Sub(last).Round(time.Millisecond))
	}
}

// checkHandoff: when the successor was granted, the slot's confirmed
// position had not passed what the predecessor reported durable.
func (k *kit) checkHandoff(name string, pred *pod, succ grant) {
	ss := k.obs.Samples(time.Time{}, succ.at)
	if len(ss) == 0 {
		k.fail(name, "no sample before the grant")
		return
	}
	c := ss[len(ss)-1].Confirmed
	d := pred.durable(succ.at)
	k.check(name, c <= d, "pod %s starts at the slot's confirmed %s; pod %s reported durable %s", succ.pod.name, fmtLSN(c), pred.name, fmtLSN(d))
}

// checkRelease: after the stop began (Revoked(shutdown) to the worker when
// revoked, else the worker's own SIGTERM), Released for g's epoch arrived
// (with reason STOPPING when the worker's process stops) within the drain
// time, and at that instant its walsender was gone, the slot inactive and
// confirmed at least what it reported durable (W6, W7, W8).
func (k *kit) checkRelease(ctx context.Context, name string, p *pod, g grant, from int, revoked bool) {
	began, what := time.Now(), "SIGTERM"
	limit := drainTimeout
	if revoked {
		rv, _, err := p.proxy.await(ctx, from, 10*time.Second, "Revoked", func(e Event) bool { return e.Broker.GetRevoked() != nil })
		if err != nil {
			k.fail(name, "%v", err)
			return
		}
		if r := rv.Broker.GetRevoked().GetReason(); r != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN {
			k.fail(name, "Revoked with reason %s, want shutdown", r)
			return
		}
		began, what = rv.At, "Revoked(shutdown)"
		if dt := rv.Broker.GetRevoked().GetDrainTimeout(); dt != nil {
			limit = dt.AsDuration()
		}
	}
	rl, _, err := p.proxy.await(ctx, from, drainTimeout+5*time.Second, "Released", func(e Event) bool { return e.Worker.GetReleased() != nil })
	if err != nil {
		k.fail(name, "%v after %s", err, what)
		return
	}
	if took := rl.At.Sub(began); took > limit {
		k.fail(name, "Released %s after %s, past the drain time %s", took.Round(time.Millisecond), what, limit)
		return
	}
	if len(p.released) == 0 {
		k.fail(name, "Released passed without a view of PostgreSQL")
		return
	}
	v := p.released[len(p.released)-1]
	if v.Err != nil {
		k.fail(name, "reading PostgreSQL at Released: %v", v.Err)
		return
	}
	if e := v.Released.GetEpoch(); e != g.epoch {
		k.fail(name, "Released names epoch %d, the grant was %d", e, g.epoch)
		return
	}
	if r := v.Released.GetReason(); !revoked && r != batonv1.ReleaseReason_RELEASE_REASON_STOPPING {
		k.fail(name, "Released with reason %s after SIGTERM, want RELEASE_REASON_STOPPING", r)
		return
	}
	if w, ok := walsenderOf(v.Sample, g.epoch); ok {
		k.fail(name, "walsender %q (pid %d) still there when Released arrived", w.App, w.PID)
		return
	}
	if v.Sample.SlotPID != 0 {
		k.fail(name, "the slot still active for pid %d when Released arrived", v.Sample.SlotPID)
		return
	}
	d := p.durable(rl.At)
	if v.Sample.Confirmed < d {
		k.fail(name, "the slot confirmed %s when Released arrived, below the durable %s the worker reported", fmtLSN(v.Sample.Confirmed), fmtLSN(d))
		return
	}
	k.pass(name, "Released (%s) %s after %s; walsender gone, slot inactive, confirmed %s >= reported durable %s",
		strings.ToLower(strings.TrimPrefix(v.Released.GetReason().String(), "RELEASE_REASON_")), rl.At.Sub(began).Round(time.Millisecond), what, fmtLSN(v.Sample.Confirmed), fmtLSN(d))
}

// stealLock ends the lock session of the broker holding the stream's lock
// and takes the lock on conn before any broker takes it again.
func (k *kit) stealLock(ctx context.Context, conn *pgx.Conn) error {
	return harness.AwaitContext(ctx, 20*time.Second, 5*time.Millisecond, "the kit to take the stream's lock", func() (bool, error) {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", stream.LockNamespace, stream.LockKey(StreamID)).Scan(&got); err != nil {
			return false, err
		}
		if got {
			return true, nil
		}
		_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2 AND granted`,
			stream.LockNamespace, int64(stream.LockObjID(StreamID)))
		return false, err
	})
}

// awaitEither waits for a Granted above epoch on a (from index na) or b
// (from nb).
func (k *kit) awaitEither(ctx context.Context, na, nb int, epoch uint64, timeout time.Duration) (grant, error) {
	var g grant
	a, b := k.pods[0], k.pods[1]
	err := harness.AwaitContext(ctx, timeout, sampleEvery, "a Granted on pod a or b", func() (bool, error) {
		for _, c := range []struct {
			p    *pod
			from int
		}{{a, na}, {b, nb}} {
			evs := c.p.proxy.Events()
			for i := c.from; i < len(evs); i++ {
				if gr := evs[i].Broker.GetGranted(); gr != nil && gr.GetEpoch() > epoch {
					g = grant{pod: c.p, epoch: gr.GetEpoch(), at: evs[i].At, index: i}
					return true, nil
				}
			}
		}
		return false, nil
	})
	return g, err
}

// checkLockLost: from a moment after Revoked(lock_lost) until the next
// grant, no replication connection existed and the slot did not move; the
// next grant's epoch is higher.
func (k *kit) checkLockLost(revokes []Event, epoch uint64, next grant) {
	const name = "lock-lost-stops"
	rv := revokes[0]
	for _, e := range revokes {
		if reason := e.Broker.GetRevoked().GetReason(); reason != batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST {
			k.fail(name, "Revoked with reason %s after the lock session ended, want lock_lost", reason)
			return
		}
		epoch = max(epoch, e.Broker.GetRevoked().GetEpoch())
		if e.At.After(rv.At) {
			rv = e // the last revocation starts the window
		}
	}
	ss := k.obs.Samples(rv.At.Add(stopTolerance), next.at)
	if len(ss) == 0 {
		k.fail(name, "no sample between the revocation and the next grant")
		return
	}
	for _, s := range ss {
		if len(s.Walsenders) > 0 {
			k.fail(name, "replication connection %q seen %s after Revoked(lock_lost), before the next grant", s.Walsenders[0].App, s.At.Sub(rv.At).Round(time.Millisecond))
			return
		}
		if s.Confirmed != ss[0].Confirmed {
			k.fail(name, "the slot moved from %s to %s after Revoked(lock_lost), before the next grant", fmtLSN(ss[0].Confirmed), fmtLSN(s.Confirmed))
			return
		}
	}
	if next.epoch <= epoch {
		k.fail(name, "the next grant has epoch %d, not above %d", next.epoch, epoch)
		return
	}
	k.pass(name, "nothing consumed for %s after Revoked(lock_lost) of epoch %d; pod %s granted epoch %d",
		next.at.Sub(rv.At).Round(time.Millisecond), epoch, next.pod.name, next.epoch)
}

// checkKill waits until the holder's worker acknowledged a position under
// g (the slot moved while its walsender consumed it) and reported it
// durable, kills it with SIGKILL, starts it again on the same storage, and
// checks that its first report under the next grant is not below what it
// reported before, nor below what the slot confirmed under g: a worker
// stores before it acknowledges, so its storage holds at least that.
func (k *kit) checkKill(ctx context.Context, g grant) error {
	const name = "sigkill-restart-keeps-acknowledged"
	p := g.pod
	if err := k.awaitSlotHeldBy(ctx, g, startTimeout); err != nil {
		k.fail(name, "before the kill: %v", err)
		return err
	}
	base := k.obs.Samples(g.at, time.Now())[0].Confirmed
	err := harness.AwaitContext(ctx, progressTimeout, sampleEvery, "an acknowledgement under the grant, reported durable", func() (bool, error) {
		c := confirmedUnder(k.obs.Samples(g.at, time.Now()), g.epoch)
		return c > base && p.durable(time.Now()) >= c, p.workerExited()
	})
	if err != nil {
		k.fail(name, "before the kill: %v", err)
		return err
	}
	if err := p.worker.SignalGroup(syscall.SIGKILL); err != nil {
		return &setupError{err}
	}
	killed := time.Now()
	if _, err := p.worker.Wait(10 * time.Second); err != nil {
		return &setupError{err}
	}
	d := p.durable(killed)
	if err := harness.AwaitContext(ctx, 10*time.Second, sampleEvery, "the killed worker's walsender to end", func() (bool, error) {
		ss := k.obs.Samples(killed, time.Now())
		if len(ss) == 0 {
			return false, nil
		}
		s := ss[len(ss)-1]
		_, ok := walsenderOf(s, g.epoch)
		return !ok && s.SlotPID == 0, nil
	}); err != nil {
		k.fail(name, "%v", err)
		return err
	}
	c := confirmedUnder(k.obs.Samples(g.at, time.Now()), g.epoch)
	n := len(p.proxy.Events())
	if err := p.startWorker(); err != nil {
		return &setupError{err}
	}
	g2, err := k.awaitGrant(ctx, p, n, startTimeout)
	if err != nil {
		k.fail(name, "no grant after the restart: %v", err)
		return err
	}
	pe, _, err := p.proxy.await(ctx, g2.index, progressTimeout, "Progress after the restart", func(e Event) bool {
		return e.Worker.GetProgress().GetEpoch() == g2.epoch
	})
	if err != nil {
		k.fail(name, "%v", err)
		return err
	}
	first := pe.Worker.GetProgress().GetDurableLsn()
	k.check(name, first >= d && first >= c, "reported durable %s and acknowledged %s before SIGKILL; first report after the restart (epoch %d): %s",
		fmtLSN(d), fmtLSN(c), g2.epoch, fmtLSN(first))
	return nil
}

// confirmedUnder is the highest confirmed position of samples taken while
// the slot's walsender carried epoch (or just after it ended: a sample
// without a consumer right after one of epoch).
func confirmedUnder(ss []Sample, epoch uint64) uint64 {
	var c uint64
	under := false
	for _, s := range ss {
		w, ok := walsenderOf(s, epoch)
		switch {
		case ok && w.PID == s.SlotPID:
			under = true
		case s.SlotPID != 0:
			under = false
		}
		if under {
			c = max(c, s.Confirmed)
		}
	}
	return c
}

// checkSlotNeverPassesDurable: every time the slot's confirmed position
// moved, the worker consuming it (by the epoch in its application_name)
// had reported a durable position at least as high, by reportGrace later.
func (k *kit) checkSlotNeverPassesDurable() {
	const name = "slot-never-passes-durable"
	ss := k.obs.Samples(time.Time{}, time.Now())
	moves := 0
	var prev Sample
	for i, s := range ss {
		if i == 0 || s.Confirmed <= prev.Confirmed || prev.Confirmed == 0 {
			prev = s
			continue
		}
		moves++
		// The consumer: the slot's walsender now, or just before.
		var epoch uint64
		for _, x := range []Sample{s, prev} {
			for _, w := range x.Walsenders {
				if w.PID == x.SlotPID && x.SlotPID != 0 {
					epoch, _ = WorkerEpoch(w.App, StreamID)
				}
			}
			if epoch != 0 {
				break
			}
		}
		if epoch == 0 {
			k.fail(name, "the slot moved from %s to %s with no consumer named by epoch", fmtLSN(prev.Confirmed), fmtLSN(s.Confirmed))
			return
		}
		holder := k.holderOf(epoch)
		if holder == nil {
			k.fail(name, "the slot moved to %s under epoch %d, which no pod was granted", fmtLSN(s.Confirmed), epoch)
			return
		}
		if d := holder.durable(s.At.Add(reportGrace)); d < s.Confirmed {
			k.fail(name, "the slot was confirmed to %s under epoch %d, but pod %s had reported durable only %s", fmtLSN(s.Confirmed), epoch, holder.name, fmtLSN(d))
			return
		}
		prev = s
	}
	if moves == 0 {
		k.fail(name, "the slot's confirmed position never moved")
		return
	}
	k.pass(name, "the slot moved %d times, each time to at most what its consumer had reported durable", moves)
}

// holderOf is the pod that was granted epoch.
func (k *kit) holderOf(epoch uint64) *pod {
	for _, p := range k.pods {
		for _, e := range p.proxy.Events() {
			if e.Broker.GetGranted().GetEpoch() == epoch {
				return p
			}
		}
	}
	return nil
}

// checkKeepalive: no worker was sent GOAWAY for pinging too often (the
// proxies enforce the broker's keepalive policy).
func (k *kit) checkKeepalive() {
	const name = "keepalive-within-limits"
	for _, p := range k.pods {
		for _, g := range p.proxy.Goaways() {
			if strings.Contains(g, "too_many_pings") {
				k.fail(name, "pod %s's worker was sent GOAWAY %s: it pings more often than every %s", p.name, g, enforcement.MinTime)
				return
			}
		}
	}
	k.pass(name, "no GOAWAY too_many_pings (pings no more often than every %s)", enforcement.MinTime)
}

// unknownKind is a BrokerMessage of a kind no worker knows: field 15 of
// the oneof, an empty message.
func unknownKind() *batonv1.BrokerMessage {
	m := &batonv1.BrokerMessage{}
	raw := protowire.AppendTag(nil, 15, protowire.BytesType)
	raw = protowire.AppendBytes(raw, nil)
	m.ProtoReflect().SetUnknown(raw)
	return m
}

// ignoreWindow is how long the kit watches a worker after injecting a
// message it must ignore.
const ignoreWindow = 1500 * time.Millisecond

// checkIgnored sends m to the holder of g (on g's stream) and checks that,
// for ignoreWindow, its walsender of g's epoch stays and it neither ends
// the stream nor sends Released.
func (k *kit) checkIgnored(ctx context.Context, name string, g grant, m *batonv1.BrokerMessage) error {
	p := g.pod
	n := p.proxy.Events()[g.index].Stream
	from := len(p.proxy.Events())
	recent := k.obs.Samples(time.Now().Add(-time.Second), time.Now())
	ws, ok := walsenderOf(recent[len(recent)-1], g.epoch)
	if !ok {
		k.fail(name, "no walsender of epoch %d before the message was sent", g.epoch)
		return nil
	}
	if err := p.proxy.inject(n, m); err != nil {
		k.fail(name, "%v", err)
		return nil
	}
	sent := time.Now()
	if err := sleep(ctx, ignoreWindow); err != nil {
		return err
	}
	for _, e := range p.proxy.Events()[from:] {
		if e.Stream != n {
			continue
		}
		if e.End != nil {
			k.fail(name, "the stream ended %s after %s was sent: %v", e.At.Sub(sent).Round(time.Millisecond), describe(m), e.End)
			return nil
		}
		if e.Worker.GetReleased() != nil {
			k.fail(name, "the worker sent Released %s after %s was sent", e.At.Sub(sent).Round(time.Millisecond), describe(m))
			return nil
		}
	}
	for _, s := range k.obs.Samples(sent, time.Now()) {
		if w, ok := walsenderOf(s, g.epoch); !ok || w.PID != ws.PID {
			k.fail(name, "the walsender of epoch %d (pid %d) was gone %s after %s was sent", g.epoch, ws.PID, s.At.Sub(sent).Round(time.Millisecond), describe(m))
			return nil
		}
	}
	k.pass(name, "after %s, the worker kept its stream and its walsender (pid %d) for %s", describe(m), ws.PID, ignoreWindow)
	return nil
}

// describe names an injected message.
func describe(m *batonv1.BrokerMessage) string {
	if r := m.GetRevoked(); r != nil {
		return "Revoked(" + strings.ToLower(strings.TrimPrefix(r.GetReason().String(), "REVOKE_REASON_")) + ") for epoch " + strconv.FormatUint(r.GetEpoch(), 10)
	}
	return "a BrokerMessage of an unknown kind (field 15)"
}

// checkHello: every Lease stream the workers opened began with Hello
// (protocol_version 2, a worker_id, the stream id), sent once (W1).
func (k *kit) checkHello() {
	const name = "hello-first"
	streams := 0
	for _, p := range k.pods {
		first := map[int]bool{}
		for _, e := range p.proxy.Events() {
			if !e.FromWorker {
				continue
			}
			h := e.Worker.GetHello()
			if first[e.Stream] {
				if h != nil {
					k.fail(name, "pod %s's worker sent Hello twice on one stream", p.name)
					return
				}
				continue
			}
			first[e.Stream] = true
			streams++
			switch {
			case h == nil:
				k.fail(name, "pod %s's worker opened a stream with %T, not Hello", p.name, e.Worker.GetMsg())
				return
			case h.GetProtocolVersion() != 2:
				k.fail(name, "pod %s's worker sent Hello with protocol_version %d, want 2", p.name, h.GetProtocolVersion())
				return
			case h.GetWorkerId() == "":
				k.fail(name, "pod %s's worker sent Hello without a worker_id", p.name)
				return
			case h.GetStreamId() != StreamID:
				k.fail(name, "pod %s's worker sent Hello with stream_id %q, want %q", p.name, h.GetStreamId(), StreamID)
				return
			}
		}
	}
	if streams == 0 {
		k.fail(name, "no worker sent anything")
		return
	}
	k.pass(name, "%d streams began with Hello (protocol_version 2, worker_id, stream_id %q)", streams, StreamID)
}

// deliveryTimeout bounds the wait for the slot to confirm the last insert
// (a worker acknowledges at least every 10 s).
const deliveryTimeout = 40 * time.Second

// checkDelivered stops the kit's writes, waits until the slot confirmed
// the position after the last insert, and checks that the delivery file
// (BATON_DELIVERY_FILE, optional) has every row the kit inserted exactly
// once: across the handoffs, the lost lock and the SIGKILL, nothing lost
// and nothing doubled.
func (k *kit) checkDelivered(ctx context.Context) {
	const name = "delivered-exactly-once"
	if err := k.stopWriting(); err != nil {
		k.fail(name, "the kit's inserts failed: %v", err)
		return
	}
	if k.o.Worker2OrWorker() != k.o.Worker {
		// Exactly once across two different workers would need each to
		// resume from the other's deliveries; each is checked in its own
		// run.
		k.results = append(k.results, Result{Name: name, Skipped: true, Detail: "two different workers: delivery is checked in each worker's own run"})
		k.done[name] = true
		return
	}
	if _, err := os.Stat(k.deliveryFile()); errors.Is(err, os.ErrNotExist) {
		k.results = append(k.results, Result{Name: name, Skipped: true, Detail: "the workers wrote no BATON_DELIVERY_FILE (optional: see the README)"})
		k.done[name] = true
		return
	}
	k.hookMu.Lock()
	var end string
	err := k.hook.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	var ids []string
	if err == nil {
		var rows pgx.Rows
		rows, err = k.hook.Query(ctx, "SELECT id::text FROM "+Table+" ORDER BY id")
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
	}
	k.hookMu.Unlock()
	if err != nil {
		k.fail(name, "%v", err)
		return
	}
	target, err := pglogrepl.ParseLSN(end)
	if err != nil {
		k.fail(name, "%v", err)
		return
	}
	var c uint64
	err = harness.AwaitContext(ctx, deliveryTimeout, sampleEvery, "the slot to confirm the last insert", func() (bool, error) {
		ss := k.obs.Samples(time.Now().Add(-time.Second), time.Now())
		if len(ss) == 0 {
			return false, nil
		}
		c = ss[len(ss)-1].Confirmed
		return c >= uint64(target), nil
	})
	if err != nil {
		k.fail(name, "the slot confirmed %s, not the end of the inserts %s, within %s", fmtLSN(c), end, deliveryTimeout)
		return
	}
	counts, lines, err := readDeliveries(k.deliveryFile())
	if err != nil {
		k.fail(name, "%v", err)
		return
	}
	var missing, doubled []string
	inserted := map[string]bool{}
	for _, id := range ids {
		inserted[id] = true
		switch n := counts[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			doubled = append(doubled, fmt.Sprintf("%s (%d times)", id, n))
		}
	}
	var unknown []string
	for id := range counts {
		if !inserted[id] {
			unknown = append(unknown, id)
		}
	}
	first := func(l []string) []string { return l[:min(len(l), 5)] }
	switch {
	case len(missing) > 0:
		k.fail(name, "%d of %d inserted rows were not delivered, e.g. ids %v", len(missing), len(ids), first(missing))
	case len(doubled) > 0:
		k.fail(name, "%d rows were delivered more than once, e.g. ids %v", len(doubled), first(doubled))
	case len(unknown) > 0:
		k.fail(name, "%d delivered ids were never inserted, e.g. %v", len(unknown), first(unknown))
	default:
		k.pass(name, "all %d inserted rows delivered once (%d lines), the slot confirmed %s", len(ids), lines, fmtLSN(c))
	}
}

// readDeliveries counts, per id, the inserts into the kit's table in a
// delivery file: JSON lines with at least "table" ("baton_conformance"),
// "op" ("insert") and "new" (the row, with its "id"). Other lines are
// other tables' or kinds' and are not counted.
func readDeliveries(path string) (map[string]int, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	counts := map[string]int{}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		n++
		var l struct {
			Table string         `json:"table"`
			Op    string         `json:"op"`
			New   map[string]any `json:"new"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, 0, fmt.Errorf("delivery file line %d: %w", n, err)
		}
		if l.Table != "baton_conformance" || l.Op != "insert" {
			continue
		}
		id, ok := l.New["id"]
		if !ok {
			return nil, 0, fmt.Errorf("delivery file line %d: an insert without new.id", n)
		}
		counts[fmt.Sprint(id)]++
	}
	return counts, n, sc.Err()
}
