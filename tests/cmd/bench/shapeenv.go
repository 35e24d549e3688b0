package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// The shape benchmarks run one broker and one worker on the default stream,
// so that the publication is baton_pub_default.
const (
	shapeStream = "default"
	publication = "baton_pub_default"
	workerSlot  = "baton_slot_default"
)

// Bounds on the steps of the shape benchmarks; each is far above what a
// healthy run needs.
const (
	workerStartTimeout = 30 * time.Second // worker process start → health active
	workerStopTimeout  = 20 * time.Second // SIGTERM → exit
	sqlTimeout         = 3 * time.Minute  // one workload statement (loading 1,000,000 rows included)
	catchUpTimeout     = 2 * time.Minute  // worker start → the last change read from the shape
	requestTimeout     = 2 * time.Minute  // one HTTP request, body included (a new shape's snapshot included)
	unavailablePoll    = 2 * time.Millisecond
)

// shapeEnv is the cluster and the pod (a broker and its worker) the shape
// benchmarks share.
type shapeEnv struct {
	pg        *pgtest.Cluster
	dbURL     string
	brokerBin string
	workerBin string
	storage   string
	verbose   bool

	pod *harness.Pod

	conn *pgx.Conn // the workload's session
}

func newShapeEnv(ctx context.Context, cfg config, pg *pgtest.Cluster) (_ *shapeEnv, err error) {
	e := &shapeEnv{pg: pg, dbURL: pg.URL(), verbose: cfg.verbose}
	if e.brokerBin, err = binaryPath(cfg.bin, "broker"); err != nil {
		return nil, err
	}
	if e.workerBin, err = binaryPath(cfg.bin, "worker"); err != nil {
		return nil, err
	}
	base := cfg.storageDir
	if base == "" {
		base = os.TempDir()
	}
	if e.storage, err = os.MkdirTemp(base, "baton-bench-storage-"); err != nil {
		return nil, fmt.Errorf("worker storage: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e.conn, err = pgx.Connect(cctx, e.dbURL); err != nil {
		os.RemoveAll(e.storage)
		return nil, fmt.Errorf("workload session: %w", err)
	}
	return e, nil
}

// binaryPath is the absolute path of bin/name, checked.
func binaryPath(dir, name string) (string, error) {
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("no %s binary at %s: run `make build` first (or pass -bin)", name, p)
	}
	return p, nil
}

// start starts the pod: the broker, once it listens the worker, and waits
// until the worker is active.
func (e *shapeEnv) start(ctx context.Context) error {
	var tee *os.File
	if e.verbose {
		tee = os.Stderr
	}
	p, err := harness.StartPod(ctx, harness.PodOptions{
		BrokerBin: e.brokerBin, WorkerBin: e.workerBin, DatabaseURL: e.dbURL, StreamID: shapeStream, StorageDir: e.storage, Tee: tee,
		AwaitBroker: true,
	})
	if err != nil {
		return err
	}
	e.pod = p
	return e.awaitActive(ctx)
}

// worker is the current worker process.
func (e *shapeEnv) worker() *harness.Worker { return e.pod.Worker() }

// base is the worker's URL; it stays across restarts.
func (e *shapeEnv) base() string { return e.pod.URL() }

// startWorker starts a worker process again on the shared storage and
// returns when the process was started.
func (e *shapeEnv) startWorker() (time.Time, error) {
	t0 := time.Now()
	return t0, e.pod.StartWorker()
}

// awaitActive waits until the current worker's health says active.
func (e *shapeEnv) awaitActive(ctx context.Context) error {
	return e.pod.AwaitWorker(ctx, "active", workerStartTimeout, pollInterval)
}

// stopWorker stops the current worker gracefully (SIGTERM) and checks that
// it exits 0.
func (e *shapeEnv) stopWorker() error {
	w := e.worker()
	if err := w.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %s: %w", w.Name, err)
	}
	return w.AwaitExit(workerStopTimeout)
}

// exec runs one workload statement, bounded.
func (e *shapeEnv) exec(ctx context.Context, sql string, args ...any) error {
	qctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	if _, err := e.conn.Exec(qctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", firstLine(sql), err)
	}
	return nil
}

// currentLSN is pg_current_wal_lsn().
func (e *shapeEnv) currentLSN(ctx context.Context) (uint64, error) {
	qctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	var s string
	if err := e.conn.QueryRow(qctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("pg_current_wal_lsn: %w", err)
	}
	return parseLSN(s)
}

// dropSlot drops a replication slot, waiting (bounded) until no walsender
// uses it any more.
func (e *shapeEnv) dropSlot(ctx context.Context, slot string) error {
	return harness.AwaitContext(ctx, 10*time.Second, pollInterval, "replication slot "+slot+" to be dropped", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var active *bool
		err := e.conn.QueryRow(qctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if active != nil && *active {
			return false, nil
		}
		_, err = e.conn.Exec(qctx, "SELECT pg_drop_replication_slot($1)", slot)
		return err == nil, err
	})
}

// awaitSlotInactive waits until no walsender uses slot.
func (e *shapeEnv) awaitSlotInactive(ctx context.Context, slot string) error {
	return harness.AwaitContext(ctx, 10*time.Second, pollInterval, "replication slot "+slot+" to be released by its walsender", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var active bool
		err := e.conn.QueryRow(qctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		return err == nil && !active, err
	})
}

// close kills every process still running and removes the storage.
func (e *shapeEnv) close() {
	if e.pod != nil {
		e.pod.Close()
	}
	if e.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = e.conn.Close(ctx)
		cancel()
	}
	if e.storage != "" {
		_ = os.RemoveAll(e.storage)
	}
}

// dumpLogs prints the tail of the broker's and the last workers' logs
// (after a failure).
func (e *shapeEnv) dumpLogs() {
	if e.verbose || e.pod == nil {
		return
	}
	procs := e.pod.Processes()
	fmt.Fprintf(os.Stderr, "--- log of %s (tail) ---\n%s\n", procs[0].Name, harness.Tail(procs[0].Output(), 15))
	for _, w := range procs[max(1, len(procs)-2):] {
		fmt.Fprintf(os.Stderr, "--- log of %s (tail) ---\n%s\n", w.Name, harness.Tail(w.Output(), 25))
	}
}

// parseLSN parses PostgreSQL's X/Y form.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	return h<<32 | l, nil
}

func formatLSN(x uint64) string { return fmt.Sprintf("%X/%X", x>>32, uint32(x)) }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > 100 {
		s = s[:100] + " …"
	}
	return s
}
