package conformance_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/conformance"
	"github.com/batonhq/baton/tests/harness"
)

// build compiles the broker and the fixture worker (testdata/badworker).
func build(t *testing.T) (broker, worker string) {
	t.Helper()
	dir := t.TempDir()
	bins, err := harness.Build(context.Background(), dir,
		"github.com/batonhq/baton/broker/cmd/broker",
		"github.com/batonhq/baton/tests/conformance/testdata/badworker")
	if err != nil {
		t.Fatal(err)
	}
	return bins["broker"], filepath.Join(dir, "badworker")
}

// run runs the kit and returns its results by check name and its output.
// When the test fails, the last lines the processes printed are logged.
func run(t *testing.T, o conformance.Options) (map[string]conformance.Result, string) {
	t.Helper()
	var out strings.Builder
	o.Out = &out
	logPath := filepath.Join(t.TempDir(), "processes.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	o.Log = f
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			b, err := os.ReadFile(logPath)
			if err != nil {
				t.Logf("the processes' log: %v", err)
				return
			}
			t.Logf("the processes' log ends:\n%s", harness.Tail(string(b), 80))
		}
	})
	results, err := conformance.Run(context.Background(), o)
	if err != nil {
		t.Fatalf("the kit could not run: %v\n%s", err, out.String())
	}
	byName := map[string]conformance.Result{}
	for _, r := range results {
		byName[r.Name] = r
	}
	return byName, out.String()
}

// The fixture worker keeps every obligation: every check passes (so that
// the failures below are the broken obligation's).
func TestFixtureConforms(t *testing.T) {
	broker, worker := build(t)
	results, out := run(t, conformance.Options{Worker: worker, BrokerBin: broker})
	t.Logf("kit output:\n%s", out)
	if len(results) != len(conformance.Checks) {
		t.Fatalf("%d results, want one per check (%d)", len(results), len(conformance.Checks))
	}
	for _, name := range conformance.Checks {
		if !results[name].OK {
			t.Errorf("%s", results[name])
		}
	}
	if want := fmt.Sprintf("%d passed, 0 failed\n", len(conformance.Checks)); !strings.HasSuffix(out, want) {
		t.Errorf("summary: want %q at the end of:\n%s", want, out)
	}
}

// Each check fails on a worker that breaks its obligation (BATON_BAD, see
// testdata/badworker). A run stops once the check has its result.
func TestBrokenWorkersFail(t *testing.T) {
	broker, worker := build(t)
	for _, c := range []struct {
		bad   string
		check string
	}{
		{"early", "no-replication-before-granted/a"},
		{"noepoch", "epoch-in-application-name/a"},
		{"pings", "keepalive-within-limits"},
		{"ackahead", "slot-never-passes-durable"},
		{"ignorettl", "stops-within-ttl/a"},
		{"revoke", "revoked-shutdown-drains/b"},
		{"locklost", "lock-lost-stops"},
		{"volatile", "sigkill-restart-keeps-acknowledged"},
		{"nostopping", "sigterm-release-stopping/a"},
		{"hello", "hello-first"},
		{"strict", "ignores-unknown-messages/a"},
		{"anyrevoke", "ignores-other-epochs/a"},
		{"lossy", "delivered-exactly-once"},
		{"dupe", "delivered-exactly-once"},
	} {
		t.Run(c.bad, func(t *testing.T) {
			until := c.check
			switch c.bad {
			case "pings", "ackahead", "hello":
				// Checks over the whole run: judged at the stop.
				until = "no-replication-before-granted/b"
			}
			results, out := run(t, conformance.Options{Worker: "BATON_BAD=" + c.bad + " " + worker, BrokerBin: broker, Until: until})
			r, ok := results[c.check]
			if !ok {
				t.Fatalf("no result for %s:\n%s", c.check, out)
			}
			if r.OK {
				t.Fatalf("%s passed on a worker with BATON_BAD=%s:\n%s", c.check, c.bad, out)
			}
			t.Logf("%s", r)
		})
	}
}
