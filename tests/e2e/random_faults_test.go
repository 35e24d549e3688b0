package e2e_test

// A seeded randomized fault test (issue 8): two or three pods, each on its
// own storage or all on one shared folder, a writer of numbered rows
// (inserts, updates and deletes in transactions of 1-50 rows), official
// client followers of a whole-table shape and of a where shape through the
// Service proxy, and faults drawn from SIGTERM, SIGKILL and SIGSTOP (with
// SIGCONT a few seconds later) of the broker, the worker or both of the
// active pod or a standby, and PostgreSQL fast restarts. Dead containers
// are restarted on the same storage. At the end every follower holds
// exactly PostgreSQL's rows, and its messages never inserted a row it had
// nor updated or deleted one it lacked.
//
// Knobs (environment): BATON_FAULT_SEED (default: the clock),
// BATON_FAULT_COUNT (faults per storage mode; default: as many as fit in
// BATON_FAULT_DURATION, default 40s). `make faults` runs 200 per mode.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// whereShape is the where clause of the second follower's shape.
const whereShape = "id % 3 = 0"

// faultKnobs are the run's settings, from the environment.
type faultKnobs struct {
	seed     uint64
	count    int           // faults per storage mode; 0: until duration
	duration time.Duration // used when count is 0
}

func readFaultKnobs(t *testing.T) faultKnobs {
	t.Helper()
	k := faultKnobs{seed: uint64(time.Now().UnixNano()), duration: 40 * time.Second}
	if s := os.Getenv("BATON_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BATON_FAULT_SEED=%q: %v", s, err)
		}
		k.seed = v
	}
	if s := os.Getenv("BATON_FAULT_COUNT"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("BATON_FAULT_COUNT=%q: want a positive number", s)
		}
		k.count = v
	}
	if s := os.Getenv("BATON_FAULT_DURATION"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			t.Fatalf("BATON_FAULT_DURATION=%q: want a positive duration", s)
		}
		k.duration = v
	}
	return k
}

func TestRandomFaults(t *testing.T) {
	k := readFaultKnobs(t)
	t.Logf("seed %d (rerun with BATON_FAULT_SEED=%d); faults per storage mode: %s", k.seed, k.seed, k.budget())
	for i, mode := range []string{"per-pod storage", "shared storage"} {
		t.Run(mode, func(t *testing.T) {
			runRandomFaults(t, k, uint64(i), mode == "shared storage")
		})
	}
}

func (k faultKnobs) budget() string {
	if k.count > 0 {
		return strconv.Itoa(k.count)
	}
	return "as many as fit in " + k.duration.String()
}

// faultRun is one storage mode's run.
type faultRun struct {
	t      *testing.T
	seed   uint64
	rng    *rand.Rand
	pg     *pgtest.Cluster
	pods   []*harness.Pod
	log    *os.File // every process's log lines, and the faults
	faults []string
}

// failf fails the run naming the seed, the faults so far and where the
// whole log is.
func (r *faultRun) failf(format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	r.note("FAILED: %s", msg)
	r.t.Fatalf("seed %d (BATON_FAULT_SEED=%d, subtest %s): %s\nfaults: %s\nlog of every process: %s (kept)\n--- log tail ---\n%s",
		r.seed, r.seed, r.t.Name(), msg, strings.Join(r.faults, "; "), r.log.Name(), fileTail(r.log.Name(), 120))
}

// note writes a line into the run's log, between the processes' lines.
func (r *faultRun) note(format string, args ...any) {
	fmt.Fprintf(r.log, "test: %s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func runRandomFaults(t *testing.T, k faultKnobs, mode uint64, shared bool) {
	r := &faultRun{t: t, seed: k.seed, rng: rand.New(rand.NewPCG(k.seed, mode))}
	logFile, err := os.CreateTemp("", "baton-faults-*.log")
	if err != nil {
		t.Fatal(err)
	}
	r.log = logFile
	t.Cleanup(func() {
		logFile.Close()
		if !t.Failed() {
			os.Remove(logFile.Name())
		}
	})
	r.pg = pgtest.Start(t, pgtest.Options{})
	setupItems(t, r.pg)
	proxy := startServiceProxy(t)
	n := 2 + r.rng.IntN(2)
	dir := t.TempDir()
	for i := range n {
		d := dir
		if !shared {
			d = t.TempDir()
		}
		r.pods = append(r.pods, newPod(t, r.pg, harness.PodOptions{
			Name: string(rune('a' + i)), StorageDir: d, BrokerSettings: fastSettings, WorkerSettings: fastSettings, Tee: logFile,
		}))
	}
	r.note("seed %d, %d pods, shared storage %v", k.seed, n, shared)
	stopRouting := routeToActive(proxy, r.pods)
	t.Cleanup(stopRouting)
	r.awaitActive("the first lease")

	whole := startTrace(t, proxy.URL(), "items")
	where := startTraceWhere(t, proxy.URL(), "items", whereShape)
	for _, c := range []*clientTrace{whole, where} {
		c.await(t, 60*time.Second, "the empty table, up to date", func(ev []traceEvent) bool {
			return slices.Contains(ev, traceEvent{Control: "up-to-date"})
		})
	}
	w := startFaultWriter(r.pg, rand.New(rand.NewPCG(k.seed, mode+100)))

	start := time.Now()
	for i := 1; k.count > 0 && i <= k.count || k.count == 0 && time.Since(start) < k.duration; i++ {
		r.awaitActive(fmt.Sprintf("fault %d", i))
		// Let the stream run a little between faults (pacing, not a
		// wait for a condition).
		time.Sleep(time.Duration(500+r.rng.IntN(2000)) * time.Millisecond)
		r.fault(i)
	}
	r.restartDead()
	r.awaitActive("the end of the faults")
	stats, err := w.finish()
	if err != nil {
		r.failf("writer: %v", err)
	}
	// A last row both shapes hold: once a follower has it, up to date, it
	// has every change committed before.
	marker := r.insertMarker()
	r.note("faults done (%d in %s); writer: %s; marker row %d", len(r.faults), time.Since(start).Round(time.Second), stats, marker)
	for _, f := range []struct {
		name  string
		c     *clientTrace
		where string
	}{{"whole-table follower", whole, ""}, {"where follower (" + whereShape + ")", where, whereShape}} {
		if err := awaitUpToDateWith(f.c, marker, 120*time.Second); err != nil {
			r.failf("%s: %v", f.name, err)
		}
		refetches, err := clientMatches(t, f.c, tableRowsWhere(t, r.pg, f.where))
		if err != nil {
			r.failf("%s: %v", f.name, err)
		}
		t.Logf("%s: equal to PostgreSQL after %d refetches", f.name, refetches)
	}
	t.Logf("%d pods, %d faults in %s; writer: %s; responses relayed %v", n, len(r.faults), time.Since(start).Round(time.Second), stats, proxy.counts())
	// A 500 is an internal error the worker logged with its request id;
	// put those lines in the report, so a 500 seen in a run has its cause.
	for _, line := range internalErrors(t, logFile.Name()) {
		t.Logf("internal error: %s", line)
	}
}

// internalErrors is the log lines, in the run's log, of requests a worker
// answered with 500 (those it logged with a request id).
func internalErrors(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "request_id=") {
			out = append(out, line)
		}
	}
	return out
}

// awaitUpToDateWith is clientTrace.await returning an error instead of
// failing, so the run can say its seed.
func awaitUpToDateWith(c *clientTrace, id int, timeout time.Duration) error {
	cond := upToDateWith(id)
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		events, wake, err := c.events, c.wake, c.readErr
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if cond(events) {
			return nil
		}
		select {
		case <-wake:
		case <-c.exit:
			return fmt.Errorf("the client exited waiting for row %d", id)
		case <-deadline:
			n, maxID := insertsSeen(events)
			return fmt.Errorf("not up to date with row %d after %s (%d events, %d inserts, last id %d)", id, timeout, len(events), n, maxID)
		}
	}
}

// routeToActive moves the proxy, every 100 ms, to the pod whose worker
// says it is active, as a Service follows readiness. It returns a stop
// function.
func routeToActive(proxy *serviceProxy, pods []*harness.Pod) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			var wg sync.WaitGroup
			active := make([]bool, len(pods))
			for i, p := range pods {
				wg.Go(func() {
					s, _, err := p.Worker().Health()
					active[i] = err == nil && s == "active"
				})
			}
			wg.Wait()
			if i := slices.Index(active, true); i >= 0 {
				u, _ := url.Parse(pods[i].URL())
				proxy.target.Store(u)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// awaitActive waits until a pod's worker is active.
func (r *faultRun) awaitActive(what string) {
	r.t.Helper()
	if err := harness.Await(90*time.Second, "a pod's worker active", func() (bool, error) {
		for _, p := range r.pods {
			if s, _, err := p.Worker().Health(); err == nil && s == "active" {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		r.failf("before %s: %v", what, err)
	}
}

// activePod is the pod whose worker says active, or nil.
func (r *faultRun) activePod() *harness.Pod {
	for _, p := range r.pods {
		if s, _, err := p.Worker().Health(); err == nil && s == "active" {
			return p
		}
	}
	return nil
}

// fault injects fault number i, drawn from the run's generator, and
// restarts what it killed.
func (r *faultRun) fault(i int) {
	r.t.Helper()
	if r.rng.IntN(100) < 8 {
		r.record(i, "PostgreSQL fast restart")
		if err := r.pg.Restart(); err != nil {
			r.failf("fault %d: restart PostgreSQL: %v", i, err)
		}
		return
	}
	target, role := r.activePod(), "active"
	if target == nil || r.rng.IntN(100) < 30 {
		target, role = r.pods[r.rng.IntN(len(r.pods))], "some"
		if p := r.activePod(); p == target {
			role = "active"
		} else if p != nil {
			role = "standby"
		}
	}
	var procs []*harness.Process
	which := []string{"broker", "worker", "broker and worker"}[r.rng.IntN(3)]
	if which != "worker" {
		procs = append(procs, target.Broker().Process)
	}
	if which != "broker" {
		procs = append(procs, target.Worker().Process)
	}
	sig := []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL, syscall.SIGSTOP}[r.rng.IntN(3)]
	desc := fmt.Sprintf("%s to the %s of %s pod %s", sigName(sig), which, role, target.Name())
	if sig == syscall.SIGSTOP {
		d := time.Duration(1000+r.rng.IntN(3000)) * time.Millisecond
		desc += fmt.Sprintf(" for %s", d)
		r.record(i, desc)
		for _, p := range procs {
			_ = p.Signal(syscall.SIGSTOP)
		}
		time.Sleep(d) // the freeze itself
		for _, p := range procs {
			_ = p.Signal(syscall.SIGCONT)
		}
		return
	}
	r.record(i, desc)
	for _, p := range procs {
		_ = p.Signal(sig)
	}
	for _, p := range procs {
		// A graceful stop takes at most the drain timeout (10 s) and
		// the worker's own bounds.
		code, err := p.Wait(60 * time.Second)
		if err != nil {
			r.failf("fault %d (%s): %v", i, desc, err)
		}
		if sig == syscall.SIGTERM && code != 0 {
			r.note("%s exited %d after SIGTERM", p.Name, code)
		}
	}
	r.restartDead()
}

func (r *faultRun) record(i int, desc string) {
	s := fmt.Sprintf("%d: %s", i, desc)
	r.faults = append(r.faults, s)
	r.note("fault %s", s)
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	}
	return s.String()
}

// restartDead starts again, on the same storage and addresses, every
// container that has exited (a broker before its worker).
func (r *faultRun) restartDead() {
	r.t.Helper()
	for _, p := range r.pods {
		started, err := p.Restart(r.t.Context())
		for _, proc := range started {
			r.note("restarted %s", proc.Name)
		}
		if err != nil {
			r.failf("restart pod %s: %v", p.Name(), err)
		}
	}
}

// insertMarker inserts a row both shapes hold (its id matches whereShape)
// after every other row, and returns its id.
func (r *faultRun) insertMarker() int {
	r.t.Helper()
	conn := connect(r.t, r.pg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id int
	if err := conn.QueryRow(ctx, `INSERT INTO items (id, note)
		SELECT (coalesce(max(id), 0) / 3 + 1) * 3, 'marker' FROM items RETURNING id`).Scan(&id); err != nil {
		r.failf("insert the marker row: %v", err)
	}
	return id
}

// faultWriter commits transactions of 1-50 random changes to items:
// inserts of new numbered rows (ids only grow, so a deleted id never comes
// back), updates of their note and deletes. It rides out PostgreSQL
// restarts: after an error it reconnects and reads which rows exist (a
// commit whose answer was lost may or may not have happened).
type faultWriter struct {
	stop chan struct{}
	done chan error
	mu   sync.Mutex
	txs  int
	errs int
	next int
}

func startFaultWriter(pg *pgtest.Cluster, rng *rand.Rand) *faultWriter {
	w := &faultWriter{stop: make(chan struct{}), done: make(chan error, 1), next: 1}
	go func() { w.done <- w.run(pg, rng) }()
	return w
}

func (w *faultWriter) run(pg *pgtest.Cluster, rng *rand.Rand) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	var live []int // ids present, as far as the writer knows
	var down time.Time
	for k := 0; ; k++ {
		select {
		case <-w.stop:
			return nil
		default:
		}
		if conn == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := pg.Connect(ctx)
			if err == nil {
				live, err = liveIDs(ctx, c)
				if err != nil {
					c.Close(context.Background())
				}
			}
			cancel()
			if err != nil {
				if down.IsZero() {
					down = time.Now()
				} else if time.Since(down) > 90*time.Second {
					return fmt.Errorf("no PostgreSQL for %s: %w", time.Since(down).Round(time.Second), err)
				}
				time.Sleep(100 * time.Millisecond) // retry pacing
				continue
			}
			conn, down = c, time.Time{}
			if len(live) > 0 {
				w.next = max(w.next, slices.Max(live)+1)
			}
		}
		var sql strings.Builder
		sql.WriteString("BEGIN;")
		after := slices.Clone(live)
		next := w.next
		for range 1 + rng.IntN(50) {
			switch p := rng.IntN(100); {
			case p < 60 || len(after) == 0:
				fmt.Fprintf(&sql, "INSERT INTO items (id, note) VALUES (%d, 'i%d');", next, k)
				after = append(after, next)
				next++
			case p < 85:
				fmt.Fprintf(&sql, "UPDATE items SET note = 'u%d' WHERE id = %d;", k, after[rng.IntN(len(after))])
			default:
				j := rng.IntN(len(after))
				fmt.Fprintf(&sql, "DELETE FROM items WHERE id = %d;", after[j])
				after = slices.Delete(after, j, j+1)
			}
		}
		sql.WriteString("COMMIT;")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := conn.Exec(ctx, sql.String())
		cancel()
		w.mu.Lock()
		if err != nil {
			w.errs++
			w.next = next // the commit may have happened: never reuse its ids
			conn.Close(context.Background())
			conn = nil
		} else {
			w.txs++
			live, w.next = after, next
		}
		w.mu.Unlock()
		time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond) // pace the writer
	}
}

func liveIDs(ctx context.Context, conn *pgx.Conn) ([]int, error) {
	rows, err := conn.Query(ctx, "SELECT id FROM items ORDER BY id")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// finish stops the writer and describes what it did.
func (w *faultWriter) finish() (string, error) {
	close(w.stop)
	err := <-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d transactions, %d failed, ids up to %d", w.txs, w.errs, w.next-1), err
}
