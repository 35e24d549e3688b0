package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// storedEpochs returns the epoch of every record in the storage at dir.
func storedEpochs(t *testing.T, dir string) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range inspect(t, dir) {
		out = append(out, r.Epoch)
	}
	return out
}

// A worker SIGKILLed during writes and started again on the same storage
// loses nothing it acknowledged and stores nothing twice.
func TestWorkerSigkillRestart(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	dir := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, BrokerSettings: fastSettings})
	if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	shapeItems(t, a.Worker())
	w := startWriter(t, pg)
	if err := harness.Await(10*time.Second, "rows stored", func() (bool, error) {
		return len(storedIDs(t, dir)) > 50, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Worker().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Worker().Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The same pod's worker container restarts.
	if err := a.StartWorker(); err != nil {
		t.Fatal(err)
	}
	w2 := a.Worker()
	if err := w2.AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	before := len(storedIDs(t, dir))
	if err := harness.Await(10*time.Second, "rows stored after the restart", func() (bool, error) {
		return len(storedIDs(t, dir)) > before+20, nil
	}); err != nil {
		t.Fatal(err)
	}
	last := w.finish()
	if err := harness.Await(15*time.Second, fmt.Sprintf("row %d stored", last), func() (bool, error) {
		ids := storedIDs(t, dir)
		return len(ids) > 0 && ids[len(ids)-1] == last, nil
	}); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, storedIDs(t, dir), last)
}

// A frozen pod (broker and worker SIGSTOPped during writes, shared storage):
// the standby pod takes over within the session timeout + 3 s, ending the
// stale walsender by epoch; after SIGCONT the old worker writes nothing.
func TestWorkerFrozenPredecessor(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	dir := t.TempDir()
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir, BrokerSettings: fastSettings})
	if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	shapeItems(t, a.Worker())
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir, BrokerSettings: fastSettings})
	if err := b.Broker().AwaitHealth("readiness", serving, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, pg)
	if err := harness.Await(10*time.Second, "rows stored by the first worker", func() (bool, error) {
		return len(storedIDs(t, dir)) > 50, nil
	}); err != nil {
		t.Fatal(err)
	}
	// Freeze outside a storage write, so that the thawed worker notices the
	// lost lease first (TestClientFrozenPredecessor freezes it inside one).
	freezePod(t, a, dir, false)
	frozen := time.Now()
	t.Cleanup(func() {
		_ = a.Worker().Signal(syscall.SIGCONT)
		_ = a.Broker().Signal(syscall.SIGCONT)
	})
	if err := b.Worker().AwaitStatus("active", 3*time.Second+3*time.Second+2*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGSTOP → standby worker active: %s", time.Since(frozen))
	mustContain(t, b.Worker().Output(), "ending a stale walsender", "new worker log")
	newEpoch := storedEpoch(t, connect(t, pg), "default")

	if err := harness.Await(10*time.Second, "rows stored by the second worker", func() (bool, error) {
		epochs := storedEpochs(t, dir)
		return len(epochs) > 0 && epochs[len(epochs)-1] == newEpoch, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	// The thawed worker notices its lease is gone and stops without writing.
	if err := a.Worker().WaitOutput("lease lost", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	last := w.finish()
	if err := harness.Await(15*time.Second, fmt.Sprintf("row %d stored", last), func() (bool, error) {
		ids := storedIDs(t, dir)
		return len(ids) > 0 && ids[len(ids)-1] == last, nil
	}); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, storedIDs(t, dir), last)
	// Epochs in the log never go back: nothing was written by the old
	// worker after the new one began.
	epochs := storedEpochs(t, dir)
	for i := 1; i < len(epochs); i++ {
		if epochs[i] < epochs[i-1] {
			t.Fatalf("record %d has epoch %d after a record of epoch %d", i+1, epochs[i], epochs[i-1])
		}
	}
	if strings.Count(a.Worker().Output(), "replicating") != 1 {
		t.Fatalf("the old worker replicated again after thawing:\n%s", a.Worker().Output())
	}
}

// An idle published table while another table takes heavy writes: the slot
// still advances, so the WAL it retains stays under 16 MB (one segment)
// once the writes stop being heavy.
func TestIdleSlotAdvances(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	conn := connect(t, pg)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE TABLE busy (id bigserial PRIMARY KEY, pad text)"); err != nil {
		t.Fatal(err)
	}
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir()})
	if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	shapeItems(t, a.Worker())
	// About 64 MB of WAL on the unpublished table.
	for range 8 {
		if _, err := conn.Exec(ctx, "INSERT INTO busy (pad) SELECT repeat('x', 1000) FROM generate_series(1, 6000)"); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 16 << 20
	var retained int64
	err := harness.AwaitEvery(60*time.Second, 500*time.Millisecond, "retained WAL under 16 MB", func() (bool, error) {
		// Light writes elsewhere keep WAL moving; a checkpoint logs the
		// running transactions that let restart_lsn follow the confirmed
		// position.
		if _, err := conn.Exec(ctx, "INSERT INTO busy (pad) VALUES ('y')"); err != nil {
			return false, err
		}
		if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
			return false, err
		}
		if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = 'baton_slot_default'`).Scan(&retained); err != nil {
			return false, err
		}
		return retained < bound, nil
	})
	if err != nil {
		t.Fatalf("%v (retained %d bytes)", err, retained)
	}
	t.Logf("retained WAL: %d bytes", retained)
}
