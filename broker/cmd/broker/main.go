// Command broker is Baton's lock-broker sidecar: it holds the PostgreSQL
// advisory lock of one replication stream and grants a lease over gRPC to
// the worker in its pod. `broker status` prints who holds a stream, and
// its slot, from PostgreSQL; `broker help` lists the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/batonhq/baton/broker/internal/config"
	"github.com/batonhq/baton/status"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the process exit code: 0 success (and
// -help), 2 bad configuration, 3 `status` found the stream not held, 1
// anything else.
func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, status.ErrNotHeld):
		return 3
	case config.IsConfigError(err):
		fmt.Fprintln(os.Stderr, "broker: configuration error:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "broker:", err)
		return 1
	}
}
