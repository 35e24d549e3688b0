package e2e_test

// Nothing lost with everything in use (issue 10): a rolling handoff while
// an official client follows a table on demand (log=changes_only, its rows
// loaded by subset snapshots) through an nginx cache in front of both pods.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// cachingProxy is nginx (Debian's package) caching shape responses in front
// of a stream's pods, as a CDN would: it honours the workers'
// Cache-Control, collapses concurrent requests for one URL, and moves to
// the next pod when one refuses connections or answers 502/503.
type cachingProxy struct {
	cmd  *exec.Cmd
	addr string
	dir  string
}

func startCachingProxy(t *testing.T, upstreams ...string) *cachingProxy {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("nginx is required (apt-get install nginx-light, or nginx)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cachingProxy{addr: l.Addr().String(), dir: t.TempDir()}
	l.Close()
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "    server %s max_fails=0;\n", strings.TrimPrefix(u, "http://"))
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%[1]s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 512; }
http {
  log_format cache '$request_method $request_uri $status $upstream_cache_status $upstream_addr $time_iso8601 $request_time';
  access_log %[2]s/access.log cache;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  proxy_cache_path %[2]s/cache levels=1:2 keys_zone=shapes:10m inactive=10m;
  upstream baton {
%[3]s  }
  server {
    listen %[4]s;
    location / {
      proxy_pass http://baton;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 90s;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_cache shapes;
      proxy_cache_key $request_method$request_uri;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_cache_revalidate on;
      proxy_cache_use_stale updating;
      proxy_cache_background_update on;
      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
}
`, user, p.dir, servers.String(), p.addr)
	confPath := filepath.Join(p.dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-p", p.dir, "-c", confPath)
	var stderr strings.Builder
	p.cmd.Stderr = &stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(p.dir, "error.log"))
			a, _ := os.ReadFile(filepath.Join(p.dir, "access.log"))
			t.Logf("--- nginx error.log ---\n%s%s\n--- nginx access.log ---\n%s", b, stderr.String(), a)
		}
	})
	if err := harness.Await(10*time.Second, "nginx listening", func() (bool, error) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	return p
}

// URL is the proxy's base URL.
func (p *cachingProxy) URL() string { return "http://" + p.addr }

// cacheStatuses counts the proxy's answers to shape requests by nginx's
// cache status (HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS or
// "-" when not cacheable).
func (p *cachingProxy) cacheStatuses(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[1], "/v1/shape") {
			out[f[3]]++
		}
	}
	return out
}

// subsetFollower is a running tests/ts/subset_follow.mjs.
type subsetFollower struct {
	in     io.WriteCloser
	mu     sync.Mutex
	rows   []itemRow
	up     bool
	loaded int
	errs   []string
	ctrl   []string
	stderr strings.Builder
	wake   chan struct{}
}

func startSubsetFollower(t *testing.T, base, table string) *subsetFollower {
	t.Helper()
	needClient(t)
	f := &subsetFollower{wake: make(chan struct{})}
	pr, pw := io.Pipe()
	f.in = pw
	_, out := startNode(t, &f.mu, &f.stderr, pr, "subset_follow.mjs", base, table)
	// Runs before startNode's cleanup, whose Wait waits for stdin's copy.
	t.Cleanup(func() { pw.Close() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var line struct {
				Rows     *[]itemRow `json:"rows"`
				UpToDate bool       `json:"upToDate"`
				Loaded   int        `json:"loaded"`
				Control  string     `json:"control"`
				Error    string     `json:"error"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				continue
			}
			f.mu.Lock()
			switch {
			case line.Rows != nil:
				f.rows, f.up = *line.Rows, line.UpToDate
			case line.Loaded > 0:
				f.loaded = line.Loaded
			case line.Control != "":
				f.ctrl = append(f.ctrl, line.Control)
			case line.Error != "":
				f.errs = append(f.errs, line.Error)
			}
			close(f.wake)
			f.wake = make(chan struct{})
			f.mu.Unlock()
		}
	}()
	return f
}

// load asks the client to load a subset (requestSnapshot).
func (f *subsetFollower) load(t *testing.T, subset map[string]any) {
	t.Helper()
	b, err := json.Marshal(subset)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.in.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// await waits until cond holds on the client's state; on timeout it fails
// the test, with more of the state when detail tells it.
func (f *subsetFollower) await(t *testing.T, timeout time.Duration, what string, cond func(rows []itemRow, upToDate bool, loaded int) bool, detail ...func(rows []itemRow) string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		rows, up, loaded, wake := f.rows, f.up, f.loaded, f.wake
		f.mu.Unlock()
		if cond(rows, up, loaded) {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			more := ""
			for _, d := range detail {
				more += "\n" + d(f.rows)
			}
			t.Fatalf("client: %s not reached after %s: %d rows (up to date %v), %d subsets loaded; controls %v; errors %v%s",
				what, timeout, len(f.rows), f.up, f.loaded, f.ctrl, f.errs, more)
		}
	}
}

// TestSubsetCachedRollingHandoff: the official client follows items on
// demand (log=changes_only; its rows come from two subset snapshots, one
// of them requested while the stream moves) through an nginx cache in
// front of both pods, while a writer inserts, updates and deletes rows;
// pod A gets SIGTERM and pod B, on the same storage, takes over. The
// client ends with exactly the table's rows, without a must-refetch.
func TestSubsetCachedRollingHandoff(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	// Rows from before the shape: only subset snapshots bring them.
	execSQL(t, pg, "INSERT INTO items SELECT g, 'pre' || g FROM generate_series(100001, 100300) g")
	// One storage for both pods (as the shared-storage overlay): the
	// handle, and the responses cached under it, stay valid.
	dir := t.TempDir()
	// Advertised, as deployed: the cache sends requests to either pod, and
	// the standby forwards them to the active worker.
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, Advertise: true})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir, Advertise: true})
	if err := b.Worker().AwaitStatus("waiting", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	cache := startCachingProxy(t, a.URL(), b.URL())
	c := startSubsetFollower(t, cache.URL(), "items")
	c.await(t, 30*time.Second, "up to date", func(_ []itemRow, up bool, _ int) bool { return up })

	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	w := startMixedWriter(t, pg)
	// The writer's rows come through the log (inserts); the rows
	// from before come with the first subset, ordered and limited.
	c.load(t, map[string]any{"where": "id > $1", "params": map[string]string{"1": "100000"}, "orderBy": "id", "limit": 1000})
	c.await(t, 30*time.Second, "the first subset and 20 writer rows", func(rows []itemRow, _ bool, loaded int) bool {
		return loaded >= 1 && len(rows) >= 300+20
	})

	phase("first subset loaded; SIGTERM to pod a")
	_ = a.Worker().Signal(syscall.SIGTERM)
	_ = a.Broker().Signal(syscall.SIGTERM)
	// Asked while the stream moves: the writer's rows, some of them
	// updated or deleted by now, so the two subsets cover the table
	// (a client on demand holds the rows it asked for and the rows
	// inserted after; after a must-refetch, only what it asks for
	// again).
	c.load(t, map[string]any{"where": "id <= $1", "params": map[string]string{"1": "100000"}})
	if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	phase("pod b active")
	// Writes go on against pod B for a while.
	start := time.Now()
	c.await(t, 60*time.Second, "the second subset and rows written after the handoff", func(rows []itemRow, _ bool, loaded int) bool {
		return loaded >= 2 && time.Since(start) > 2*time.Second
	})
	phase("second subset loaded")
	r := w.finish()
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := tableRows(t, pg)
	c.await(t, 60*time.Second, fmt.Sprintf("the table's %d rows, up to date", len(want)), func(rows []itemRow, up bool, _ int) bool {
		return up && sameItems(rows, want)
	}, func(rows []itemRow) string { return itemsDiff(rows, want) })
	phase("client rows equal to the table's")
	c.mu.Lock()
	ctrl, errs := c.ctrl, c.errs
	c.mu.Unlock()
	for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
		if code, err := p.Wait(30 * time.Second); err != nil || code != 0 {
			t.Errorf("%s exit %d %v; want 0", p.Name, code, err)
		}
	}
	refetches := strings.Count(strings.Join(ctrl, " "), "must-refetch")
	t.Logf("writer: %d inserts, %d updates, %d deletes; client: %d must-refetch, errors %v; cache: %v",
		r.inserts, r.updates, r.deletes, refetches, errs, cache.cacheStatuses(t))
	if refetches > 0 {
		t.Errorf("shared storage: %d must-refetch; want none (same handle)", refetches)
	}
}
