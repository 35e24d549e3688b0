package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/k8s"
	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/tests/podrunner"
)

// The moment Baton exists for (issue 9): the Deployment of
// deploy/kubernetes/base, two replicas, run as the kubelet and the
// controllers would run it (tests/podrunner), rolled three times in a row
// while a writer inserts, updates and deletes numbered rows and official
// TypeScript clients follow the table through the Service. Nothing is lost
// or doubled (each client ends with exactly the table, never sees an
// insert of a row it has or a change of a row it does not have), every
// response the Service relayed is 200, 304 or 409 and no request was
// dropped with its connection, no pod was restarted,
// and the gap each client saw and each handoff are measured. With the
// shared-storage overlay (one ReadWriteMany claim for every pod), a
// handoff keeps every shape handle: no 409, no refetch.
func TestPodRollingUpdate(t *testing.T) {
	t.Run("per-pod storage", func(t *testing.T) { testPodRollingUpdate(t, k8s.Base, false) })
	t.Run("shared storage", func(t *testing.T) { testPodRollingUpdate(t, k8s.SharedStorage, true) })
}

func testPodRollingUpdate(t *testing.T, kustomization string, shared bool) {
	const followers, rollouts = 3, 3
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	c, d, svc := startManifests(t, pg, kustomization)

	var clients []*clientTrace
	for range followers {
		clients = append(clients, startTraceWhere(t, svc.URL("http"), "items", "", "BATON_SECRET="+manifestSecret))
	}
	for i, cl := range clients {
		cl.await(t, 60*time.Second, fmt.Sprintf("client %d: the empty table, up to date", i), func(ev []traceEvent) bool {
			return slices.Contains(ev, traceEvent{Control: "up-to-date"})
		})
	}
	health := startHealthWatch(d)
	w := startMixedWriter(t, pg)
	for i, cl := range clients {
		cl.await(t, 30*time.Second, fmt.Sprintf("client %d: 50 rows", i), func(ev []traceEvent) bool {
			n, _ := insertsSeen(ev)
			return n >= 50
		})
	}

	type window struct{ from, to time.Time }
	var windows []window
	for i := 1; i <= rollouts; i++ {
		from := time.Now()
		d.Update(func(s *corev1.PodTemplateSpec) {
			worker := k8s.Container(&s.Spec, "worker")
			worker.Env = append(worker.Env, corev1.EnvVar{Name: "ROLLOUT", Value: strconv.Itoa(i)})
		})
		if err := d.AwaitRollout(90*time.Second, i == rollouts); err != nil {
			t.Fatalf("rollout %d: %v", i, err)
		}
		windows = append(windows, window{from, time.Now()})
		t.Logf("rollout %d done in %s: %s", i, time.Since(from).Round(time.Millisecond), d)
	}
	// Writes go on a little after the last rollout, so that the clients
	// show they follow the new pods.
	_, atEnd := insertsSeen(clients[0].snapshot())
	for i, cl := range clients {
		cl.await(t, 60*time.Second, fmt.Sprintf("client %d: rows past %d", i, atEnd+50), func(ev []traceEvent) bool {
			_, maxID := insertsSeen(ev)
			return maxID > atEnd+50
		})
	}
	res := w.finish()
	if res.err != nil {
		t.Fatal(res.err)
	}
	actives := health.finish()

	// What the clients saw.
	want := tableRows(t, pg)
	for i, cl := range clients {
		cl.await(t, 60*time.Second, fmt.Sprintf("client %d: row %d, up to date", i, res.last), upToDateWith(res.last))
		got := cl.rows(t)
		sort.Slice(got, func(a, b int) bool { return got[a].ID < got[b].ID })
		if !sameItems(got, want) {
			t.Errorf("client %d ends with %d rows, the table has %d:\n%s", i, len(got), len(want), itemsDiff(got, want))
		}
		present, _, err := cl.check()
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
		if len(present) != len(want) {
			t.Errorf("client %d: its messages leave %d rows; the table has %d", i, len(present), len(want))
		}
	}

	// What the Service relayed: a connection reset (no Ready pod, or a
	// Ready pod refusing it) is never expected; nor is another status
	// than 200, 304 and 409 (around a handoff requests are held, not
	// answered 503), nor a request a pod dropped with its connection (a
	// stopping worker drains: it answers what reaches it, saying
	// Connection: close).
	counts := svc.Counts()
	var unanswered []string
	for _, f := range svc.Failures() {
		if strings.HasPrefix(f.Reason, "unanswered") {
			unanswered = append(unanswered, f.String())
			continue
		}
		t.Errorf("the Service reset a connection: %s", f)
	}
	var others []string
	for _, r := range svc.Responses() {
		if r.Status != http.StatusOK && r.Status != http.StatusNotModified && r.Status != http.StatusConflict {
			others = append(others, fmt.Sprintf("%s %s %d %s %s", r.At.Format("15:04:05.000"), r.Pod, r.Status, r.Method, r.URL))
		}
	}
	t.Run("only 200, 304 or 409 reach a client", func(t *testing.T) {
		for _, o := range others {
			t.Errorf("reached a client: %s", o)
		}
		for _, u := range unanswered {
			t.Errorf("dropped: %s", u)
		}
	})
	if shared {
		for i, cl := range clients {
			if n := refetchesOf(cl); n > 0 || counts[http.StatusConflict] > 0 {
				t.Errorf("shared storage: client %d refetched %d times, %d responses 409; want none (the handle survives a handoff)", i, n, counts[http.StatusConflict])
			}
		}
	}
	for _, p := range c.AllPods() {
		if n := p.Restarts(); n > 0 {
			t.Errorf("pod %s: %d container restarts", p.Name(), n)
		}
	}

	// Measurements.
	handoffs := handoffTimes(c, actives)
	t.Logf("%d rows written (%d inserts, %d updates, %d deletes); responses relayed %v; %d refetches per client",
		res.last, res.inserts, res.updates, res.deletes, counts, refetchesOf(clients[0]))
	for i, h := range handoffs {
		t.Logf("handoff %d: %s → %s in %s (worker SIGTERM → next worker active)", i+1, h.from, h.to, h.took.Round(time.Millisecond))
	}
	var worst time.Duration
	for i, win := range windows {
		var gaps []string
		for j, cl := range clients {
			g := longestGap(cl, win.from, win.to)
			worst = max(worst, g)
			gaps = append(gaps, fmt.Sprintf("client %d %s", j, g.Round(time.Millisecond)))
		}
		t.Logf("rollout %d (%s): longest time without a change: %s", i+1, win.to.Sub(win.from).Round(time.Millisecond), strings.Join(gaps, ", "))
	}
	t.Logf("gap: %s at most; handoffs: %s", worst.Round(time.Millisecond), durations(handoffs))
	if t.Failed() {
		t.Logf("%s", c.Logs())
	}
}

// manifestSecret is the shape API's secret of the manifests' workers (the
// Secret baton-api); clients send it.
const manifestSecret = "rollout-secret"

// startManifests renders a kustomization of deploy/kubernetes and runs its
// Service and Deployment baton with the test's DATABASE_URL as the Secret
// baton-database; it returns once the rollout is done.
func startManifests(t *testing.T, pg *pgtest.Cluster, kustomization string) (*podrunner.Cluster, *podrunner.Deployment, *podrunner.Service) {
	t.Helper()
	root, err := k8s.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := k8s.Render(filepath.Join(root, kustomization))
	if err != nil {
		t.Fatal(err)
	}
	dep, svcSpec := objs.Deployment("baton"), objs.Service("baton")
	if dep == nil || svcSpec == nil {
		t.Fatalf("%s renders no Deployment or Service baton", kustomization)
	}
	c, err := podrunner.New(podrunner.Options{
		Images:  podrunner.BatonImages(bins["broker"], bins["worker"]),
		Secrets: map[string]map[string]string{"baton-database": {"DATABASE_URL": pg.URL()}, "baton-api": {"BATON_SECRET": manifestSecret}},
		Dir:     t.TempDir(),
		Logf:    t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := c.ApplyService(svcSpec)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.ApplyDeployment(dep)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the pods go before the Service.
	t.Cleanup(svc.Close)
	t.Cleanup(d.Delete)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var b strings.Builder
		for _, r := range svc.Responses() {
			fmt.Fprintf(&b, "%s %s %d %s %s\n", r.At.Format("15:04:05.000"), r.Pod, r.Status, r.Method, r.URL)
		}
		for _, f := range svc.Failures() {
			fmt.Fprintf(&b, "%s\n", f)
		}
		t.Logf("--- what the Service relayed ---\n%s", b.String())
	})
	if err := d.AwaitRollout(60*time.Second, true); err != nil {
		t.Fatal(err)
	}
	return c, d, svc
}

// mixedWriter commits numbered rows: step k inserts row k, every third
// step updates row k-1, every fifth deletes row k-4 — each its own
// transaction, so the last step is always an insert of the largest id.
type mixedWriter struct {
	stop chan struct{}
	done chan writerResult
}

type writerResult struct {
	last, inserts, updates, deletes int
	err                             error
}

func startMixedWriter(t *testing.T, pg *pgtest.Cluster) *mixedWriter {
	t.Helper()
	conn := connect(t, pg)
	w := &mixedWriter{stop: make(chan struct{}), done: make(chan writerResult, 1)}
	go func() {
		var r writerResult
		defer func() { w.done <- r }()
		exec := func(sql string, args ...any) bool {
			if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
				r.err = fmt.Errorf("%s %v: %w", sql, args, err)
				return false
			}
			return true
		}
		for k := 1; ; k++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if !exec("INSERT INTO items (id, note) VALUES ($1, $2)", k, "n"+strconv.Itoa(k)) {
				return
			}
			r.last, r.inserts = k, r.inserts+1
			if k%3 == 0 {
				if !exec("UPDATE items SET note = $1 WHERE id = $2", "u"+strconv.Itoa(k), k-1) {
					return
				}
				r.updates++
			}
			if k%5 == 0 {
				if !exec("DELETE FROM items WHERE id = $1", k-4) {
					return
				}
				r.deletes++
			}
			time.Sleep(5 * time.Millisecond) // pace the writer; not a wait for a condition
		}
	}()
	return w
}

func (w *mixedWriter) finish() writerResult {
	close(w.stop)
	return <-w.done
}

func sameItems(got, want []itemRow) bool {
	return slices.EqualFunc(got, want, func(a, b itemRow) bool {
		return a.ID == b.ID && (a.Note == nil) == (b.Note == nil) && (a.Note == nil || *a.Note == *b.Note)
	})
}

// itemsDiff lists, briefly, the rows only one side has or has differently.
func itemsDiff(got, want []itemRow) string {
	key := func(r itemRow) string {
		if r.Note == nil {
			return strconv.Itoa(r.ID) + "=NULL"
		}
		return strconv.Itoa(r.ID) + "=" + *r.Note
	}
	g, w := map[string]bool{}, map[string]bool{}
	for _, r := range got {
		g[key(r)] = true
	}
	for _, r := range want {
		w[key(r)] = true
	}
	var only []string
	for k := range g {
		if !w[k] {
			only = append(only, "client only: "+k)
		}
	}
	for k := range w {
		if !g[k] {
			only = append(only, "table only: "+k)
		}
	}
	sort.Strings(only)
	if len(only) > 20 {
		only = append(only[:20], fmt.Sprintf("... %d more", len(only)-20))
	}
	return strings.Join(only, "\n")
}

// healthWatch asks every pod's worker for /v1/health every few
// milliseconds and records when a pod's worker becomes active.
type healthWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	log  []activation
}

type activation struct {
	pod string
	at  time.Time
}

func startHealthWatch(d *podrunner.Deployment) *healthWatch {
	h := &healthWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		active := map[string]bool{}
		for {
			select {
			case <-h.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for _, p := range d.Pods() {
				addr, err := p.Addr(intstr.FromString("http"))
				if err != nil || p.Container("worker").Process() == nil {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				status, _, _ := harness.Health(ctx, "http://"+addr)
				cancel()
				now := status == "active"
				if now && !active[p.Name()] {
					h.mu.Lock()
					h.log = append(h.log, activation{p.Name(), time.Now()})
					h.mu.Unlock()
				}
				active[p.Name()] = now
			}
		}
	}()
	return h
}

func (h *healthWatch) finish() []activation {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.log)
}

type handoff struct {
	from, to string
	took     time.Duration
}

// handoffTimes pairs each change of active worker with the SIGTERM its
// predecessor's worker got.
func handoffTimes(c *podrunner.Cluster, log []activation) []handoff {
	var out []handoff
	events := c.Events()
	for i := 1; i < len(log); i++ {
		prev, next := log[i-1], log[i]
		if prev.pod == next.pod {
			continue
		}
		for _, e := range events {
			if e.Object == prev.pod+"/worker" && e.Reason == "Killing" && strings.Contains(e.Message, "SIGTERM") && e.At.Before(next.at) {
				out = append(out, handoff{prev.pod, next.pod, next.at.Sub(e.At)})
				break
			}
		}
	}
	return out
}

func durations(hs []handoff) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, h.took.Round(time.Millisecond).String())
	}
	return strings.Join(parts, ", ")
}

// longestGap is the longest time, overlapping [from, to], between two
// changes the client received in a row.
func longestGap(c *clientTrace, from, to time.Time) time.Duration {
	events, times := c.timedSnapshot()
	var last time.Time
	var gap time.Duration
	for i, e := range events {
		if e.Op == "" {
			continue
		}
		at := times[i]
		if !last.IsZero() && at.After(from) && last.Before(to) {
			gap = max(gap, at.Sub(last))
		}
		last = at
	}
	return gap
}

func refetchesOf(c *clientTrace) int {
	n := 0
	for _, e := range c.snapshot() {
		if e.Control == "must-refetch" {
			n++
		}
	}
	return n
}
