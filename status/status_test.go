package status_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/status"
	"github.com/batonhq/baton/tests/pgtest"
)

// TestRead builds a stream's state by hand — a holder with its row in
// baton.streams, a standby waiting for the lock, a slot retaining WAL —
// and reads it back, in text and JSON.
func TestRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	connect := func(app string) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = app
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	exec := func(c *pgx.Conn, sql string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	read := func() status.Stream {
		t.Helper()
		c := connect("reader")
		st, err := status.Read(ctx, c, "s1")
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		return st
	}

	// Nothing yet: no state table, no slot.
	st := read()
	if st.Held || st.Holding != nil || st.Slot != nil || len(st.Waiting) != 0 || st.WhyWaiting() != "nobody holds or waits for the lock" {
		t.Fatalf("empty database: %+v", st)
	}

	holder := connect("baton-broker:s1:pod-a")
	exec(holder, `SELECT pg_advisory_lock($1, $2)`, stream.LockNamespace, stream.LockKey("s1"))
	var pid int32
	if err := holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	exec(holder, `CREATE SCHEMA baton`)
	// A table as the first brokers created it: without the later columns.
	exec(holder, `CREATE TABLE baton.streams (stream_id text PRIMARY KEY, epoch bigint NOT NULL, holder text NOT NULL,
		backend_pid integer NOT NULL, worker text, acquired_at timestamptz NOT NULL, granted_at timestamptz,
		last_heartbeat timestamptz NOT NULL, released_at timestamptz)`)
	exec(holder, `INSERT INTO baton.streams VALUES ('s1', 7, 'baton-broker:s1:pod-a', pg_backend_pid(), 'worker@pod-a',
		now() - interval '1 minute', now() - interval '59 seconds', now() - interval '1 second', NULL)`)
	standby := connect("baton-broker:s1:pod-b")
	waiting := make(chan error, 1)
	go func() {
		_, err := standby.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, stream.LockNamespace, stream.LockKey("s1"))
		waiting <- err
	}()
	exec(holder, `SELECT pg_create_logical_replication_slot('baton_slot_s1', 'pgoutput')`)
	exec(holder, `CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 10000) g`)
	deadline := time.Now().Add(10 * time.Second)
	for st = read(); len(st.Waiting) == 0 && time.Now().Before(deadline); st = read() {
		time.Sleep(20 * time.Millisecond)
	}

	if !st.Held || st.Lock.PID != pid || st.Lock.App != "baton-broker:s1:pod-a" {
		t.Fatalf("lock: held %v by %+v, want pid %d", st.Held, st.Lock, pid)
	}
	h := st.Holding
	if h == nil || h.Epoch != 7 || h.BackendPID != pid || !h.Alive || h.Worker != "worker@pod-a" || h.WorkerURL != "" ||
		h.DurableLSN != 0 || h.GrantedAt == nil || h.ReleasedAt != nil || st.Now.Sub(h.AcquiredAt) < time.Minute {
		t.Fatalf("holding: %+v", h)
	}
	if len(st.Waiting) != 1 || st.Waiting[0].App != "baton-broker:s1:pod-b" || st.Waiting[0].WaitStart == nil {
		t.Fatalf("waiting: %+v", st.Waiting)
	}
	if why := st.WhyWaiting(); !strings.Contains(why, "held by baton-broker:s1:pod-a (epoch 7") {
		t.Fatalf("why standbys wait: %s", why)
	}
	sl := st.Slot
	if sl == nil || sl.Name != "baton_slot_s1" || sl.Active || sl.WALStatus != "reserved" || sl.Retained < 1<<20 ||
		sl.Lag < 1<<20 || sl.RestartLSN == 0 || sl.ConfirmedLSN == 0 || sl.Walsender != nil {
		t.Fatalf("slot: %+v", sl)
	}
	if len(st.Sessions) != 2 || st.Sessions[0].Role != "baton-broker" {
		t.Fatalf("sessions: %+v", st.Sessions)
	}

	var text bytes.Buffer
	if err := st.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"holder ", "baton-broker:s1:pod-a (backend pid", "epoch ", "since ", "last heartbeat ",
		"slot ", "baton_slot_s1: inactive", "slot wal status ", " reserved", "retained wal ", " MiB (", "lag ",
		"standbys ", "baton-broker:s1:pod-b (backend pid", "why standbys wait ", "sessions "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text has no %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := st.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Held          bool    `json:"held"`
		Epoch         uint64  `json:"epoch"`
		Holder        string  `json:"holder"`
		Since         string  `json:"since"`
		LastHeartbeat string  `json:"last_heartbeat"`
		DurableLSN    *string `json:"durable_lsn"`
		Slot          struct {
			WALStatus string  `json:"wal_status"`
			Retained  int64   `json:"retained_wal_bytes"`
			Lag       int64   `json:"lag_bytes"`
			Restart   string  `json:"restart_lsn"`
			Walsender *string `json:"walsender"`
		} `json:"slot"`
		Waiting []struct {
			App       string `json:"application_name"`
			WaitStart string `json:"wait_start"`
		} `json:"waiting"`
		Why string `json:"why_standby_waits"`
	}
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, js.String())
	}
	if !got.Held || got.Epoch != 7 || got.Holder != h.Holder || got.Since == "" || got.LastHeartbeat == "" || got.DurableLSN != nil ||
		got.Slot.WALStatus != "reserved" || got.Slot.Retained != sl.Retained || got.Slot.Lag != sl.Lag || got.Slot.Restart != status.FormatLSN(sl.RestartLSN) ||
		got.Slot.Walsender != nil || len(got.Waiting) != 1 || got.Waiting[0].WaitStart == "" || got.Why != st.WhyWaiting() {
		t.Fatalf("JSON:\n%s", js.String())
	}

	// The holder lets go: the standby takes the lock.
	exec(holder, `SELECT pg_advisory_unlock($1, $2)`, stream.LockNamespace, stream.LockKey("s1"))
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	if st = read(); !st.Held || st.Lock.App != "baton-broker:s1:pod-b" || len(st.Waiting) != 0 ||
		!strings.Contains(st.WhyWaiting(), "no standby") {
		t.Fatalf("after the handoff: %+v (%s)", st, st.WhyWaiting())
	}
}
