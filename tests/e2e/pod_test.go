package e2e_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// pod is a broker and its worker that keep their addresses and storage
// across restarts of either container, as in a Kubernetes pod: a worker
// restarted finds its broker where it was, and a restarted broker finds its
// worker attaching again.
type pod struct {
	name     string
	dir      string
	pg       *pgtest.Cluster
	settings map[string]string
	// tee, when set, receives every log line of the pod's processes
	// (prefixed with the process name) and the logs are not printed when
	// the test fails; otherwise each process's log is printed then.
	tee *os.File

	brokerAddr, metricsAddr, httpAddr string

	broker *harness.Broker
	worker *harness.Worker
	starts int // processes started, to name them
}

// newPod starts a pod's broker and worker on storage dir.
func newPod(t *testing.T, pg *pgtest.Cluster, name, dir string, settings map[string]string, tee *os.File) *pod {
	t.Helper()
	p := &pod{name: name, dir: dir, pg: pg, settings: settings, tee: tee}
	for _, a := range []*string{&p.brokerAddr, &p.metricsAddr, &p.httpAddr} {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		*a = "127.0.0.1:" + strconv.Itoa(port)
	}
	p.startBroker(t)
	p.startWorker(t)
	return p
}

// base is the worker's shape API base URL.
func (p *pod) base() string { return "http://" + p.httpAddr }

// startBroker starts the pod's broker (again).
func (p *pod) startBroker(t *testing.T) {
	t.Helper()
	p.starts++
	b, err := harness.StartBroker(harness.BrokerOptions{
		Bin: bins["broker"], DatabaseURL: p.pg.URL(), Settings: p.settings, Addr: p.brokerAddr, MetricsAddr: p.metricsAddr,
		Name: fmt.Sprintf("broker-%s#%d", p.name, p.starts), Tee: p.tee,
	})
	if err != nil {
		t.Fatalf("start broker of pod %s: %v", p.name, err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() && p.tee == nil {
			t.Logf("--- log of %s ---\n%s", b.Name, b.Output())
		}
	})
	p.broker = b
}

// startWorker starts the pod's worker (again) on the pod's storage.
func (p *pod) startWorker(t *testing.T) {
	t.Helper()
	p.starts++
	w, err := harness.StartWorker(harness.WorkerOptions{
		Bin: bins["worker"], DatabaseURL: p.pg.URL(), BrokerAddr: p.brokerAddr, StorageDir: p.dir, HTTPAddr: p.httpAddr,
		Name: fmt.Sprintf("worker-%s#%d", p.name, p.starts), Tee: p.tee,
	})
	if err != nil {
		t.Fatalf("start worker of pod %s: %v", p.name, err)
	}
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() && p.tee == nil {
			t.Logf("--- log of %s ---\n%s", w.Name, w.Output())
		}
	})
	p.worker = w
}

// exited reports whether proc has exited.
func exited(proc *harness.Process) bool {
	select {
	case <-proc.Done():
		return true
	default:
		return false
	}
}

// awaitActivePod waits until a pod's worker says active and returns that
// pod.
func awaitActivePod(t *testing.T, timeout time.Duration, pods ...*pod) *pod {
	t.Helper()
	var active *pod
	if err := harness.Await(timeout, "a pod's worker active", func() (bool, error) {
		for _, p := range pods {
			if s, _, err := p.worker.Health(); err == nil && s == "active" {
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
