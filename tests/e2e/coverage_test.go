package e2e_test

// Publication coverage across overlapping leases (worker/internal/shapes,
// package doc, "Publication coverage"). A worker whose lease overlapped
// its successor's (PostgreSQL ended the broker's lock session at once, so
// the next broker granted before the old one revoked) may store changes
// past a drop of its table that the successor made meanwhile: its
// storage's position then passes the drop, although the changes the drop
// filtered never reached it. The randomized fault test with storage per
// pod found a client sent the delete of a row its shape never got the
// insert of. So a drop recorded by an epoch newer than the storage's
// previous one rebuilds the shapes of its table whatever the position;
// one by the storage's own epoch below its position does not.

import (
	"context"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

func TestCoverageDropByNewerEpoch(t *testing.T) {
	for _, c := range []struct {
		name    string
		newer   bool // the recorded drop's epoch: the storage's last + 1, or the storage's last
		rebuilt bool
	}{
		{"drop by a newer epoch below the position", true, true},
		{"drop by the storage's own epoch below the position", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pg := pgtest.Start(t, pgtest.Options{})
			setupItems(t, pg)
			p := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), BrokerSettings: fastSettings, WorkerSettings: fastSettings})
			if err := p.Worker().AwaitStatus("active", 30*time.Second); err != nil {
				t.Fatal(err)
			}
			q := url.Values{"table": {"items"}, "offset": {"-1"}}
			first := protoGet(t, p.URL(), q, nil)
			h1 := first.Header.Get("electric-handle")
			if first.Status != 200 || h1 == "" {
				t.Fatalf("create the shape: %d %s", first.Status, first.Body)
			}
			conn := connect(t, pg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := conn.Exec(ctx, "INSERT INTO items SELECT g, 'n' FROM generate_series(1, 20) g"); err != nil {
				t.Fatal(err)
			}
			var epoch int64
			if err := conn.QueryRow(ctx, "SELECT epoch FROM baton.streams WHERE stream_id = 'default'").Scan(&epoch); err != nil {
				t.Fatal(err)
			}
			// A graceful stop of the worker: its storage's position and the
			// slot's confirmed position are where it stopped.
			if err := p.Worker().Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code, err := p.Worker().Wait(30 * time.Second); err != nil || code != 0 {
				t.Fatalf("worker exit %d, %v", code, err)
			}
			// The drop as a successor of the storage's epoch would have
			// recorded it while this worker still streamed: at the slot's
			// restart_lsn, which is at or below the storage's position (and
			// is not pruned).
			dropEpoch := epoch
			if c.newer {
				dropEpoch = epoch + 1
			}
			if _, err := conn.Exec(ctx, `INSERT INTO baton.publication_changes (stream_id, lsn, epoch, table_name, action)
				SELECT 'default', restart_lsn, $1, '"public"."items"', 'drop' FROM pg_replication_slots WHERE slot_name = 'baton_slot_default'`, dropEpoch); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.Worker().AwaitStatus("active", 30*time.Second); err != nil {
				t.Fatal(err)
			}
			again := protoGet(t, p.URL(), q, nil)
			h2 := again.Header.Get("electric-handle")
			if again.Status != 200 || h2 == "" {
				t.Fatalf("the shape after the restart: %d %s", again.Status, again.Body)
			}
			if rebuilt := h2 != h1; rebuilt != c.rebuilt {
				t.Fatalf("handle %s before the restart, %s after: rebuilt %v, want %v\n%s", h1, h2, rebuilt, c.rebuilt, p.LogTails(30))
			}
			if c.rebuilt {
				// A client of the old handle is told to refetch.
				old := protoGet(t, p.URL(), url.Values{"table": {"items"}, "handle": {h1}, "offset": {"0_inf"}}, nil)
				if old.Status != 409 {
					t.Fatalf("the old handle after the rebuild: %d %s; want 409", old.Status, old.Body)
				}
			}
		})
	}
}
