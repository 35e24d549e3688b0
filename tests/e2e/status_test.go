package e2e_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
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
		return brokerStatus(t, pg, args...)
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

	body := scrape(t, "http://"+a.MetricsAddr)
	for _, want := range []string{
		`baton_broker_lock_held{stream="default"} 1`,
		`baton_broker_lease_state{stream="default"} 1`,
		`baton_broker_grants_total{stream="default"} 1`,
		`baton_broker_lock_wait_seconds_count{stream="default"} 1`,
		`baton_broker_heartbeat_failures_total{stream="default"} 0`,
	} {
		mustContain(t, body, want, "/metrics")
	}

	if out, code := status("--replication-stream-id", "Bad"); code != 2 || !strings.Contains(out, "REPLICATION_STREAM_ID") {
		t.Fatalf("status with a bad stream id: exit %d:\n%s", code, out)
	}
}

// brokerStatus runs `broker status` against pg and returns its output and
// exit code.
func brokerStatus(t *testing.T, pg *pgtest.Cluster, args ...string) (string, int) {
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

// The durable position the worker reports on its lease stream (Progress)
// is shown by `broker status` (text and JSON, in pg_lsn form) and by the
// broker's metric baton_broker_worker_durable_lsn.
func TestStatusShowsWorkerProgress(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	b := startBroker(t, harness.BrokerOptions{DatabaseURL: pg.URL(), Name: "a", Settings: fastSettings})
	w := startWorker(t, b, "worker-a")
	if err := b.AwaitHealth("leader", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, _ := brokerStatus(t, pg)
	if strings.Contains(out, "durable lsn") {
		t.Fatalf("status shows a durable lsn before any progress:\n%s", out)
	}
	if err := harness.Await(10*time.Second, "the lease", func() (bool, error) { return w.Current() != nil, nil }); err != nil {
		t.Fatal(err)
	}
	const lsn, text = 0x1_016B3748, "1/16B3748"
	if err := w.Current().Progress(lsn); err != nil {
		t.Fatal(err)
	}

	// The broker records it with its next heartbeat.
	err := harness.AwaitEvery(10*time.Second, 100*time.Millisecond, "status -json to show the durable lsn", func() (bool, error) {
		out, code := brokerStatus(t, pg, "-json")
		var js struct {
			DurableLSN *string `json:"durable_lsn"`
		}
		if err := json.Unmarshal([]byte(out), &js); err != nil || code != 0 {
			return false, fmt.Errorf("status -json: exit %d, %v:\n%s", code, err, out)
		}
		return js.DurableLSN != nil && *js.DurableLSN == text, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = brokerStatus(t, pg)
	if !regexp.MustCompile(`(?m)^durable lsn +` + text + ` `).MatchString(out) {
		t.Fatalf("broker status does not show durable lsn %s:\n%s", text, out)
	}

	body := scrape(t, "http://"+b.MetricsAddr)
	m := regexp.MustCompile(`(?m)^baton_broker_worker_durable_lsn\{stream="default"\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no baton_broker_worker_durable_lsn:\n%s", body)
	}
	if v, err := strconv.ParseFloat(m[1], 64); err != nil || v != lsn {
		t.Fatalf("baton_broker_worker_durable_lsn = %s, want %d", m[1], uint64(lsn))
	}
}
