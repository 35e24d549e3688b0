package podrunner

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/batonhq/baton/tests/harness"
)

// minGracePeriod is the least time the kubelet gives a container between
// SIGTERM and SIGKILL (minimumGracePeriodInSeconds).
const minGracePeriod = 2 * time.Second

// backoffReset is how long a container must have run for its restart
// back-off to start over.
const backoffReset = 10 * time.Minute

var errTerminating = errors.New("pod is terminating")

// start starts a new run of the container, unless the pod is terminating.
// The channel is closed once the run has exited and that is recorded.
func (ct *Container) start() (*harness.Process, <-chan struct{}, error) {
	argv, env, dir, err := ct.command()
	if err != nil {
		return nil, nil, err
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.pod.Terminating() {
		return nil, nil, errTerminating
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = env, dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc, err := harness.StartCommand(ct.object(), cmd, ct.pod.cluster.opts.Tee)
	if err != nil {
		return nil, nil, err
	}
	if len(ct.runs) > 0 {
		ct.restarts++
	}
	ct.proc = proc
	ct.runs = append(ct.runs, proc)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		<-proc.Done()
		ct.mu.Lock()
		if ct.proc == proc {
			ct.proc, ct.started, ct.ready = nil, false, false
		}
		ct.mu.Unlock()
		code, _ := proc.Wait(time.Second)
		ct.pod.cluster.record(ct.object(), "Exited", "pid %d exited with code %d", proc.PID(), code)
		ct.pod.refresh()
	}()
	ct.pod.cluster.record(ct.object(), "Started", "pid %d: %v", proc.PID(), argv)
	return proc, exited, nil
}

// finish marks the container as gone for good.
func (ct *Container) finish() { ct.goneOnce.Do(func() { close(ct.gone) }) }

// supervise keeps a sidecar or main container running until the pod
// terminates: each run is probed; a run that exits or is killed by a probe
// is started again, at once the first time, then after the back-off.
func (ct *Container) supervise() {
	defer ct.finish()
	var backoff time.Duration
	for {
		began := time.Now()
		proc, exited, err := ct.start()
		if errors.Is(err, errTerminating) {
			return
		}
		if err != nil {
			ct.pod.cluster.record(ct.object(), "Failed", "%v", err)
		} else {
			ctx, cancel := context.WithCancel(context.Background())
			go ct.probe(ctx, proc, began)
			<-exited
			cancel()
		}
		if ct.pod.Terminating() {
			return
		}
		if time.Since(began) >= backoffReset {
			backoff = 0
		}
		if backoff > 0 {
			ct.pod.cluster.record(ct.object(), "BackOff", "restarting in %s", backoff)
			select {
			case <-time.After(backoff):
			case <-ct.pod.stop:
				return
			}
		}
		backoff = min(max(2*backoff, ct.pod.cluster.opts.BackoffBase), ct.pod.cluster.opts.BackoffMax)
	}
}

// runToCompletion runs a regular init container until a run exits 0,
// restarting failed runs with back-off. It returns false when the pod was
// deleted first (the pod's termination then stops a run in progress).
func (ct *Container) runToCompletion() bool {
	var backoff time.Duration
	for {
		proc, exited, err := ct.start()
		if errors.Is(err, errTerminating) {
			return false
		}
		if err != nil {
			ct.pod.cluster.record(ct.object(), "Failed", "%v", err)
		} else {
			select {
			case <-exited:
			case <-ct.pod.stop:
				return false
			}
			if code, _ := proc.Wait(time.Second); code == 0 {
				ct.mu.Lock()
				ct.started, ct.ready = true, true
				ct.mu.Unlock()
				ct.finish()
				return true
			}
		}
		if backoff > 0 {
			ct.pod.cluster.record(ct.object(), "BackOff", "restarting in %s", backoff)
			select {
			case <-time.After(backoff):
			case <-ct.pod.stop:
				return false
			}
		}
		backoff = min(max(2*backoff, ct.pod.cluster.opts.BackoffBase), ct.pod.cluster.opts.BackoffMax)
	}
}

// awaitStarted waits until the container is started; false if stop came
// first.
func (ct *Container) awaitStarted(stop <-chan struct{}) bool {
	for {
		ch := ct.pod.cluster.Changed()
		if ct.Started() {
			return true
		}
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

// probe runs one run's hooks and probes as the kubelet does: postStart;
// the startup probe (the container counts as started only once it passes;
// failureThreshold failures restart the container); then readiness and
// liveness (failureThreshold liveness failures restart the container). It
// returns when ctx ends (the run exited).
func (ct *Container) probe(ctx context.Context, proc *harness.Process, began time.Time) {
	if h := lifecycleHook(ct.spec.Lifecycle, "postStart"); h != nil {
		if err := ct.runHook(ctx, h, ct.pod.gracePeriod()); err != nil {
			ct.pod.cluster.record(ct.object(), "FailedPostStartHook", "%v", err)
			ct.killRun(proc, ct.pod.gracePeriod(), "postStart hook failed", nil)
			return
		}
	}
	if sp := ct.spec.StartupProbe; sp != nil {
		passed := false
		ct.probeLoop(ctx, "startup", sp, began, func(ok bool) bool {
			passed = ok
			return true
		})
		if ctx.Err() != nil {
			return
		}
		if !passed {
			ct.killRun(proc, probeGrace(ct.pod, sp), "failed startup probe, will be restarted", nil)
			return
		}
	}
	ct.mu.Lock()
	ct.started = true
	ct.ready = ct.spec.ReadinessProbe == nil
	ct.mu.Unlock()
	ct.pod.cluster.record(ct.object(), "Started", "started (startup probe passed or none)")
	ct.pod.refresh()
	if rp := ct.spec.ReadinessProbe; rp != nil {
		go ct.probeLoop(ctx, "readiness", rp, began, func(ok bool) bool {
			ct.mu.Lock()
			if ct.proc == proc {
				ct.ready = ok
			}
			ct.mu.Unlock()
			ct.pod.cluster.record(ct.object(), "Readiness", "ready: %v", ok)
			ct.pod.refresh()
			return false
		})
	}
	if lp := ct.spec.LivenessProbe; lp != nil {
		go ct.probeLoop(ctx, "liveness", lp, began, func(ok bool) bool {
			if ok || ct.pod.Terminating() {
				return false
			}
			ct.killRun(proc, probeGrace(ct.pod, lp), "failed liveness probe, will be restarted", nil)
			return true
		})
	}
}

// probeGrace is the grace period of a kill after a failed probe: the
// probe's terminationGracePeriodSeconds, else the pod's.
func probeGrace(p *Pod, pr *corev1.Probe) time.Duration {
	if pr.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pr.TerminationGracePeriodSeconds) * time.Second
	}
	return p.gracePeriod()
}

// wholeSeconds truncates d to seconds, as the kubelet counts time spent
// from a grace period.
func wholeSeconds(d time.Duration) time.Duration { return d.Truncate(time.Second) }

// killRun stops one run as the kubelet's killContainer does: the preStop
// hook (within the grace period), then, after every channel of after is
// closed (the termination order; bounded by what is left of the grace
// period), SIGTERM, and SIGKILL when the rest of the grace period (at least
// 2 s) has passed. It returns when the run has exited.
func (ct *Container) killRun(proc *harness.Process, grace time.Duration, reason string, after []<-chan struct{}) {
	if proc == nil {
		return
	}
	if h := lifecycleHook(ct.spec.Lifecycle, "preStop"); h != nil && grace > 0 {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		if err := ct.runHook(ctx, h, grace); err != nil {
			ct.pod.cluster.record(ct.object(), "FailedPreStopHook", "%v", err)
		}
		cancel()
		grace -= wholeSeconds(time.Since(t0))
	}
	if len(after) > 0 && grace > 0 {
		t0 := time.Now()
		deadline := time.After(grace)
	wait:
		for _, ch := range after {
			select {
			case <-ch:
			case <-deadline:
				break wait
			}
		}
		grace -= wholeSeconds(time.Since(t0))
	}
	grace = max(grace, minGracePeriod)
	select {
	case <-proc.Done():
		return
	default:
	}
	ct.pod.cluster.record(ct.object(), "Killing", "SIGTERM to pid %d (%s), SIGKILL in %s", proc.PID(), reason, grace)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		ct.pod.cluster.record(ct.object(), "Killing", "SIGTERM: %v", err)
	}
	select {
	case <-proc.Done():
	case <-time.After(grace):
		ct.pod.cluster.record(ct.object(), "Killing", "SIGKILL to pid %d: still running after %s", proc.PID(), grace)
		proc.Kill()
	}
}

// terminate stops the container for the pod's termination (see
// Pod.terminate) and returns once it is gone for good.
func (ct *Container) terminate(start time.Time, grace time.Duration, after []<-chan struct{}) {
	ct.killRun(ct.Process(), grace-wholeSeconds(time.Since(start)), "pod deleted", after)
	if ct.launched {
		<-ct.gone
	} else {
		ct.finish()
	}
}

func lifecycleHook(l *corev1.Lifecycle, kind string) *corev1.LifecycleHandler {
	if l == nil {
		return nil
	}
	if kind == "preStop" {
		return l.PreStop
	}
	return l.PostStart
}

// runHook runs a lifecycle hook: sleep, httpGet or tcpSocket (exec hooks
// are refused by RunPod).
func (ct *Container) runHook(ctx context.Context, h *corev1.LifecycleHandler, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	switch {
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-ctx.Done():
		}
		return nil
	case h.HTTPGet != nil:
		ok, msg := ct.httpGet(ctx, h.HTTPGet)
		if !ok {
			return fmt.Errorf("httpGet hook: %s", msg)
		}
		return nil
	case h.TCPSocket != nil:
		ok, msg := ct.tcpSocket(ctx, h.TCPSocket)
		if !ok {
			return fmt.Errorf("tcpSocket hook: %s", msg)
		}
		return nil
	}
	return fmt.Errorf("hook has no handler the runner supports")
}
