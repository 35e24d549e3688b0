package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/worker/lease"
)

// streamID is the stream every broker of the run serves.
const streamID = "bench"

// Bounds on single steps; each is far above what a healthy run needs.
const (
	startTimeout   = 20 * time.Second // broker start until leader or waiting standby
	handoffTimeout = 10 * time.Second // signal until the standby's worker is granted
	exitTimeout    = 10 * time.Second // SIGTERM until the old broker has exited
	closeTimeout   = 5 * time.Second  // closing a lease client
	pollInterval   = 5 * time.Millisecond
)

// lab owns every broker and worker of the run and a monitoring session.
type lab struct {
	bin     string
	dbURL   string
	verbose bool
	monitor *pgx.Conn

	mu    sync.Mutex
	n     int
	nodes map[*node]bool // alive
	dead  []*node        // closed, kept for their logs
}

// node is a broker with its attached worker, which holds the lease from
// its broker and releases it at once when the broker revokes it — like a
// real worker that stops at once.
type node struct {
	name     string
	b        *harness.Broker
	w        *harness.LeaseWorker
	attached chan struct{} // closed when the broker first told the worker standby
}

func newLab(ctx context.Context, bin, dbURL string, verbose bool) (*lab, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("monitoring session: %w", err)
	}
	return &lab{bin: bin, dbURL: dbURL, verbose: verbose, monitor: conn, nodes: map[*node]bool{}}, nil
}

// start starts a broker on free ports and attaches a worker to it.
func (l *lab) start(ctx context.Context) (*node, error) {
	l.mu.Lock()
	l.n++
	name := fmt.Sprintf("broker%d", l.n)
	l.mu.Unlock()
	var tee *os.File
	if l.verbose {
		tee = os.Stderr
	}
	b, err := harness.StartBroker(harness.BrokerOptions{
		Bin: l.bin, DatabaseURL: l.dbURL, StreamID: streamID, Name: name, Tee: tee,
	})
	if err != nil {
		return nil, err
	}
	n := &node{name: name, b: b}
	l.mu.Lock()
	l.nodes[n] = true
	l.mu.Unlock()
	// Attach the worker once the broker listens: a gRPC client that finds
	// the port closed backs off for a second before it tries again.
	if err := b.AwaitListening(ctx, startTimeout); err != nil {
		l.retire(n)
		return nil, err
	}
	var once sync.Once
	n.attached = make(chan struct{})
	w, err := harness.StartLeaseWorker(b.Addr, lease.Options{
		WorkerID:  "worker-of-" + name,
		StreamID:  streamID,
		OnStandby: func(*batonv1.Standby) { once.Do(func() { close(n.attached) }) },
	}, nil)
	if err != nil {
		l.retire(n)
		return nil, err
	}
	n.w = w
	return n, nil
}

// retire stops a node's worker and broker (SIGKILL if still running).
func (l *lab) retire(n *node) {
	l.mu.Lock()
	alive := l.nodes[n]
	delete(l.nodes, n)
	l.dead = append(l.dead, n)
	l.mu.Unlock()
	if !alive {
		return
	}
	if n.w != nil {
		n.w.Close()
	}
	n.b.Close()
}

// close retires every node still alive and closes the monitoring session.
func (l *lab) close() {
	l.mu.Lock()
	var alive []*node
	for n := range l.nodes {
		alive = append(alive, n)
	}
	l.mu.Unlock()
	for _, n := range alive {
		l.retire(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.monitor.Close(ctx)
}

// dumpLogs prints the tail of every broker's log (after a failure).
func (l *lab) dumpLogs() {
	if l.verbose {
		return
	}
	l.mu.Lock()
	var all []*node
	for n := range l.nodes {
		all = append(all, n)
	}
	if k := len(l.dead); k > 0 {
		all = append(all, l.dead[max(0, k-2):]...)
	}
	l.mu.Unlock()
	for _, n := range all {
		fmt.Fprintf(os.Stderr, "--- log of %s (tail) ---\n%s\n", n.name, harness.Tail(n.b.Output(), 15))
	}
}

// startLeader starts the first broker and waits until its worker is granted.
func (l *lab) startLeader(ctx context.Context) (*node, error) {
	n, err := l.start(ctx)
	if err != nil {
		return nil, err
	}
	if _, _, err := n.w.AwaitEvent(ctx, "granted", 0, startTimeout); err != nil {
		return nil, err
	}
	return n, nil
}

// startStandby starts a broker and waits until it really is a standby: its
// readiness is SERVING, it logged that it waits for the lock, its session is
// seen waiting in pg_locks, and its worker was told standby.
func (l *lab) startStandby(ctx context.Context) (*node, error) {
	n, err := l.start(ctx)
	if err != nil {
		return nil, err
	}
	err = await(ctx, startTimeout, n.name+" to wait for the stream's lock with its worker attached", func() (bool, error) {
		if n.b.Exited() {
			return false, fmt.Errorf("%s exited", n.name)
		}
		if len(n.w.Events()) > 0 {
			return false, fmt.Errorf("%s's worker was granted while another broker holds the stream", n.name)
		}
		select {
		case <-n.attached:
		default:
			return false, nil
		}
		if !strings.Contains(n.b.Output(), "waiting for the stream's lock") {
			return false, nil
		}
		if s, err := n.b.Health(ctx, "readiness"); err != nil || s != healthpb.HealthCheckResponse_SERVING {
			return false, nil
		}
		held, waiting, err := l.lockHolders(ctx)
		if err != nil {
			return false, err
		}
		return held == 1 && waiting == 1, nil
	})
	if err != nil {
		l.retire(n)
		return nil, err
	}
	return n, nil
}

// lockHolders counts the sessions holding and waiting for the stream's lock.
func (l *lab) lockHolders(ctx context.Context) (held, waiting int, err error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pids, waiting, err := harness.LockHolders(qctx, l.monitor, streamID)
	return len(pids), waiting, err
}

// handoff is one graceful round's timings.
type handoff struct {
	releaseToGrant  time.Duration // (a)
	sigtermToGrant  time.Duration // (b)
	sigtermToRevoke time.Duration // SIGTERM → the old worker saw revoked
	standbyStart    time.Duration // start of the next standby → it waits for the lock
}

// graceful runs one SIGTERM handoff from leader to standby and starts the
// next standby. It returns the new standby.
func (l *lab) graceful(ctx context.Context, leader, standby *node) (handoff, *node, error) {
	var h handoff
	g0, _, err := leader.w.AwaitEvent(ctx, "granted", 0, time.Second)
	if err != nil {
		return h, nil, err
	}

	sigterm := time.Now()
	if err := leader.b.Signal(syscall.SIGTERM); err != nil {
		return h, nil, fmt.Errorf("SIGTERM %s: %w", leader.name, err)
	}
	e, _, err := leader.w.AwaitEvent(ctx, "ended", 0, handoffTimeout)
	if err != nil {
		return h, nil, fmt.Errorf("%s's lease to end after SIGTERM: %w", leader.w.ID, err)
	}
	if r, ok := lease.Revoked(e.Cause); !ok || r != batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN {
		return h, nil, fmt.Errorf("%s's lease ended with %v, want revoked (shutdown)", leader.w.ID, e.Cause)
	}
	rel, err := leader.w.AwaitRelease(ctx, e.Epoch, closeTimeout)
	if err != nil {
		return h, nil, err
	}
	if rel.Err != nil {
		return h, nil, fmt.Errorf("%s: release: %w", leader.w.ID, rel.Err)
	}
	g, _, err := standby.w.AwaitEvent(ctx, "granted", 0, handoffTimeout)
	if err != nil {
		return h, nil, fmt.Errorf("%s to be granted after SIGTERM of %s: %w", standby.w.ID, leader.name, err)
	}
	if g.Epoch != g0.Epoch+1 {
		return h, nil, fmt.Errorf("%s granted epoch %d, want %d", standby.w.ID, g.Epoch, g0.Epoch+1)
	}
	if g.At.Before(rel.At) {
		return h, nil, fmt.Errorf("%s granted before %s released", standby.w.ID, leader.w.ID)
	}
	h.releaseToGrant = g.At.Sub(rel.At)
	h.sigtermToGrant = g.At.Sub(sigterm)
	h.sigtermToRevoke = e.At.Sub(sigterm)

	if err := awaitExit(ctx, leader); err != nil {
		return h, nil, err
	}
	l.retire(leader)

	t := time.Now()
	next, err := l.startStandby(ctx)
	if err != nil {
		return h, nil, err
	}
	h.standbyStart = time.Since(t)
	return h, next, nil
}

// crash SIGKILLs the leader's broker, measures until the standby's worker is
// granted, and starts the next standby.
func (l *lab) crash(ctx context.Context, leader, standby *node) (time.Duration, *node, error) {
	g0, _, err := leader.w.AwaitEvent(ctx, "granted", 0, time.Second)
	if err != nil {
		return 0, nil, err
	}
	killed := time.Now()
	if err := leader.b.Signal(syscall.SIGKILL); err != nil {
		return 0, nil, fmt.Errorf("SIGKILL %s: %w", leader.name, err)
	}
	g, _, err := standby.w.AwaitEvent(ctx, "granted", 0, handoffTimeout)
	if err != nil {
		return 0, nil, fmt.Errorf("%s to be granted after SIGKILL of %s: %w", standby.w.ID, leader.name, err)
	}
	if g.Epoch != g0.Epoch+1 {
		return 0, nil, fmt.Errorf("%s granted epoch %d, want %d", standby.w.ID, g.Epoch, g0.Epoch+1)
	}
	d := g.At.Sub(killed)
	l.retire(leader)
	next, err := l.startStandby(ctx)
	if err != nil {
		return 0, nil, err
	}
	return d, next, nil
}

// awaitExit waits for a broker's clean exit after SIGTERM.
func awaitExit(ctx context.Context, n *node) error {
	t := time.NewTimer(exitTimeout)
	defer t.Stop()
	select {
	case <-n.b.Done():
	case <-t.C:
		return fmt.Errorf("%s did not exit within %s of SIGTERM", n.name, exitTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	code, err := n.b.Wait(time.Second)
	if err != nil || code != 0 {
		return fmt.Errorf("%s exited with %d (%v) after SIGTERM, want 0", n.name, code, err)
	}
	return nil
}

// await polls cond every pollInterval until it holds, fails, the timeout
// passes or ctx ends.
func await(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	return harness.AwaitContext(ctx, timeout, pollInterval, what, cond)
}
