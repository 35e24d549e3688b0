package replication

import (
	"testing"
	"time"
)

// TestLag: the lag is what the server sent beyond what is durable or
// passed over, in bytes and in time: since the last durable commit while
// behind, that commit's age when it became durable otherwise, none once
// the server had nothing more to send or when not streaming.
func TestLag(t *testing.T) {
	var l lag
	check := func(when string, bytes uint64, seconds func(time.Duration) bool) {
		t.Helper()
		if b, s := l.bytes(), l.seconds(time.Now()); b != bytes || !seconds(s) {
			t.Fatalf("%s: lag %d bytes, %s", when, b, s)
		}
	}
	zero := func(d time.Duration) bool { return d == 0 }
	about := func(want time.Duration) func(time.Duration) bool {
		return func(d time.Duration) bool { return d >= want && d < want+time.Second }
	}
	check("not streaming", 0, zero)
	l.start(1000)
	check("started", 0, zero)
	l.sent(1500)
	check("behind before any commit: since the start", 500, about(0))
	l.sent(1200) // an older position changes nothing
	l.durable(1400, time.Now().Add(-3*time.Second))
	check("a commit 3s old durable, more sent", 100, about(3*time.Second))
	l.durable(1450, time.Time{}) // a sync with no new commit keeps the commit time
	check("no new commit", 50, about(3*time.Second))
	l.durable(1500, time.Now().Add(-2*time.Second))
	check("everything sent durable: the last commit's age then", 0, about(2*time.Second))
	l.caughtUp(1500) // a keepalive's WAL end, nothing pending
	check("caught up", 0, zero)
	l.caughtUp(1300)
	check("an older keepalive", 0, zero)
	l.stop()
	check("stopped", 0, zero)
}
