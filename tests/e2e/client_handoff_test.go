package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// Client-level versions of the handoff, crash and freeze tests: the official
// TypeScript client follows the items shape through a proxy that plays the
// Kubernetes Service (its target moves from one pod to the next), and what
// the client sees — its messages in order and its materialized rows — must
// hold every committed row exactly once (I2).

// serviceProxy is a reverse proxy whose target can be moved, as a Service
// moves traffic from a pod to the next. It counts the responses it relays
// by status code.
type serviceProxy struct {
	srv    *httptest.Server
	target atomic.Pointer[url.URL]

	mu     sync.Mutex
	status map[int]int
	log    []string // "host status" of every 409, for the report
}

type proxyTargetKey struct{}

// startServiceProxy starts a proxy with no target (it answers 503 with
// Retry-After until it has one). Start it before the pairs, so that its
// cleanup runs after theirs and no request to them is left outstanding.
func startServiceProxy(t *testing.T) *serviceProxy {
	t.Helper()
	p := &serviceProxy{status: map[int]int{}}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(r.In.Context().Value(proxyTargetKey{}).(*url.URL))
		},
		Transport:     transport,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			p.record(resp.Request.URL.Host, resp.StatusCode)
			// Which pod answered, for the client's trace.
			resp.Header.Set("X-Test-Upstream", resp.Request.URL.Host)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				p.record(r.URL.Host, http.StatusBadGateway)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := p.target.Load()
		if u == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "no endpoint", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyTargetKey{}, u)))
	}))
	t.Cleanup(func() {
		p.srv.Close()
		transport.CloseIdleConnections()
	})
	return p
}

// URL is the proxy's base URL, what the client uses.
func (p *serviceProxy) URL() string { return p.srv.URL }

// unroute leaves the proxy without a target, as a Service without a ready
// endpoint: new requests get 503 with Retry-After.
func (p *serviceProxy) unroute() { p.target.Store(nil) }

// moveTo sends every new request to the worker at base.
func (p *serviceProxy) moveTo(t *testing.T, base string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(u)
}

func (p *serviceProxy) record(host string, code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status[code]++
	if code == http.StatusConflict {
		p.log = append(p.log, fmt.Sprintf("409 from %s at %s", host, time.Now().Format("15:04:05.000")))
	}
}

// counts returns the responses relayed so far by status code.
func (p *serviceProxy) counts() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]int, len(p.status))
	for k, v := range p.status {
		out[k] = v
	}
	return out
}

func (p *serviceProxy) conflicts() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status[http.StatusConflict], slices.Clone(p.log)
}

// traceEvent is one message the client delivered: a change (Key, Op) or a
// control message.
type traceEvent struct {
	Key     string `json:"k"`
	Op      string `json:"o"`
	Control string `json:"c"`
}

// itemRow is a row of items as the client materializes it (int4 parsed to
// a number) and as the table holds it.
type itemRow struct {
	ID   int     `json:"id"`
	Note *string `json:"note"`
}

// clientTrace is a running tests/ts/trace.mjs.
type clientTrace struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	dumps chan []itemRow
	exit  chan struct{}

	mu      sync.Mutex
	events  []traceEvent
	times   []time.Time // when each event arrived
	history []traceNote // the client's responses and warnings, in order
	notes   int         // Shape notifications
	stderr  strings.Builder
	wake    chan struct{}
	readErr error
}

func startTrace(t *testing.T, base, table string) *clientTrace {
	t.Helper()
	return startTraceWhere(t, base, table, "")
}

// startTraceWhere is startTrace for the shape of table's rows matching
// where (the whole table when where is empty); env are extra environment
// variables of the client (BATON_SECRET=...).
func startTraceWhere(t *testing.T, base, table, where string, env ...string) *clientTrace {
	t.Helper()
	needClient(t)
	c := &clientTrace{dumps: make(chan []itemRow, 1), exit: make(chan struct{}), wake: make(chan struct{})}
	args := []string{"trace.mjs", base, table}
	if where != "" {
		args = append(args, where)
	}
	c.cmd = exec.Command("node", args...)
	c.cmd.Dir = tsDir
	if len(env) > 0 {
		c.cmd.Env = append(os.Environ(), env...)
	}
	c.cmd.Stderr = &syncWriter{w: &c.stderr, mu: &c.mu}
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exit
		if t.Failed() {
			c.mu.Lock()
			t.Logf("--- client stderr ---\n%s", c.stderr.String())
			c.mu.Unlock()
		}
	})
	go func() {
		defer func() {
			_ = c.cmd.Wait()
			close(c.exit)
		}()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var line struct {
				Ev   []traceEvent    `json:"ev"`
				N    *int            `json:"n"`
				Rows json.RawMessage `json:"rows"`
				R    json.RawMessage `json:"r"`
				W    *string         `json:"w"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				c.mu.Lock()
				c.readErr = fmt.Errorf("client printed %q: %v", sc.Text(), err)
				c.mu.Unlock()
				continue
			}
			if line.Rows != nil {
				var rows []itemRow
				if err := json.Unmarshal(line.Rows, &rows); err != nil {
					c.mu.Lock()
					c.readErr = fmt.Errorf("client rows: %v", err)
					c.mu.Unlock()
					continue
				}
				c.dumps <- rows
				continue
			}
			if line.R != nil || line.W != nil {
				n := traceNote{Response: string(line.R)}
				if line.W != nil {
					n.Warning = *line.W
				}
				c.mu.Lock()
				n.Before, n.At = len(c.events), time.Now()
				c.history = append(c.history, n)
				c.mu.Unlock()
				continue
			}
			now := time.Now()
			c.mu.Lock()
			c.events = append(c.events, line.Ev...)
			for range line.Ev {
				c.times = append(c.times, now)
			}
			if line.N != nil {
				c.notes++
			}
			close(c.wake)
			c.wake = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	return c
}

// traceNote is a response the client's fetch got, or a warning it
// printed, and how many events the client had delivered by then.
type traceNote struct {
	Before   int
	At       time.Time
	Response string // the JSON trace.mjs printed
	Warning  string
}

// historyAround describes the responses and warnings of the client
// around event i: the last n before it and a few after, for a report.
func (c *clientTrace) historyAround(i, n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := sort.Search(len(c.history), func(k int) bool { return c.history[k].Before > i })
	lo, hi := max(first-n, 0), min(first+3, len(c.history))
	var b strings.Builder
	fmt.Fprintf(&b, "the client's responses and warnings around event %d (#: events delivered before it):", i)
	for _, h := range c.history[lo:hi] {
		what := h.Response
		if h.Warning != "" {
			what = "warning: " + h.Warning
			if len(what) > 300 {
				what = what[:300] + "..."
			}
		}
		fmt.Fprintf(&b, "\n  %s #%d %s", h.At.UTC().Format("15:04:05.000"), h.Before, what)
	}
	return b.String()
}

// await waits until cond holds on the events seen so far.
func (c *clientTrace) await(t *testing.T, timeout time.Duration, what string, cond func(events []traceEvent) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		events, wake, err := c.events, c.wake, c.readErr
		c.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if cond(events) {
			return
		}
		select {
		case <-wake:
		case <-c.exit:
			t.Fatalf("the client exited while waiting for %s", what)
		case <-deadline:
			inserts, maxID := insertsSeen(events)
			t.Fatalf("timed out after %s waiting for the client to see %s (%d events, %d inserts, last id %d)",
				timeout, what, len(events), inserts, maxID)
		}
	}
}

// snapshot returns a copy of the events seen so far.
func (c *clientTrace) snapshot() []traceEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// timedSnapshot returns a copy of the events seen so far and when each
// arrived.
func (c *clientTrace) timedSnapshot() ([]traceEvent, []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events), slices.Clone(c.times)
}

// rows asks the client for its materialized rows.
func (c *clientTrace) rows(t *testing.T) []itemRow {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "rows\n"); err != nil {
		t.Fatalf("ask the client for its rows: %v", err)
	}
	select {
	case rows := <-c.dumps:
		return rows
	case <-c.exit:
		t.Fatal("the client exited before printing its rows")
	case <-time.After(30 * time.Second):
		t.Fatal("the client did not print its rows within 30s")
	}
	return nil
}

// keyID is the items.id of an Electric key `"public"."items"/"<id>"`.
func keyID(key string) (int, error) {
	i := strings.LastIndex(key, "/")
	if i < 0 {
		return 0, fmt.Errorf("key %q", key)
	}
	return strconv.Atoi(strings.Trim(key[i+1:], `"`))
}

// insertsSeen counts the insert messages and returns the largest id
// inserted.
func insertsSeen(events []traceEvent) (n, maxID int) {
	for _, e := range events {
		if e.Op == "insert" {
			n++
			if id, err := keyID(e.Key); err == nil && id > maxID {
				maxID = id
			}
		}
	}
	return n, maxID
}

// upToDateWith reports whether the client has seen the insert of row id
// and an up-to-date message after it.
func upToDateWith(id int) func([]traceEvent) bool {
	key := fmt.Sprintf(`"public"."items"/"%d"`, id)
	return func(events []traceEvent) bool {
		seen := false
		for _, e := range events {
			switch {
			case e.Op == "insert" && e.Key == key:
				seen = true
			case e.Control == "must-refetch":
				seen = false
			case e.Control == "up-to-date" && seen:
				return true
			}
		}
		return false
	}
}

// checkTrace replays the messages the client saw: no insert of a key that
// is present (without a delete in between), no update or delete of an
// absent key; a must-refetch starts over. Until the first must-refetch the
// inserts must come in commit order (the writer commits increasing ids, and
// the shape was created on an empty table). It returns the ids present at
// the end and how many must-refetch messages there were.
func checkTrace(events []traceEvent) (present map[int]bool, refetches int, err error) {
	present = map[int]bool{}
	at := map[int]int{} // id → index of the event that inserted it
	lastID := 0
	for i, e := range events {
		if e.Control != "" {
			if e.Control == "must-refetch" {
				refetches++
				clear(present)
				clear(at)
			}
			continue
		}
		id, kerr := keyID(e.Key)
		if kerr != nil {
			return nil, refetches, &traceError{i, kerr.Error()}
		}
		switch e.Op {
		case "insert":
			if present[id] {
				return nil, refetches, &traceError{i, fmt.Sprintf("row %d inserted again (first at event %d) without a delete in between", id, at[id])}
			}
			if refetches == 0 {
				if id <= lastID {
					return nil, refetches, &traceError{i, fmt.Sprintf("row %d inserted after row %d: not in commit order", id, lastID)}
				}
				lastID = id
			}
			present[id], at[id] = true, i
		case "update", "delete":
			if !present[id] {
				return nil, refetches, &traceError{i, fmt.Sprintf("%s of row %d, which the client does not have", e.Op, id)}
			}
			if e.Op == "delete" {
				delete(present, id)
			}
		default:
			return nil, refetches, &traceError{i, fmt.Sprintf("operation %q", e.Op)}
		}
	}
	return present, refetches, nil
}

// check is checkTrace of the events the client has seen so far; a
// rejected message's error also shows the client's responses and
// warnings around it.
func (c *clientTrace) check() (present map[int]bool, refetches int, err error) {
	present, refetches, err = checkTrace(c.snapshot())
	var te *traceError
	if errors.As(err, &te) {
		err = fmt.Errorf("%w\n%s", err, c.historyAround(te.Event, 30))
	}
	return present, refetches, err
}

// traceError is a message checkTrace rejects: its index and why.
type traceError struct {
	Event int
	Why   string
}

func (e *traceError) Error() string { return fmt.Sprintf("event %d: %s", e.Event, e.Why) }

// tableRows reads items as the client should end up with it.
func tableRows(t *testing.T, pg *pgtest.Cluster) []itemRow {
	t.Helper()
	return tableRowsWhere(t, pg, "")
}

// tableRowsWhere reads the rows of items matching where (every row when
// where is empty), ordered by id.
func tableRowsWhere(t *testing.T, pg *pgtest.Cluster, where string) []itemRow {
	t.Helper()
	conn := connect(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := "SELECT id, note FROM items"
	if where != "" {
		q += " WHERE " + where
	}
	rows, err := conn.Query(ctx, q+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []itemRow
	for rows.Next() {
		var r itemRow
		if err := rows.Scan(&r.ID, &r.Note); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkClientEndsWithTable waits until the client is up to date with row
// last (the writer's last), then checks its rows against the table and its
// message trace (checkTrace). It returns how many must-refetch messages the
// client saw.
func checkClientEndsWithTable(t *testing.T, pg *pgtest.Cluster, c *clientTrace, last int) int {
	t.Helper()
	c.await(t, 60*time.Second, fmt.Sprintf("row %d, up to date", last), upToDateWith(last))
	want := tableRows(t, pg)
	if len(want) != last || want[len(want)-1].ID != last {
		t.Fatalf("table holds %d rows; the writer wrote %d", len(want), last)
	}
	got := c.rows(t)
	sort.SliceStable(got, func(i, j int) bool { return got[i].ID < got[j].ID })
	ids := make([]int, len(got))
	for i, r := range got {
		ids[i] = r.ID
	}
	checkExactlyOnce(t, ids, last)
	for i := range want {
		if got[i].ID != want[i].ID || (got[i].Note == nil) != (want[i].Note == nil) ||
			got[i].Note != nil && *got[i].Note != *want[i].Note {
			t.Fatalf("client row %+v; table row %+v", got[i], want[i])
		}
	}
	present, refetches, err := c.check()
	if err != nil {
		t.Fatalf("messages the client saw: %v", err)
	}
	var traced []int
	for id := range present {
		traced = append(traced, id)
	}
	checkExactlyOnce(t, traced, last)
	return refetches
}

// Rolling handoff under load, as the official TypeScript client sees it
// (issue 3, test 3): a writer commits numbered rows throughout; the client
// follows items live on pod A through the Service proxy; pod A gets SIGTERM
// (broker and worker at once) and the Service moves to pod B at that
// moment. The client ends with every row exactly once, its messages never
// repeat an insert or skip one; with shared storage it never gets a 409
// (same handle, no refetch). Behind a cache (nginx in front of the
// Service, chunks of 2 KiB), the same; and a client that starts after the
// handoff, reading chunks cached from pod A and the rest from pod B, ends
// with the table's rows.
func TestClientRollingHandoff(t *testing.T) {
	for _, name := range []string{"separate storage", "shared storage", "shared storage behind a cache"} {
		shared, cached := name != "separate storage", name == "shared storage behind a cache"
		t.Run(name, func(t *testing.T) {
			pg := pgtest.Start(t, pgtest.Options{})
			setupItems(t, pg)
			proxy := startServiceProxy(t)
			dirA, dirB := t.TempDir(), t.TempDir()
			if shared {
				dirB = dirA
			}
			var settings map[string]string
			if cached {
				settings = map[string]string{"BATON_SHAPE_CHUNK_BYTES_THRESHOLD": chunkBytes}
			}
			a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dirA, WorkerSettings: settings})
			if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			baseA := a.URL()
			b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dirB, WorkerSettings: settings})
			if err := b.Broker().AwaitHealth("readiness", serving, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := b.Worker().AwaitStatus("waiting", 15*time.Second); err != nil {
				t.Fatal(err)
			}
			proxy.moveTo(t, baseA)
			base := proxy.URL()
			if cached {
				base = startNginx(t, strings.TrimPrefix(proxy.URL(), "http://")).URL("bg")
			}
			c := startTrace(t, base, "items")
			c.await(t, 30*time.Second, "the empty table, up to date", func(ev []traceEvent) bool {
				return slices.Contains(ev, traceEvent{Control: "up-to-date"})
			})

			w := startWriter(t, pg)
			c.await(t, 30*time.Second, "50 rows from pod A", func(ev []traceEvent) bool {
				n, _ := insertsSeen(ev)
				return n >= 50
			})
			_, atStop := insertsSeen(c.snapshot())
			_ = a.Worker().Signal(syscall.SIGTERM)
			_ = a.Broker().Signal(syscall.SIGTERM)
			proxy.moveTo(t, b.URL())
			stopped := time.Now()
			if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			handoff := time.Since(stopped)
			t.Logf("SIGTERM → pod B active: %s", handoff)
			t.Run("handoff within 3s", func(t *testing.T) {
				// DESIGN §6: well under 1 s (goal 50 ms p99 on loopback);
				// 3 s leaves room for a busy machine.
				if handoff > 3*time.Second {
					t.Errorf("SIGTERM → pod B active took %s\n--- pod A broker ---\n%s", handoff, a.Broker().Output())
				}
			})
			for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
				if code, err := p.Wait(30 * time.Second); err != nil || code != 0 {
					t.Fatalf("%s exit %d %v; want 0", p.Name, code, err)
				}
			}
			c.await(t, 60*time.Second, fmt.Sprintf("rows past %d from pod B", atStop+100), func(ev []traceEvent) bool {
				_, maxID := insertsSeen(ev)
				return maxID > atStop+100
			})
			last := w.finish()
			refetches := checkClientEndsWithTable(t, pg, c, last)
			n409, log409 := proxy.conflicts()
			t.Logf("%d rows (%d when A stopped); client refetches %d; responses relayed %v; %v",
				last, atStop, refetches, proxy.counts(), log409)
			if shared && (n409 > 0 || refetches > 0) {
				t.Fatalf("shared storage: %d responses 409 and %d must-refetch messages; want none (%v)", n409, refetches, log409)
			}
			if cached {
				later := startTrace(t, base, "items")
				checkClientEndsWithTable(t, pg, later, last)
			}
		})
	}
}

// SIGKILL of the worker during writes, then the worker container restarts
// on the same storage (issue 3, test 4), with the client following through
// the Service proxy: it ends with every row exactly once and never has to
// refetch (same storage, same handle: no 409).
func TestClientWorkerSigkillRestart(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	proxy := startServiceProxy(t)
	dir := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, BrokerSettings: fastSettings})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	proxy.moveTo(t, a.URL())
	c := startTrace(t, proxy.URL(), "items")
	c.await(t, 30*time.Second, "the empty table, up to date", func(ev []traceEvent) bool {
		return slices.Contains(ev, traceEvent{Control: "up-to-date"})
	})

	w := startWriter(t, pg)
	c.await(t, 30*time.Second, "50 rows", func(ev []traceEvent) bool {
		n, _ := insertsSeen(ev)
		return n >= 50
	})
	if err := a.Worker().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Worker().Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	_, atKill := insertsSeen(c.snapshot())
	// The same pod's worker container restarts; the Service sends the
	// client to it (a restarted container keeps the pod's address).
	if err := a.StartWorker(); err != nil {
		t.Fatal(err)
	}
	w2 := a.Worker()
	proxy.moveTo(t, a.URL())
	if err := w2.AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.await(t, 60*time.Second, fmt.Sprintf("rows past %d after the restart", atKill+100), func(ev []traceEvent) bool {
		_, maxID := insertsSeen(ev)
		return maxID > atKill+100
	})
	last := w.finish()
	refetches := checkClientEndsWithTable(t, pg, c, last)
	n409, log409 := proxy.conflicts()
	t.Logf("%d rows (%d seen at the kill); responses relayed %v", last, atKill, proxy.counts())
	if n409 > 0 || refetches > 0 {
		t.Fatalf("restart on the same storage: %d responses 409 and %d must-refetch messages; want none (%v)", n409, refetches, log409)
	}
}

// healthProbe asks a worker's /v1/health and records every status it
// answers: once from each of several requests sent together (to a frozen
// worker, they all wait for the thaw), and continuously from two pollers.
type healthProbe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]int
	errs int
	// inFlight counts the requests sent and not yet answered.
	inFlight atomic.Int32
}

func startHealthProbe(addr string, once int) *healthProbe {
	h := &healthProbe{stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]int{}}
	ask := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.inFlight.Add(1)
		status, code, _ := harness.Health(ctx, "http://"+addr)
		h.inFlight.Add(-1)
		h.mu.Lock()
		defer h.mu.Unlock()
		if code == 0 {
			h.errs++
			return
		}
		h.seen[fmt.Sprintf("%s %d", status, code)]++
	}
	var wg sync.WaitGroup
	for range once {
		wg.Go(ask)
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				ask()
				time.Sleep(2 * time.Millisecond) // pace the probe on a small machine
			}
		})
	}
	go func() {
		wg.Wait()
		close(h.done)
	}()
	return h
}

func (h *healthProbe) finish() (map[string]int, int) {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen, h.errs
}

// Frozen predecessor at the client level (issue 3, test 5): pod A (broker
// and worker) is SIGSTOPped during writes; pod B, on the same storage,
// takes over and the Service moves to it once B's health is active; then A
// gets SIGCONT. The client ends with exactly the table, without a refetch;
// A's worker writes nothing after SIGCONT, and its health never says
// active again.
//
// Where the freeze lands matters, so each case is made deterministic: A is
// frozen (retrying SIGSTOP/SIGCONT) until it is caught outside, or inside,
// a write to the shared storage: between the ownership check that starts a
// write and the one that publishes it, a span the writer marks with a
// shared flock(2) on its LIVE file (nobody waits for it; storage's doc.go).
func TestClientFrozenPredecessor(t *testing.T) {
	t.Run("outside a storage write", func(t *testing.T) { testClientFrozenPredecessor(t, false) })
	t.Run("inside a storage write", func(t *testing.T) { testClientFrozenPredecessor(t, true) })
}

func testClientFrozenPredecessor(t *testing.T, insideWrite bool) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	proxy := startServiceProxy(t)
	dir := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, BrokerSettings: fastSettings})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir, BrokerSettings: fastSettings})
	if err := b.Broker().AwaitHealth("readiness", serving, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("waiting", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	proxy.moveTo(t, a.URL())
	c := startTrace(t, proxy.URL(), "items")
	c.await(t, 30*time.Second, "the empty table, up to date", func(ev []traceEvent) bool {
		return slices.Contains(ev, traceEvent{Control: "up-to-date"})
	})
	oldEpoch := storedEpoch(t, connect(t, pg), "default")

	w := startWriter(t, pg)
	c.await(t, 30*time.Second, "50 rows from pod A", func(ev []traceEvent) bool {
		n, _ := insertsSeen(ev)
		return n >= 50
	})
	t.Cleanup(func() {
		_ = a.Worker().Signal(syscall.SIGCONT)
		_ = a.Broker().Signal(syscall.SIGCONT)
	})
	attempts := freezePod(t, a, dir, insideWrite)
	frozen := time.Now()
	t.Logf("pod A frozen (inside a storage write: %v) after %d attempts", insideWrite, attempts)
	_, atFreeze := insertsSeen(c.snapshot())
	// The bound for a freeze is the session timeout (3 s) + 3 s; this test
	// is about what the client sees, so it allows more on a busy machine.
	if err := b.Worker().AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	proxy.moveTo(t, b.URL())
	t.Logf("SIGSTOP → pod B active: %s", time.Since(frozen))
	newEpoch := storedEpoch(t, connect(t, pg), "default")
	if newEpoch <= oldEpoch {
		t.Fatalf("epoch %d after the takeover; was %d", newEpoch, oldEpoch)
	}
	if err := harness.AwaitEvery(30*time.Second, 50*time.Millisecond, "rows stored by pod B", func() (bool, error) {
		epochs := storedEpochs(t, dir)
		return len(epochs) > 0 && epochs[len(epochs)-1] == newEpoch, nil
	}); err != nil {
		t.Fatal(err)
	}

	// Thaw A with health requests already waiting on it: the first
	// answers it gives are to those, sent while it was frozen, and its
	// lease expired long ago by then.
	probe := startHealthProbe(a.Worker().HTTPAddr, 16)
	if err := harness.Await(5*time.Second, "health requests waiting on the frozen worker", func() (bool, error) {
		return probe.inFlight.Load() == 16+2, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	thawed := time.Now()
	// It notices that its lease is gone ("lease lost" from the stream) or,
	// thawed inside a write, that the storage fenced it; either way it
	// gives the lease back.
	if err := a.Worker().WaitOutput("lease released", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// Keep probing for a couple of seconds after the thaw.
	<-time.After(time.Until(thawed.Add(2 * time.Second)))
	seen, probeErrs := probe.finish()
	t.Logf("pod A health after SIGCONT: %v (%d failed probes)", seen, probeErrs)
	t.Run("health after SIGCONT", func(t *testing.T) {
		for s := range seen {
			if strings.HasPrefix(s, "active") || strings.HasSuffix(s, " 200") {
				t.Errorf("pod A's worker answered health %q after SIGCONT (answers: %v)", s, seen)
			}
		}
		if len(seen) == 0 {
			t.Errorf("pod A's worker answered no health request after SIGCONT (%d failed)", probeErrs)
		}
	})

	c.await(t, 60*time.Second, fmt.Sprintf("rows past %d from pod B", atFreeze+100), func(ev []traceEvent) bool {
		_, maxID := insertsSeen(ev)
		return maxID > atFreeze+100
	})
	last := w.finish()
	refetches := checkClientEndsWithTable(t, pg, c, last)
	n409, log409 := proxy.conflicts()
	t.Logf("%d rows (%d seen at the freeze); responses relayed %v", last, atFreeze, proxy.counts())
	if n409 > 0 || refetches > 0 {
		t.Fatalf("shared storage: %d responses 409 and %d must-refetch messages; want none (%v)", n409, refetches, log409)
	}

	// A's worker wrote nothing after B began: epochs in the stream log
	// never go back, and no record of A's epoch follows one of B's.
	epochs := storedEpochs(t, dir)
	for i := 1; i < len(epochs); i++ {
		if epochs[i] < epochs[i-1] {
			t.Fatalf("record %d has epoch %d after a record of epoch %d", i+1, epochs[i], epochs[i-1])
		}
	}
	if !slices.Contains(epochs, oldEpoch) || epochs[len(epochs)-1] != newEpoch {
		t.Fatalf("stored epochs %v…%v; want records of epoch %d then %d", epochs[:1], epochs[len(epochs)-1:], oldEpoch, newEpoch)
	}
	if strings.Count(a.Worker().Output(), "replicating") != 1 {
		t.Fatalf("pod A's worker replicated again after thawing:\n%s", a.Worker().Output())
	}
}

// freezePod SIGSTOPs a pod's broker and worker, retrying (SIGCONT, a few
// milliseconds, SIGSTOP again) until the worker is stopped inside
// (holding) or outside (!holding) a write to the storage at dir. It
// returns how many freezes it took.
func freezePod(t *testing.T, p *harness.Pod, dir string, holding bool) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		for _, proc := range []*harness.Process{p.Worker().Process, p.Broker().Process} {
			if err := proc.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		if err := harness.AwaitEvery(10*time.Second, time.Millisecond, "the worker's threads stopped", func() (bool, error) {
			return allStopped(p.Worker().PID())
		}); err != nil {
			t.Fatal(err)
		}
		held, err := insideStorageWrite(p.Worker().PID(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if held == holding {
			return attempt
		}
		for _, proc := range []*harness.Process{p.Worker().Process, p.Broker().Process} {
			if err := proc.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not freeze the worker with inside-a-storage-write = %v in %d attempts", holding, attempt)
		}
		// Let it run a little, so the next freeze lands elsewhere.
		time.Sleep(time.Duration(1+attempt%5) * time.Millisecond)
	}
}

// allStopped reports whether every thread of pid is stopped by a signal.
func allStopped(pid int) (bool, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false, fmt.Errorf("threads of %d: %v", pid, err)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return false, nil // the thread exited meanwhile
		}
		// pid (comm) state ...; comm may hold spaces or parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) == 0 || (f[0] != "T" && f[0] != "t") {
			return false, nil
		}
	}
	return true, nil
}

// insideStorageWrite reports whether pid is inside a write to the worker
// storage at dir (the stream log's, the shape set's or a shape log's):
// whether it holds a flock on one of their LIVE files, per /proc/locks.
func insideStorageWrite(pid int, dir string) (bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "default", "o.*", "LIVE"))
	if err != nil {
		return false, err
	}
	// The shape set's LIVE files, and the shape logs' (in the set's owner
	// folders, or directly in shapes/ for the layout before the set).
	var shapes []string
	for _, pattern := range [][]string{{"o.*", "LIVE"}, {"o.*", "*", "o.*", "LIVE"}, {"*", "o.*", "LIVE"}} {
		m, err := filepath.Glob(filepath.Join(append([]string{dir, "default", "shapes"}, pattern...)...))
		if err != nil {
			return false, err
		}
		shapes = append(shapes, m...)
	}
	inodes := map[uint64]bool{}
	for _, f := range append(files, shapes...) {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		inodes[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return false, err
	}
	// "1: FLOCK  ADVISORY  WRITE 31652 fe:00:10182660 0 EOF"; blocked
	// waiters are listed as "1: -> FLOCK ...".
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[4] != strconv.Itoa(pid) {
			continue
		}
		dev := strings.Split(f[5], ":")
		ino, err := strconv.ParseUint(dev[len(dev)-1], 10, 64)
		if err == nil && inodes[ino] {
			return true, nil
		}
	}
	return false, nil
}
