// Command devrun is `make run`: it starts Baton's broker (and the worker,
// once built) against DATABASE_URL, or against a throwaway local PostgreSQL
// when DATABASE_URL is not set, prints where everything listens, and stops
// everything cleanly on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	bin := flag.String("bin", "bin", "folder holding the broker and worker binaries")
	flag.Parse()

	url := os.Getenv("DATABASE_URL")
	if url == "" {
		pg, err := pgtest.New(ctx, pgtest.Options{})
		if err != nil {
			return fmt.Errorf("throwaway PostgreSQL: %w", err)
		}
		defer pg.Close()
		url = pg.URL()
		fmt.Printf("PostgreSQL  throwaway cluster at %s (removed on exit)\n", url)
	} else {
		fmt.Println("PostgreSQL  DATABASE_URL from the environment")
	}
	env := []string{"DATABASE_URL=" + url}
	grpcAddr := getenv("BATON_BROKER_LISTEN", ":7070")
	metricsAddr := getenv("BATON_METRICS_LISTEN", ":7071")

	var procs []*harness.Process
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Kill()
		}
	}()
	broker, err := harness.StartProcess("broker", []string{filepath.Join(*bin, "broker")}, env, os.Stderr)
	if err != nil {
		return err
	}
	procs = append(procs, broker)
	fmt.Printf("broker      gRPC lease + grpc.health.v1 on %s, Prometheus /metrics on %s\n", grpcAddr, metricsAddr)
	fmt.Printf("            check it: DATABASE_URL=%s %s status\n", url, filepath.Join(*bin, "broker"))

	worker := filepath.Join(*bin, "worker")
	if _, err := os.Stat(worker); err == nil {
		w, err := harness.StartProcess("worker", []string{worker}, env, os.Stderr)
		if err != nil {
			return err
		}
		procs = append(procs, w)
		fmt.Printf("worker      shape API, /v1/health and /metrics on %s\n", getenv("BATON_HTTP_LISTEN", ":3000"))
	}
	fmt.Println("Ctrl-C stops everything.")

	select {
	case <-ctx.Done():
	case <-broker.Done():
		return errors.New("broker exited:\n" + broker.Output())
	}
	// Stop in pod order: the worker first, then its broker.
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.Signal(syscall.SIGTERM)
		if code, err := p.Wait(30 * time.Second); err != nil || code != 0 {
			fmt.Fprintf(os.Stderr, "%s exit %d %v\n", p.Name, code, err)
		}
	}
	return nil
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
