// Package e2e holds Baton's end-to-end and fault tests: real broker (and
// worker) processes against a throwaway PostgreSQL cluster, with real
// signals and real network partitions.
package e2e_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/lease"
)

// bins holds the binaries built once for the whole package.
var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err = harness.Build(ctx, dir, "github.com/batonhq/baton/broker/cmd/broker", "github.com/batonhq/baton/worker/cmd/worker")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// fastSettings are short but valid timeouts for fault tests.
var fastSettings = map[string]string{
	"BATON_LOCK_SESSION_TIMEOUT":   "3s",
	"BATON_HEARTBEAT_INTERVAL":     "500ms",
	"BATON_LEASE_TTL":              "2s",
	"BATON_WORKER_ABSENCE_TIMEOUT": "30s",
	"BATON_DRAIN_TIMEOUT":          "10s",
}

// startBroker starts a broker and registers its cleanup; its log is printed
// when the test fails.
func startBroker(t *testing.T, o harness.BrokerOptions) *harness.Broker {
	t.Helper()
	if o.Bin == "" {
		o.Bin = bins["broker"]
	}
	b, err := harness.StartBroker(o)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", b.Name, b.Output())
		}
	})
	return b
}

// newPod starts a pod (a broker and its worker) with the test's binaries
// on pg (unless o names another database URL); see harness.NewPod.
func newPod(t *testing.T, pg *pgtest.Cluster, o harness.PodOptions) *harness.Pod {
	t.Helper()
	o.BrokerBin, o.WorkerBin = bins["broker"], bins["worker"]
	if o.DatabaseURL == "" {
		o.DatabaseURL = pg.URL()
	}
	return harness.NewPod(t, o)
}

// newActivePod starts a pod named name on storage and waits until its
// worker is active.
func newActivePod(t *testing.T, pg *pgtest.Cluster, name, storage string) *harness.Pod {
	t.Helper()
	p := newPod(t, pg, harness.PodOptions{Name: name, StorageDir: storage})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitActivePod waits until a pod's worker says active and returns that
// pod.
func awaitActivePod(t *testing.T, timeout time.Duration, pods ...*harness.Pod) *harness.Pod {
	t.Helper()
	var active *harness.Pod
	if err := harness.Await(timeout, "a pod's worker active", func() (bool, error) {
		for _, p := range pods {
			if s, _, err := p.Worker().Health(); err == nil && s == "active" {
				active = p
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	return active
}

// startWorker attaches an in-process lease worker to b.
func startWorker(t *testing.T, b *harness.Broker, id string) *harness.LeaseWorker {
	t.Helper()
	w, err := harness.StartLeaseWorker(b.Addr, lease.Options{WorkerID: id, StreamID: b.StreamID}, nil)
	if err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

func connect(t *testing.T, pg *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lockHolders returns the backend pids holding the stream's advisory lock
// (granted) and how many wait for it.
func lockHolders(t *testing.T, conn *pgx.Conn, streamID string) (held []int32, waiting int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held, waiting, err := harness.LockHolders(ctx, conn, streamID)
	if err != nil {
		t.Fatal(err)
	}
	return held, waiting
}

// storedEpoch reads the stream's epoch from the state table.
func storedEpoch(t *testing.T, conn *pgx.Conn, streamID string) uint64 {
	t.Helper()
	var e int64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.QueryRow(ctx, "SELECT epoch FROM baton.streams WHERE stream_id = $1", streamID).Scan(&e); err != nil {
		t.Fatalf("read epoch: %v", err)
	}
	return uint64(e)
}

// awaitLeader waits until exactly one of brokers is leader and returns it.
func awaitLeader(t *testing.T, timeout time.Duration, brokers ...*harness.Broker) *harness.Broker {
	t.Helper()
	var leader *harness.Broker
	err := harness.Await(timeout, "exactly one leader", func() (bool, error) {
		leader = nil
		n := 0
		for _, b := range brokers {
			if b.IsLeader() {
				leader = b
				n++
			}
		}
		if n > 1 {
			return false, fmt.Errorf("%d brokers report leader at once", n)
		}
		return n == 1, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// other returns the broker of the pair that is not b.
func other(b, x, y *harness.Broker) *harness.Broker {
	if b == x {
		return y
	}
	return x
}

// awaitContains waits until output() holds sub (a process's log, which
// may be written right after what the test saw), failing after timeout.
func awaitContains(t *testing.T, output func() string, sub, what string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(output(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q not found after %s in:\n%s", what, sub, timeout, output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustContain(t *testing.T, s, sub, what string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%s: %q not found in:\n%s", what, sub, s)
	}
}
