// Command bench measures Baton against a throwaway PostgreSQL cluster and
// prints every result next to its baseline, measured in the same run.
//
//	go run ./tests/cmd/bench -bin bin                       # what `make bench` runs
//	go run ./tests/cmd/bench -bin bin -write BENCHMARKS.md  # also write the report
//	go run ./tests/cmd/bench -bin bin -only live,sync       # some sections only
//
// Sections (-only, default all):
//
//   - handoff (DESIGN §6): lease handoff between two brokers, graceful
//     (SIGTERM) and crash (SIGKILL), against a plain PostgreSQL advisory-lock
//     handoff. See handoff.go.
//   - kubelet (issue 9): real pods (broker and worker processes), SIGTERM
//     to the active worker alone (the kubelet's order with a native
//     sidecar) → the standby's worker active, against SIGTERM to the
//     active broker alone, interleaved in the same run. See kubelet.go.
//   - replication (issue 3): changes committed while the worker is stopped,
//     in transactions of 1 and of 100 rows; worker start → all of them
//     durable in the shape log and read by a client, against pg_recvlogical
//     (pgoutput, same publication) reading the same WAL. See replication.go.
//   - live (issue 3): single-row commits → the waiting long-poll response
//     carrying the row, against the commit round trip and a raw pgoutput
//     consumer on the same WAL. See live.go.
//   - sync (issue 3): a new shape of a 1,000,000-row table fetched from
//     offset -1 until up to date, against COPY ... TO STDOUT. See
//     initsync.go.
//   - shapes: write processing with 1 to 10,000 shapes with where clauses
//     (equality and integer ranges) on one table: changes/s and commit →
//     long-poll latency, against one whole-table shape and ElectricSQL's
//     published numbers. It restarts the worker without shapes, so it runs
//     last. See manyshapes.go.
//
// Every wait is bounded; on an error, a timeout or Ctrl-C every child
// process is killed and the cluster removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/pgtest"
)

type config struct {
	bin            string
	write          string
	rounds         int
	crashRounds    int
	baselineRounds int
	kubeletRounds  int
	warmup         int
	timeout        time.Duration
	verbose        bool
	pgSettings     map[string]string
	pgLog          string

	only        map[string]bool // sections to run
	changes     int             // replication: row changes per round
	txSizes     []int           // replication: rows per transaction
	replRounds  int             // replication: measured rounds per transaction size
	liveCommits int             // live: measured commits
	syncRows    int             // sync: rows of the table
	syncRounds  int             // sync: measured rounds
	storageDir  string          // parent of the worker's storage folder
	waitOrphans bool            // replication: wait out an orphaned grant before starting a worker

	manyN        []int    // shapes: numbers of shapes
	manyKinds    []string // shapes: kinds of filter
	manyRows     int      // shapes: rows of the table (at least the largest number of shapes)
	manyChanges  int      // shapes: updates per burst
	manyTxSizes  []int    // shapes: rows per transaction of a burst
	manyRounds   int      // shapes: bursts per transaction size
	manyLive     int      // shapes: measured single-row commits per run
	manyCreators int      // shapes: concurrent shape creations
}

// sections in the order they run.
var sections = []string{"handoff", "kubelet", "replication", "live", "sync", "shapes"}

func (c config) shapes() bool {
	return c.only["replication"] || c.only["live"] || c.only["sync"] || c.only["shapes"]
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin", "folder holding the built `broker` binary (make build)")
	flag.StringVar(&cfg.write, "write", "", "also write the report as markdown to this `path` (e.g. BENCHMARKS.md)")
	flag.IntVar(&cfg.rounds, "rounds", 50, "measured graceful (SIGTERM) handoffs")
	flag.IntVar(&cfg.crashRounds, "crash-rounds", 20, "measured crash (SIGKILL) takeovers")
	flag.IntVar(&cfg.kubeletRounds, "kubelet-rounds", 20, "kubelet: measured handoffs of each order (worker first, broker first)")
	flag.IntVar(&cfg.baselineRounds, "baseline-rounds", 50, "measured PostgreSQL advisory-lock handoffs")
	flag.IntVar(&cfg.warmup, "warmup", 2, "unmeasured warm-up rounds before each measurement")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	flag.BoolVar(&cfg.verbose, "v", false, "print the brokers' logs and every round's timings")
	flag.StringVar(&cfg.pgLog, "pg-log", "", "also write the PostgreSQL server log to this `path`")
	cfg.pgSettings = map[string]string{}
	flag.Func("pg-setting", "extra postgresql.conf `name=value` for the throwaway cluster, repeatable (e.g. fsync=on; pgtest runs with fsync=off)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return errors.New("want name=value")
		}
		cfg.pgSettings[k] = v
		return nil
	})
	cfg.only = map[string]bool{}
	for _, s := range sections {
		cfg.only[s] = true
	}
	flag.Func("only", "run only these comma-separated `sections`: "+strings.Join(sections, ",")+" (default all)", func(v string) error {
		clear(cfg.only)
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sections, s) {
				return fmt.Errorf("unknown section %q (want %s)", s, strings.Join(sections, ","))
			}
			cfg.only[s] = true
		}
		return nil
	})
	flag.IntVar(&cfg.changes, "changes", 20000, "replication: row changes committed per round")
	txSizes := flag.String("tx-sizes", "1,100", "replication: comma-separated rows per transaction, one measurement each")
	flag.IntVar(&cfg.replRounds, "repl-rounds", 3, "replication: measured rounds per transaction size")
	flag.BoolVar(&cfg.waitOrphans, "wait-orphaned-grant", true, "replication: when a stopped worker left a grant the broker must let expire (orphaned re-grant or lost release, known races), wait for it before starting the next worker instead of measuring the wait")
	flag.IntVar(&cfg.liveCommits, "live-commits", 500, "live: measured single-row commits")
	flag.IntVar(&cfg.syncRows, "sync-rows", 1000000, "sync: rows of the table")
	flag.IntVar(&cfg.syncRounds, "sync-rounds", 3, "sync: measured rounds (COPY and a new shape each)")
	manyN := flag.String("shapes-n", "1,100,1000,10000", "shapes: comma-separated numbers of shapes, one run each per kind of filter")
	manyKinds := flag.String("shapes-kinds", "equality,range", "shapes: comma-separated kinds of filter: equality (`id = $1`), range (`id >= $1 AND id < $2`), conjunction (`id = $1 AND lower(note) <> $2`, evaluated by PostgreSQL after a Go pre-filter)")
	flag.IntVar(&cfg.manyRows, "shapes-rows", 10000, "shapes: rows of the table (raised to the largest -shapes-n)")
	flag.IntVar(&cfg.manyChanges, "shapes-changes", 20000, "shapes: row updates per burst")
	manyTx := flag.String("shapes-tx-sizes", "1,100", "shapes: comma-separated rows per transaction of a burst")
	flag.IntVar(&cfg.manyRounds, "shapes-rounds", 3, "shapes: measured bursts per transaction size and run")
	flag.IntVar(&cfg.manyLive, "shapes-live-commits", 200, "shapes: measured single-row commits per run")
	flag.IntVar(&cfg.manyCreators, "shapes-creators", 4, "shapes: shape creation requests at a time")
	flag.StringVar(&cfg.storageDir, "storage-dir", "", "parent `folder` of the worker's storage (default $TMPDIR or /tmp; should be on a real disk: the worker fsyncs)")
	flag.Parse()
	for _, f := range strings.Split(*txSizes, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			fmt.Fprintf(os.Stderr, "bench: -tx-sizes: bad size %q\n", f)
			os.Exit(2)
		}
		if cfg.changes%k != 0 {
			fmt.Fprintf(os.Stderr, "bench: -changes %d is not a multiple of transaction size %d\n", cfg.changes, k)
			os.Exit(2)
		}
		cfg.txSizes = append(cfg.txSizes, k)
	}
	var err error
	if cfg.manyN, err = positiveInts(*manyN); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -shapes-n:", err)
		os.Exit(2)
	}
	if cfg.manyTxSizes, err = positiveInts(*manyTx); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -shapes-tx-sizes:", err)
		os.Exit(2)
	}
	for _, k := range strings.Split(*manyKinds, ",") {
		if k = strings.TrimSpace(k); k != string(kindEquality) && k != string(kindRange) && k != string(kindConjunction) {
			fmt.Fprintf(os.Stderr, "bench: -shapes-kinds: unknown kind %q (want equality, range, conjunction)\n", k)
			os.Exit(2)
		}
		cfg.manyKinds = append(cfg.manyKinds, k)
	}
	for _, k := range cfg.manyTxSizes {
		if cfg.manyChanges%k != 0 || cfg.manyChanges < 2*k {
			fmt.Fprintf(os.Stderr, "bench: -shapes-changes %d is not a multiple of at least two transactions of %d rows\n", cfg.manyChanges, k)
			os.Exit(2)
		}
	}
	if cfg.manyRows < 1 || cfg.manyRounds < 1 || cfg.manyLive < 1 || cfg.manyCreators < 1 {
		fmt.Fprintln(os.Stderr, "bench: -shapes-* counts must be positive")
		os.Exit(2)
	}
	if cfg.rounds < 1 || cfg.crashRounds < 1 || cfg.kubeletRounds < 1 || cfg.baselineRounds < 1 || cfg.warmup < 0 ||
		cfg.changes < 1 || len(cfg.txSizes) == 0 || cfg.replRounds < 1 || cfg.liveCommits < 1 || cfg.syncRows < 1 || cfg.syncRounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: rounds, counts and sizes must be positive and -warmup not negative")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// positiveInts parses a comma-separated list of positive integers.
func positiveInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, k)
	}
	return out, nil
}

func run(cfg config) (err error) {
	started := time.Now()
	var broker string
	if cfg.only["handoff"] {
		if broker, err = binaryPath(cfg.bin, "broker"); err != nil {
			return err
		}
	}
	if cfg.shapes() || cfg.only["kubelet"] {
		for _, name := range []string{"broker", "worker"} {
			if _, err := binaryPath(cfg.bin, name); err != nil {
				return err
			}
		}
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(sigCtx, cfg.timeout,
		fmt.Errorf("the whole run took longer than -timeout %s", cfg.timeout))
	defer cancel()
	// Report why a wait was cut short: Ctrl-C or the overall bound.
	defer func() {
		if err != nil && ctx.Err() != nil {
			if sigCtx.Err() != nil {
				err = fmt.Errorf("interrupted: %w", err)
			} else {
				err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
			}
		}
	}()

	fmt.Fprintln(os.Stderr, "bench: starting a throwaway PostgreSQL cluster")
	opts := pgtest.Options{Settings: cfg.pgSettings}
	if cfg.pgLog != "" {
		f, err := os.Create(cfg.pgLog)
		if err != nil {
			return err
		}
		defer f.Close()
		opts.LogOutput = f
	}
	pg, err := pgtest.New(ctx, opts)
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		if cerr := pg.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close PostgreSQL: %w", cerr)
		}
	}()

	rep := &report{cfg: cfg}
	if cfg.only["handoff"] {
		if rep.handoff, err = runHandoff(ctx, cfg, broker, pg); err != nil {
			return err
		}
	}
	if cfg.only["kubelet"] {
		if rep.kubelet, err = runKubelet(ctx, cfg, pg); err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
	}
	if cfg.shapes() {
		if err := runShapes(ctx, cfg, pg, rep); err != nil {
			return err
		}
	}
	rep.machine = describeMachine(ctx, pg.URL())
	rep.versions = binaryVersions(cfg.bin)
	rep.elapsed = time.Since(started)

	fmt.Print(rep.text())
	if cfg.write != "" {
		if err := os.WriteFile(cfg.write, []byte(rep.markdown()), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "bench: wrote", cfg.write)
	}
	return nil
}

// runHandoff runs the handoff section with its own brokers and workers.
func runHandoff(ctx context.Context, cfg config, broker string, pg *pgtest.Cluster) (_ *results, err error) {
	lab, err := newLab(ctx, broker, pg.URL(), cfg.verbose)
	if err != nil {
		return nil, err
	}
	defer lab.close()
	defer func() {
		if err != nil {
			lab.dumpLogs()
		}
	}()
	base, err := newBaseline(ctx, pg.URL())
	if err != nil {
		return nil, err
	}
	defer base.close()
	return measure(ctx, cfg, lab, base)
}

// runShapes runs the shape sections against one broker and worker.
func runShapes(ctx context.Context, cfg config, pg *pgtest.Cluster, rep *report) (err error) {
	env, err := newShapeEnv(ctx, cfg, pg)
	if err != nil {
		return err
	}
	defer env.close()
	defer func() {
		if err != nil {
			// Said now: closing removes the storage, which takes
			// minutes with 100,000 shapes.
			fmt.Fprintln(os.Stderr, "bench: shapes failed:", err)
			env.dumpLogs()
		}
	}()
	rep.storageFS = describeFS(filepath.Dir(env.storage))
	fmt.Fprintln(os.Stderr, "bench: starting a broker and a worker on stream", shapeStream)
	if err := env.start(ctx); err != nil {
		return err
	}
	if cfg.only["replication"] {
		if rep.repl, err = runReplication(ctx, cfg, env); err != nil {
			return err
		}
	}
	if cfg.only["live"] {
		if rep.live, err = runLive(ctx, cfg, env); err != nil {
			return fmt.Errorf("live: %w", err)
		}
	}
	if cfg.only["sync"] {
		if rep.sync, err = runSync(ctx, cfg, env); err != nil {
			return fmt.Errorf("initial sync: %w", err)
		}
	}
	if cfg.only["shapes"] {
		if rep.many, err = runManyShapes(ctx, cfg, env); err != nil {
			return fmt.Errorf("many shapes: %w", err)
		}
	}
	return env.stopWorker()
}

// measure runs the warm-up and measured rounds.
func measure(ctx context.Context, cfg config, lab *lab, base *baseline) (*results, error) {
	res := &results{cfg: cfg}

	leader, err := lab.startLeader(ctx)
	if err != nil {
		return nil, err
	}
	standby, err := lab.startStandby(ctx)
	if err != nil {
		return nil, err
	}

	for i := range cfg.warmup {
		if _, err := base.round(ctx); err != nil {
			return nil, fmt.Errorf("baseline warm-up %d: %w", i+1, err)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %d graceful handoffs (+%d warm-up), baseline interleaved\n", cfg.rounds, cfg.warmup)
	for i := range cfg.warmup + cfg.rounds {
		h, next, err := lab.graceful(ctx, leader, standby)
		if err != nil {
			return nil, fmt.Errorf("graceful round %d: %w", i+1, err)
		}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "bench: graceful round %d: %s → %s: (a) %s (b) %s\n", i+1, leader.name, standby.name, h.releaseToGrant, h.sigtermToGrant)
		}
		leader, standby = standby, next
		if i < cfg.warmup {
			continue
		}
		res.releaseToGrant = append(res.releaseToGrant, h.releaseToGrant)
		res.sigtermToGrant = append(res.sigtermToGrant, h.sigtermToGrant)
		res.sigtermToRevoke = append(res.sigtermToRevoke, h.sigtermToRevoke)
		res.standbyStart = append(res.standbyStart, h.standbyStart)
		if len(res.baseline) < cfg.baselineRounds {
			d, err := base.round(ctx)
			if err != nil {
				return nil, fmt.Errorf("baseline round %d: %w", len(res.baseline)+1, err)
			}
			res.baseline = append(res.baseline, d)
		}
	}
	for len(res.baseline) < cfg.baselineRounds {
		d, err := base.round(ctx)
		if err != nil {
			return nil, fmt.Errorf("baseline round %d: %w", len(res.baseline)+1, err)
		}
		res.baseline = append(res.baseline, d)
	}

	fmt.Fprintf(os.Stderr, "bench: %d crash takeovers (+%d warm-up)\n", cfg.crashRounds, cfg.warmup)
	for i := range cfg.warmup + cfg.crashRounds {
		d, next, err := lab.crash(ctx, leader, standby)
		if err != nil {
			return nil, fmt.Errorf("crash round %d: %w", i+1, err)
		}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "bench: crash round %d: %s → %s: %s\n", i+1, leader.name, standby.name, d)
		}
		leader, standby = standby, next
		if i >= cfg.warmup {
			res.killToGrant = append(res.killToGrant, d)
		}
	}
	if ctx.Err() != nil {
		return nil, errors.New("cut short")
	}
	return res, nil
}
