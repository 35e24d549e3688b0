package lease_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"

	"github.com/batonhq/baton/broker/internal/lease"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testStream = "orders"
	testHolder = "baton-broker:orders:test"
	testTTL    = 6 * time.Second
)

func newHub(t *testing.T) *lease.Hub {
	t.Helper()
	h := lease.NewHub(testStream, testHolder, testTTL)
	t.Cleanup(h.Close)
	return h
}

// next returns the next queued message for w; messages are queued
// synchronously by the Hub, so no waiting is needed.
func next(t *testing.T, w *lease.Worker) *batonv1.BrokerMessage {
	t.Helper()
	select {
	case m := <-w.Out():
		return m
	default:
		t.Fatalf("worker %s: no message queued", w.ID)
		return nil
	}
}

func none(t *testing.T, w *lease.Worker) {
	t.Helper()
	select {
	case m := <-w.Out():
		t.Fatalf("worker %s: unexpected message %v", w.ID, m)
	default:
	}
}

// drain discards every queued message of w.
func drain(w *lease.Worker) {
	for {
		select {
		case <-w.Out():
		default:
			return
		}
	}
}

func standby(t *testing.T, w *lease.Worker, want batonv1.StandbyReason) *batonv1.Standby {
	t.Helper()
	m := next(t, w)
	s := m.GetStandby()
	if s == nil {
		t.Fatalf("worker %s: got %v, want standby %v", w.ID, m, want)
	}
	if s.GetReason() != want {
		t.Fatalf("worker %s: standby reason %v, want %v", w.ID, s.GetReason(), want)
	}
	return s
}

func isDropped(w *lease.Worker) bool {
	select {
	case <-w.Dropped():
		return true
	default:
		return false
	}
}

func TestAttachGetsStandby(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w1", "")
	standby(t, w, batonv1.StandbyReason_STANDBY_REASON_CONNECTING)
	none(t, w)
	if n := h.Attached(); n != 1 {
		t.Fatalf("Attached = %d, want 1", n)
	}
	select {
	case <-h.Events():
	default:
		t.Fatal("Attach did not signal an event")
	}

	holder := lease.HolderFrom("baton-broker:orders:other", 41, 1234, time.Now(), time.Now())
	h.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT, Holder: holder})
	s := standby(t, w, batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT)
	if s.GetHolder().GetEpoch() != 41 || s.GetHolder().GetBackendPid() != 1234 {
		t.Fatalf("standby holder = %v", s.GetHolder())
	}
	// The same standby again is not repeated.
	h.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT, Holder: holder})
	none(t, w)

	// A worker attaching later is told the current standby.
	w2 := h.Attach("w2", "")
	standby(t, w2, batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT)
}

func TestGrant(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w1", "")
	drain(w)
	c, nb := h.Candidate()
	if c != w || !nb.IsZero() {
		t.Fatalf("Candidate = %v, %v; want w1, zero time", c, nb)
	}
	before := time.Now()
	if !h.Grant(w, 7) {
		t.Fatal("Grant = false")
	}
	g := next(t, w).GetGranted()
	if g == nil {
		t.Fatal("no Granted queued")
	}
	if g.GetEpoch() != 7 || g.GetTtl().AsDuration() != testTTL || g.GetStreamId() != testStream ||
		g.GetSlotName() != "baton_slot_orders" || g.GetPublicationName() != "baton_pub_orders" ||
		g.GetHolder() != testHolder {
		t.Fatalf("Granted = %v", g)
	}
	cur, ok := h.Current()
	if !ok || cur.Worker != w || cur.Epoch != 7 || cur.Revoked || cur.LastRenewal.Before(before) {
		t.Fatalf("Current = %+v, %v", cur, ok)
	}
	if c, _ := h.Candidate(); c != nil {
		t.Fatalf("Candidate while granted = %s, want nil", c.ID)
	}
	if h.Grant(w, 8) {
		t.Fatal("second Grant while one is current = true")
	}
	none(t, w)
}

func TestSecondWorkerOtherWorker(t *testing.T) {
	h := newHub(t)
	a := h.Attach("a", "")
	b := h.Attach("b", "")
	drain(a)
	drain(b)
	if c, _ := h.Candidate(); c != a {
		t.Fatalf("Candidate = %v, want the first attached", c)
	}
	h.Grant(a, 1)
	next(t, a)
	standby(t, b, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)

	c := h.Attach("c", "")
	standby(t, c, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	if h.Grant(c, 2) {
		t.Fatal("Grant to a second worker while one is current = true")
	}
	none(t, c)

	// SetStandby tells the standbys but never the grantee.
	h.SetStandby(lease.Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT})
	standby(t, b, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	standby(t, c, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	none(t, a)
}

func TestRenew(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	drain(w)
	h.Grant(w, 3)
	drain(w)
	g0, _ := h.Current()

	h.RenewFrom(2, time.Now()) // another epoch
	none(t, w)
	h.RenewFrom(3, time.Now())
	r := next(t, w).GetRenewed()
	if r == nil || r.GetEpoch() != 3 || r.GetTtl().AsDuration() != testTTL {
		t.Fatalf("Renewed = %v", r)
	}
	g1, _ := h.Current()
	if g1.LastRenewal.Before(g0.LastRenewal) {
		t.Fatalf("LastRenewal went back: %v < %v", g1.LastRenewal, g0.LastRenewal)
	}

	h.Revoke(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, time.Second, "bye")
	next(t, w) // Revoked
	h.RenewFrom(3, time.Now())
	none(t, w)
	g2, _ := h.Current()
	if !g2.LastRenewal.Equal(g1.LastRenewal) {
		t.Fatal("Renew after revoke moved LastRenewal")
	}
}

func TestReleased(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	other := h.Attach("other", "")
	h.Grant(w, 5)
	drain(w)
	drain(other)
	for len(h.Events()) > 0 {
		<-h.Events()
	}

	if h.Released(w, 4, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
		t.Fatal("Released with a wrong epoch = true")
	}
	if h.Released(other, 5, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
		t.Fatal("Released by another worker = true")
	}
	if _, ok := h.Current(); !ok {
		t.Fatal("grant ended by an ignored Released")
	}
	none(t, w)

	if !h.Released(w, 5, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
		t.Fatal("Released = false")
	}
	if _, ok := h.Current(); ok {
		t.Fatal("grant current after Released")
	}
	standby(t, w, batonv1.StandbyReason_STANDBY_REASON_CONNECTING)
	if !h.NotBefore().IsZero() {
		t.Fatalf("NotBefore after a clean release = %v, want zero", h.NotBefore())
	}
	select {
	case <-h.Events():
	default:
		t.Fatal("Released did not signal an event")
	}
	if h.Released(w, 5, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
		t.Fatal("second Released = true")
	}
	// The released stream is not granted again; the other worker is next.
	if c, _ := h.Candidate(); c != other {
		t.Fatalf("candidate after release = %v, want the other worker", c)
	}
}

func TestProgress(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	other := h.Attach("other", "")
	h.Grant(w, 9)
	h.Progress(w, 9, 100)
	h.Progress(w, 8, 200)     // stale epoch
	h.Progress(other, 9, 300) // not the grantee
	if got := h.DurableLSN(); got != 100 {
		t.Fatalf("DurableLSN = %d, want 100", got)
	}
	h.Released(w, 9, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED)
	if got := h.DurableLSN(); got != 100 {
		t.Fatalf("DurableLSN after release = %d, want 100 (kept)", got)
	}
}

func TestDetachUnreleasedGrantee(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	standbyW := h.Attach("s", "")
	h.Grant(w, 1)
	h.RenewFrom(1, time.Now())
	g, _ := h.Current()

	h.Detach(w)
	if !isDropped(w) {
		t.Fatal("detached worker's Dropped not closed")
	}
	if _, ok := h.Current(); ok {
		t.Fatal("grant current after its worker detached")
	}
	nb := h.NotBefore()
	// No successor before the detached worker's lease can have expired on its
	// own clock (I1), but not much later either.
	if d := nb.Sub(g.LastRenewal); d <= testTTL || d > testTTL+testTTL/2 {
		t.Fatalf("NotBefore = last renewal + %v, want a little more than the TTL %v", d, testTTL)
	}
	c, cnb := h.Candidate()
	if c != standbyW || !cnb.Equal(nb) {
		t.Fatalf("Candidate = %v, %v; want the standby worker, %v", c, cnb, nb)
	}
	if h.Attached() != 1 {
		t.Fatalf("Attached = %d, want 1", h.Attached())
	}
	// Detaching twice, or detaching a worker without a grant, is harmless and
	// does not move NotBefore.
	h.Detach(w)
	h.Detach(standbyW)
	if !h.NotBefore().Equal(nb) {
		t.Fatal("NotBefore moved by detaching a worker without a grant")
	}
}

func TestRevokeShutdownKeepsGrantUntilRelease(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	h.Grant(w, 4)
	drain(w)

	h.Revoke(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, 18*time.Second, "broker shutting down")
	r := next(t, w).GetRevoked()
	if r == nil || r.GetEpoch() != 4 || r.GetReason() != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN || r.GetMessage() != "broker shutting down" {
		t.Fatalf("Revoked = %v", r)
	}
	if r.GetDrainTimeout() == nil || r.GetDrainTimeout().AsDuration() != 18*time.Second {
		t.Fatalf("Revoked.drain_timeout = %v, want 18s", r.GetDrainTimeout())
	}
	g, ok := h.Current()
	if !ok || !g.Revoked {
		t.Fatalf("Current after shutdown revoke = %+v, %v; want a revoked grant", g, ok)
	}
	if c, _ := h.Candidate(); c != nil {
		t.Fatal("Candidate while a revoked grant is still current")
	}
	// Revoked is sent once.
	h.Revoke(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, time.Second, "again")
	none(t, w)

	if !h.Released(w, 4, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
		t.Fatal("Released of the revoked grant = false")
	}
	if _, ok := h.Current(); ok {
		t.Fatal("grant current after release")
	}
	if !h.NotBefore().IsZero() {
		t.Fatal("a released grant delays the next one")
	}
}

func TestRevokeLockLostEndsAtOnce(t *testing.T) {
	for _, reason := range []batonv1.RevokeReason{
		batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST,
		batonv1.RevokeReason_REVOKE_REASON_REPLACED,
	} {
		t.Run(reason.String(), func(t *testing.T) {
			h := newHub(t)
			w := h.Attach("w", "")
			h.Grant(w, 4)
			drain(w)
			g, _ := h.Current()

			h.Revoke(reason, time.Second, "heartbeat failed")
			r := next(t, w).GetRevoked()
			if r == nil || r.GetReason() != reason || r.GetEpoch() != 4 {
				t.Fatalf("Revoked = %v", r)
			}
			// No drain: the lock may be someone else's already. Sent as an
			// explicit 0 (absent means "an older broker").
			if r.GetDrainTimeout() == nil || r.GetDrainTimeout().AsDuration() != 0 {
				t.Fatalf("Revoked.drain_timeout = %v, want 0", r.GetDrainTimeout())
			}
			if _, ok := h.Current(); ok {
				t.Fatal("grant current after a lock-lost revoke")
			}
			if d := h.NotBefore().Sub(g.LastRenewal); d <= testTTL {
				t.Fatalf("NotBefore = last renewal + %v, want more than the TTL", d)
			}
			// The revoked worker stays attached and is the next candidate, not
			// before the old grant expired.
			c, nb := h.Candidate()
			if c != w || !nb.Equal(h.NotBefore()) {
				t.Fatalf("Candidate = %v, %v", c, nb)
			}
			// Its late Released is ignored.
			if h.Released(w, 4, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED) {
				t.Fatal("Released after a lock-lost revoke = true")
			}
			h.RenewFrom(4, time.Now())
			none(t, w)
		})
	}
}

// TestLockLostDuringDrain: a lock lost while a shutdown's drain waits for
// the worker is told to it with a second Revoked without drain time, so the
// draining worker stops at once (lease.proto B4, W6); the grant ends.
func TestLockLostDuringDrain(t *testing.T) {
	for _, reason := range []batonv1.RevokeReason{
		batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST,
		batonv1.RevokeReason_REVOKE_REASON_REPLACED,
	} {
		t.Run(reason.String(), func(t *testing.T) {
			h := newHub(t)
			w := h.Attach("w", "")
			h.Grant(w, 6)
			drain(w)
			h.Revoke(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, 18*time.Second, "broker shutting down")
			if r := next(t, w).GetRevoked(); r.GetReason() != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN {
				t.Fatalf("first Revoked = %v", r)
			}
			h.Revoke(reason, 18*time.Second, "heartbeat failed")
			r := next(t, w).GetRevoked()
			if r == nil || r.GetEpoch() != 6 || r.GetReason() != reason || r.GetDrainTimeout().AsDuration() != 0 || r.GetDrainTimeout() == nil {
				t.Fatalf("second Revoked = %v, want %v with drain_timeout 0", r, reason)
			}
			if _, ok := h.Current(); ok {
				t.Fatal("grant current after the lock was lost")
			}
			// Told once.
			h.Revoke(reason, 0, "again")
			none(t, w)
		})
	}
}

func TestRevokeWithoutGrant(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	drain(w)
	h.Revoke(batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, 0, "x")
	none(t, w)
	if !h.NotBefore().IsZero() {
		t.Fatal("Revoke without a grant moved NotBefore")
	}
}

func TestSlowWorkerDropped(t *testing.T) {
	h := newHub(t)
	w := h.Attach("slow", "")
	other := h.Attach("other", "")
	h.Grant(w, 1)
	for len(h.Events()) > 0 {
		<-h.Events()
	}
	// The grantee never reads its queue.
	for i := 0; i < 100 && !isDropped(w); i++ {
		h.RenewFrom(1, time.Now())
	}
	if !isDropped(w) {
		t.Fatal("a worker that never reads was not dropped")
	}
	if _, ok := h.Current(); ok {
		t.Fatal("a dropped grantee keeps the grant")
	}
	if h.NotBefore().IsZero() {
		t.Fatal("dropping an unreleased grantee does not delay the next grant")
	}
	if h.Attached() != 1 {
		t.Fatalf("Attached = %d, want 1", h.Attached())
	}
	select {
	case <-h.Events():
	default:
		t.Fatal("dropping a worker did not signal an event")
	}
	if c, _ := h.Candidate(); c != other {
		t.Fatalf("Candidate = %v, want the other worker", c)
	}
	if h.Grant(w, 2) {
		t.Fatal("Grant to a dropped worker = true")
	}
	// What was queued before the drop stays readable (the edge flushes it).
	if m := next(t, w); m.GetStandby() == nil {
		t.Fatalf("first queued message = %v, want standby", m)
	}
}

// TestDropDuringBroadcast: when one worker overflows while the Hub tells all
// standbys something, every other worker must still be told exactly once.
func TestDropDuringBroadcast(t *testing.T) {
	h := newHub(t)
	fast1 := h.Attach("fast1", "")
	slow := h.Attach("slow", "")
	fast2 := h.Attach("fast2", "")
	fast3 := h.Attach("fast3", "")
	reasons := []batonv1.StandbyReason{
		batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT,
		batonv1.StandbyReason_STANDBY_REASON_CONNECTING,
	}
	// Fill slow's queue; the others keep up.
	for i := 0; !isDropped(slow); i++ {
		if i > 1000 {
			t.Fatal("slow worker never dropped")
		}
		drain(fast1)
		drain(fast2)
		drain(fast3)
		h.SetStandby(lease.Standby{Reason: reasons[i%2]})
	}
	for _, w := range []*lease.Worker{fast1, fast2, fast3} {
		if isDropped(w) {
			t.Fatalf("%s dropped", w.ID)
		}
		if m := next(t, w); m.GetStandby() == nil {
			t.Fatalf("%s: got %v, want standby", w.ID, m)
		}
		none(t, w)
	}
}

func TestClose(t *testing.T) {
	h := lease.NewHub(testStream, testHolder, testTTL)
	a := h.Attach("a", "")
	b := h.Attach("b", "")
	h.Grant(a, 1)
	h.Close()
	for _, w := range []*lease.Worker{a, b} {
		if !isDropped(w) {
			t.Fatalf("%s not dropped by Close", w.ID)
		}
	}
	if _, ok := h.Current(); ok {
		t.Fatal("grant current after Close")
	}
	if h.NotBefore().IsZero() {
		t.Fatal("Close of an unreleased grant does not delay a next grant")
	}
	if h.Attached() != 0 {
		t.Fatalf("Attached = %d after Close", h.Attached())
	}
	late := h.Attach("late", "")
	if !isDropped(late) {
		t.Fatal("Attach after Close returned a live worker")
	}
	if c, _ := h.Candidate(); c != nil {
		t.Fatal("Candidate after Close")
	}
	if h.Grant(late, 2) {
		t.Fatal("Grant after Close = true")
	}
	h.Close() // idempotent
	h.Detach(a)
}

// A renewal held up past the renewal window (the broker frozen between
// queueing and sending it) is stale and must not be sent; a prompt one is.
func TestStaleRenewal(t *testing.T) {
	h := newHub(t)
	h.SetRenewalWindow(4 * time.Second)
	w := h.Attach("w", "")
	drain(w)
	if !h.Grant(w, 1) {
		t.Fatal("grant refused")
	}
	drain(w)
	tests := []struct {
		name      string
		heartbeat time.Time
		stale     bool
	}{
		{"just now", time.Now(), false},
		{"heartbeat started long ago", time.Now().Add(-10 * time.Second), true},
	}
	for _, tt := range tests {
		h.RenewFrom(1, tt.heartbeat)
		m := next(t, w)
		if m.GetRenewed() == nil {
			t.Fatalf("%s: queued %v, want renewed", tt.name, m)
		}
		if got := w.Stale(m); got != tt.stale {
			t.Errorf("%s: Stale = %v, want %v", tt.name, got, tt.stale)
		}
	}
	if w.Stale(&batonv1.BrokerMessage{}) {
		t.Error("a non-renewal message reported stale")
	}
}

// A release saying the worker's process is stopping is remembered for the
// leader loop (it unlocks at once) until the next grant; any other release,
// or one for another epoch, is not.
func TestReleasedStopping(t *testing.T) {
	stopping := batonv1.ReleaseReason_RELEASE_REASON_STOPPING
	tests := []struct {
		name   string
		epoch  uint64
		reason batonv1.ReleaseReason
		want   bool
	}{
		{"stopping", 5, stopping, true},
		{"unspecified", 5, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED, false},
		{"stopping for another epoch", 4, stopping, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t)
			w := h.Attach("w", "")
			h.Grant(w, 5)
			if _, ok := h.Stopped(); ok {
				t.Fatal("Stopped before any release")
			}
			h.Released(w, tt.epoch, tt.reason)
			e, ok := h.Stopped()
			if ok != tt.want || (ok && e != 5) {
				t.Fatalf("Stopped = %d, %v; want %v for epoch 5", e, ok, tt.want)
			}
			if !h.NotBefore().IsZero() {
				t.Fatal("a release delays the next grant")
			}
			// The next grant clears it.
			next := h.Attach("next", "")
			if !h.Grant(next, 6) && tt.epoch == 5 {
				t.Fatal("Grant after the release = false")
			}
			if tt.epoch == 5 {
				if _, ok := h.Stopped(); ok {
					t.Fatal("Stopped after the next grant")
				}
			}
		})
	}
}

// Workers told OTHER_WORKER see this broker and its grantee: worker id and
// advertised URL, and are told again when the grantee changes.
func TestOtherWorkerHolder(t *testing.T) {
	h := newHub(t)
	acquired := time.Now()
	h.SetHolding(lease.HolderFrom(testHolder, 3, 4321, acquired, acquired))
	a := h.Attach("a", "http://a.example:3000")
	b := h.Attach("b", "http://b.example:3000")
	c := h.Attach("c", "")
	drain(a)
	drain(b)
	drain(c)
	h.Grant(a, 3)
	next(t, a)
	for _, w := range []*lease.Worker{b, c} {
		s := standby(t, w, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
		hd := s.GetHolder()
		if hd.GetHolder() != testHolder || hd.GetEpoch() != 3 || hd.GetBackendPid() != 4321 ||
			hd.GetWorker() != "a" || hd.GetWorkerUrl() != "http://a.example:3000" {
			t.Fatalf("%s: standby holder = %v", w.ID, hd)
		}
	}
	h.Released(a, 3, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED)
	drain(a)
	drain(b)
	drain(c)
	h.Grant(b, 4)
	next(t, b)
	s := standby(t, c, batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	if hd := s.GetHolder(); hd.GetEpoch() != 4 || hd.GetWorker() != "b" || hd.GetWorkerUrl() != "http://b.example:3000" {
		t.Fatalf("standby holder after the next grant = %v", hd)
	}
}

// A standby holder whose worker or worker URL changed (a new grant on
// another pod) is sent again; one that only heartbeat is not.
func TestStandbyHolderWorkerChange(t *testing.T) {
	h := newHub(t)
	w := h.Attach("w", "")
	drain(w)
	at := time.Now()
	holder := func(epoch uint64, worker, url string, beat time.Time) *batonv1.Holder {
		hd := lease.HolderFrom("baton-broker:orders:other", epoch, 99, at, beat)
		hd.Worker, hd.WorkerUrl = worker, url
		return hd
	}
	wait := batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT
	h.SetStandby(lease.Standby{Reason: wait, Holder: holder(7, "", "", at)})
	standby(t, w, wait)
	h.SetStandby(lease.Standby{Reason: wait, Holder: holder(7, "", "", at.Add(time.Second))})
	none(t, w)
	h.SetStandby(lease.Standby{Reason: wait, Holder: holder(7, "x", "http://x:3000", at)})
	if s := standby(t, w, wait); s.GetHolder().GetWorkerUrl() != "http://x:3000" || s.GetHolder().GetWorker() != "x" {
		t.Fatalf("standby holder = %v", s.GetHolder())
	}
	h.SetStandby(lease.Standby{Reason: wait, Holder: holder(7, "x", "http://y:3000", at)})
	if s := standby(t, w, wait); s.GetHolder().GetWorkerUrl() != "http://y:3000" {
		t.Fatalf("standby holder = %v", s.GetHolder())
	}
}
