package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/url"
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
	for _, want := range []string{"held by backend pid", "baton-broker:default:", "worker-a", "last heartbeat", ", alive)"} {
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

// `broker status` and `worker status` print the same report from
// PostgreSQL: the holder, since when, its epoch and last heartbeat, the
// worker's durable position, the slot's consumer, lag, retained WAL and
// state, the standbys and why they wait; exit 3 once nobody holds the
// stream.
func TestStatusCommands(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(t.Context(), `CREATE TABLE items (id bigserial PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), AwaitBroker: true})
	if err := a.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir(), AwaitBroker: true})
	if err := b.Worker().AwaitStatus("waiting", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c := harness.NewShapeClient(a.URL(), url.Values{"table": {"items"}})
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO items (note) SELECT 'x' FROM generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}

	type report struct {
		Held          bool    `json:"held"`
		Holder        string  `json:"holder"`
		Epoch         uint64  `json:"epoch"`
		Since         string  `json:"since"`
		LastHeartbeat string  `json:"last_heartbeat"`
		Worker        string  `json:"worker"`
		DurableLSN    *string `json:"durable_lsn"`
		CurrentWAL    string  `json:"current_wal_lsn"`
		Slot          *struct {
			Name          string `json:"name"`
			Active        bool   `json:"active"`
			ConsumerEpoch uint64 `json:"consumer_epoch"`
			WALStatus     string `json:"wal_status"`
			Retained      int64  `json:"retained_wal_bytes"`
			Lag           *int64 `json:"lag_bytes"`
			Walsender     *struct {
				State string `json:"state"`
			} `json:"walsender"`
		} `json:"slot"`
		Waiting []struct {
			App string `json:"application_name"`
		} `json:"waiting"`
		Why      string `json:"why_standby_waits"`
		Sessions []struct {
			Role string `json:"role"`
		} `json:"sessions"`
	}
	run := func(bin string, args ...string) (report, string, int) {
		t.Helper()
		cmd := exec.Command(bins[bin], append([]string{"status", "--database-url", pg.URL()}, args...)...)
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s status: %v", bin, err)
		}
		var r report
		if len(args) > 0 {
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%s status %v: %v:\n%s", bin, args, err, out)
			}
		}
		return r, string(out), code
	}
	// The worker's durable position reaches the state table with a
	// heartbeat.
	var r report
	var out string
	if err := harness.Await(20*time.Second, "status to show the worker's durable position", func() (bool, error) {
		var code int
		r, out, code = run("broker", "--json")
		return code == 0 && r.DurableLSN != nil, nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	lsn := regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+$`)
	roles := map[string]bool{}
	for _, s := range r.Sessions {
		roles[s.Role] = true
	}
	if !r.Held || !strings.HasPrefix(r.Holder, "baton-broker:default:") || r.Epoch == 0 || r.Since == "" || r.LastHeartbeat == "" ||
		!strings.HasPrefix(r.Worker, "worker@") || !lsn.MatchString(*r.DurableLSN) || !lsn.MatchString(r.CurrentWAL) ||
		r.Slot == nil || r.Slot.Name != "baton_slot_default" || !r.Slot.Active || r.Slot.ConsumerEpoch != r.Epoch ||
		r.Slot.WALStatus != "reserved" || r.Slot.Retained <= 0 || r.Slot.Lag == nil || r.Slot.Walsender == nil ||
		r.Slot.Walsender.State != "streaming" || len(r.Waiting) != 1 || !strings.HasPrefix(r.Waiting[0].App, "baton-broker:default:") ||
		!strings.Contains(r.Why, "held by "+r.Holder) || !roles["baton-broker"] || !roles["baton-worker"] {
		t.Fatalf("broker status --json:\n%s", out)
	}
	w, wout, code := run("worker", "-json")
	if code != 0 || w.Holder != r.Holder || w.Epoch != r.Epoch || w.Slot == nil || w.Slot.Name != r.Slot.Name || len(w.Waiting) != 1 ||
		!strings.Contains(w.Why, "held by "+r.Holder) {
		t.Fatalf("worker status -json (exit %d) differs from broker status:\n%s\n%s", code, wout, out)
	}
	_, text, code := run("worker")
	for _, want := range []string{"holder ", "epoch ", "since ", "last heartbeat ", "durable lsn ", "slot ", "active, consumed by",
		"slot wal status ", "lag ", "walsender ", "retained wal ", "standbys ", "why standbys wait ", "sessions "} {
		if code != 0 || !strings.Contains(text, want) {
			t.Fatalf("worker status (exit %d) has no %q:\n%s", code, want, text)
		}
	}
	t.Logf("worker status:\n%s", text)

	if err := b.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"broker", "worker"} {
		r, out, code := run(bin, "--json")
		if code != 3 || r.Held || r.Slot == nil || r.Slot.Active || len(r.Waiting) != 0 {
			t.Fatalf("%s status with nobody holding the stream: exit %d, want 3:\n%s", bin, code, out)
		}
	}
}

// -help of every binary and command lists the commands and the command's
// flags, on stdout, and exits 0.
func TestHelp(t *testing.T) {
	commands := map[string][]string{
		"broker": {"broker status", "broker config", "broker version", "broker help"},
		"worker": {"worker status", "worker check", "worker inspect", "worker version", "worker help"},
	}
	for _, c := range []struct {
		bin   string
		args  []string
		flags string // the command whose flags are listed
	}{
		{"broker", []string{"--help"}, "broker"},
		{"broker", []string{"-h"}, "broker"},
		{"broker", []string{"help"}, "broker"},
		{"broker", []string{"status", "--help"}, "broker status"},
		{"broker", []string{"config", "-help"}, "broker config"},
		{"worker", []string{"--help"}, "worker"},
		{"worker", []string{"help"}, "worker"},
		{"worker", []string{"status", "--help"}, "worker status"},
		{"worker", []string{"check", "--help"}, "worker check"},
		{"worker", []string{"inspect", "--help"}, "worker inspect"},
	} {
		cmd := exec.Command(bins[c.bin], c.args...)
		cmd.Env = []string{} // no DATABASE_URL: help needs none
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil || stderr.Len() != 0 {
			t.Errorf("%s %v: %v, stderr:\n%s", c.bin, c.args, err, stderr.String())
			continue
		}
		out := stdout.String()
		for _, want := range append(commands[c.bin], "Flags of "+c.flags+":\n") {
			if !strings.Contains(out, want) {
				t.Errorf("%s %v does not list %q:\n%s", c.bin, c.args, want, out)
			}
		}
		if !strings.Contains(out, "  -") {
			t.Errorf("%s %v lists no flags:\n%s", c.bin, c.args, out)
		}
	}
}
