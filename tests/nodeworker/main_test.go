// Package nodeworker tests the Node worker (workers/node) as it runs:
// real broker processes, real Node worker processes (compiled from the
// TypeScript once for the package) and a throwaway PostgreSQL cluster.
package nodeworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// bins holds the broker and the Node worker ("node-worker"), built once.
var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-nodeworker-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err = harness.Build(ctx, dir, "github.com/batonhq/baton/broker/cmd/broker")
	cleanup := func() {}
	if err == nil {
		bins["node-worker"], cleanup, err = harness.BuildNodeWorker(ctx, dir)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fastBroker are short but valid broker timeouts for handoff tests.
var fastBroker = map[string]string{
	"BATON_LOCK_SESSION_TIMEOUT":   "3s",
	"BATON_HEARTBEAT_INTERVAL":     "500ms",
	"BATON_LEASE_TTL":              "2s",
	"BATON_WORKER_ABSENCE_TIMEOUT": "30s",
	"BATON_DRAIN_TIMEOUT":          "10s",
}

// newPod starts a pod of a broker and a Node worker writing to out; broker
// settings, when given, are added to fastBroker's.
func newPod(t *testing.T, pg *pgtest.Cluster, name, out string, broker ...map[string]string) *harness.Pod {
	t.Helper()
	settings := maps.Clone(fastBroker)
	for _, b := range broker {
		maps.Copy(settings, b)
	}
	return harness.NewPod(t, harness.PodOptions{
		Name: name, BrokerBin: bins["broker"], WorkerBin: bins["node-worker"], DatabaseURL: pg.URL(),
		BrokerSettings: settings,
		WorkerSettings: map[string]string{"BATON_OUTPUT_FILE": out, "BATON_TABLES": "public.items"},
		AwaitBroker:    true,
	})
}

// awaitActive waits until one of the pods' workers says active and returns it.
func awaitActive(t *testing.T, timeout time.Duration, pods ...*harness.Pod) *harness.Pod {
	t.Helper()
	var active *harness.Pod
	if err := harness.Await(timeout, "a pod's Node worker active", func() (bool, error) {
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

// line is one line of the Node worker's output file.
type line struct {
	LSN    string            `json:"lsn"`
	EndLSN string            `json:"end_lsn"`
	Epoch  uint64            `json:"epoch"`
	I      int               `json:"i"`
	N      int               `json:"n"`
	Op     string            `json:"op"`
	Table  string            `json:"table"`
	New    map[string]string `json:"new"`
}

// txn is a transaction as the file holds it: its commit LSN, the epoch
// that wrote it and the ids its inserts carry.
type txn struct {
	lsn   string
	epoch uint64
	ids   []string
}

// readOutput parses the file into transactions, checking that every
// transaction is whole (lines i = 0..n-1 in order) and that commit LSNs
// strictly increase from one transaction to the next. A worker may be
// appending while it reads: a last line without its newline, and a last
// transaction with fewer than n lines, are not counted.
func readOutput(path string) ([]txn, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	var out []txn
	var prev uint64
	whole := true
	for n, text := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if text == "" {
			continue
		}
		var l line
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			return nil, fmt.Errorf("line %d: %w: %s", n+1, err, text)
		}
		if l.I == 0 {
			if !whole {
				return nil, fmt.Errorf("line %d: transaction %s starts before %s ended", n+1, l.LSN, out[len(out)-1].lsn)
			}
			lsn, err := parseLSN(l.LSN)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n+1, err)
			}
			if len(out) > 0 && lsn <= prev {
				return nil, fmt.Errorf("line %d: transaction %s (epoch %d) after %s: commit LSNs must increase", n+1, l.LSN, l.Epoch, out[len(out)-1].lsn)
			}
			prev = lsn
			out = append(out, txn{lsn: l.LSN, epoch: l.Epoch})
		} else if len(out) == 0 || out[len(out)-1].lsn != l.LSN || len(out[len(out)-1].ids) != l.I {
			return nil, fmt.Errorf("line %d: change %d of %d of %s out of place", n+1, l.I, l.N, l.LSN)
		}
		cur := &out[len(out)-1]
		if l.Op == "insert" && l.Table == "items" {
			cur.ids = append(cur.ids, l.New["id"])
		} else {
			cur.ids = append(cur.ids, l.Op+":"+l.Table)
		}
		whole = l.I == l.N-1
	}
	if !whole {
		out = out[:len(out)-1]
	}
	return out, nil
}

func parseLSN(s string) (uint64, error) {
	var hi, lo uint64
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return hi<<32 | lo, nil
}

// idsText is a transaction's ids as one comparable string.
func idsText(ids []string) string { return strings.Join(ids, ",") }
