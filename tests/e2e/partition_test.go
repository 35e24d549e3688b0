package e2e_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/lease"
)

// A holder cut off the network (its own network namespace, link taken
// down: no FIN ever arrives) loses the stream to the standby within the
// session timeout + 3 s, and its worker's lease expires first.
func TestPartitionTakeover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	ns, err := harness.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	pg := pgtest.Start(t, pgtest.Options{ListenAddresses: []string{"127.0.0.1", ns.HostIP}})
	a := startBroker(t, harness.BrokerOptions{
		DatabaseURL: pg.URLWithHost(ns.HostIP), Name: "a(partitioned)", Settings: fastSettings,
		Wrap: ns.Wrap(), Host: ns.NSIP,
	})
	wa := startWorker(t, a, "wa")
	if err := a.AwaitHealth("leader", serving, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "b", Settings: fastSettings})
	wb := startWorker(t, b, "wb")
	if err := b.AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := ns.Cut(); err != nil {
		t.Fatal(err)
	}
	const bound = 3*time.Second + 3*time.Second
	g, _, err := wb.AwaitEvent(t.Context(), "granted", 0, bound)
	if err != nil {
		t.Fatalf("standby not granted within %s of the partition: %v", bound, err)
	}
	t.Logf("partition → grant: %s", g.At.Sub(cut))
	ea, _, err := wa.AwaitEvent(t.Context(), "ended", 0, time.Second)
	if err != nil {
		t.Fatalf("partitioned broker's worker never saw its lease end: %v", err)
	}
	if !errors.Is(ea.Cause, lease.ErrExpired) && !errors.Is(ea.Cause, lease.ErrBrokerLost) {
		t.Fatalf("partitioned worker's lease ended with %v, want expiry or broker loss", ea.Cause)
	}
	if !ea.At.Before(g.At) {
		t.Fatalf("old lease ended at %v, not before the new grant at %v", ea.At, g.At)
	}
}
