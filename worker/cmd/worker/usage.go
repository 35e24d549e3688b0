package main

import (
	"context"
	"io"

	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/status"
)

// usage lists the worker's commands; -help of each prints it before the
// command's flags.
const usage = `Usage:
  worker [flags]           run the reference worker of one stream: wait for the lease from
                           the broker beside it, then replicate the slot into local storage
                           and serve shapes over HTTP
  worker status [flags]    who holds the stream, since when, with which epoch; its last
                           heartbeat, the worker's durable position, the slot's lag,
                           retained WAL and state, and why standbys wait, read from
                           PostgreSQL (-json for JSON; exit 3 when nobody holds it)
  worker check [flags]     check that PostgreSQL meets what the worker needs
  worker inspect [flags]   print the stored transactions of the stream, one JSON object a
                           line (read-only, safe beside a running worker)
  worker version           print the version
  worker help              print this help

Every flag is also an environment variable (--storage-dir is BATON_STORAGE_DIR, and so on).
`

// help is where -help of cmd prints: the commands, then cmd's flags.
func help(w io.Writer, cmd string) io.Writer {
	return settings.HelpWriter(w, usage+"\nFlags of "+cmd+":\n")
}

// runStatus is `worker status`, the same report as `broker status` (see
// package status): status.ErrNotHeld (exit code 3) when no session holds
// the stream's lock.
func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := status.Parse("worker status", args, getenv, help(stdout, "worker status"))
	if err != nil {
		return err
	}
	return status.Print(ctx, cfg, stdout)
}
