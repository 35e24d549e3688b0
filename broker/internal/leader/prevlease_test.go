package leader

import (
	"testing"
	"time"

	"github.com/batonhq/baton/broker/internal/lock"
)

// TestPreviousLeaseLeft: a grant waits for the previous holder's lease only
// when PostgreSQL restarted after that holder's last heartbeat and it had
// not released, and then until that heartbeat plus the session timeout
// (and a delivery margin).
func TestPreviousLeaseLeft(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	released := t0.Add(time.Second)
	const session, ttl = 10 * time.Second, 6 * time.Second
	margin := 600 * time.Millisecond // ttl/10
	for _, c := range []struct {
		name     string
		prev     lock.Previous
		start    time.Time // PostgreSQL's start
		acquired time.Time
		want     time.Duration
	}{
		{"first holding", lock.Previous{}, t0.Add(time.Second), t0.Add(2 * time.Second), 0},
		{"released", lock.Previous{Recorded: true, LastHeartbeat: t0, ReleasedAt: &released}, t0.Add(time.Second), t0.Add(2 * time.Second), 0},
		{"session ended, no restart since the heartbeat", lock.Previous{Recorded: true, LastHeartbeat: t0}, t0.Add(-time.Hour), t0.Add(time.Second), 0},
		{"restart after the heartbeat", lock.Previous{Recorded: true, LastHeartbeat: t0}, t0.Add(time.Second), t0.Add(3 * time.Second), session + margin - 3*time.Second},
		{"restart, acquired after the bound", lock.Previous{Recorded: true, LastHeartbeat: t0}, t0.Add(time.Second), t0.Add(session + margin + time.Second), 0},
	} {
		if got := previousLeaseLeft(c.prev, c.start, c.acquired, session, ttl); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
