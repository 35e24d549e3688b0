// Command devrun is `make run`: it checks that PostgreSQL meets Baton's
// requirements, starts the broker and the worker (one pair, or several on
// one database with -pairs to try a handoff) against DATABASE_URL, or
// against a throwaway local PostgreSQL when DATABASE_URL is not set, prints
// where everything listens, and supervises them: if one exits, devrun stops
// the rest and exits 1 naming it. Ctrl-C (SIGINT), SIGTERM or SIGHUP stop
// every pair as the kubelet stops a pod (the worker first, then its
// broker) and exit 0.
//
// Exit codes: 0 stopped on request, 1 a process exited or failed to start,
// 2 bad settings or a requirement of PostgreSQL not met (one line naming
// what to change).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/pgtest"
)

func main() {
	restore := takeTerminal()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	restore()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "devrun:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError is an error with devrun's exit code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

func badSetting(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

// settings are devrun's flags and the listen addresses of the first pair.
type settings struct {
	bin         string
	pairs       int
	brokerAddr  string
	metricsAddr string
	httpAddr    string
	storage     string // BATON_STORAGE_DIR, "" when not set
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	s := settings{
		brokerAddr:  or(getenv("BATON_BROKER_LISTEN"), ":7070"),
		metricsAddr: or(getenv("BATON_METRICS_LISTEN"), ":7071"),
		httpAddr:    or(getenv("BATON_HTTP_LISTEN"), ":3000"),
		storage:     getenv("BATON_STORAGE_DIR"),
	}
	fs := flag.NewFlagSet("devrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.bin, "bin", "bin", "folder holding the broker and worker binaries")
	fs.IntVar(&s.pairs, "pairs", 1, "broker+worker pairs on the one database (2 to try a handoff); pair n listens on the ports of pair 1 plus n-1 (HTTP) or 2(n-1) (broker, metrics)")
	fs.StringVar(&s.brokerAddr, "broker-listen", s.brokerAddr, "first broker's gRPC address (env BATON_BROKER_LISTEN)")
	fs.StringVar(&s.metricsAddr, "metrics-listen", s.metricsAddr, "first broker's /metrics address (env BATON_METRICS_LISTEN)")
	fs.StringVar(&s.httpAddr, "http-listen", s.httpAddr, "first worker's HTTP address (env BATON_HTTP_LISTEN)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s, err
		}
		return s, badSetting("%v", err)
	}
	if fs.NArg() > 0 {
		return s, badSetting("unexpected argument %q", fs.Arg(0))
	}
	if s.pairs < 1 || s.pairs > 9 {
		return s, badSetting("-pairs must be 1 to 9, got %d", s.pairs)
	}
	return s, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	s, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	pairs, err := plan(s)
	if err != nil {
		return err
	}
	for _, name := range []string{"broker", "worker"} {
		if _, err := os.Stat(filepath.Join(s.bin, name)); err != nil {
			return badSetting("no %s binary in %s: run `make build` (the worker needs a C compiler: cgo)", name, s.bin)
		}
	}

	url := getenv("DATABASE_URL")
	if url == "" {
		pg, err := pgtest.New(ctx, pgtest.Options{})
		if err != nil {
			return fmt.Errorf("throwaway PostgreSQL: %w", err)
		}
		defer pg.Close()
		url = pg.URL()
		fmt.Fprintf(stdout, "devrun: PostgreSQL: throwaway cluster %s (removed on exit)\n", url)
	} else {
		fmt.Fprintln(stdout, "devrun: PostgreSQL: DATABASE_URL from the environment")
	}
	summary, err := checkRequirements(ctx, s.bin, url)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "devrun:", summary)
	// The workers get BATON_INSECURE=true unless the environment sets
	// BATON_SECRET or BATON_INSECURE, and BATON_ALLOW_SHAPE_DELETION=true
	// unless it sets that (harness.StartWorker).
	switch {
	case getenv("BATON_SECRET") != "":
		fmt.Fprintln(stdout, "devrun: BATON_SECRET from the environment: every shape request must carry secret=<BATON_SECRET>")
	case getenv("BATON_INSECURE") == "":
		fmt.Fprintln(stdout, "devrun: BATON_INSECURE=true: the shape API serves anyone, without a secret (export BATON_SECRET=... to require one)")
	}
	if getenv("BATON_ALLOW_SHAPE_DELETION") == "" {
		fmt.Fprintln(stdout, "devrun: BATON_ALLOW_SHAPE_DELETION=true: DELETE /v1/shape removes shapes")
	}

	base := s.storage
	if base == "" && getenv("DATABASE_URL") == "" {
		// A throwaway database starts without a slot: storage from an
		// earlier run could not be used anyway.
		if base, err = os.MkdirTemp("", "baton-devrun-"); err != nil {
			return err
		}
		defer os.RemoveAll(base)
	} else if base == "" {
		base = "data"
	}
	for _, p := range pairs {
		p.storage = base
		if len(pairs) > 1 {
			p.storage = filepath.Join(base, fmt.Sprintf("pair-%d", p.n))
		}
	}
	sup := &supervisor{bin: s.bin, url: url, pairs: pairs, out: stdout, log: stderr}
	return sup.run(ctx)
}

// checkRequirements runs `worker check` against url: PostgreSQL's
// requirements (wal_level, REPLICATION, free slots and WAL senders) are
// checked by the worker's own code. It returns the summary line, or an
// exit-2 error with the one line naming what to change.
func checkRequirements(ctx context.Context, bin, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "worker"), "check")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	msg := strings.TrimPrefix(strings.TrimSpace(errOut.String()), "worker: ")
	var ee *exec.ExitError
	switch {
	case err == nil:
		return strings.TrimSpace(out.String()), nil
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return "", &exitError{code: 2, msg: "PostgreSQL: " + msg}
	case msg != "":
		return "", fmt.Errorf("checking PostgreSQL: %s", msg)
	default:
		return "", fmt.Errorf("checking PostgreSQL: worker check: %w", err)
	}
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
