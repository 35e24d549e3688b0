package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// brokerListenTimeout bounds a pod's wait for its broker to listen before
// its worker starts.
const brokerListenTimeout = 20 * time.Second

// PodOptions start a Pod.
type PodOptions struct {
	// Name names the processes broker-<name> and worker-<name> (broker and
	// worker when empty); a container started again gets #<n>.
	Name                 string
	BrokerBin, WorkerBin string
	DatabaseURL          string
	StreamID             string // default "default"
	StorageDir           string
	// BrokerSettings and WorkerSettings are extra environment variables of
	// each container (BATON_LEASE_TTL=2s, ...).
	BrokerSettings, WorkerSettings map[string]string
	// Advertise sets the worker's BATON_ADVERTISE_URL to its own URL, as a
	// pod advertises http://$(POD_IP):3000.
	Advertise bool
	// BrokerAddr, MetricsAddr and HTTPAddr, when set, are the broker's
	// gRPC and metrics and the worker's HTTP listen addresses instead of
	// free ports on 127.0.0.1 (e.g. to give a client the same URL across
	// pods).
	BrokerAddr, MetricsAddr, HTTPAddr string
	// Tee, when set, receives every log line of the pod's processes,
	// prefixed with the process's name.
	Tee *os.File
	// AwaitBroker starts the worker only once the broker listens, as the
	// kubelet starts the main container once its native sidecar's startup
	// probe passed; otherwise both start at once.
	AwaitBroker bool
}

// Pod is a broker and its worker as Kubernetes runs them in one pod: each
// keeps its addresses, and the worker its storage, when it is started
// again, as a restarted container does. Its methods are safe for
// concurrent use.
type Pod struct {
	opts                              PodOptions
	brokerAddr, metricsAddr, httpAddr string

	mu      sync.Mutex
	broker  *Broker
	worker  *Worker
	starts  map[string]int // per container
	procs   []*Process     // every process started, in order
	brokers []*Broker      // every broker started, to close its health client
}

// StartPod starts a pod's broker on its addresses (free ports unless set),
// then its worker (with AwaitBroker, once the broker listens: a wait
// bounded, and ended by ctx).
// It does not wait for the worker. On an error nothing is left running;
// otherwise Close the pod.
func StartPod(ctx context.Context, o PodOptions) (*Pod, error) {
	p := &Pod{opts: o, brokerAddr: o.BrokerAddr, metricsAddr: o.MetricsAddr, httpAddr: o.HTTPAddr, starts: map[string]int{}}
	for _, a := range []*string{&p.brokerAddr, &p.metricsAddr, &p.httpAddr} {
		if *a != "" {
			continue
		}
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		*a = "127.0.0.1:" + strconv.Itoa(port)
	}
	if err := p.StartBroker(ctx); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.StartWorker(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// NewPod is StartPod for a test: the test fails if the pod does not start;
// when it ends, every process the pod started is killed and, if the test
// failed and the pod has no Tee, each one's log is printed.
func NewPod(t testing.TB, o PodOptions) *Pod {
	t.Helper()
	p, err := StartPod(t.Context(), o)
	if err != nil {
		t.Fatalf("start pod %s: %v", o.Name, err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() && o.Tee == nil {
			for _, proc := range p.Processes() {
				t.Logf("--- log of %s ---\n%s", proc.Name, proc.Output())
			}
		}
	})
	return p
}

// name is the next name of container c ("broker" or "worker").
func (p *Pod) name(c string) string {
	p.starts[c]++
	n := c
	if p.opts.Name != "" {
		n += "-" + p.opts.Name
	}
	if k := p.starts[c]; k > 1 {
		n += "#" + strconv.Itoa(k)
	}
	return n
}

// StartBroker starts the pod's broker (again, once the previous one
// exited) on the pod's addresses; with AwaitBroker it waits until the
// broker listens.
func (p *Pod) StartBroker(ctx context.Context) error {
	p.mu.Lock()
	b, err := StartBroker(BrokerOptions{
		Bin: p.opts.BrokerBin, DatabaseURL: p.opts.DatabaseURL, StreamID: p.opts.StreamID, Settings: p.opts.BrokerSettings,
		Addr: p.brokerAddr, MetricsAddr: p.metricsAddr, Name: p.name("broker"), Tee: p.opts.Tee,
	})
	if err == nil {
		p.broker = b
		p.procs = append(p.procs, b.Process)
		p.brokers = append(p.brokers, b)
	}
	p.mu.Unlock()
	if err != nil || !p.opts.AwaitBroker {
		return err
	}
	return b.AwaitListening(ctx, brokerListenTimeout)
}

// StartWorker starts the pod's worker (again, once the previous one
// exited) on the pod's address and storage. It does not wait for it.
func (p *Pod) StartWorker() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, err := StartWorker(WorkerOptions{
		Bin: p.opts.WorkerBin, DatabaseURL: p.opts.DatabaseURL, BrokerAddr: LocalAddr(p.brokerAddr), StorageDir: p.opts.StorageDir,
		StreamID: p.opts.StreamID, Settings: p.opts.WorkerSettings, HTTPAddr: p.httpAddr, Advertise: p.opts.Advertise,
		Name: p.name("worker"), Tee: p.opts.Tee,
	})
	if err != nil {
		return err
	}
	p.worker = w
	p.procs = append(p.procs, w.Process)
	return nil
}

// Restart starts again the containers that exited, as the kubelet
// restarts them: the broker, then the worker.
// It returns the processes it started.
func (p *Pod) Restart(ctx context.Context) ([]*Process, error) {
	var started []*Process
	if p.Broker().Exited() {
		if err := p.StartBroker(ctx); err != nil {
			return started, err
		}
		started = append(started, p.Broker().Process)
	}
	if p.Worker().Exited() {
		if err := p.StartWorker(); err != nil {
			return started, err
		}
		started = append(started, p.Worker().Process)
	}
	return started, nil
}

// Name is the pod's name.
func (p *Pod) Name() string { return p.opts.Name }

// Broker is the pod's latest broker process.
func (p *Pod) Broker() *Broker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broker
}

// Worker is the pod's latest worker process.
func (p *Pod) Worker() *Worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.worker
}

// URL is the worker's base URL, http://host:port; it stays across restarts.
func (p *Pod) URL() string { return "http://" + LocalAddr(p.httpAddr) }

// Processes are every process the pod started, in order.
func (p *Pod) Processes() []*Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Process(nil), p.procs...)
}

// Terminate sends SIGTERM to the worker and the broker at once and waits
// up to timeout for each to exit 0.
func (p *Pod) Terminate(timeout time.Duration) error {
	w, b := p.Worker(), p.Broker()
	_ = w.Signal(syscall.SIGTERM)
	_ = b.Signal(syscall.SIGTERM)
	return errors.Join(w.AwaitExit(timeout), b.AwaitExit(timeout))
}

// Stop stops the pod in order: SIGTERM to the worker and, once it exited
// 0, to the broker (the kubelet's order with a native sidecar), or the
// broker first when brokerFirst. Each must exit 0 within timeout.
func (p *Pod) Stop(brokerFirst bool, timeout time.Duration) error {
	order := []*Process{p.Worker().Process, p.Broker().Process}
	if brokerFirst {
		order[0], order[1] = order[1], order[0]
	}
	for _, proc := range order {
		if err := proc.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("SIGTERM %s: %w", proc.Name, err)
		}
		if err := proc.AwaitExit(timeout); err != nil {
			return err
		}
	}
	return nil
}

// AwaitWorker asks the worker's /v1/health every period until it says
// status; it fails if the worker exits first, after timeout, or when ctx
// ends.
func (p *Pod) AwaitWorker(ctx context.Context, status string, timeout, every time.Duration) error {
	return p.Worker().awaitStatus(ctx, status, timeout, every)
}

// Kill SIGKILLs the worker and the broker and waits until both exited.
func (p *Pod) Kill() {
	p.Worker().Kill()
	p.Broker().Kill()
}

// Close kills every process the pod started that still runs.
func (p *Pod) Close() {
	p.mu.Lock()
	procs, brokers := p.procs, p.brokers
	p.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Kill()
	}
	for _, b := range brokers {
		b.Close()
	}
}

// LogTails is the end of the log of the pod's latest broker and worker,
// n lines each, for a report after a failure.
func (p *Pod) LogTails(n int) string {
	p.mu.Lock()
	var latest []*Process
	if p.broker != nil {
		latest = append(latest, p.broker.Process)
	}
	if p.worker != nil {
		latest = append(latest, p.worker.Process)
	}
	p.mu.Unlock()
	var b strings.Builder
	for _, proc := range latest {
		fmt.Fprintf(&b, "--- log of %s (tail) ---\n%s\n", proc.Name, Tail(proc.Output(), n))
	}
	return b.String()
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// AwaitListening waits until the broker accepts connections, fails if it
// exits first.
func (b *Broker) AwaitListening(ctx context.Context, timeout time.Duration) error {
	return AwaitContext(ctx, timeout, 5*time.Millisecond, b.Name+" to listen on "+b.Addr, func() (bool, error) {
		select {
		case <-b.Done():
			return false, fmt.Errorf("%s exited (%s): %s", b.Name, b.ExitStatus(), Tail(b.Output(), 5))
		default:
		}
		c, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
}
