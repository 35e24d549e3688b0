package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// Replication throughput (issue 3): N row changes committed while the
// worker is stopped, in transactions of k rows; then the time until all of
// them are durable in the worker's shape log, against pg_recvlogical
// reading the same WAL with pgoutput and the same publication.
//
// A round:
//
//  1. the worker is active and the shape client is up to date;
//     pg_recvlogical creates its own slot (--create-slot -P pgoutput);
//  2. the worker gets SIGTERM and exits 0 (the broker stays);
//  3. the workload commits N inserts in transactions of k rows; the WAL
//     position is noted before the last transaction (lsnBeforeLast) and
//     after it (endpos = pg_current_wal_lsn());
//  4. in turn (which one goes first alternates between rounds):
//     - pg_recvlogical --start --endpos=<endpos> -f /dev/null: process
//     start → exit;
//     - a worker process is started on the same storage: process start →
//     the shape client (long-polling from where it was, as Electric's
//     client does after a reconnect) reads a response whose offset is
//     past lsnBeforeLast, i.e. holds the last transaction. Shape records
//     are published only once their log is fsynced, so this is "durable
//     in the shape log". Every inserted id must have been read exactly
//     once by then;
//  5. pg_recvlogical's slot is dropped.

const (
	benchTable  = "bench_items"
	recvSlot    = "bench_recv"
	recvTimeout = 2 * time.Minute
)

type replRound struct {
	txSize    int
	recvFirst bool

	recvWall  time.Duration // pg_recvlogical start → exit
	recvCPU   time.Duration // pg_recvlogical's own CPU
	recvPGCPU time.Duration // PostgreSQL's CPU meanwhile (its walsender)

	batonWall      time.Duration // worker start → the last change read from the shape
	batonStreaming time.Duration // worker start → it logged "replicating" (lease, slot, START_REPLICATION)
	batonCPU       time.Duration // the worker's CPU by then
	batonPGCPU     time.Duration // PostgreSQL's CPU meanwhile
	responses      int

	// unreleased is set when the stopped worker's last grant ended without
	// the broker seeing a release (see unreleasedGrant): the next worker
	// could not be granted before that grant's TTL (plus margin) had passed.
	unreleased string
	orphanWait time.Duration // how long the benchmark waited for it before starting the worker
}

type replResults struct {
	changes int
	txSizes []int
	rounds  []replRound
	// restarts counts every graceful worker restart (warm-up included),
	// unreleased those that left a grant the broker had to let expire, by
	// kind.
	restarts    int
	unreleased  map[string]int
	waitOrphans bool
}

func (r *replResults) bySize(k int) []replRound {
	var out []replRound
	for _, x := range r.rounds {
		if x.txSize == k {
			out = append(out, x)
		}
	}
	return out
}

type replBench struct {
	env    *shapeEnv
	client *harness.ShapeClient
	next   int64 // next id to insert
	res    *replResults
}

func runReplication(ctx context.Context, cfg config, env *shapeEnv) (*replResults, error) {
	res := &replResults{changes: cfg.changes, txSizes: cfg.txSizes, waitOrphans: cfg.waitOrphans, unreleased: map[string]int{}}
	b := &replBench{env: env, next: 1, res: res}
	if err := env.exec(ctx, `CREATE TABLE `+benchTable+` (id bigint PRIMARY KEY, title text NOT NULL, n int NOT NULL, at timestamptz NOT NULL)`); err != nil {
		return nil, err
	}
	// Creating the shape adds the table to the publication.
	b.client = harness.NewShapeClient(env.base(), url.Values{"table": {benchTable}})
	if _, err := b.client.CatchUp(ctx); err != nil {
		return nil, fmt.Errorf("create the shape of %s: %w", benchTable, err)
	}
	// One small unmeasured round warms up both paths.
	wk := cfg.txSizes[len(cfg.txSizes)-1]
	warm := wk * max(1, min(cfg.changes, 2000)/wk)
	fmt.Fprintf(os.Stderr, "bench: replication: warm-up round (%d changes)\n", warm)
	if _, err := b.round(ctx, cfg, warm, wk, true); err != nil {
		return nil, fmt.Errorf("replication warm-up: %w", err)
	}
	for _, k := range cfg.txSizes {
		for i := range cfg.replRounds {
			fmt.Fprintf(os.Stderr, "bench: replication: %d changes in transactions of %d rows, round %d/%d\n", cfg.changes, k, i+1, cfg.replRounds)
			r, err := b.round(ctx, cfg, cfg.changes, k, i%2 == 0)
			if err != nil {
				return nil, fmt.Errorf("replication, transactions of %d rows, round %d: %w", k, i+1, err)
			}
			if cfg.verbose {
				fmt.Fprintf(os.Stderr, "bench: pg_recvlogical %s, baton %s (streaming after %s, %d responses)\n", r.recvWall, r.batonWall, r.batonStreaming, r.responses)
			}
			res.rounds = append(res.rounds, r)
		}
	}
	return res, nil
}

func (b *replBench) round(ctx context.Context, cfg config, changes, k int, recvFirst bool) (replRound, error) {
	r := replRound{txSize: k, recvFirst: recvFirst}
	env := b.env
	if err := b.recvlogical(ctx, "--slot", recvSlot, "--create-slot", "-P", "pgoutput"); err != nil {
		return r, fmt.Errorf("create %s: %w", recvSlot, err)
	}
	stopped := env.worker()
	if err := env.stopWorker(); err != nil {
		return r, err
	}
	first := b.next
	lsnBeforeLast, endpos, err := b.workload(ctx, changes, k)
	if err != nil {
		return r, err
	}
	b.res.restarts++
	if kind, notBefore, ok := unreleasedGrant(env.pod.Broker().Output(), stopped.PID()); ok {
		b.res.unreleased[kind]++
		r.unreleased = kind
		wait := time.Until(notBefore)
		what := "after it released its own and while it exited, the broker granted a new lease to " + stopped.Name
		if kind == lostRelease {
			what = stopped.Name + " logged that it released its lease, but the broker saw its stream end first"
		}
		fmt.Fprintf(os.Stderr, "bench: %s (%s, pid %d); the next worker cannot be granted before that grant expires", what, kind, stopped.PID())
		defer func() { fmt.Fprint(os.Stderr, grantLines(env.pod.Broker().Output(), stopped)) }()
		if b.res.waitOrphans && wait > 0 {
			fmt.Fprintf(os.Stderr, "; waiting %s before starting the next worker\n", wait.Round(time.Millisecond))
			r.orphanWait = wait
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return r, ctx.Err()
			}
		} else {
			fmt.Fprintln(os.Stderr, "; measured as it is")
		}
	}
	runRecv := func() error {
		pg0 := clusterCPU(env.pg.PID())
		t0 := time.Now()
		cpu, err := b.recvlogicalCPU(ctx, "--slot", recvSlot, "--start", "--endpos", formatLSN(endpos), "--no-loop", "-f", "/dev/null",
			"-o", "proto_version=1", "-o", "publication_names="+publication)
		r.recvWall = time.Since(t0)
		r.recvCPU = cpu
		if err != nil {
			return err
		}
		// Count its walsender's CPU once it has exited and been reaped
		// (into the postmaster's children's times): its slot is released
		// when it exits.
		if err := env.awaitSlotInactive(ctx, recvSlot); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		r.recvPGCPU = clusterCPU(env.pg.PID()) - pg0
		return nil
	}
	runBaton := func() error { return b.catchUp(ctx, &r, first, changes, lsnBeforeLast) }
	steps := []func() error{runRecv, runBaton}
	if !recvFirst {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return r, err
		}
	}
	if err := env.dropSlot(ctx, recvSlot); err != nil {
		return r, err
	}
	return r, nil
}

// workload commits changes inserts with ids from b.next on, in
// transactions of k rows (one server-side loop with a COMMIT per
// transaction, so that the client's round trips do not matter), and
// returns the WAL positions before the last transaction and after it.
func (b *replBench) workload(ctx context.Context, changes, k int) (lsnBeforeLast, endpos uint64, err error) {
	if changes%k != 0 {
		return 0, 0, fmt.Errorf("%d changes are not a whole number of transactions of %d rows", changes, k)
	}
	insert := func(from string) string {
		return `INSERT INTO ` + benchTable + ` SELECT g, 'item ' || md5(g::text), (g % 1000)::int, now() FROM generate_series(` + from + `) g`
	}
	ntx := changes / k
	if ntx > 1 {
		err := b.env.exec(ctx, fmt.Sprintf(`DO $$
BEGIN
  FOR i IN 0..%d LOOP
    %s;
    COMMIT;
  END LOOP;
END $$`, ntx-2, insert(fmt.Sprintf("%d + i * %d, %d + i * %d + %d", b.next, k, b.next, k, k-1))))
		if err != nil {
			return 0, 0, err
		}
	}
	if lsnBeforeLast, err = b.env.currentLSN(ctx); err != nil {
		return 0, 0, err
	}
	last := b.next + int64(changes) - 1
	if err := b.env.exec(ctx, insert(fmt.Sprintf("%d, %d", last-int64(k)+1, last))); err != nil {
		return 0, 0, err
	}
	if endpos, err = b.env.currentLSN(ctx); err != nil {
		return 0, 0, err
	}
	b.next = last + 1
	return lsnBeforeLast, endpos, nil
}

// catchUp starts a worker and follows the shape until it holds the last
// transaction; every id from first on must arrive exactly once.
func (b *replBench) catchUp(ctx context.Context, r *replRound, first int64, changes int, lsnBeforeLast uint64) error {
	env := b.env
	pg0 := clusterCPU(env.pg.PID())
	t0, err := env.startWorker()
	if err != nil {
		return err
	}
	w := env.worker()
	seen := make([]bool, changes)
	got := 0
	deadline := t0.Add(catchUpTimeout)
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for the worker's shape to hold the last transaction (past %s): %d of %d changes read, offset %s",
				catchUpTimeout, formatLSN(lsnBeforeLast), got, changes, b.client.Offset)
		}
		select {
		case <-w.Done():
			return fmt.Errorf("%s exited", w.Name)
		default:
		}
		resp, err := b.client.Next(ctx)
		if err != nil {
			if harness.Unavailable(err) && ctx.Err() == nil {
				time.Sleep(unavailablePoll)
				continue
			}
			return err
		}
		r.responses++
		ids, err := insertedIDs(resp.Body)
		if err != nil {
			return fmt.Errorf("GET %s: %w", resp.URL, err)
		}
		for _, id := range ids {
			i := id - first
			if i < 0 || i >= int64(changes) {
				return fmt.Errorf("GET %s: insert of id %d, which this round did not write (ids %d..%d), or wrote earlier", resp.URL, id, first, first+int64(changes)-1)
			}
			if seen[i] {
				return fmt.Errorf("GET %s: insert of id %d a second time", resp.URL, id)
			}
			seen[i] = true
			got++
		}
		off, err := harness.ParseOffset(resp.Offset())
		if err != nil {
			return fmt.Errorf("GET %s: %w", resp.URL, err)
		}
		if off.TX > lsnBeforeLast {
			r.batonWall = resp.BodyAt.Sub(t0)
			break
		}
	}
	r.batonCPU = processCPU(w.PID())
	r.batonPGCPU = clusterCPU(env.pg.PID()) - pg0
	if got != changes {
		var missing []int64
		for i, ok := range seen {
			if !ok && len(missing) < 5 {
				missing = append(missing, first+int64(i))
			}
		}
		return fmt.Errorf("the shape's offset %s is past the last transaction (%s) but only %d of %d inserts were read (missing ids include %v)",
			b.client.Offset, formatLSN(lsnBeforeLast), got, changes, missing)
	}
	r.batonStreaming = streamingAfter(w.Output(), t0)
	return nil
}

// grantExpiry is how long after a grant (or its last renewal) the broker
// waits before granting again when that grant ended without a release: its
// lease TTL (6s by default) plus max(100ms, TTL/10), plus a margin for the
// log's millisecond times.
const grantExpiry = 6*time.Second + 600*time.Millisecond + 100*time.Millisecond

// Kinds of unreleased grants left by a worker that stopped gracefully.
const (
	orphanedRegrant = "orphaned re-grant"
	lostRelease     = "lost release"
)

// unreleasedGrant reads the broker's log for the last grant to the worker
// process pid (the broker names workers worker@<host>:<pid>) and reports
// whether it ended without the broker seeing its release, so that the next
// worker cannot be granted before it would have expired:
//
//   - orphaned re-grant: the worker released its lease and the broker
//     granted it a new epoch on the same stream, which the exiting process
//     never used nor released;
//   - lost release: the worker logged that it released, but the broker saw
//     its stream end first ("worker detached" without "worker released").
//
// It returns the kind and the time after which the broker grants again
// (an upper bound for a lost release, whose last renewal is not logged).
func unreleasedGrant(log string, pid int) (kind string, notBefore time.Time, ok bool) {
	suffix := ":" + strconv.Itoa(pid)
	grants := 0
	var lastGrant, detached time.Time
	var grantEpoch string
	released := false
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var at time.Time
		var msg, worker, epoch string
		line := sc.Text()
		for _, key := range []string{"lease granted", "worker released the lease", "worker detached"} {
			if strings.Contains(line, `msg="`+key+`"`) {
				msg = key
			}
		}
		if msg == "" {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				at, _ = time.Parse(time.RFC3339Nano, v)
			} else if v, ok := strings.CutPrefix(f, "worker="); ok {
				worker = v
			} else if v, ok := strings.CutPrefix(f, "epoch="); ok {
				epoch = v
			}
		}
		if !strings.HasSuffix(worker, suffix) {
			continue
		}
		switch msg {
		case "lease granted":
			grants++
			lastGrant, grantEpoch, released = at, epoch, false
		case "worker released the lease":
			if epoch == grantEpoch {
				released = true
			}
		case "worker detached":
			detached = at
		}
	}
	if grants == 0 || released {
		return "", time.Time{}, false
	}
	if grants > 1 {
		return orphanedRegrant, lastGrant.Add(grantExpiry), true
	}
	end := detached
	if end.IsZero() {
		end = time.Now()
	}
	return lostRelease, end.Add(grantExpiry), true
}

// grantLines are the broker's and the worker's log lines about w's lease,
// as evidence.
func grantLines(brokerLog string, w *harness.Worker) string {
	var b strings.Builder
	suffix := ":" + strconv.Itoa(w.PID())
	for _, l := range strings.Split(brokerLog, "\n") {
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "worker="); ok && strings.HasSuffix(v, suffix) {
				b.WriteString("  broker: " + l + "\n")
				break
			}
		}
	}
	for _, l := range strings.Split(w.Output(), "\n") {
		if strings.Contains(l, "lease") || strings.Contains(l, "stopped") {
			b.WriteString("  " + w.Name + ": " + l + "\n")
		}
	}
	return b.String()
}

// streamingAfter finds the worker's "replicating" log line (slog text,
// millisecond times) and returns how long after t0 it was written; 0 if
// not found.
func streamingAfter(log string, t0 time.Time) time.Duration {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "msg=replicating") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
					return t.Sub(t0)
				}
			}
		}
	}
	return 0
}

// recvlogical runs pg_recvlogical with args (bounded) and fails unless it
// exits 0.
func (b *replBench) recvlogical(ctx context.Context, args ...string) error {
	_, err := b.recvlogicalCPU(ctx, args...)
	return err
}

// recvlogicalCPU runs pg_recvlogical and returns the CPU time it used.
func (b *replBench) recvlogicalCPU(ctx context.Context, args ...string) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, recvTimeout)
	defer cancel()
	argv := append([]string{"-d", b.env.dbURL}, args...)
	cmd := exec.CommandContext(rctx, b.env.pg.BinDir()+"/pg_recvlogical", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if rctx.Err() != nil && ctx.Err() == nil {
		return cpu, fmt.Errorf("pg_recvlogical %s: did not exit within %s (killed): %s", strings.Join(args, " "), recvTimeout, strings.TrimSpace(out.String()))
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return cpu, fmt.Errorf("pg_recvlogical %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		return cpu, fmt.Errorf("pg_recvlogical: %w", err)
	}
	return cpu, nil
}
