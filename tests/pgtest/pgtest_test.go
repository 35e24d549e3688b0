package pgtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/batonhq/baton/tests/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connect opens a superuser connection closed at the end of the test.
func connect(t *testing.T, c *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	conn, err := c.Connect(t.Context())
	if err != nil {
		t.Fatalf("connect to %s: %v", c.URL(), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestSettings(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"application_name": "it's pgtest"}})
	conn := connect(t, c)
	for _, tc := range []struct {
		name, setting, want string
	}{
		{name: "logical decoding", setting: "wal_level", want: "logical"},
		{name: "slots", setting: "max_replication_slots", want: "32"},
		{name: "wal senders", setting: "max_wal_senders", want: "32"},
		{name: "connections", setting: "max_connections", want: "200"},
		{name: "no fsync", setting: "fsync", want: "off"},
		{name: "commits stay synchronous", setting: "synchronous_commit", want: "on"},
		{name: "socket in temp dir", setting: "unix_socket_directories", want: c.Dir()},
		{name: "option overrides, quoted", setting: "application_name", want: "it's pgtest"},
		{name: "data directory", setting: "data_directory", want: c.DataDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := queryString(t, conn, "SHOW "+tc.setting); got != tc.want {
				t.Errorf("SHOW %s = %q, want %q", tc.setting, got, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(c.BinDir(), "pg_recvlogical")); err != nil {
		t.Errorf("BinDir %s has no pg_recvlogical: %v", c.BinDir(), err)
	}
	if want := "postgres://postgres@127.0.0.1:"; !strings.HasPrefix(c.URL(), want) || !strings.HasSuffix(c.URL(), "/postgres?sslmode=disable") {
		t.Errorf("URL() = %q", c.URL())
	}
	if got, want := c.URLWithHost("::1"), "[::1]:"; !strings.Contains(got, want) {
		t.Errorf("URLWithHost(::1) = %q, want it to contain %q", got, want)
	}
}

func TestLogicalSlot(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, c)
	if _, err := conn.Exec(t.Context(), "SELECT pg_create_logical_replication_slot('pgtest_slot', 'pgoutput')"); err != nil {
		t.Fatalf("create slot: %v", err)
	}
	if got := queryString(t, conn, "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'pgtest_slot'"); got != "pgoutput" {
		t.Errorf("slot plugin = %q, want pgoutput", got)
	}
	// A replication connection is accepted by pg_hba.conf.
	repl, err := pgx.Connect(t.Context(), c.URL()+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	repl.Close(context.Background())
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, c)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')"); err != nil {
		t.Fatal(err)
	}
	port, pid := c.Port(), c.PID()
	if err := c.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.Port() != port {
		t.Errorf("port changed from %d to %d", port, c.Port())
	}
	if c.PID() == pid || c.PID() == 0 {
		t.Errorf("PID after restart = %d, before = %d", c.PID(), pid)
	}
	if got := queryString(t, connect(t, c), "SELECT v FROM kept"); got != "before restart" {
		t.Errorf("after restart: %q", got)
	}
	if !strings.Contains(c.Log(), "received fast shutdown request") {
		t.Errorf("log has no fast shutdown:\n%s", c.Log())
	}
}

func TestStopIsIdempotent(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	for i := range 2 {
		if err := c.Stop(); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	if c.PID() != 0 {
		t.Errorf("PID() = %d after Stop", c.PID())
	}
	if conn, err := c.Connect(t.Context()); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected to a stopped server")
	}
	if err := c.StartAgain(); err != nil {
		t.Fatalf("StartAgain: %v", err)
	}
	if err := c.StartAgain(); err == nil {
		t.Error("StartAgain on a running server did not fail")
	}
}

func TestKillAndStartAgain(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, c)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE crash (v int); INSERT INTO crash VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	// A busy backend, to be orphaned by the crash.
	busy := connect(t, c)
	busyDone := make(chan error, 1)
	go func() {
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(60)")
		busyDone <- err
	}()
	pid := c.PID()
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still exists after Kill: kill(0) = %v", pid, err)
	}
	if c.PID() != 0 {
		t.Errorf("PID() = %d after Kill", c.PID())
	}
	select {
	case err := <-busyDone:
		if err == nil {
			t.Error("busy query succeeded across a crash")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("busy backend survived its postmaster for 30s")
	}
	if err := c.StartAgain(); err != nil {
		t.Fatalf("StartAgain after Kill: %v", err)
	}
	if got := queryString(t, connect(t, c), "SELECT v::text FROM crash"); got != "42" {
		t.Errorf("after crash: %q", got)
	}
	if !strings.Contains(c.Log(), "was not properly shut down") {
		t.Errorf("log shows no crash recovery:\n%s", c.Log())
	}
}

func TestTwoClusters(t *testing.T) {
	t.Parallel()
	var (
		wg       sync.WaitGroup
		clusters [2]*pgtest.Cluster
		errs     [2]error
	)
	for i := range clusters {
		wg.Go(func() {
			clusters[i], errs[i] = pgtest.New(t.Context(), pgtest.Options{})
		})
	}
	wg.Wait()
	for i, c := range clusters {
		if c != nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("cluster %d: %v", i, errs[i])
		}
	}
	a, b := clusters[0], clusters[1]
	if a.Port() == b.Port() {
		t.Fatalf("both clusters on port %d", a.Port())
	}
	for _, c := range clusters {
		if got := queryString(t, connect(t, c), "SHOW data_directory"); got != c.DataDir() {
			t.Errorf("port %d serves %s, want %s", c.Port(), got, c.DataDir())
		}
	}
}

func TestLogOutput(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var streamed bytes.Buffer
	c := pgtest.Start(t, pgtest.Options{LogOutput: writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return streamed.Write(p)
	})})
	const ready = "database system is ready to accept connections"
	if !strings.Contains(c.Log(), ready) {
		t.Errorf("Log() lacks %q:\n%s", ready, c.Log())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(streamed.String(), ready) {
		t.Errorf("LogOutput lacks %q:\n%s", ready, streamed.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestListenAddressesAndHBA(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		addresses  []string
		wantListen string
		wantOpen   bool // trust from 0.0.0.0/0
	}{
		{name: "default", wantListen: "127.0.0.1"},
		{name: "127.0.0.1 added in front", addresses: []string{"::1"}, wantListen: "127.0.0.1,::1"},
		{name: "non-loopback opens hba", addresses: []string{"127.0.0.1", "0.0.0.0"}, wantListen: "127.0.0.1,0.0.0.0", wantOpen: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := pgtest.Start(t, pgtest.Options{
				ListenAddresses: tc.addresses,
				HBA:             []string{"host all nobody_here 127.0.0.1/32 reject"},
			})
			conn := connect(t, c)
			if got := queryString(t, conn, "SHOW listen_addresses"); got != tc.wantListen {
				t.Errorf("listen_addresses = %q, want %q", got, tc.wantListen)
			}
			rules := queryString(t, conn, "SELECT string_agg(coalesce(address, 'local') || ' ' || auth_method, '; ' ORDER BY line_number) FROM pg_hba_file_rules")
			if !strings.HasPrefix(rules, "127.0.0.1 reject;") {
				t.Errorf("extra HBA line is not first: %q", rules)
			}
			if got := strings.Contains(rules, "0.0.0.0 trust"); got != tc.wantOpen {
				t.Errorf("0.0.0.0/0 trust present = %v, want %v: %q", got, tc.wantOpen, rules)
			}
		})
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(*pgtest.Cluster) error
	}{
		{name: "running", fault: func(*pgtest.Cluster) error { return nil }},
		{name: "after Kill", fault: (*pgtest.Cluster).Kill},
		{name: "postmaster stopped", fault: func(c *pgtest.Cluster) error { return syscall.Kill(c.PID(), syscall.SIGSTOP) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := pgtest.New(t.Context(), pgtest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			conn := connect(t, c) // a backend that Close must take down
			_ = conn
			procs, dir := c.Processes(), c.Dir()
			if len(procs) < 3 {
				t.Fatalf("Processes() = %v, want the postmaster and its backends", procs)
			}
			shmid := shmID(t, c.DataDir())
			if err := tc.fault(c); err != nil {
				t.Fatalf("fault: %v", err)
			}
			start := time.Now()
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Close took %s", d)
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			for _, pid := range procs {
				if alive(pid) {
					t.Errorf("process %d of the cluster still runs after Close", pid)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still exists after Close (stat: %v)", dir, err)
			}
			if segs, err := os.ReadFile("/proc/sysvipc/shm"); err == nil {
				for _, line := range strings.Split(string(segs), "\n")[1:] {
					if f := strings.Fields(line); len(f) > 1 && f[1] == shmid {
						t.Errorf("shared memory segment %s left behind: %s", shmid, line)
					}
				}
			}
		})
	}
}

// shmID is the System V shared memory id from postmaster.pid (line 7: key id).
func shmID(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 || len(strings.Fields(lines[6])) != 2 {
		t.Fatalf("unexpected postmaster.pid:\n%s", b)
	}
	return strings.Fields(lines[6])[1]
}

// alive reports whether pid runs and is not a zombie (a zombie is dead; it
// waits for a parent that may never reap it).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
