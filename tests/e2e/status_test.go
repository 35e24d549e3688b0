package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// `broker status` tells, from PostgreSQL, who holds the stream (exit 0) or
// that nobody does (exit 3); /metrics shows the lock and the lease.
func TestStatusAndMetrics(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	status := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bins["broker"], append([]string{"status", "--database-url", pg.URL()}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("broker status: %v", err)
		}
		return string(out), code
	}
	if out, code := status(); code != 3 || !strings.Contains(out, "held") {
		t.Fatalf("status before any broker: exit %d, output:\n%s\nwant exit 3", code, out)
	}

	a := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a"})
	startWorker(t, a, "worker-a")
	if err := a.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, code := status()
	if code != 0 {
		t.Fatalf("status with a leader: exit %d, output:\n%s", code, out)
	}
	for _, want := range []string{"yes, by backend pid", "baton-broker:default:", "worker-a", "last heartbeat", "(alive)"} {
		mustContain(t, out, want, "broker status")
	}
	out, code = status("-json")
	var js struct {
		Held   bool   `json:"held"`
		Epoch  uint64 `json:"epoch"`
		Worker string `json:"worker"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != 0 || !js.Held || js.Epoch == 0 || js.Worker != "worker-a" {
		t.Fatalf("status -json: exit %d, %v, %+v:\n%s", code, err, js, out)
	}

	resp, err := http.Get("http://" + a.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`baton_broker_lock_held{stream="default"} 1`,
		`baton_broker_lease_state{stream="default"} 1`,
		`baton_broker_grants_total{stream="default"} 1`,
		`baton_broker_lock_wait_seconds_count{stream="default"} 1`,
		`baton_broker_heartbeat_failures_total{stream="default"} 0`,
	} {
		mustContain(t, string(body), want, "/metrics")
	}

	if out, code := status("--replication-stream-id", "Bad"); code != 2 || !strings.Contains(out, "REPLICATION_STREAM_ID") {
		t.Fatalf("status with a bad stream id: exit %d:\n%s", code, out)
	}
}
