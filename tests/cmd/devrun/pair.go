package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// stopTimeout bounds each process's graceful stop (the broker's default
// drain timeout is 20 s); after it the process is killed.
const stopTimeout = 30 * time.Second

// pair is one broker and its worker, as in one pod.
type pair struct {
	n           int  // 1-based
	single      bool // the only pair: its processes are named broker and worker
	brokerAddr  string
	metricsAddr string
	httpAddr    string
	storage     string
	pod         *harness.Pod // nil until started
}

// plan derives every pair's addresses from the first pair's: pair n adds
// n-1 to the HTTP port and 2(n-1) to the broker's and metrics ports.
func plan(s settings) ([]*pair, error) {
	var pairs []*pair
	for i := range s.pairs {
		p := &pair{n: i + 1, single: s.pairs == 1}
		var err error
		if p.brokerAddr, err = shift("BATON_BROKER_LISTEN", s.brokerAddr, 2*i); err != nil {
			return nil, err
		}
		if p.metricsAddr, err = shift("BATON_METRICS_LISTEN", s.metricsAddr, 2*i); err != nil {
			return nil, err
		}
		if p.httpAddr, err = shift("BATON_HTTP_LISTEN", s.httpAddr, i); err != nil {
			return nil, err
		}
		pairs = append(pairs, p)
	}
	return pairs, nil
}

func shift(setting, addr string, by int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", badSetting("%s: %q is not host:port (e.g. :3000)", setting, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n+by > 65535 || (by > 0 && n == 0) {
		return "", badSetting("%s: port %q cannot be used (several pairs need fixed ports)", setting, port)
	}
	return net.JoinHostPort(host, strconv.Itoa(n+by)), nil
}

// broker is the pair's broker process, nil until started.
func (p *pair) broker() *harness.Process {
	if p.pod == nil {
		return nil
	}
	return p.pod.Broker().Process
}

// worker is the pair's worker process, nil until started.
func (p *pair) worker() *harness.Process {
	if p.pod == nil {
		return nil
	}
	return p.pod.Worker().Process
}

func (p *pair) title() string {
	if p.single {
		return "the pair"
	}
	return fmt.Sprintf("pair %d", p.n)
}

// start starts the broker, then the worker, as the kubelet starts a native
// sidecar before the main container; again on the same addresses and
// storage once both have stopped.
func (p *pair) start(bin, url string) error {
	if p.pod != nil {
		_, err := p.pod.Restart(context.Background())
		return err
	}
	name := ""
	if !p.single {
		name = strconv.Itoa(p.n)
	}
	pod, err := harness.StartPod(context.Background(), harness.PodOptions{
		Name: name, BrokerBin: filepath.Join(bin, "broker"), WorkerBin: filepath.Join(bin, "worker"), DatabaseURL: url,
		StorageDir: p.storage, BrokerAddr: p.brokerAddr, MetricsAddr: p.metricsAddr, HTTPAddr: p.httpAddr, Tee: os.Stderr,
	})
	if err != nil {
		return err
	}
	p.pod = pod
	return nil
}

// describe is what pair p runs and where it listens.
func (p *pair) describe() string {
	lead := "devrun: "
	if !p.single {
		lead = fmt.Sprintf("devrun: pair %d: ", p.n)
	}
	pad := strings.Repeat(" ", len(lead))
	return fmt.Sprintf("%sbroker (pid %d): gRPC lease + grpc.health.v1 on %s, Prometheus /metrics on %s\n"+
		"%sworker (pid %d): shape API, /v1/health, /metrics on %s, storage %s\n",
		lead, p.broker().PID(), p.brokerAddr, p.metricsAddr,
		pad, p.worker().PID(), p.httpAddr, p.storage)
}

// stop stops the pair in the kubelet's order: SIGTERM to the worker, wait,
// then SIGTERM to the broker, wait; a process still running after
// stopTimeout is killed. It returns what went wrong, if anything.
func (p *pair) stop() []string {
	var problems []string
	for _, proc := range []*harness.Process{p.worker(), p.broker()} {
		if proc == nil {
			continue
		}
		if msg := stopProcess(proc); msg != "" {
			problems = append(problems, msg)
		}
	}
	return problems
}

// stopProcess sends SIGTERM and waits; it returns a message when the
// process had to be killed or did not exit with code 0.
func stopProcess(proc *harness.Process) string {
	select {
	case <-proc.Done():
		return ""
	default:
	}
	_ = proc.Signal(syscall.SIGTERM)
	if _, err := proc.Wait(stopTimeout); err != nil {
		proc.Kill()
		return fmt.Sprintf("%s did not stop within %s of SIGTERM and was killed", proc.Name, stopTimeout)
	}
	if st := proc.ExitStatus(); st != "exit code 0" {
		return fmt.Sprintf("%s stopped with %s", proc.Name, st)
	}
	return ""
}

// lastLines is the end of a process's output, indented, for a message.
func lastLines(proc *harness.Process, n int) string {
	lines := strings.Split(strings.TrimRight(proc.Output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + proc.Name + ": " + strings.Join(lines, "\n    "+proc.Name+": ")
}
