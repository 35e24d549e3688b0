package main

import (
	"io"

	"github.com/batonhq/baton/settings"
)

// usage lists the broker's commands; -help of each prints it before the
// command's flags.
const usage = `Usage:
  broker [flags]          run the lock broker of one stream: hold its PostgreSQL advisory
                          lock and grant the lease to the worker beside it
  broker status [flags]   who holds the stream, since when, with which epoch; its last
                          heartbeat, the worker's durable position, the slot's lag,
                          retained WAL and state, and why standbys wait, read from
                          PostgreSQL (-json for JSON; exit 3 when nobody holds it)
  broker config [flags]   check the settings as the broker would and print them as JSON,
                          without connecting
  broker version          print the version
  broker help             print this help

Every flag is also an environment variable (--lease-ttl is BATON_LEASE_TTL, and so on).
`

// help is where -help of cmd prints: the commands, then cmd's flags.
func help(w io.Writer, cmd string) io.Writer {
	return settings.HelpWriter(w, usage+"\nFlags of "+cmd+":\n")
}
