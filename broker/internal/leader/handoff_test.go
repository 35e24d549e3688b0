package leader

import (
	"testing"
	"time"

	"github.com/batonhq/baton/broker/internal/lock"
)

func TestHandoffOf(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC) // PostgreSQL's clock
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ptr := func(t time.Time) *time.Time { return &t }
	claimStart := time.Now()
	cases := []struct {
		name      string
		waiting   lock.Status
		prev      lock.Previous
		wantCause string // "" for no handoff
		wantFrom  time.Duration
	}{
		{"first acquisition ever", lock.Status{Now: at(0)}, lock.Previous{}, "", 0},
		{"stream free when the wait began, last held before it",
			lock.Status{Now: at(0)},
			lock.Previous{Recorded: true, AcquiredAt: at(-time.Hour), LastHeartbeat: at(-30 * time.Minute), ReleasedAt: ptr(at(-30 * time.Minute)), ReleaseCause: "shutdown"},
			"", 0},
		{"held when the wait began, released for a stopping worker",
			lock.Status{Now: at(0), Held: true},
			lock.Previous{Recorded: true, AcquiredAt: at(-time.Hour), LastHeartbeat: at(900 * time.Millisecond), ReleasedAt: ptr(at(time.Second)), ReleaseCause: "worker_stopping"},
			"worker_stopping", time.Second},
		{"taken by another broker after the wait began, then its session ended",
			lock.Status{Now: at(0)},
			lock.Previous{Recorded: true, AcquiredAt: at(time.Millisecond), LastHeartbeat: at(3 * time.Second)},
			"session_ended", 3 * time.Second},
		{"released by a broker that records no cause",
			lock.Status{Now: at(0), Held: true},
			lock.Previous{Recorded: true, AcquiredAt: at(-time.Minute), LastHeartbeat: at(-time.Second), ReleasedAt: ptr(at(2 * time.Second))},
			"released", 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The claim happened at t0+4s on PostgreSQL's clock.
			h := handoffOf(c.waiting, c.prev, at(4*time.Second), claimStart)
			if c.wantCause == "" {
				if h != nil {
					t.Fatalf("handoff %+v, want none", *h)
				}
				return
			}
			if h == nil {
				t.Fatalf("no handoff, want cause %s", c.wantCause)
			}
			// The previous holding ended 4s - wantFrom before the claim.
			if wantFrom := claimStart.Add(-(4*time.Second - c.wantFrom)); h.cause != c.wantCause || !h.from.Equal(wantFrom) {
				t.Fatalf("handoff %s from %s, want %s from %s", h.cause, h.from, c.wantCause, wantFrom)
			}
		})
	}
}
