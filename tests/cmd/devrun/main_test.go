package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// binDir holds broker, worker and devrun, built once.
var binDir string

// repoRoot is the folder of the Makefile.
const repoRoot = "../../.."

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-devrun-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Built as `make run` builds them, so that TestMakeRunInterrupt's make
	// finds them up to date.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out, err := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", repoRoot, "build", "BIN="+dir).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("make build: %w\n%s", err, out)
	} else {
		_, err = harness.Build(ctx, dir, "github.com/batonhq/baton/tests/cmd/devrun")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// devrun is a running devrun (or make) process.
type devrun struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
}

// env is the test's environment without anything devrun reads, plus
// free ports for the first pair and extra.
func env(t *testing.T, extra ...string) []string {
	t.Helper()
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "BATON_") || strings.HasPrefix(kv, "REPLICATION_STREAM_ID=") {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range []string{"BATON_BROKER_LISTEN", "BATON_METRICS_LISTEN", "BATON_HTTP_LISTEN"} {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=127.0.0.1:%d", k, port))
	}
	return append(out, extra...)
}

// start runs cmd with captured output; it is killed (with its children:
// devrun's are in their own process groups, found by pid in its output)
// when the test ends.
func start(t *testing.T, cmd *exec.Cmd) *devrun {
	t.Helper()
	d := &devrun{cmd: cmd, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout, cmd.Stderr = d.stdout, d.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.done
		for _, pid := range d.childPIDs() {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("--- stdout ---\n%s\n--- stderr ---\n%s", d.stdout, d.stderr)
		}
	})
	return d
}

func startDevrun(t *testing.T, env []string, args ...string) *devrun {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "devrun"), append([]string{"-bin", binDir}, args...)...)
	cmd.Env = env
	return start(t, cmd)
}

var pidRE = regexp.MustCompile(`(?:broker|worker) \(pid (\d+)\)`)

// childPIDs are the broker and worker pids devrun printed.
func (d *devrun) childPIDs() []int {
	var pids []int
	for _, m := range pidRE.FindAllStringSubmatch(d.stdout.String(), -1) {
		if n, err := strconv.Atoi(m[1]); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// wait waits for the exit and returns the exit code.
func (d *devrun) wait(t *testing.T, timeout time.Duration, what string) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("%s: devrun still running after %s", what, timeout)
	}
	return d.cmd.ProcessState.ExitCode()
}

func (d *devrun) awaitStdout(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	err := harness.Await(timeout, fmt.Sprintf("devrun to print %q", s), func() (bool, error) {
		select {
		case <-d.done:
			return strings.Contains(d.stdout.String(), s), errors.New("devrun exited")
		default:
		}
		return strings.Contains(d.stdout.String(), s), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// gone fails the test unless every pid has exited.
func gone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) != 2 {
		t.Fatalf("devrun printed pids %v, want a broker's and a worker's", pids)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after devrun exited (kill 0: %v)", pid, err)
		}
	}
}

// TestInterruptStopsBoth: SIGINT to devrun (throwaway PostgreSQL) stops
// the worker and the broker and exits 0.
func TestInterruptStopsBoth(t *testing.T) {
	d := startDevrun(t, env(t))
	d.awaitStdout(t, "worker active", 90*time.Second)
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t, 60*time.Second, "after SIGINT"); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
	gone(t, d.childPIDs())
	out := d.stdout.String()
	if !strings.Contains(out, "devrun: stopped") {
		t.Fatalf("no \"devrun: stopped\" in the output")
	}
	// Kubelet order: the worker stopped before its broker did.
	errOut := d.stderr.String()
	released, stopped := strings.Index(errOut, `msg="lease released"`), strings.Index(errOut, `msg="broker stopped"`)
	if released < 0 || stopped < 0 || released > stopped {
		t.Fatalf("want the worker's lease released before the broker stopped:\n%s", errOut)
	}
}

// TestWorkerPortTaken: a worker that cannot listen exits at start; devrun
// stops the broker and exits non-zero at once, naming the worker.
func TestWorkerPortTaken(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := startDevrun(t, env(t, "DATABASE_URL="+pg.URL(), "BATON_HTTP_LISTEN="+ln.Addr().String()))
	code := d.wait(t, 60*time.Second, "with the worker's port taken")
	if code == 0 {
		t.Fatal("exit code 0, want non-zero")
	}
	errOut := d.stderr.String()
	for _, want := range []string{"devrun: worker exited (exit code 1), so devrun stopped broker. The last lines of worker:\n", "address already in use"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	gone(t, d.childPIDs())
}

// TestRequirements: each unmet requirement of PostgreSQL makes devrun exit
// 2 with one line naming what to change, before starting anything.
func TestRequirements(t *testing.T) {
	replica := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	pg := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"max_replication_slots": "1", "max_wal_senders": "1"}})
	ctx := t.Context()
	admin, err := pgconn.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	exec := func(sql string) {
		t.Helper()
		if err := admin.Exec(ctx, sql).Close(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE ROLE norepl LOGIN; CREATE ROLE nocreate LOGIN REPLICATION`)
	exec(`CREATE ROLE noschema LOGIN REPLICATION; GRANT CREATE ON DATABASE postgres TO noschema`)

	for _, tc := range []struct {
		name  string
		url   string
		setup func(t *testing.T)
		want  string
	}{
		{name: "wal_level", url: replica.URL(),
			want: "devrun: PostgreSQL: wal_level is replica: set wal_level = logical in postgresql.conf and restart PostgreSQL"},
		{name: "replication role", url: userURL(t, pg, "norepl"),
			want: `devrun: PostgreSQL: role norepl may not replicate: ALTER ROLE "norepl" REPLICATION`},
		{name: "create publication", url: userURL(t, pg, "nocreate"),
			want: `devrun: PostgreSQL: role nocreate may not create the publication baton_pub_default: GRANT CREATE ON DATABASE "postgres" TO "nocreate"`},
		{name: "baton schema", url: userURL(t, pg, "noschema"),
			setup: func(t *testing.T) {
				exec(`CREATE SCHEMA baton`)
				t.Cleanup(func() { exec(`DROP SCHEMA baton`) })
			},
			want: `devrun: PostgreSQL: role noschema may not use the schema baton as the worker does: give the worker the broker's role, or GRANT USAGE, CREATE ON SCHEMA baton TO "noschema"`},
		{name: "replication slots", url: pg.URL(),
			setup: func(t *testing.T) {
				exec(`SELECT pg_create_physical_replication_slot('other')`)
				t.Cleanup(func() { exec(`SELECT pg_drop_replication_slot('other')`) })
			},
			want: "devrun: PostgreSQL: no free replication slot for baton_slot_default: max_replication_slots = 1 and 1 are in use"},
		{name: "wal senders", url: pg.URL(),
			setup: func(t *testing.T) { holdWalSender(t, pg) },
			want:  "devrun: PostgreSQL: no free WAL sender: max_wal_senders = 1 and 1 are in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			d := startDevrun(t, env(t, "DATABASE_URL="+tc.url))
			if code := d.wait(t, 60*time.Second, "with an unmet requirement"); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			errOut := strings.TrimSpace(d.stderr.String())
			if strings.Contains(errOut, "\n") || !strings.HasPrefix(errOut, tc.want) {
				t.Fatalf("stderr %q, want one line starting %q", errOut, tc.want)
			}
			if pids := d.childPIDs(); len(pids) != 0 {
				t.Fatalf("devrun started processes %v despite the unmet requirement", pids)
			}
		})
	}
}

// holdWalSender opens a replication connection (one WAL sender) until the
// test ends, after waiting for any earlier one to be gone.
func holdWalSender(t *testing.T, pg *pgtest.Cluster) {
	t.Helper()
	admin, err := pgconn.Connect(t.Context(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	senders := func() (bool, error) {
		res := admin.ExecParams(t.Context(), "SELECT count(*) FROM pg_stat_get_wal_senders()", nil, nil, nil, nil).Read()
		if res.Err != nil {
			return false, res.Err
		}
		return string(res.Rows[0][0]) == "0", nil
	}
	if err := harness.Await(30*time.Second, "no WAL sender left", senders); err != nil {
		t.Fatal(err)
	}
	repl, err := pgconn.Connect(t.Context(), pg.URL()+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repl.Close(context.Background()) })
}

func userURL(t *testing.T, pg *pgtest.Cluster, user string) string {
	t.Helper()
	return strings.Replace(pg.URL(), "postgres://postgres@", "postgres://"+user+"@", 1)
}

// TestMakeRunInterrupt: Ctrl-C in the terminal running `make run` ends
// devrun, and make, with exit code 0 (make gets no SIGINT: devrun holds
// the terminal's foreground).
func TestMakeRunInterrupt(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	master, slave := openPTY(t)
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot, "run", "BIN="+binDir)
	cmd.Env = env(t, "DATABASE_URL="+pg.URL())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	d := start(t, cmd)
	slave.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(d.stdout, master) // until every holder of the terminal is gone
	}()
	d.awaitStdout(t, "worker active", 180*time.Second)
	if _, err := master.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	if code := d.wait(t, 60*time.Second, "after Ctrl-C"); code != 0 {
		t.Fatalf("make run exited with code %d after Ctrl-C, want 0", code)
	}
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal was not closed within 10 s of make's exit")
	}
	out := d.stdout.String()
	if !strings.Contains(out, "devrun: stopped") || strings.Contains(out, "make: ***") {
		t.Fatal(`want "devrun: stopped" and no make error`)
	}
	gone(t, d.childPIDs())
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if err := ioctl(m.Fd(), syscall.TIOCSPTLCK, &unlock); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	var n int32
	if err := ioctl(m.Fd(), syscall.TIOCGPTN, &n); err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}
