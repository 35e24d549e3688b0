package e2e_test

import (
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// TestLogs reads every log line of two pods (JSON) through a fresh start,
// a shape, a handoff in the kubelet's stop order, a restart on the same
// storage and a handoff back, and a restart alone: every line carries the stream and, while the
// process holds the stream, the epoch; durations are Go durations and WAL
// positions X/Y; nothing on these normal paths is a warning or an error.
// A worker started with no broker says so at once, and warns every few
// seconds while that lasts.
func TestLogs(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(t.Context(), `CREATE TABLE items (id bigserial PRIMARY KEY, pad text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	// Deployed as in production: JSON logs, a secret (BATON_INSECURE, the
	// tests' default, warns by design).
	json := map[string]string{"BATON_LOG_FORMAT": "json"}
	workerSettings := map[string]string{"BATON_LOG_FORMAT": "json", "BATON_SECRET": "s3cret"}
	shape := url.Values{"table": {"items"}, "secret": {"s3cret"}}
	pod := func(name, storage string) *harness.Pod {
		return newPod(t, pg, harness.PodOptions{Name: name, StorageDir: storage, BrokerSettings: json, WorkerSettings: workerSettings,
			Advertise: true, AwaitBroker: true})
	}
	storageA := t.TempDir()
	a := pod("a", storageA)
	if err := a.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	b := pod("b", t.TempDir())
	if err := b.Worker().AwaitStatus("waiting", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c := harness.NewShapeClient(a.URL(), shape)
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO items (pad) SELECT 'x' FROM generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Pod a stops in the kubelet's order; pod b takes over.
	if err := a.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Pod a comes back on its storage (./data reused) and takes over again.
	if _, err := a.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().AwaitStatus("waiting", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Its storage cannot prove continuity with the slot pod b advanced:
	// the shape is new.
	c = harness.NewShapeClient(a.URL(), shape)
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// And once more alone, its storage continuous with the slot.
	if _, err := a.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(a.Processes(), b.Processes()...) {
		checkLog(t, p.Name, p.Output())
	}

	// A worker whose broker is not there.
	lone, err := harness.StartWorker(harness.WorkerOptions{Bin: bins["worker"], DatabaseURL: pg.URL(), BrokerAddr: "127.0.0.1:1",
		StorageDir: t.TempDir(), Name: "worker-alone", Settings: workerSettings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lone.Kill()
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", lone.Name, lone.Output())
		}
	})
	if err := lone.WaitOutput(`"msg":"cannot reach the broker`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := lone.WaitOutput(`"msg":"still cannot reach the broker"`, 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

// lsnText is a WAL position as PostgreSQL writes it.
var lsnText = regexp.MustCompile(`^[0-9A-F]{1,8}/[0-9A-F]{1,8}$`)

// durationKeys name attributes that are durations.
var durationKeys = regexp.MustCompile(`(^|_)(ttl|timeout|interval|waited|took|in|after|for|duration)$|^startup\.`)

// checkLog checks the JSON log of one process (see TestLogs).
func checkLog(t *testing.T, name, out string) {
	t.Helper()
	holding := false // between the start and the end of a holding (broker) or lease (worker)
	worker := strings.HasPrefix(name, "worker")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("%s: not a JSON line: %s", name, line)
			continue
		}
		msg, _ := m["msg"].(string)
		switch {
		case worker && msg == "lease granted", !worker && msg == "lock acquired":
			holding = true
		}
		if m["stream"] != "default" {
			t.Errorf("%s: no stream: %s", name, line)
		}
		if _, ok := m["epoch"]; holding && !ok {
			t.Errorf("%s: no epoch while holding the stream: %s", name, line)
		}
		if lvl := m["level"]; lvl != "INFO" {
			t.Errorf("%s: %s on a normal path: %s", name, lvl, line)
		}
		walk(m, "", func(key string, v any) {
			switch {
			case strings.HasSuffix(key, "lsn"):
				if s, ok := v.(string); !ok || !lsnText.MatchString(s) {
					t.Errorf("%s: %s=%v is not a WAL position X/Y: %s", name, key, v, line)
				}
			case durationKeys.MatchString(key):
				if s, ok := v.(string); !ok {
					t.Errorf("%s: %s=%v is not a duration: %s", name, key, v, line)
				} else if _, err := time.ParseDuration(s); err != nil {
					t.Errorf("%s: %s=%q is not a Go duration: %s", name, key, s, line)
				}
			}
		})
		switch {
		case worker && msg == "lease released",
			!worker && (msg == "lock released" || strings.HasPrefix(msg, "lease released by its stopping worker")):
			holding = false
		}
	}
}

// walk calls fn with every leaf attribute of m, groups' keys joined by ".".
func walk(m map[string]any, prefix string, fn func(key string, v any)) {
	for k, v := range m {
		if g, ok := v.(map[string]any); ok {
			walk(g, prefix+k+".", fn)
			continue
		}
		fn(prefix+k, v)
	}
}
