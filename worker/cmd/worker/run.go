package main

import (
	"context"
	"fmt"
	"io"

	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/lifecycle"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole worker (lifecycle.Run) or one of its commands.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version":
			fmt.Fprintln(stdout, "worker", version)
			return nil
		case "inspect":
			return runInspect(args[1:], getenv, stdout)
		case "check":
			return runCheck(ctx, args[1:], getenv, stdout)
		case "status":
			return runStatus(ctx, args[1:], getenv, stdout)
		case "help":
			args = []string{"-help"}
		}
	}
	cfg, err := config.Parse(args, getenv, help(stdout, "worker"))
	if err == nil {
		err = cfg.Access()
	}
	if err != nil {
		return err
	}
	var epoch settings.Epoch // while leased, every log line carries it
	log := settings.NewLogger(cfg.LogFormat, stderr, cfg.StreamID, &epoch)
	settings.RouteGRPCLog(log)
	return lifecycle.Run(ctx, lifecycle.Options{Config: cfg, Version: version, Log: log, Epoch: &epoch})
}
