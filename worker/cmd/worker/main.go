// Command worker is Baton's reference worker: it waits for the lease from
// the broker in its pod, and only while holding it consumes the stream's
// replication slot into durable local storage. `worker help` lists its
// commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/batonhq/baton/status"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/replication"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, status.ErrNotHeld):
		os.Exit(3)
	case replication.IsRequirement(err):
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	case config.IsConfigError(err):
		fmt.Fprintln(os.Stderr, "worker: configuration error:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
