package shapes

import (
	"testing"
	"time"
)

func TestExpiryClock(t *testing.T) {
	start := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	for _, c := range []struct {
		name     string
		timeout  time.Duration
		now      time.Time
		last     time.Time // zero: unknown
		inFlight int32
		want     bool
	}{
		{name: "used recently", timeout: time.Hour, now: at(3 * time.Hour), last: at(150 * time.Minute), want: false},
		{name: "idle past the timeout", timeout: time.Hour, now: at(3 * time.Hour), last: at(time.Hour), want: true},
		{name: "idle exactly the timeout", timeout: time.Hour, now: at(2 * time.Hour), last: at(time.Hour), want: true},
		{name: "idle but a request holds it", timeout: time.Hour, now: at(3 * time.Hour), last: at(time.Hour), inFlight: 1, want: false},
		{name: "unknown use: not before timeout after start", timeout: time.Hour, now: at(59 * time.Minute), want: false},
		{name: "unknown use: after timeout after start", timeout: time.Hour, now: at(time.Hour), want: true},
		{name: "last use before a restart: kept within the grace", timeout: time.Hour, now: at(59 * time.Second), last: at(-2 * time.Hour), want: false},
		{name: "last use before a restart: expired after the grace", timeout: time.Hour, now: at(time.Minute), last: at(-2 * time.Hour), want: true},
		{name: "last use before a restart still counts", timeout: time.Hour, now: at(30 * time.Minute), last: at(-20 * time.Minute), want: false},
		{name: "last use before a restart, idle since", timeout: time.Hour, now: at(41 * time.Minute), last: at(-20 * time.Minute), want: true},
		{name: "short timeout: grace is the timeout", timeout: 2 * time.Second, now: at(1999 * time.Millisecond), last: at(-time.Hour), want: false},
		{name: "short timeout: after the grace", timeout: 2 * time.Second, now: at(2 * time.Second), last: at(-time.Hour), want: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := expiryClock{start: start, timeout: c.timeout}
			if got := clock.expired(c.now, c.last, c.inFlight); got != c.want {
				t.Errorf("expired(now %s, last %s, in flight %d) = %v; want %v (idle since %s)",
					c.now.Sub(start), c.last, c.inFlight, got, c.want, clock.idleSince(c.last))
			}
		})
	}
}

func TestShapeUse(t *testing.T) {
	var s Shape
	if !s.use.lastTime().IsZero() {
		t.Fatal("a new shape has a last use")
	}
	before := time.Now()
	done := s.Use()
	if n := s.use.inFlight.Load(); n != 1 {
		t.Fatalf("in flight %d while used; want 1", n)
	}
	if last := s.use.lastTime(); last.Before(before.Truncate(time.Microsecond)) {
		t.Fatalf("last use %s before the use at %s", last, before)
	}
	done()
	done() // a second call changes nothing
	if n := s.use.inFlight.Load(); n != 0 {
		t.Fatalf("in flight %d after done; want 0", n)
	}
	s.use.restore(time.Time{})
	if s.use.lastTime().IsZero() {
		t.Fatal("restoring an unknown use forgot the known one")
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var o Shape
	o.use.restore(at)
	if got := o.use.lastTime(); !got.Equal(at) {
		t.Fatalf("restored last use %s; want %s", got, at)
	}
}

func TestExpiryTick(t *testing.T) {
	for _, c := range []struct{ timeout, want time.Duration }{
		{100 * time.Millisecond, 100 * time.Millisecond},
		{2 * time.Second, 500 * time.Millisecond},
		{time.Hour, time.Minute},
		{24 * time.Hour, time.Minute},
	} {
		if got := expiryTick(c.timeout); got != c.want {
			t.Errorf("expiryTick(%s) = %s; want %s", c.timeout, got, c.want)
		}
	}
}
