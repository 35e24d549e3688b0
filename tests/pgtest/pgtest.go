// Package pgtest starts throwaway PostgreSQL clusters for tests and
// benchmarks: initdb into a fresh temporary directory, wal_level=logical, a
// free port on 127.0.0.1, and everything removed again on Close.
//
// The core API (New and the Cluster methods) returns errors so that it can be
// used from ordinary programs; Start is the thin wrapper for tests.
//
// PostgreSQL refuses to run as root. When the calling process is root, the
// server programs run as the "postgres" user (or "nobody" if there is no such
// user) and the temporary directory is handed over to that user.
//
// The postmaster is started directly (not through pg_ctl), in its own process
// group (so that signals sent to the test's group do not reach it); faults
// are injected with real signals: Kill sends SIGKILL to the postmaster, PID
// exposes it for SIGSTOP/SIGCONT, and Close waits until every process of the
// cluster is gone.
package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/internal/freeport"
)

// InstallHint is the command that installs the PostgreSQL server programs on
// Debian; it is part of the error returned when they cannot be found.
const InstallHint = "apt-get update && apt-get install -y postgresql"

// MinMajorVersion is the oldest PostgreSQL major version accepted.
const MinMajorVersion = 15

// Bounds for waiting on the server. They are generous for slow CI machines;
// every wait polls a condition and returns as soon as it holds.
const (
	readyTimeout    = 30 * time.Second // start until it accepts connections
	stopTimeout     = 60 * time.Second // fast shutdown (checkpoint included)
	exitTimeout     = 10 * time.Second // SIGKILL or SIGQUIT until the postmaster is gone
	groupTimeout    = 30 * time.Second // orphaned backends until they are gone
	pollInterval    = 20 * time.Millisecond
	portAttempts    = 5
	logTailLines    = 40
	connectTimeout  = 2 * time.Second
	superuser       = "postgres"
	defaultDatabase = "postgres"
)

// Options configure a cluster. The zero value is a loopback-only cluster.
type Options struct {
	// ListenAddresses are the TCP addresses the server listens on; default
	// {"127.0.0.1"}. URL and the readiness check use 127.0.0.1, so it is
	// added in front unless the list already covers it.
	ListenAddresses []string
	// Settings are extra postgresql.conf settings; they override the defaults.
	Settings map[string]string
	// HBA are extra pg_hba.conf lines, placed before the defaults.
	HBA []string
	// LogOutput, if set, also receives the server log, line by line.
	LogOutput io.Writer
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	binDir      string
	dir         string // temporary directory: data/, server.log, unix sockets
	dataDir     string
	realDataDir string // dataDir with symbolic links resolved, as in /proc/*/cwd
	opts        Options
	cred        *syscall.Credential // nil: run as the current user

	logMu   sync.Mutex
	logBuf  bytes.Buffer
	logFile *os.File

	port atomic.Int32 // read without mu: URL is used while mu is held

	mu       sync.Mutex // serializes lifecycle methods
	srv      *server    // last started postmaster; nil before the first start
	closed   bool
	closeErr error
}

// server is one run of the postmaster.
type server struct {
	cmd     *exec.Cmd
	pid     int
	exited  chan struct{} // closed once the postmaster has been reaped
	logDone chan struct{} // closed once every holder of its stderr has exited
}

func (s *server) running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// New finds the PostgreSQL programs, runs initdb into a fresh temporary
// directory, picks a free port on 127.0.0.1, starts the server and waits
// until it accepts connections. The caller must Close the cluster.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	if !slices.ContainsFunc(opts.ListenAddresses, func(a string) bool {
		return a == "127.0.0.1" || a == "0.0.0.0" || a == "*" || a == "localhost"
	}) {
		opts.ListenAddresses = append([]string{"127.0.0.1"}, opts.ListenAddresses...)
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	c := &Cluster{binDir: binDir, opts: opts, cred: cred}
	if err := c.create(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// Start is New for tests: it registers Close with t.Cleanup, prints the server
// log when the test has failed, and fails the test if the cluster cannot start.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("pgtest: cannot start a PostgreSQL cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: PostgreSQL server log (%s):\n%s", c.URL(), c.Log())
		}
		if err := c.Close(); err != nil {
			t.Errorf("pgtest: close: %v", err)
		}
	})
	return c
}

// Port is the TCP port of the server.
func (c *Cluster) Port() int { return int(c.port.Load()) }

// URL is the superuser connection string over 127.0.0.1.
func (c *Cluster) URL() string { return c.URLWithHost("127.0.0.1") }

// URLWithHost is the superuser connection string for another listen address.
func (c *Cluster) URLWithHost(host string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort(host, strconv.Itoa(c.Port())),
		Path:     "/" + defaultDatabase,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// BinDir is the directory the PostgreSQL programs were found in
// (pg_recvlogical, pg_basebackup, psql... are there too).
func (c *Cluster) BinDir() string { return c.binDir }

// Dir is the temporary directory of the cluster (also its unix socket
// directory). It is removed by Close.
func (c *Cluster) Dir() string { return c.dir }

// DataDir is the data directory (PGDATA).
func (c *Cluster) DataDir() string { return c.dataDir }

// PID is the process id of the running postmaster; 0 if the server is not
// running. (Its backends are not in its process group: each calls setsid.)
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv == nil || !c.srv.running() {
		return 0
	}
	return c.srv.pid
}

// Log is the server log so far, across restarts.
func (c *Cluster) Log() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.logBuf.String()
}

// Connect opens a superuser connection to the postgres database.
func (c *Cluster) Connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.URL())
}

// Stop shuts the server down like `pg_ctl stop -m fast` (SIGINT) and waits
// until the postmaster and all its processes are gone. Stopping a stopped
// server does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: cluster is closed")
	}
	return c.stop(syscall.SIGINT, stopTimeout)
}

// StartAgain starts the stopped (or killed) server again on the same port and
// data directory and waits until it accepts connections. After Kill it first
// waits until the orphaned backends of the old postmaster are gone.
func (c *Cluster) StartAgain() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: cluster is closed")
	}
	if c.srv != nil && c.srv.running() {
		return errors.New("pgtest: StartAgain: server is already running")
	}
	if err := c.waitGroupGone(); err != nil {
		return err
	}
	err := c.launch(context.Background())
	if errors.Is(err, errPortInUse) {
		return fmt.Errorf("pgtest: StartAgain: port %d was taken by another process meanwhile: %w", c.Port(), err)
	}
	return err
}

// Restart is Stop followed by StartAgain.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.StartAgain()
}

// Kill crashes the server: SIGKILL to the postmaster only, like an OOM kill.
// It returns once the postmaster is gone; its backends notice and exit on
// their own shortly after (StartAgain and Close wait for them).
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: cluster is closed")
	}
	if c.srv == nil || !c.srv.running() {
		return errors.New("pgtest: Kill: server is not running")
	}
	if err := syscall.Kill(c.srv.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgtest: Kill: %w", err)
	}
	if !waitClosed(c.srv.exited, exitTimeout) {
		return fmt.Errorf("pgtest: Kill: postmaster %d still running %s after SIGKILL", c.srv.pid, exitTimeout)
	}
	return nil
}

// Close stops the server immediately (SIGQUIT, then SIGKILL to whatever is
// left if needed), waits until no process of it is left and removes
// the temporary directory. It is idempotent and safe on a partly created
// cluster.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closeErr
	}
	c.closed = true
	var errs []error
	if c.srv != nil {
		if err := c.stop(syscall.SIGQUIT, exitTimeout); err != nil {
			errs = append(errs, err)
		}
		// A postmaster that did not shut down itself (Kill, or a signal
		// sent by a test) leaves postmaster.pid and its segment behind.
		removeOrphanedSharedMemory(c.dataDir)
	}
	if c.logFile != nil {
		if err := c.logFile.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", c.dir, err))
		}
	}
	c.closeErr = errors.Join(errs...)
	return c.closeErr
}

// stop sends sig to a running postmaster, waits up to timeout for it to exit
// (SIGKILL after that) and then for the rest of the cluster's processes.
// Processes a test has stopped with SIGSTOP are continued first, or they
// would never act on the signal.
func (c *Cluster) stop(sig syscall.Signal, timeout time.Duration) error {
	s := c.srv
	if s == nil {
		return nil
	}
	var errs []error
	if s.running() {
		for _, pid := range c.processes() {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		if err := syscall.Kill(s.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("pgtest: signal %v to postmaster: %w", sig, err))
		}
		if !waitClosed(s.exited, timeout) {
			errs = append(errs, fmt.Errorf("pgtest: postmaster %d did not exit within %s after %v; killing it", s.pid, timeout, sig))
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
			if !waitClosed(s.exited, exitTimeout) {
				return errors.Join(append(errs, fmt.Errorf("pgtest: postmaster %d survived SIGKILL", s.pid))...)
			}
		}
	}
	if err := c.waitGroupGone(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitGroupGone waits until the last postmaster has exited and no process of
// the cluster remains: the server's stderr pipe, which every backend
// inherits, is closed, and no process works in the data directory. After
// groupTimeout the remaining processes are SIGKILLed and awaited once more.
func (c *Cluster) waitGroupGone() error {
	s := c.srv
	if s == nil {
		return nil
	}
	gone := func() bool { return !s.running() && isClosed(s.logDone) && len(c.processes()) == 0 }
	if waitFor(gone, groupTimeout) {
		return nil
	}
	left := c.processes()
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if waitFor(gone, exitTimeout) {
		return fmt.Errorf("pgtest: processes %v of the cluster lingered for %s and were killed", left, groupTimeout)
	}
	return fmt.Errorf("pgtest: processes %v of the cluster are still running after SIGKILL", c.processes())
}

// processes lists the live processes of this cluster: every PostgreSQL
// process changes into its data directory. Without /proc the list is empty
// and only the stderr pipe tells when they are gone.
func (c *Cluster) processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil || c.realDataDir == "" {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Zombies have no cwd: they hold nothing, and some containers'
		// init never reaps them.
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && cwd == c.realDataDir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// create sets up the directory, runs initdb, writes the configuration and
// starts the server on a free port, retrying when the port is taken.
func (c *Cluster) create(ctx context.Context) error {
	dir, err := os.MkdirTemp(os.TempDir(), "pgtest-")
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	c.dir = dir
	c.dataDir = filepath.Join(dir, "data")
	if c.cred != nil {
		if err := checkTraversable(dir); err != nil {
			return err
		}
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	c.logFile, err = os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if err := c.initdb(ctx); err != nil {
		return err
	}
	if c.realDataDir, err = filepath.EvalSymlinks(c.dataDir); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(c.hbaConf()), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), "\n# pgtest\ninclude 'pgtest.conf'\n"); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return err
		}
		c.port.Store(int32(port))
		if err := os.WriteFile(filepath.Join(c.dataDir, "pgtest.conf"), []byte(c.postgresqlConf()), 0o600); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if c.cred != nil {
			for _, name := range []string{"pg_hba.conf", "pgtest.conf"} {
				if err := os.Chown(filepath.Join(c.dataDir, name), int(c.cred.Uid), int(c.cred.Gid)); err != nil {
					return fmt.Errorf("pgtest: %w", err)
				}
			}
		}
		err = c.launch(ctx)
		if err == nil || !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		// The port was taken between freePort and the bind: the old
		// postmaster is gone (launch waited), try another port.
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	cmd := c.command(ctx, "initdb",
		"-D", c.dataDir,
		"-U", superuser,
		"--auth=trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb failed: %w\n%s", err, out)
	}
	return nil
}

// launch starts the postmaster on c.port and waits until it is ready.
func (c *Cluster) launch(ctx context.Context) error {
	logStart := c.logLen()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := c.command(context.Background(), "postgres", "-D", c.dataDir)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	w.Close() // the postmaster and its backends hold the write end
	s := &server{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{}), logDone: make(chan struct{})}
	c.srv = s
	go func() {
		defer close(s.logDone)
		defer r.Close()
		c.copyLog(r)
	}()
	go func() {
		defer close(s.exited)
		_ = cmd.Wait()
	}()

	err = c.waitReady(ctx, s)
	if err == nil {
		return nil
	}
	// Leave nothing behind: the caller may retry on another port.
	stopErr := c.stop(syscall.SIGQUIT, exitTimeout)
	log := c.logSince(logStart)
	if portTaken(log) {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return errors.Join(fmt.Errorf("%w\n--- server log (last lines) ---\n%s", err, tail(log, logTailLines)), stopErr)
}

// waitReady polls with a superuser connection until the server answers and
// is this cluster's server (same data directory), bounded by readyTimeout.
func (c *Cluster) waitReady(ctx context.Context, s *server) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("pgtest: postgres exited during startup (%v)", s.cmd.ProcessState)
		default:
		}
		lastErr = c.ping(ctx)
		if lastErr == nil {
			return nil
		}
		if errors.Is(lastErr, errPortInUse) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not accepting connections on port %d after %s: %w (last attempt: %v)",
				c.Port(), readyTimeout, context.Cause(ctx), lastErr)
		case <-s.exited:
		case <-ticker.C:
		}
	}
}

func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}
	if !sameDir(dataDir, c.dataDir) {
		return fmt.Errorf("%w: port %d is served by another cluster (data directory %s)", errPortInUse, c.Port(), dataDir)
	}
	return nil
}

// command prepares a PostgreSQL program to run as the cluster's user, in its
// own process group, with the temporary directory as working directory.
func (c *Cluster) command(ctx context.Context, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, program), args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	return cmd
}

// copyLog copies the server's stderr line by line to the log file, the
// in-memory log and Options.LogOutput.
func (c *Cluster) copyLog(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			c.logMu.Lock()
			c.logBuf.Write(line)
			_, _ = c.logFile.Write(line)
			c.logMu.Unlock()
			if c.opts.LogOutput != nil {
				_, _ = c.opts.LogOutput.Write(line)
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *Cluster) logLen() int {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.logBuf.Len()
}

func (c *Cluster) logSince(offset int) string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return string(c.logBuf.Bytes()[offset:])
}

// postgresqlConf is the generated pgtest.conf: defaults, then Options.Settings.
func (c *Cluster) postgresqlConf() string {
	settings := map[string]string{
		"listen_addresses":        strings.Join(c.opts.ListenAddresses, ","),
		"port":                    strconv.Itoa(c.Port()),
		"unix_socket_directories": c.dir,
		"wal_level":               "logical",
		"max_replication_slots":   "32",
		"max_wal_senders":         "32",
		"max_connections":         "200",
		"shared_buffers":          "64MB",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"logging_collector":       "off",
		"log_line_prefix":         "%m [%p] ",
		"lc_messages":             "C",
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by pgtest; later lines win.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	return b.String()
}

// hbaConf is pg_hba.conf: Options.HBA first, then trust on loopback and the
// unix socket, and trust from anywhere if a non-loopback address is listened on.
func (c *Cluster) hbaConf() string {
	lines := []string{"# Written by pgtest: first match wins."}
	lines = append(lines, c.opts.HBA...)
	lines = append(lines,
		"local all         all              trust",
		"local replication all              trust",
		"host  all         all 127.0.0.1/32 trust",
		"host  replication all 127.0.0.1/32 trust",
		"host  all         all ::1/128      trust",
		"host  replication all ::1/128      trust",
	)
	if slices.ContainsFunc(c.opts.ListenAddresses, func(a string) bool { return !isLoopback(a) }) {
		lines = append(lines,
			"host  all         all 0.0.0.0/0    trust",
			"host  replication all 0.0.0.0/0    trust",
			"host  all         all ::/0         trust",
			"host  replication all ::/0         trust",
		)
	}
	return strings.Join(lines, "\n") + "\n"
}

// FindBinDir finds the directory of the PostgreSQL server programs: initdb on
// $PATH, then `pg_config --bindir`, then Debian's /usr/lib/postgresql/<N>/bin
// (highest N). Symbolic links are resolved, so the result also holds the
// client programs (pg_recvlogical...). Versions older than MinMajorVersion are
// passed over.
func FindBinDir() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, debianBinDirs(debianGlob)...)

	var rejected []string
	for _, dir := range candidates {
		initdb, err := filepath.EvalSymlinks(filepath.Join(dir, "initdb"))
		if err != nil {
			continue
		}
		dir = filepath.Dir(initdb)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			continue
		}
		major, err := majorVersion(filepath.Join(dir, "postgres"))
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("%s (%v)", dir, err))
			continue
		}
		if major < MinMajorVersion {
			rejected = append(rejected, fmt.Sprintf("%s (PostgreSQL %d)", dir, major))
			continue
		}
		return dir, nil
	}
	msg := "pgtest: PostgreSQL server programs (initdb, postgres) not found on $PATH, via pg_config --bindir or in /usr/lib/postgresql/*/bin"
	if len(rejected) > 0 {
		msg += fmt.Sprintf("; rejected, need %d or newer: %s", MinMajorVersion, strings.Join(rejected, ", "))
	}
	return "", fmt.Errorf("%s. Install them (Debian/Ubuntu): %s", msg, InstallHint)
}

// debianGlob is where Debian installs each major version's programs.
var debianGlob = "/usr/lib/postgresql/*/bin"

// debianBinDirs lists the directories matching glob, such as
// /usr/lib/postgresql/<N>/bin, highest N first.
func debianBinDirs(glob string) []string {
	matches, _ := filepath.Glob(glob)
	version := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	return matches
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

func majorVersion(postgres string) (int, error) {
	out, err := exec.Command(postgres, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", postgres, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected %s --version output %q", postgres, out)
	}
	return strconv.Atoi(string(m[1]))
}

// runAs is the credential to run the server programs with: nil (the current
// user) unless we are root, which PostgreSQL refuses.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}, nil
	}
	return nil, errors.New(`pgtest: running as root, and PostgreSQL refuses root, but neither user "postgres" nor "nobody" exists`)
}

// checkTraversable reports a clear error when an unprivileged server user
// could not reach dir because a parent directory is closed to others.
func checkTraversable(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("pgtest: the server runs as an unprivileged user, which cannot enter %s (mode %v); set TMPDIR to a directory others can reach, such as /tmp", p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// childEnv is the environment without PG* variables (which would redirect
// the programs) and with the C locale.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// pickPort is freePort; tests replace it to provoke a port conflict.
var pickPort = freePort

// freePort picks a port below the kernel's ephemeral range (see
// tests/internal/freeport). Another process may still take it before the
// server binds it; the caller retries on another port then.
func freePort() (int, error) {
	port, err := freeport.Pick()
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	return port, nil
}

func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not create any TCP/IP sockets") ||
		strings.Contains(log, `could not bind IPv4 address "127.0.0.1"`)
}

func isLoopback(addr string) bool {
	if addr == "localhost" {
		return true
	}
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// removeOrphanedSharedMemory removes the System V shared memory segment that
// a SIGKILLed postmaster leaves behind (a clean or immediate shutdown removes
// it itself). postmaster.pid line 7 is "key shmid".
func removeOrphanedSharedMemory(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6])
	if len(fields) != 2 {
		return
	}
	if shmid, err := strconv.Atoi(fields[1]); err == nil {
		removeShm(shmid)
	}
}

func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func waitClosed(ch <-chan struct{}, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}
