package main

import (
	"context"
	"fmt"
	"io"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/lifecycle"
	"github.com/batonhq/baton/worker/internal/replication"
)

// runCheck is `worker check`: it checks that PostgreSQL at DATABASE_URL
// meets what the worker needs (replication.CheckRequirements) and prints
// one summary line. An unmet requirement is returned as a
// *replication.RequirementError (exit code 2, one line naming what to
// change).
func runCheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Parse(args, getenv, help(stdout, "worker check"))
	if err != nil {
		return err
	}
	r, err := replication.CheckDatabase(ctx, cfg.DatabaseURL, stream.SlotName(cfg.StreamID), stream.PublicationName(cfg.StreamID), lifecycle.CheckTimeout)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, r.Summary())
	return nil
}
