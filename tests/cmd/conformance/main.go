// Command conformance is `make conformance`: it runs Baton's conformance
// kit (package tests/conformance) against a worker. It starts a throwaway
// PostgreSQL and real brokers, runs the worker command through the
// environment contract, prints one line per check and a summary, and exits
// 1 when a check failed (a skipped check does not fail), 2 on bad usage.
//
//	conformance -broker bin/broker -worker 'bin/worker' [-worker2 'node ...'] [-v]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/batonhq/baton/tests/conformance"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "bin/broker", "the broker binary")
	worker := fs.String("worker", getenv("WORKER"), "command (sh -c) that starts the worker of pod a (WORKER)")
	worker2 := fs.String("worker2", getenv("WORKER2"), "command that starts the worker of pod b (WORKER2; default: -worker)")
	verbose := fs.Bool("v", false, "print every line the brokers and workers print, prefixed with their names")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *worker == "" {
		fmt.Fprintln(stderr, "conformance: -worker (or WORKER) is required: the command that starts the worker under test")
		return 2
	}
	o := conformance.Options{Worker: *worker, Worker2: *worker2, BrokerBin: *broker, Out: stdout}
	if *verbose {
		o.Log = os.Stderr
	}
	fmt.Fprintf(stdout, "conformance: pod a runs %q, pod b runs %q\n", *worker, o.Worker2OrWorker())
	results, err := conformance.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "conformance:", err)
		return 1
	}
	return exitCode(results)
}

// exitCode is 1 when a check failed, else 0 (skipped checks do not fail).
func exitCode(results []conformance.Result) int {
	for _, r := range results {
		if !r.OK && !r.Skipped {
			return 1
		}
	}
	return 0
}
