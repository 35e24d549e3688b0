// Command bench measures Baton's lease handoff against a throwaway PostgreSQL
// cluster and prints the results next to their baseline, measured in the same
// run: the floor of an advisory-lock handoff in PostgreSQL itself.
//
//	go run ./tests/cmd/bench -bin bin                       # what `make bench` runs
//	go run ./tests/cmd/bench -bin bin -write BENCHMARKS.md  # also write the report
//
// Measurements (DESIGN §6):
//
//   - graceful handoff, as in a rolling deploy: two brokers on one stream, each
//     with an attached lease client; the leader's broker gets SIGTERM, its
//     worker sees revoked (shutdown) and releases, the standby's worker is
//     granted. Recorded: (a) the old worker's Release → the new worker's
//     Granted, and (b) SIGTERM → the new worker's Granted.
//   - crash takeover: SIGKILL of the leader's broker → the standby's worker's
//     Granted.
//   - baseline: two plain sessions, one holding pg_advisory_lock(1, 1), the
//     other blocked in it; pg_advisory_unlock on the first → the second's
//     lock call returning. Its rounds are interleaved with the graceful
//     rounds, so that both see the same machine load.
//
// After each round a fresh broker and worker become the new standby; a round
// starts only once that broker reports readiness SERVING, has logged that it
// waits for the stream's lock, is seen blocked in pg_advisory_lock in
// pg_locks, and its worker has been told standby.
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
	warmup         int
	timeout        time.Duration
	verbose        bool
	pgSettings     map[string]string
	pgLog          string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin", "folder holding the built `broker` binary (make build)")
	flag.StringVar(&cfg.write, "write", "", "also write the report as markdown to this `path` (e.g. BENCHMARKS.md)")
	flag.IntVar(&cfg.rounds, "rounds", 50, "measured graceful (SIGTERM) handoffs")
	flag.IntVar(&cfg.crashRounds, "crash-rounds", 20, "measured crash (SIGKILL) takeovers")
	flag.IntVar(&cfg.baselineRounds, "baseline-rounds", 50, "measured PostgreSQL advisory-lock handoffs")
	flag.IntVar(&cfg.warmup, "warmup", 2, "unmeasured warm-up rounds before each measurement")
	flag.DurationVar(&cfg.timeout, "timeout", 4*time.Minute, "bound on the whole run")
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
	flag.Parse()
	if cfg.rounds < 1 || cfg.crashRounds < 1 || cfg.baselineRounds < 1 || cfg.warmup < 0 {
		fmt.Fprintln(os.Stderr, "bench: rounds must be positive and -warmup not negative")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) (err error) {
	started := time.Now()
	broker, err := filepath.Abs(filepath.Join(cfg.bin, "broker"))
	if err != nil {
		return err
	}
	if fi, err := os.Stat(broker); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("no broker binary at %s: run `make build` first (or pass -bin)", broker)
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

	lab, err := newLab(ctx, broker, pg.URL(), cfg.verbose)
	if err != nil {
		return err
	}
	defer lab.close()
	defer func() {
		if err != nil {
			lab.dumpLogs()
		}
	}()

	base, err := newBaseline(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer base.close()

	res, err := measure(ctx, cfg, lab, base)
	if err != nil {
		return err
	}
	res.machine = describeMachine(ctx, lab.monitor)
	res.elapsed = time.Since(started)

	report := res.text()
	fmt.Print(report)
	if cfg.write != "" {
		if err := os.WriteFile(cfg.write, []byte(res.markdown()), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "bench: wrote", cfg.write)
	}
	return nil
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
