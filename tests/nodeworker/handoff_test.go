package nodeworker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// The stream passes between two Node workers under writes — a graceful
// stop (SIGTERM to the worker), a broker's shutdown (SIGTERM to the broker:
// Revoked with drain time, the worker drains and releases), a crash of the worker alone (SIGKILL; its
// container restarts in the same pod) and a crash of the whole pod
// (SIGKILL to worker and broker) — and the shared output file holds every
// committed transaction exactly once, whole, in commit order: nothing
// lost, nothing doubled. Each handoff is followed by new transactions
// written under the new epoch, and the slot is never consumed by an older
// epoch after a newer one.
func TestHandoffUnderWrites(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(context.Background(), "CREATE TABLE items (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "changes.jsonl")
	a, b := newPod(t, pg, "a", out), newPod(t, pg, "b", out)
	other := func(p *harness.Pod) *harness.Pod {
		if p == a {
			return b
		}
		return a
	}
	active := awaitActive(t, 30*time.Second, a, b)
	sampler := startSlotSampler(t, pg)
	w := startWriter(t, pg)

	// progress waits until the file holds 20 transactions more than now.
	progress := func(after string) {
		t.Helper()
		txns, err := readOutput(out)
		if err != nil {
			t.Fatal(err)
		}
		want := len(txns) + 20
		if err := harness.AwaitEvery(30*time.Second, 100*time.Millisecond, fmt.Sprintf("%d transactions in the file %s", want, after), func() (bool, error) {
			txns, err := readOutput(out)
			return len(txns) >= want, err
		}); err != nil {
			t.Fatal(err)
		}
	}

	progress("at the start")
	t.Logf("SIGTERM to the worker of pod %s", active.Name())
	sigterm := time.Now()
	if err := active.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := active.Worker().AwaitExit(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	next := awaitActive(t, 20*time.Second, other(active))
	t.Logf("graceful handoff: the stopped worker exited %s after SIGTERM (drained, acknowledged, released), the other pod's worker active %s after SIGTERM",
		active.Worker().ExitedAt().Sub(sigterm).Round(time.Millisecond), time.Since(sigterm).Round(time.Millisecond))
	if err := active.StartWorker(); err != nil { // the container restarts: a standby
		t.Fatal(err)
	}
	active = next
	progress("after the graceful handoff")

	t.Logf("SIGTERM to the broker of pod %s: Revoked with drain time", active.Name())
	if err := active.Broker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := active.Broker().AwaitExit(25 * time.Second); err != nil {
		t.Fatal(err)
	}
	next = awaitActive(t, 20*time.Second, other(active))
	if _, err := active.Restart(t.Context()); err != nil { // the broker restarts; its worker attaches again
		t.Fatal(err)
	}
	active = next
	progress("after the broker's shutdown")

	t.Logf("SIGKILL to the worker of pod %s; its container restarts", active.Name())
	active.Worker().Kill()
	if err := active.StartWorker(); err != nil {
		t.Fatal(err)
	}
	active = awaitActive(t, 30*time.Second, a, b)
	progress("after the worker's crash")

	t.Logf("SIGKILL to pod %s (worker and broker)", active.Name())
	active.Kill()
	next = awaitActive(t, 30*time.Second, other(active))
	if _, err := active.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	active = next
	progress("after the pod's crash")

	committed := w.finish()
	if t.Failed() {
		return
	}
	var txns []txn
	if err := harness.AwaitEvery(30*time.Second, 100*time.Millisecond, fmt.Sprintf("all %d committed transactions in the file", len(committed)), func() (bool, error) {
		var err error
		txns, err = readOutput(out)
		return len(txns) >= len(committed), err
	}); err != nil {
		t.Error(err)
	}
	for i := range max(len(txns), len(committed)) {
		var got, want string
		if i < len(txns) {
			got = idsText(txns[i].ids)
		}
		if i < len(committed) {
			want = idsText(committed[i])
		}
		if got != want {
			t.Fatalf("transaction %d of %d committed (%d in the file): file has [%s], committed [%s]", i, len(committed), len(txns), got, want)
		}
	}
	epochs := map[uint64]bool{}
	for i, tx := range txns {
		if i > 0 && tx.epoch < txns[i-1].epoch {
			t.Errorf("transaction %s written by epoch %d after one by epoch %d", tx.lsn, tx.epoch, txns[i-1].epoch)
		}
		epochs[tx.epoch] = true
	}
	if len(epochs) < 5 {
		t.Errorf("the file has transactions of %d epochs, want at least 5 (one per holder)", len(epochs))
	}
	held, err := sampler.finish()
	if err != nil {
		t.Error(err)
	}
	t.Logf("%d transactions committed and delivered once each; epochs in the file %v; slot held by epochs %v", len(committed), keys(epochs), held)
}

func keys(m map[uint64]bool) []uint64 {
	var out []uint64
	for k := range m {
		out = append(out, k)
	}
	return out
}

func connect(t *testing.T, pg *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// writer commits transactions of 1 to 3 inserts into items, one after the
// other, and records each committed transaction's ids in commit order.
type writer struct {
	stop chan struct{}
	done chan [][]string
}

func startWriter(t *testing.T, pg *pgtest.Cluster) *writer {
	t.Helper()
	conn := connect(t, pg)
	w := &writer{stop: make(chan struct{}), done: make(chan [][]string, 1)}
	go func() {
		var committed [][]string
		id := 0
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				w.done <- committed
				return
			default:
			}
			var ids []string
			var sql strings.Builder
			sql.WriteString("INSERT INTO items (id, note) VALUES ")
			for k := range 1 + i%3 {
				id++
				if k > 0 {
					sql.WriteString(", ")
				}
				fmt.Fprintf(&sql, "(%d, 'row')", id)
				ids = append(ids, strconv.Itoa(id))
			}
			// One statement per rows of a transaction; a multi-row INSERT
			// is one transaction with one change per row.
			if _, err := conn.Exec(context.Background(), sql.String()); err != nil {
				t.Errorf("insert %v: %v", ids, err)
				w.done <- committed
				return
			}
			committed = append(committed, ids)
			time.Sleep(2 * time.Millisecond) // pace the writer; not a wait for a condition
		}
	}()
	return w
}

func (w *writer) finish() [][]string {
	close(w.stop)
	return <-w.done
}

// slotSampler records, every few milliseconds, which worker epoch holds
// the slot, and fails if an older epoch holds it after a newer one.
type slotSampler struct {
	mu     sync.Mutex
	epochs []uint64
	err    error
	stop   chan struct{}
	done   chan struct{}
}

func startSlotSampler(t *testing.T, pg *pgtest.Cluster) *slotSampler {
	t.Helper()
	conn := connect(t, pg)
	s := &slotSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			var app *string
			err := conn.QueryRow(context.Background(), `SELECT a.application_name FROM pg_replication_slots s
				JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = 'baton_slot_default'`).Scan(&app)
			s.mu.Lock()
			switch {
			case err != nil && err != pgx.ErrNoRows:
				s.err = err
			case app != nil:
				e, perr := strconv.ParseUint((*app)[strings.LastIndex(*app, ":")+1:], 10, 64)
				if perr != nil {
					s.err = fmt.Errorf("slot held by %q", *app)
				} else if n := len(s.epochs); n > 0 && e < s.epochs[n-1] {
					s.err = fmt.Errorf("slot held by epoch %d after epoch %d", e, s.epochs[n-1])
				} else if n == 0 || s.epochs[n-1] != e {
					s.epochs = append(s.epochs, e)
				}
			}
			failed := s.err != nil
			s.mu.Unlock()
			if failed {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return s
}

func (s *slotSampler) finish() ([]uint64, error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochs, s.err
}

// A worker frozen (SIGSTOP) while it holds the stream loses it: its broker
// sees the stream silent and, after BATON_WORKER_ABSENCE_TIMEOUT, lets the
// lock go to the other pod. When the frozen worker resumes (SIGCONT) with
// changes still buffered in its sockets, its lease has expired on its own
// clock: it writes nothing more to the shared file. The file holds every
// committed transaction exactly once.
func TestFrozenWorkerWritesNothingAfterResume(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(context.Background(), "CREATE TABLE items (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "changes.jsonl")
	absence := map[string]string{"BATON_WORKER_ABSENCE_TIMEOUT": "1s"}
	a, b := newPod(t, pg, "a", out, absence), newPod(t, pg, "b", out, absence)
	frozen := awaitActive(t, 30*time.Second, a, b)
	next := a
	if frozen == a {
		next = b
	}
	w := startWriter(t, pg)
	count := func() int {
		txns, err := readOutput(out)
		if err != nil {
			t.Fatal(err)
		}
		return len(txns)
	}
	progress := func(after string) {
		t.Helper()
		want := count() + 20
		if err := harness.AwaitEvery(30*time.Second, 100*time.Millisecond, fmt.Sprintf("%d transactions in the file %s", want, after), func() (bool, error) {
			return count() >= want, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	progress("at the start")
	t.Logf("SIGSTOP to the worker of pod %s", frozen.Name())
	if err := frozen.Worker().Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	awaitActive(t, 30*time.Second, next)
	progress("after the other pod took over")
	t.Logf("SIGCONT to the worker of pod %s", frozen.Name())
	released := strings.Count(frozen.Worker().Output(), `msg="lease released"`)
	if err := frozen.Worker().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// It stops on its own clock: it sees the lease lost ("lease lost:
	// stopping at once"), or first its walsender ended by the successor
	// ("delivery failed"); either way it writes nothing more (mayWrite)
	// and then releases the lease. The file's contents, checked below,
	// say whether it wrote after resuming.
	if err := harness.Await(20*time.Second, "the resumed worker to release the lease", func() (bool, error) {
		return strings.Count(frozen.Worker().Output(), `msg="lease released"`) > released, nil
	}); err != nil {
		t.Fatal(err)
	}
	progress("after the frozen worker resumed")

	committed := w.finish()
	var txns []txn
	if err := harness.AwaitEvery(30*time.Second, 100*time.Millisecond, fmt.Sprintf("all %d committed transactions in the file", len(committed)), func() (bool, error) {
		var err error
		txns, err = readOutput(out)
		return len(txns) >= len(committed), err
	}); err != nil {
		t.Error(err)
	}
	for i := range max(len(txns), len(committed)) {
		var got, want string
		if i < len(txns) {
			got = idsText(txns[i].ids)
		}
		if i < len(committed) {
			want = idsText(committed[i])
		}
		if got != want {
			t.Fatalf("transaction %d of %d committed (%d in the file): file has [%s], committed [%s]", i, len(committed), len(txns), got, want)
		}
	}
	t.Logf("%d transactions committed and delivered once each", len(committed))
}
