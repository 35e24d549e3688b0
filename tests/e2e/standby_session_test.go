package e2e_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// A standby worker prepares for a takeover while it waits: it keeps one
// normal session (not a walsender: nothing touches the slot before the
// grant), named baton-worker-admin:<stream>:standby, and has run the
// start's reads on it. The grant hands that very backend to the lease,
// renamed with the epoch; the replication connection, opened after the
// grant, carries the epoch from its start. The worker logs its start-up
// step by step.
func TestStandbyPreparedSession(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir()})
	if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	shapeItems(t, a.Worker())
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir()})
	if err := b.Worker().AwaitStatus("waiting", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := harness.Await(10*time.Second, "worker b's standby session prepared", func() (bool, error) {
		v, ok, err := b.Worker().Metric("baton_worker_standby_prepared")
		return err == nil && ok && v == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, pg)
	ctx := context.Background()
	var standbyPID int32
	var backendType string
	if err := conn.QueryRow(ctx, `SELECT pid, backend_type FROM pg_stat_activity
		WHERE application_name = 'baton-worker-admin:default:standby'`).Scan(&standbyPID, &backendType); err != nil {
		t.Fatalf("the standby's session: %v", err)
	}
	if backendType != "client backend" {
		t.Fatalf("the standby's session is a %q, want a client backend", backendType)
	}
	var senders []string
	rows, err := conn.Query(ctx, "SELECT application_name FROM pg_stat_replication ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var app string
		if err := rows.Scan(&app); err != nil {
			t.Fatal(err)
		}
		senders = append(senders, app)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(senders) != 1 || senders[0] != "baton-worker:default:1" {
		t.Fatalf("walsenders while b stands by: %q; want only the active worker's (epoch 1)", senders)
	}

	if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Worker().AwaitStatus("active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	var epoch int64
	if err := conn.QueryRow(ctx, "SELECT epoch FROM baton.streams WHERE stream_id = 'default'").Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	var app string
	if err := conn.QueryRow(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1", standbyPID).Scan(&app); err != nil {
		t.Fatalf("the standby's session after the grant: %v", err)
	}
	if want := fmt.Sprintf("baton-worker-admin:default:%d", epoch); app != want {
		t.Fatalf("the standby's session is named %q after the grant, want %q (the same backend, renamed)", app, want)
	}
	var holder string
	if err := conn.QueryRow(ctx, `SELECT a.application_name FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = 'baton_slot_default'`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("baton-worker:default:%d", epoch); holder != want {
		t.Fatalf("the slot is held by %q, want %q", holder, want)
	}
	if err := b.Worker().WaitOutput("startup.total=", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mustContain(t, b.Worker().Output(), "startup.admin=", "worker b log")
	if code, err := a.Worker().Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("worker a exit %d %v; want 0", code, err)
	}
}
