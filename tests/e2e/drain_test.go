package e2e_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// A broker whose lock session fails while it waits for its worker to drain
// (after SIGTERM) tells the worker with a second Revoked, lock_lost without
// drain time, before the stream ends: the worker must stop at once, the lock
// may already be another broker's (lease.proto B4, W6). The worker here is
// a raw gRPC stream, so what is checked is the wire, not a client's reading
// of it.
func TestLockLostDuringDrain(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a",
		Settings: map[string]string{"BATON_HEARTBEAT_INTERVAL": "500ms"}})
	cc, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := batonv1.NewLeaseServiceClient(cc).Lease(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Hello{Hello: &batonv1.Hello{
		ProtocolVersion: 2, WorkerId: "raw", StreamId: a.StreamID,
	}}}); err != nil {
		t.Fatal(err)
	}
	// next returns the next message that is not Standby or Renewed.
	next := func(what string) *batonv1.BrokerMessage {
		t.Helper()
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			if m.GetStandby() == nil && m.GetRenewed() == nil {
				return m
			}
		}
	}
	g := next("granted").GetGranted()
	if g == nil {
		t.Fatal("first message after standby is not granted")
	}
	var pid int32
	if err := conn.QueryRow(ctx, "SELECT backend_pid FROM baton.streams WHERE stream_id = $1", a.StreamID).Scan(&pid); err != nil {
		t.Fatal(err)
	}

	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := next("revoked (shutdown)").GetRevoked()
	if r.GetReason() != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN || r.GetEpoch() != g.GetEpoch() {
		t.Fatalf("after SIGTERM: %v, want revoked (shutdown) for epoch %d", r, g.GetEpoch())
	}
	if d := r.GetDrainTimeout().AsDuration(); d != 18*time.Second {
		t.Fatalf("drain_timeout = %v, want 18s (BATON_DRAIN_TIMEOUT 20 s less the margin)", d)
	}

	// The lock session dies while the broker waits for the release, which
	// this worker never sends.
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	r = next("revoked (lock lost)").GetRevoked()
	if r.GetReason() != batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST || r.GetEpoch() != g.GetEpoch() ||
		r.GetDrainTimeout() == nil || r.GetDrainTimeout().AsDuration() != 0 {
		t.Fatalf("after the lock session ended: %v, want revoked (lock_lost) for epoch %d with drain_timeout 0", r, g.GetEpoch())
	}
	// The broker logs the loss right after it sent the Revoked.
	awaitContains(t, a.Output, "lock lost; lease revoked", "broker a log", 10*time.Second)
}
