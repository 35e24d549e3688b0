package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// The kubelet section runs real pods (a broker and a worker process each,
// its own storage) on a stream of its own, so it leaves nothing behind for
// the shape sections.
const kubeletStream = "kubelet"

// targetKubeletP99 is issue 9's goal: SIGTERM to the active worker alone →
// the standby's worker active, on loopback.
const targetKubeletP99 = 100 * time.Millisecond

// activePoll is how often the standby worker's /v1/health is asked.
const activePoll = time.Millisecond

// kubeletResults are the kubelet section's measurements.
type kubeletResults struct {
	rounds      int
	warmup      int
	workerFirst []time.Duration // SIGTERM to the active worker alone → standby's worker active
	workerExit  []time.Duration // SIGTERM to the active worker → it exited (the kubelet then stops the broker)
	released    []time.Duration // SIGTERM to the active worker → it logged its release
	brokerFirst []time.Duration // SIGTERM to the active broker alone → standby's worker active
	// ... → the standby's broker reports leader (it holds the lock and
	// granted): the handoff itself, without the new worker's start-up.
	workerFirstLeader []time.Duration
	brokerFirstLeader []time.Duration
	// steps are the new worker's start-up steps in the kubelet order,
	// from its "replicating" log line (grant → streaming), by name.
	steps     map[string][]time.Duration
	stepOrder []string
	// prepare: a standby worker's start → its admin session prepared
	// (baton_worker_standby_prepared 1).
	prepare []time.Duration
	// load averages (1 min) at the start and the end of the section.
	loadStart, loadEnd string
}

// timing is one round's measurements.
type timing struct {
	active     time.Duration // signal → standby's worker active
	leader     time.Duration // signal → standby's broker leader
	workerExit time.Duration // signal → old worker exited (worker first only)
	released   time.Duration // signal → old worker logged "lease released" (worker first only)
}

// pod is a broker and its worker, as Kubernetes runs them.
type pod struct {
	*harness.Pod
	// prepared: the worker's start → its standby admin session prepared.
	prepared time.Duration
}

// kubeletLab owns the pods of the section.
type kubeletLab struct {
	brokerBin, workerBin string
	dbURL                string
	storage              string
	verbose              bool
	monitor              *pgx.Conn
	pods                 []*pod // every pod started, for logs and cleanup
}

func runKubelet(ctx context.Context, cfg config, pg *pgtest.Cluster) (_ *kubeletResults, err error) {
	l := &kubeletLab{dbURL: pg.URL(), verbose: cfg.verbose}
	if l.brokerBin, err = binaryPath(cfg.bin, "broker"); err != nil {
		return nil, err
	}
	if l.workerBin, err = binaryPath(cfg.bin, "worker"); err != nil {
		return nil, err
	}
	base := cfg.storageDir
	if base == "" {
		base = os.TempDir()
	}
	if l.storage, err = os.MkdirTemp(base, "baton-bench-kubelet-"); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	l.monitor, err = pgx.Connect(cctx, l.dbURL)
	cancel()
	if err != nil {
		os.RemoveAll(l.storage)
		return nil, fmt.Errorf("monitoring session: %w", err)
	}
	defer l.close()
	defer func() {
		if err != nil {
			l.dumpLogs()
		}
	}()
	res := &kubeletResults{rounds: cfg.kubeletRounds, warmup: cfg.warmup, steps: map[string][]time.Duration{}, loadStart: loadAvg()}
	defer func() { res.loadEnd = loadAvg() }()
	active, err := l.start(ctx)
	if err != nil {
		return nil, err
	}
	if err := active.AwaitWorker(ctx, "active", workerStartTimeout, pollInterval); err != nil {
		return nil, err
	}
	standby, err := l.startStandby(ctx)
	if err != nil {
		return nil, err
	}
	total := 2 * (cfg.warmup + cfg.kubeletRounds)
	fmt.Fprintf(os.Stderr, "bench: %d handoffs in kubelet order and %d broker-first (+%d warm-up each), interleaved\n",
		cfg.kubeletRounds, cfg.kubeletRounds, cfg.warmup)
	for i := range total {
		workerFirst := i%2 == 0
		tm, err := l.handoff(ctx, active, standby, workerFirst)
		if err != nil {
			return nil, fmt.Errorf("kubelet round %d: %w", i+1, err)
		}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "bench: kubelet round %d (worker first %v): %s → %s: leader %s, active %s\n",
				i+1, workerFirst, active.Name(), standby.Name(), tm.leader, tm.active)
		}
		if i/2 >= cfg.warmup {
			res.prepare = append(res.prepare, standby.prepared)
			if workerFirst {
				res.workerFirst = append(res.workerFirst, tm.active)
				res.workerFirstLeader = append(res.workerFirstLeader, tm.leader)
				res.workerExit = append(res.workerExit, tm.workerExit)
				res.released = append(res.released, tm.released)
				res.addSteps(standby.Worker().Output())
			} else {
				res.brokerFirst = append(res.brokerFirst, tm.active)
				res.brokerFirstLeader = append(res.brokerFirstLeader, tm.leader)
			}
		}
		active = standby
		if standby, err = l.startStandby(ctx); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// handoff stops the active pod, its worker first (as the kubelet does with a
// native sidecar) or its broker first, and measures until the standby's
// worker reports active (and, polled alongside, until its broker reports
// leader). Then it stops the rest of the old pod and checks both exit 0.
func (l *kubeletLab) handoff(ctx context.Context, active, standby *pod, workerFirst bool) (tm timing, err error) {
	first, second := active.Worker().Process, active.Broker().Process
	if !workerFirst {
		first, second = second, first
	}
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	leader := make(chan time.Time, 1)
	t0 := time.Now()
	if err := first.Signal(syscall.SIGTERM); err != nil {
		return tm, fmt.Errorf("SIGTERM %s: %w", first.Name, err)
	}
	go func() {
		err := harness.AwaitContext(pctx, handoffTimeout, activePoll, standby.Broker().Name+" to report leader", func() (bool, error) {
			return standby.Broker().IsLeader(), nil
		})
		if err == nil {
			leader <- time.Now()
		}
		close(leader)
	}()
	released := make(chan time.Time, 1)
	if workerFirst {
		go func() {
			err := harness.AwaitContext(pctx, handoffTimeout, activePoll, active.Worker().Name+" to log its release", func() (bool, error) {
				return strings.Contains(active.Worker().Output(), "lease released"), nil
			})
			if err == nil {
				released <- time.Now()
			}
			close(released)
		}()
	}
	if err := standby.AwaitWorker(ctx, "active", handoffTimeout, activePoll); err != nil {
		return tm, fmt.Errorf("after SIGTERM to %s: %w", first.Name, err)
	}
	tm.active = time.Since(t0)
	lt, ok := <-leader
	if !ok {
		return tm, fmt.Errorf("%s's worker is active but %s was not seen leader", standby.Name(), standby.Broker().Name)
	}
	tm.leader = lt.Sub(t0)
	if workerFirst {
		if err := active.Worker().AwaitExit(workerStopTimeout); err != nil {
			return tm, err
		}
		tm.workerExit = active.Worker().ExitedAt().Sub(t0)
		rt, ok := <-released
		if !ok {
			return tm, fmt.Errorf("%s exited without logging its release", active.Worker().Name)
		}
		tm.released = rt.Sub(t0)
		// The handoff must be the worker's doing, not the broker's exit.
		if active.Broker().Exited() {
			return tm, fmt.Errorf("%s exited before its SIGTERM", active.Broker().Name)
		}
	}
	if err := second.Signal(syscall.SIGTERM); err != nil {
		return tm, fmt.Errorf("SIGTERM %s: %w", second.Name, err)
	}
	for _, p := range []*harness.Process{first, second} {
		if err := p.AwaitExit(workerStopTimeout); err != nil {
			return tm, err
		}
	}
	return tm, nil
}

// start starts a pod on its own storage: the broker, then (once it
// listens, as a native sidecar's startup probe would) the worker.
func (l *kubeletLab) start(ctx context.Context) (*pod, error) {
	var tee *os.File
	if l.verbose {
		tee = os.Stderr
	}
	name := fmt.Sprintf("pod%d", len(l.pods)+1)
	hp, err := harness.StartPod(ctx, harness.PodOptions{
		Name: name, BrokerBin: l.brokerBin, WorkerBin: l.workerBin, DatabaseURL: l.dbURL, StreamID: kubeletStream,
		StorageDir: filepath.Join(l.storage, name), Tee: tee, AwaitBroker: true,
	})
	if err != nil {
		return nil, err
	}
	p := &pod{Pod: hp}
	l.pods = append(l.pods, p)
	return p, nil
}

// startStandby starts a pod and waits until it stands by: its broker is
// seen waiting in pg_locks and its worker reports waiting.
func (l *kubeletLab) startStandby(ctx context.Context) (*pod, error) {
	p, err := l.start(ctx)
	if err != nil {
		return nil, err
	}
	err = await(ctx, startTimeout, p.Name()+" to stand by", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		held, waiting, err := harness.LockHolders(qctx, l.monitor, kubeletStream)
		return len(held) == 1 && waiting == 1, err
	})
	if err != nil {
		return nil, err
	}
	if err := p.AwaitWorker(ctx, "waiting", workerStartTimeout, pollInterval); err != nil {
		return nil, err
	}
	// A standby prepares its admin session while it waits (a dial and the
	// start's reads, to warm its backend's caches). In a rolling update
	// the old pod is stopped only once the new one is Ready, so a standby
	// has at least the time to pass its readiness probes; here it is
	// given the time to be prepared, which is measured.
	w := p.Worker()
	err = await(ctx, startTimeout, w.Name+" to prepare its standby session", func() (bool, error) {
		v, ok, err := w.Metric("baton_worker_standby_prepared")
		return err == nil && ok && v == 1, nil
	})
	if err != nil {
		return nil, err
	}
	p.prepared = time.Since(w.StartedAt())
	return p, nil
}

// close kills what still runs, drops the section's slot and removes the
// storage.
func (l *kubeletLab) close() {
	for _, p := range l.pods {
		p.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = await(ctx, 10*time.Second, "the kubelet slot to be dropped", func() (bool, error) {
		_, err := l.monitor.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE slot_name = $1 AND NOT active`, stream.SlotName(kubeletStream))
		if err != nil {
			return false, nil
		}
		var n int
		err = l.monitor.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", stream.SlotName(kubeletStream)).Scan(&n)
		return err == nil && n == 0, nil
	})
	_, _ = l.monitor.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{stream.PublicationName(kubeletStream)}.Sanitize())
	_ = l.monitor.Close(ctx)
	_ = os.RemoveAll(l.storage)
}

// dumpLogs prints the tail of the last pods' logs (after a failure).
func (l *kubeletLab) dumpLogs() {
	if l.verbose {
		return
	}
	for _, p := range l.pods[max(0, len(l.pods)-3):] {
		fmt.Fprint(os.Stderr, p.LogTails(15))
	}
}

func (r *kubeletResults) table(md bool) string {
	rows := []row{
		{"broker first (today's graceful handoff): SIGTERM to the active broker alone → standby's worker active", summarize(r.brokerFirst)},
		{"kubelet order: SIGTERM to the active worker alone → standby's worker active", summarize(r.workerFirst)},
		{"broker first: SIGTERM to the active broker → standby's broker leader (granted)", summarize(r.brokerFirstLeader)},
		{"kubelet order: SIGTERM to the active worker → standby's broker leader (granted)", summarize(r.workerFirstLeader)},
	}
	base := rows[0].st.p50
	cells := [][]string{{"measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "p50 / broker-first p50"}}
	for _, x := range rows {
		cells = append(cells, []string{x.name, fmt.Sprint(x.st.n), ms(x.st.p50), ms(x.st.p95), ms(x.st.p99), ms(x.st.max),
			fmt.Sprintf("%.2f×", float64(x.st.p50)/float64(base))})
	}
	return renderTable(cells, md)
}

func (r *kubeletResults) targetLine() string {
	verdict := func(ds []time.Duration) string {
		p99 := summarize(ds).p99
		if p99 > targetKubeletP99 {
			return "not met (p99 " + ms(p99) + " ms)"
		}
		return "met (p99 " + ms(p99) + " ms)"
	}
	return fmt.Sprintf("goal: p99 of the kubelet order ≤ %d ms on loopback: until the standby's worker is active: %s; until its broker has granted: %s",
		targetKubeletP99.Milliseconds(), verdict(r.workerFirst), verdict(r.workerFirstLeader))
}

func (r *kubeletResults) details() []string {
	ex, rel := summarize(r.workerExit), summarize(r.released)
	out := []string{
		fmt.Sprintf("kubelet order, SIGTERM to the active worker → it logged \"lease released\": p50 %s ms, p99 %s ms", ms(rel.p50), ms(rel.p99)),
		fmt.Sprintf("kubelet order, SIGTERM to the active worker → that worker exited (its HTTP server drains for 2 s after the release; the kubelet then stops its broker): p50 %s ms, p99 %s ms", ms(ex.p50), ms(ex.p99)),
	}
	if line := r.stepsLine(); line != "" {
		out = append(out, line)
	}
	if len(r.prepare) > 0 {
		pr := summarize(r.prepare)
		out = append(out, fmt.Sprintf("standby worker's start → its admin session prepared (baton_worker_standby_prepared 1; awaited before each round): p50 %s ms, p99 %s ms", ms(pr.p50), ms(pr.p99)))
	}
	out = append(out,
		fmt.Sprintf("standby worker's /v1/health and standby broker's gRPC health (service leader) each polled every %s", activePoll),
		fmt.Sprintf("load average (1 min) at the start and the end of the section: %s, %s", r.loadStart, r.loadEnd))
	return out
}

// startupStep matches one step of a worker's "replicating" log line.
var startupStep = regexp.MustCompile(`startup\.([a-z_]+)=(\S+)`)

// addSteps records the steps of the last "replicating" line of a worker's
// log.
func (r *kubeletResults) addSteps(log string) {
	i := strings.LastIndex(log, "msg=replicating")
	if i < 0 {
		return
	}
	line, _, _ := strings.Cut(log[i:], "\n")
	for _, m := range startupStep.FindAllStringSubmatch(line, -1) {
		d, err := time.ParseDuration(m[2])
		if err != nil {
			continue
		}
		if _, ok := r.steps[m[1]]; !ok {
			r.stepOrder = append(r.stepOrder, m[1])
		}
		r.steps[m[1]] = append(r.steps[m[1]], d)
	}
}

// stepsLine summarizes the new worker's start-up steps.
func (r *kubeletResults) stepsLine() string {
	if len(r.stepOrder) == 0 {
		return ""
	}
	var parts []string
	for _, name := range r.stepOrder {
		st := summarize(r.steps[name])
		parts = append(parts, fmt.Sprintf("%s %s/%s", name, ms(st.p50), ms(st.p99)))
	}
	return "kubelet order, the new worker's start from its grant to streaming, by step as its log line `replicating` reports them (p50/p99 ms; " +
		"`replication_conn` is the dial that runs alongside the steps before `wait_replication_conn`): " + strings.Join(parts, ", ")
}

// loadAvg is the 1-minute load average, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

func (r *kubeletResults) text() string {
	var b strings.Builder
	b.WriteString("\n== Handoff in kubelet order ==\n\n")
	b.WriteString(r.table(false))
	b.WriteString("\n" + r.targetLine() + "\n\n")
	for _, d := range r.details() {
		b.WriteString(d + "\n")
	}
	fmt.Fprintf(&b, "(%d rounds of each, interleaved, after %d unmeasured warm-up rounds of each)\n", r.rounds, r.warmup)
	return b.String()
}

func (r *kubeletResults) markdown() string {
	var b strings.Builder
	b.WriteString("## Handoff in kubelet order\n\n")
	fmt.Fprintf(&b, "%d rounds of each, interleaved, after %d unmeasured warm-up rounds of each; real broker and worker processes with default settings (worker absence timeout 30 s), each pod with its own storage, every process on loopback.\n\n",
		r.rounds, r.warmup)
	b.WriteString(r.table(true))
	b.WriteString("\n**" + r.targetLine() + "**\n\n")
	for _, d := range r.details() {
		b.WriteString("- " + d + "\n")
	}
	b.WriteString(`
What is measured: two pods (a broker and a worker process each) on stream
` + "`" + kubeletStream + "`" + `, one active, one standing by (its broker blocked in
pg_locks, its worker reporting waiting with its admin session prepared:
` + "`baton_worker_standby_prepared`" + ` 1). Each round stops the active pod in
one of two orders, from the signal until the standby's worker answers
` + "`/v1/health`" + ` active (its broker took the lock, granted, and the worker
opened its storage, reconciled the publication and started streaming from
the slot):

- **kubelet order** — what Kubernetes does with a native sidecar: SIGTERM to
  the worker alone. It drains, acknowledges, ends its walsender and releases
  saying its process is stopping; its broker unlocks at once. The broker gets
  SIGTERM only after the round is measured (and after its worker exited).
  Before this release reason the broker kept the lock until its own SIGTERM
  or the 30 s worker absence timeout (30.8 s measured in issue 9).
- **broker first** — SIGTERM to the broker alone: it revokes (shutdown), the
  worker drains and releases, the broker unlocks and exits; the worker gets
  SIGTERM after the round.

The workers have no shapes, so the drain has nothing to flush; the time is
the protocol's and the new worker's start-up, whose steps the worker logs
(` + "`startup.*`" + ` in its line ` + "`replicating`" + `) and the line above summarizes.
`)
	return b.String()
}
