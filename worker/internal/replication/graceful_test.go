package replication

import (
	"context"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/worker/lease"
)

// endedLease is a Lease that ended with err, revoked with drainBy.
type endedLease struct {
	err     error
	drainBy time.Time
}

func (l endedLease) Ctx() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(l.err)
	return ctx
}
func (l endedLease) Done() <-chan struct{}    { return l.Ctx().Done() }
func (l endedLease) Err() error               { return l.err }
func (l endedLease) Valid() bool              { return l.err == nil }
func (l endedLease) DrainDeadline() time.Time { return l.drainBy }
func (l endedLease) Progress(uint64) error    { return nil }

// TestGraceful: after a revoke the stream drains only while the broker's
// drain deadline (Revoked.drain_timeout) is ahead, whatever the reason
// (lease.proto W6); expiry and a lost broker stop at once; the worker's own
// shutdown under a valid lease drains.
func TestGraceful(t *testing.T) {
	revoked := func(r batonv1.RevokeReason) error { return &lease.RevokedError{Reason: r, Message: "test"} }
	ahead, passed := time.Now().Add(time.Hour), time.Now().Add(-time.Millisecond)
	tests := []struct {
		name     string
		l        endedLease
		shutdown bool // the worker's own context is done
		want     bool
	}{
		{"revoked for shutdown, deadline ahead", endedLease{revoked(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN), ahead}, false, true},
		{"revoked for shutdown, deadline passed", endedLease{revoked(batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN), passed}, false, false},
		{"lock lost (drain 0)", endedLease{revoked(batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST), passed}, false, false},
		{"replaced (drain 0)", endedLease{revoked(batonv1.RevokeReason_REVOKE_REASON_REPLACED), passed}, false, false},
		{"expired", endedLease{lease.ErrExpired, time.Time{}}, true, false},
		{"broker lost", endedLease{lease.ErrBrokerLost, time.Time{}}, true, false},
		{"own shutdown, lease valid", endedLease{}, true, true},
		{"lease valid, no shutdown", endedLease{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.shutdown {
				cancel()
			}
			if got := graceful(ctx, tt.l); got != tt.want {
				t.Fatalf("graceful = %v, want %v", got, tt.want)
			}
		})
	}
}
