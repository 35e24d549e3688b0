// Package harness runs Baton's real binaries for end-to-end tests and
// benchmarks: it builds them, starts them as child processes with their own
// free ports, captures their logs, signals them, and awaits conditions on
// them (gRPC health, exit codes) with bounded waits.
//
// A Pod is a broker and its worker as one Kubernetes pod runs them; every
// test and benchmark starts its pairs with it. A ShapeClient follows a
// shape of the worker's HTTP API as ElectricSQL's TypeScript client does
// (fetch, catch up, live long-poll); Fetch and Get send single requests,
// OpenSSE opens a server-sent event stream, and Message and Rows are the
// API's messages and the rows a client builds from them.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/internal/freeport"
)

// Build compiles the named commands (import paths) into dir and returns the
// paths of the binaries by base name.
func Build(ctx context.Context, dir string, pkgs ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pkgs {
		bin := filepath.Join(dir, filepath.Base(p))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, p)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", p, err, b)
		}
		out[filepath.Base(p)] = bin
	}
	return out, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// chosen below the kernel's ephemeral range so that no outgoing connection
// takes it before the server binds it (see tests/internal/freeport).
func FreePort() (int, error) {
	return freeport.Pick()
}

// LocalAddr is where a client on this machine reaches the listen address
// addr: an unspecified host (":3000", "0.0.0.0:3000", "[::]:3000") is
// 127.0.0.1.
func LocalAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Process is a running child process with captured output.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
	// startedAt is when the process was started.
	startedAt time.Time
	// exitedAt is when Wait returned; read after done is closed.
	exitedAt time.Time
}

// StartProcess starts argv with env added to the current environment. Its
// stdout and stderr are captured (and also written to tee, when not nil).
func StartProcess(name string, argv []string, env []string, tee *os.File) (*Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return startCmd(name, cmd, tee)
}

// StartCommand starts a prepared command with captured output (also written
// to tee, when not nil). Unlike StartProcess, the command's Env is used as
// it is: nothing of the current environment is added.
func StartCommand(name string, cmd *exec.Cmd, tee *os.File) (*Process, error) {
	return startCmd(name, cmd, tee)
}

// startCmd starts a prepared command with captured output.
func startCmd(name string, cmd *exec.Cmd, tee *os.File) (*Process, error) {
	buf := &syncBuffer{tee: tee, prefix: name + ": "}
	cmd.Stdout, cmd.Stderr = buf, buf
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, out: buf, done: make(chan struct{}), startedAt: started}
	go func() {
		p.err = cmd.Wait()
		p.exitedAt = time.Now()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// SignalGroup sends sig to the process group (the process and any children,
// e.g. behind `ip netns exec`).
func (p *Process) SignalGroup(sig syscall.Signal) error { return syscall.Kill(-p.cmd.Process.Pid, sig) }

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// StartedAt is when the process was started.
func (p *Process) StartedAt() time.Time { return p.startedAt }

// ExitedAt is when the process was seen to exit (zero while it runs).
func (p *Process) ExitedAt() time.Time {
	select {
	case <-p.done:
		return p.exitedAt
	default:
		return time.Time{}
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s did not exit within %s", p.Name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	if p.err != nil {
		return -1, p.err
	}
	return 0, nil
}

// AwaitExit waits up to timeout for the process to exit and fails unless
// it exited with code 0.
func (p *Process) AwaitExit(timeout time.Duration) error {
	code, err := p.Wait(timeout)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with %d, want 0", p.Name, code)
	}
	return nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitStatus says how the process ended ("exit code 1", "signal: killed"),
// once Done is closed; "running" before.
func (p *Process) ExitStatus() string {
	select {
	case <-p.done:
	default:
		return "running"
	}
	st := p.cmd.ProcessState
	if st == nil {
		return fmt.Sprintf("failed: %v", p.err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return fmt.Sprintf("exit code %d", st.ExitCode())
}

// Kill kills the process group (SIGCONT first, so a stopped process dies) and
// waits for it.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// WaitOutput waits until the output contains s.
func (p *Process) WaitOutput(s string, timeout time.Duration) error {
	return Await(timeout, fmt.Sprintf("%s to print %q", p.Name, s), func() (bool, error) {
		return strings.Contains(p.Output(), s), nil
	})
}

// Await polls cond every 10 ms until it returns true, an error, or timeout.
func Await(timeout time.Duration, what string, cond func() (bool, error)) error {
	return AwaitEvery(timeout, 10*time.Millisecond, what, cond)
}

// AwaitEvery is Await with a polling interval, for conditions that are
// costly to check.
func AwaitEvery(timeout, every time.Duration, what string, cond func() (bool, error)) error {
	return AwaitContext(context.Background(), timeout, every, what, cond)
}

// AwaitContext is AwaitEvery that also gives up when ctx ends.
func AwaitContext(ctx context.Context, timeout, every time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-time.After(every):
		}
	}
}

type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	tee    *os.File
	prefix string
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tee != nil {
		for _, line := range strings.SplitAfter(string(p), "\n") {
			if line != "" {
				fmt.Fprint(s.tee, s.prefix+line)
			}
		}
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
