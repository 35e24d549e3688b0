package main

import (
	"context"
	"io"

	"github.com/batonhq/baton/status"
)

// runStatus is `broker status`: what PostgreSQL says about the stream (see
// package status). It returns status.ErrNotHeld (exit code 3) when no
// session holds the stream's lock.
func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := status.Parse("broker status", args, getenv, help(stdout, "broker status"))
	if err != nil {
		return err
	}
	return status.Print(ctx, cfg, stdout)
}
