package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// StreamID is the stream every run of the kit serves.
const StreamID = "conformance"

// Table is the table the kit writes to throughout a run, so that the
// stream always carries WAL; a worker may publish it or not.
const Table = "public.baton_conformance"

// Broker settings of a run: short, so that a run takes about a minute.
const (
	leaseTTL       = 2 * time.Second
	sessionTimeout = 4 * time.Second
	heartbeat      = 500 * time.Millisecond
	drainTimeout   = 10 * time.Second
)

// Bounds of the kit's waits and tolerances.
const (
	// stopTolerance is how late after the TTL (measured from when the
	// proxy forwarded the last renewal) a walsender may still be seen:
	// the worker's clock starts when it receives the renewal, and its
	// walsender needs a moment to end.
	stopTolerance = time.Second
	// reportGrace is how long after the slot's position moved the worker's
	// report of it as durable may arrive (a worker may acknowledge first
	// and report right after).
	reportGrace = time.Second
	// standbyWindow is how long the kit watches a waiting worker.
	standbyWindow = 1500 * time.Millisecond
	startTimeout  = 30 * time.Second
	// progressTimeout bounds the wait for a worker's Progress: a worker
	// acknowledges at least every min(wal_sender_timeout/3, 10 s).
	progressTimeout = 30 * time.Second
)

// Options configure a run.
type Options struct {
	// Worker and Worker2 are shell commands (run with sh -c) that start the
	// workers of pod a and pod b; Worker2 empty means Worker.
	Worker, Worker2 string
	// BrokerBin is the broker binary.
	BrokerBin string
	// Out receives one line per check and the summary.
	Out io.Writer
	// Log, when set, receives every line the processes print.
	Log *os.File
	// Until, when set, ends the run once that check has a result; the
	// checks over the whole run then judge what was seen so far, and the
	// checks not reached are not reported.
	Until string
}

// Result is the outcome of one check.
type Result struct {
	Name string
	OK   bool
	// Skipped: the check does not apply to this worker (OK is false).
	Skipped bool
	Detail  string
}

// String is the check's line: "PASS name: detail", "FAIL ..." or "SKIP ...".
func (r Result) String() string {
	v := "FAIL"
	switch {
	case r.OK:
		v = "PASS"
	case r.Skipped:
		v = "SKIP"
	}
	return fmt.Sprintf("%s %s: %s", v, r.Name, r.Detail)
}

// Checks are the names of the kit's checks, in the order they run; each
// is printed once per run (a check that was not reached FAILs).
var Checks = []string{
	"no-replication-before-granted/a",
	"epoch-in-application-name/a",
	"ignores-unknown-messages/a",
	"ignores-other-epochs/a",
	"no-replication-before-granted/b",
	"progress-reported/a",
	"stops-within-ttl/a",
	"stops-before-successor-granted/a",
	"handoff-frozen/a-to-b",
	"epoch-in-application-name/b",
	"revoked-shutdown-drains/b",
	"handoff-graceful/b-to-a",
	"sigterm-release-stopping/a",
	"handoff-sigterm/a-to-b",
	"lock-lost-stops",
	"sigkill-restart-keeps-acknowledged",
	"slot-never-passes-durable",
	"keepalive-within-limits",
	"hello-first",
	"delivered-exactly-once",
}

// checkWholeRun runs the checks over everything seen.
func (k *kit) checkWholeRun() {
	k.checkSlotNeverPassesDurable()
	k.checkKeepalive()
	k.checkHello()
}

// Run runs every check against the workers and writes their lines and the
// summary to o.Out. It returns the results; err is set only when the kit
// itself could not run (PostgreSQL or the broker would not start).
func Run(ctx context.Context, o Options) ([]Result, error) {
	if o.Worker2 == "" {
		o.Worker2 = o.Worker
	}
	k := &kit{o: o, done: map[string]bool{}}
	err := k.run(ctx)
	if errors.Is(err, errUntil) {
		err = nil
	}
	var results []Result
	for _, name := range Checks {
		if !k.done[name] && o.Until == "" {
			detail := "not reached"
			if err != nil {
				detail = "not reached: " + err.Error()
			}
			k.results = append(k.results, Result{Name: name, Detail: detail})
		}
	}
	// In the order of Checks.
	for _, name := range Checks {
		for _, r := range k.results {
			if r.Name == name {
				results = append(results, r)
			}
		}
	}
	passed, skipped := 0, 0
	for _, r := range results {
		fmt.Fprintln(o.Out, r)
		switch {
		case r.OK:
			passed++
		case r.Skipped:
			skipped++
		}
	}
	fmt.Fprintf(o.Out, "%d passed, %d failed", passed, len(results)-passed-skipped)
	if skipped > 0 {
		fmt.Fprintf(o.Out, ", %d skipped", skipped)
	}
	fmt.Fprintln(o.Out)
	var setup *setupError
	if errors.As(err, &setup) {
		return results, err
	}
	return results, nil
}

// errUntil ends a run at Options.Until.
var errUntil = errors.New("stopped at the check named by Until")

// reached returns errUntil once the check named by Until has a result.
func (k *kit) reached() error {
	if k.o.Until != "" && k.done[k.o.Until] {
		return errUntil
	}
	return nil
}

// setupError is a failure of the kit's own environment.
type setupError struct{ err error }

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

type kit struct {
	o       Options
	dir     string
	pg      *pgtest.Cluster
	obs     *observer
	hook    *pgx.Conn // PostgreSQL at a Released (proxy.onReleased)
	hookMu  sync.Mutex
	pods    [2]*pod
	results []Result
	done    map[string]bool
	// startWriting starts the writer; stopWriting stops it and returns
	// its error (call each once).
	startWriting func()
	stopWriting  func() error
}

// deliveryFile is the file a worker may deliver the kit's table to.
func (k *kit) deliveryFile() string { return filepath.Join(k.dir, "shared", "delivered.jsonl") }

func (k *kit) pass(name, format string, args ...any) {
	k.results = append(k.results, Result{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)})
	k.done[name] = true
}

func (k *kit) fail(name, format string, args ...any) {
	k.results = append(k.results, Result{Name: name, Detail: fmt.Sprintf(format, args...)})
	k.done[name] = true
}

func (k *kit) check(name string, ok bool, format string, args ...any) {
	if ok {
		k.pass(name, format, args...)
	} else {
		k.fail(name, format, args...)
	}
}

func (k *kit) run(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k.dir, err = os.MkdirTemp("", "baton-conformance-")
	if err != nil {
		return &setupError{err}
	}
	defer os.RemoveAll(k.dir)
	k.pg, err = pgtest.New(ctx, pgtest.Options{})
	if err != nil {
		return &setupError{err}
	}
	defer k.pg.Close()
	setup, err := k.pg.Connect(ctx)
	if err != nil {
		return &setupError{err}
	}
	defer setup.Close(context.WithoutCancel(ctx))
	if _, err := setup.Exec(ctx, "CREATE TABLE "+Table+" (id bigserial PRIMARY KEY, v text NOT NULL)"); err != nil {
		return &setupError{fmt.Errorf("create %s: %w", Table, err)}
	}
	obsConn, err := k.pg.Connect(ctx)
	if err != nil {
		return &setupError{err}
	}
	defer obsConn.Close(context.WithoutCancel(ctx))
	k.obs = &observer{conn: obsConn, slot: stream.SlotName(StreamID)}
	if k.hook, err = k.pg.Connect(ctx); err != nil {
		return &setupError{err}
	}
	defer k.hook.Close(context.WithoutCancel(ctx))

	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel()
	bg.Add(1)
	go func() { defer bg.Done(); k.obs.run(ctx) }()
	// The writer starts once the slot exists (startWriting), so that every
	// row it inserts is on the stream.
	writeErr := make(chan error, 1)
	wctx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	started := false
	k.startWriting = func() {
		if !started {
			started = true
			bg.Add(1)
			go func() { defer bg.Done(); writeErr <- k.write(wctx) }()
		}
	}
	k.stopWriting = func() error {
		stopWriting()
		if !started {
			return nil
		}
		return <-writeErr
	}

	for i, name := range []string{"a", "b"} {
		cmd := k.o.Worker
		if i == 1 {
			cmd = k.o.Worker2
		}
		p, err := k.newPod(name, cmd)
		if err != nil {
			return &setupError{err}
		}
		defer p.close()
		k.pods[i] = p
	}
	err = k.scenario(ctx)
	if errors.Is(err, errUntil) {
		k.checkWholeRun() // over the run so far
	}
	if oerr := k.obs.Err(); oerr != nil && err == nil {
		err = &setupError{oerr}
	}
	return err
}

// write inserts a row every 20 ms until ctx ends, so that the stream
// always carries changes.
func (k *kit) write(ctx context.Context) error {
	conn, err := k.pg.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := conn.Exec(ctx, "INSERT INTO "+Table+" (v) VALUES ('x')"); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("insert into %s: %w", Table, err)
		}
	}
}

// pod is a broker, the kit's proxy and a worker under test: what one
// Kubernetes pod of the stream runs, with the proxy between the two.
type pod struct {
	k                       *kit
	name, cmd               string
	brokerAddr, metricsAddr string
	httpAddr, storageDir    string
	broker                  *harness.Broker
	proxy                   *proxy
	worker                  *harness.Process
	starts                  int
	// released is what PostgreSQL said when the proxy received a Released.
	released []releaseView
}

// releaseView is PostgreSQL at the moment a Released reached the proxy,
// before it was forwarded.
type releaseView struct {
	Released *batonv1.Released
	Sample   Sample
	Err      error
}

func (k *kit) newPod(name, cmd string) (*pod, error) {
	p := &pod{k: k, name: name, cmd: cmd, storageDir: filepath.Join(k.dir, "pod-"+name)}
	for _, a := range []*string{&p.brokerAddr, &p.metricsAddr, &p.httpAddr} {
		port, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		*a = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if err := os.MkdirAll(filepath.Join(k.dir, "shared"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.storageDir, 0o755); err != nil {
		return nil, err
	}
	px, err := startProxy("proxy-"+name, p.brokerAddr)
	if err != nil {
		return nil, err
	}
	p.proxy = px
	px.onReleased = p.onReleased
	if k.o.Log != nil {
		px.log = k.o.Log
	}
	return p, nil
}

func (p *pod) onReleased(r *batonv1.Released) {
	k := p.k
	k.hookMu.Lock()
	defer k.hookMu.Unlock()
	o := &observer{conn: k.hook, slot: k.obs.slot}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := o.sample(ctx)
	p.released = append(p.released, releaseView{Released: r, Sample: s, Err: err})
}

func (p *pod) startBroker() error {
	b, err := harness.StartBroker(harness.BrokerOptions{
		Bin: p.k.o.BrokerBin, DatabaseURL: p.k.pg.URL(), StreamID: StreamID,
		Addr: p.brokerAddr, MetricsAddr: p.metricsAddr, Name: "broker-" + p.name, Tee: p.k.o.Log,
		Settings: map[string]string{
			"BATON_LEASE_TTL":              leaseTTL.String(),
			"BATON_LOCK_SESSION_TIMEOUT":   sessionTimeout.String(),
			"BATON_HEARTBEAT_INTERVAL":     heartbeat.String(),
			"BATON_DRAIN_TIMEOUT":          drainTimeout.String(),
			"BATON_WORKER_ABSENCE_TIMEOUT": "60s",
		},
	})
	if err != nil {
		return err
	}
	p.broker = b
	return b.AwaitHealth("liveness", 1, startTimeout) // SERVING
}

// Env is the environment a worker under test gets (besides the kit's own).
func (p *pod) Env() []string {
	return []string{
		"DATABASE_URL=" + p.k.pg.URL(),
		"REPLICATION_STREAM_ID=" + StreamID,
		"BATON_BROKER_ADDR=" + p.proxy.Addr(),
		"BATON_HTTP_LISTEN=" + p.httpAddr,
		"BATON_STORAGE_DIR=" + p.storageDir,
		"BATON_SHARED_DIR=" + filepath.Join(p.k.dir, "shared"),
		"BATON_DELIVERY_FILE=" + p.k.deliveryFile(),
		"BATON_INSECURE=true",
	}
}

func (p *pod) startWorker() error {
	p.starts++
	name := "worker-" + p.name
	if p.starts > 1 {
		name = fmt.Sprintf("%s#%d", name, p.starts)
	}
	w, err := harness.StartProcess(name, []string{"sh", "-c", p.cmd}, p.Env(), p.k.o.Log)
	if err != nil {
		return err
	}
	p.worker = w
	return nil
}

func (p *pod) close() {
	if p.worker != nil {
		_ = p.worker.SignalGroup(syscall.SIGTERM)
		if _, err := p.worker.Wait(5 * time.Second); err != nil {
			p.worker.Kill()
		}
	}
	if p.broker != nil {
		p.broker.Close()
	}
	p.proxy.close()
}

// workerExited says how the worker ended, when it did.
func (p *pod) workerExited() error {
	if p.worker != nil && p.worker.Exited() {
		return fmt.Errorf("worker of pod %s exited (%s); its output ends:\n%s", p.name, p.worker.ExitStatus(), harness.Tail(p.worker.Output(), 15))
	}
	return nil
}

// durable is the highest position the pod's worker reported durable
// (Progress or Released, any epoch) in events forwarded up to until.
func (p *pod) durable(until time.Time) uint64 {
	var d uint64
	for _, e := range p.proxy.Events() {
		if e.At.After(until) {
			break
		}
		d = max(d, e.Worker.GetProgress().GetDurableLsn(), e.Worker.GetReleased().GetDurableLsn())
	}
	return d
}

// Worker2OrWorker is the command of pod b.
func (o Options) Worker2OrWorker() string {
	if o.Worker2 != "" {
		return o.Worker2
	}
	return o.Worker
}
