package e2e_test

// Issue 8: nothing lost with per-pod storage. Pod A serves the items shape
// from its own storage and stops gracefully; pod B, on its own empty
// storage, takes the stream and reconciles the publication to its own
// shapes (none), so rows committed while it holds the stream are sent by
// pgoutput to nobody; B then leaves without advancing the slot; A takes the
// stream again. A's storage must not pass for continuous: a client of A's
// shape ends with exactly the table, through a refetch if need be.

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// clientMatches compares what client c holds with want (the rows of its
// shape in PostgreSQL): its materialized rows, and the rows its message
// trace leaves present (checkTrace: no insert of a row it has, no update
// or delete of one it lacks, a must-refetch starts over). It returns how
// many must-refetch messages the client saw.
func clientMatches(t *testing.T, c *clientTrace, want []itemRow) (int, error) {
	t.Helper()
	present, refetches, err := c.check()
	if err != nil {
		return refetches, fmt.Errorf("messages the client saw: %w", err)
	}
	got := c.rows(t)
	sort.SliceStable(got, func(i, j int) bool { return got[i].ID < got[j].ID })
	if d := rowsDiff(got, want); d != "" {
		return refetches, fmt.Errorf("client rows differ from PostgreSQL's: %s", d)
	}
	var traced []itemRow
	for id := range present {
		traced = append(traced, itemRow{ID: id})
	}
	sort.Slice(traced, func(i, j int) bool { return traced[i].ID < traced[j].ID })
	ids := make([]itemRow, len(want))
	for i, r := range want {
		ids[i] = itemRow{ID: r.ID}
	}
	if d := rowsDiff(traced, ids); d != "" {
		return refetches, fmt.Errorf("rows left present by the client's messages differ from PostgreSQL's: %s", d)
	}
	return refetches, nil
}

// rowsDiff describes how got differs from want (both sorted by id): the
// ids missing, the ids extra and the rows whose note differs; "" when they
// are equal.
func rowsDiff(got, want []itemRow) string {
	gm := make(map[int]itemRow, len(got))
	for _, r := range got {
		gm[r.ID] = r
	}
	wm := make(map[int]itemRow, len(want))
	for _, r := range want {
		wm[r.ID] = r
	}
	var missing, extra, changed []int
	for _, r := range want {
		g, ok := gm[r.ID]
		switch {
		case !ok:
			missing = append(missing, r.ID)
		case (g.Note == nil) != (r.Note == nil) || g.Note != nil && *g.Note != *r.Note:
			changed = append(changed, r.ID)
		}
	}
	for _, r := range got {
		if _, ok := wm[r.ID]; !ok {
			extra = append(extra, r.ID)
		}
	}
	if len(missing) == 0 && len(extra) == 0 && len(changed) == 0 && len(got) == len(want) {
		return ""
	}
	return fmt.Sprintf("%d rows, want %d; missing %d %v, extra %d %v, other note %d %v",
		len(got), len(want), len(missing), head(missing), len(extra), head(extra), len(changed), head(changed))
}

// clientOnceItems fetches the items shape from base once with the official
// client (follow.mjs once) and returns its rows by id.
func clientOnceItems(t *testing.T, base string) []itemRow {
	t.Helper()
	var out []itemRow
	for _, r := range clientOnce(t, base, "items") {
		id, ok := r["id"].(float64)
		if !ok {
			t.Fatalf("client row %v: id is not a number", r)
		}
		row := itemRow{ID: int(id)}
		if n, ok := r["note"].(string); ok {
			row.Note = &n
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// walLSN is pg_current_wal_lsn(): every commit so far ends at or before it.
func walLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// slotPosition returns the stream's slot's confirmed_flush_lsn and the pid
// of the walsender consuming it (0 when inactive).
func slotPosition(t *testing.T, conn *pgx.Conn) (pglogrepl.LSN, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	var pid *int32
	if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots
		WHERE slot_name = 'baton_slot_default'`).Scan(&s, &pid); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	if pid == nil {
		return lsn, 0
	}
	return lsn, int(*pid)
}

// stopPod stops a pod gracefully: as Kubernetes does (SIGTERM to the
// worker, then to the broker once the worker has exited), or broker first
// (the broker revokes for its shutdown; the worker releases and is then
// stopped too). Both must exit 0.
func stopPod(t *testing.T, p *harness.Pod, brokerFirst bool) {
	t.Helper()
	if err := p.Stop(brokerFirst, 45*time.Second); err != nil {
		t.Fatal(err)
	}
}

// killPod SIGKILLs a pod's worker and broker.
func killPod(t *testing.T, p *harness.Pod) {
	t.Helper()
	p.Kill()
	for _, proc := range []*harness.Process{p.Worker().Process, p.Broker().Process} {
		if !proc.Exited() {
			t.Fatalf("%s still runs after SIGKILL", proc.Name)
		}
	}
}

var (
	epochRe    = regexp.MustCompile(` epoch=(\d+)`)
	ackedLSNRe = regexp.MustCompile(` acked_lsn=([0-9A-F]+/[0-9A-F]+)`)
	fromLSNRe  = regexp.MustCompile(` from_lsn=([0-9A-F]+/[0-9A-F]+)`)
)

// logPositions returns, for each epoch, the position (key lsnRe) of the
// last line of a worker's log containing msg.
func logPositions(out, msg string, lsnRe *regexp.Regexp) map[uint64]pglogrepl.LSN {
	found := map[uint64]pglogrepl.LSN{}
	for _, line := range logLines(out, msg) {
		e, l := epochRe.FindStringSubmatch(line), lsnRe.FindStringSubmatch(line)
		if e == nil || l == nil {
			continue
		}
		epoch, _ := strconv.ParseUint(e[1], 10, 64)
		lsn, _ := pglogrepl.ParseLSN(l[1])
		found[epoch] = lsn
	}
	return found
}

// gracefulAcks returns the final acknowledgement a worker's log reports
// for each epoch it stopped gracefully.
func gracefulAcks(out string) map[uint64]pglogrepl.LSN {
	return logPositions(out, "replication stopped gracefully", ackedLSNRe)
}

// The exact sequence of issue 8, with variants for how B leaves without
// advancing the slot and for who takes the stream after B.
func TestPerPodStorageSequence(t *testing.T) {
	cases := []struct {
		name string
		// aBrokerFirst stops pod A broker first instead of worker first.
		aBrokerFirst bool
		// leaveB ends pod B's hold on the stream without the slot moving
		// past the rows committed meanwhile (lsn: where they end).
		leaveB func(t *testing.T, pg *pgtest.Cluster, conn *pgx.Conn, b *harness.Pod, lsn pglogrepl.LSN)
		// thirdPod: a pod C with its own storage takes the stream after B,
		// creates the shape again (adding items back to the publication),
		// stores more rows and is SIGKILLed before A returns.
		thirdPod bool
	}{
		{name: "B killed before acknowledging", leaveB: func(t *testing.T, _ *pgtest.Cluster, _ *pgx.Conn, b *harness.Pod, _ pglogrepl.LSN) {
			killPod(t, b)
		}},
		{name: "B's final acknowledgement lost", aBrokerFirst: true, leaveB: leaveBFinalAckLost},
		{name: "PostgreSQL restarted after B", leaveB: func(t *testing.T, pg *pgtest.Cluster, conn *pgx.Conn, b *harness.Pod, lsn pglogrepl.LSN) {
			stopPod(t, b, false)
			before, _ := slotPosition(t, conn)
			if err := pg.Restart(); err != nil {
				t.Fatal(err)
			}
			after, _ := slotPosition(t, connect(t, pg))
			t.Logf("slot confirmed at %s before the PostgreSQL restart, %s after (B's rows end at %s)", before, after, lsn)
		}},
		{name: "third pod C after B", aBrokerFirst: true, thirdPod: true, leaveB: func(t *testing.T, _ *pgtest.Cluster, _ *pgx.Conn, b *harness.Pod, _ pglogrepl.LSN) {
			killPod(t, b)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pg := pgtest.Start(t, pgtest.Options{})
			setupItems(t, pg)
			conn := connect(t, pg)
			proxy := startServiceProxy(t)
			dirA := t.TempDir()

			// Pod A serves the shape; the client follows it.
			a := newActivePod(t, pg, "a", dirA)
			baseA := a.URL()
			proxy.moveTo(t, baseA)
			c := startTrace(t, proxy.URL(), "items")
			c.await(t, 30*time.Second, "the empty table, up to date", func(ev []traceEvent) bool {
				return slices.Contains(ev, traceEvent{Control: "up-to-date"})
			})
			execSQL(t, pg, "INSERT INTO items SELECT g, 'a' FROM generate_series(1, 20) g")
			c.await(t, 30*time.Second, "rows 1-20 from pod A", upToDateWith(20))
			execSQL(t, pg, "INSERT INTO items SELECT g, 'a' FROM generate_series(21, 30) g")
			c.await(t, 30*time.Second, "rows 21-30 from pod A", upToDateWith(30))

			// Pod B, with its own empty storage, waits; A stops gracefully
			// and B takes the stream. No Service endpoint meanwhile: the
			// client keeps A's handle.
			b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir()})
			if err := b.Worker().AwaitStatus("waiting", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			proxy.unroute()
			stopPod(t, a, tc.aBrokerFirst)
			aAck := gracefulAcks(a.Worker().Output())
			if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("pod A stopped (final acknowledgements by epoch %v); pod B active; publication holds %q", aAck, published(t, pg))

			// Changes committed while B holds the stream: new rows, an
			// update and a delete of rows A served.
			execSQL(t, pg,
				"INSERT INTO items SELECT g, 'b' FROM generate_series(31, 50) g",
				"UPDATE items SET note = 'b' WHERE id = 1",
				"DELETE FROM items WHERE id = 2")
			bRows := walLSN(t, conn)
			tc.leaveB(t, pg, conn, b, bRows)
			slot, _ := slotPosition(t, connect(t, pg))
			t.Logf("B gone: slot confirmed at %s; B's changes end at %s", slot, bRows)

			if tc.thirdPod {
				cp := newActivePod(t, pg, "c", t.TempDir())
				baseC := cp.URL()
				proxy.moveTo(t, baseC)
				shapeItems(t, cp.Worker())
				execSQL(t, pg, "INSERT INTO items SELECT g, 'c' FROM generate_series(51, 60) g")
				killPod(t, cp)
				slot, _ := slotPosition(t, connect(t, pg))
				t.Logf("C created the shape and was killed: slot confirmed at %s; publication holds %q", slot, published(t, pg))
			}

			// A takes the stream again on its storage.
			baseA2 := newActivePod(t, pg, "a2", dirA).URL()
			proxy.moveTo(t, baseA2)
			execSQL(t, pg,
				"UPDATE items SET note = 'a2' WHERE id IN (3, 31, 32, 33)",
				"DELETE FROM items WHERE id IN (4, 34)",
				"INSERT INTO items SELECT g, 'a2' FROM generate_series(61, 70) g")
			want := tableRows(t, pg)

			// What A serves to a new client holds every change of B's time.
			if d := rowsDiff(clientOnceItems(t, baseA2), want); d != "" {
				t.Errorf("the items shape pod A serves after B held the stream: %s", d)
			}
			// The client that followed A's shape from the start ends with
			// exactly the table.
			c.await(t, 60*time.Second, "row 70 from pod A again, up to date", upToDateWith(70))
			refetches, err := clientMatches(t, c, want)
			n409, log409 := proxy.conflicts()
			t.Logf("client refetches %d; %d responses 409; responses relayed %v; %v", refetches, n409, proxy.counts(), log409)
			if err != nil {
				t.Fatalf("the client of A's shape: %v", err)
			}
		})
	}
}

// leaveBFinalAckLost stops B gracefully while its walsender is frozen
// (SIGSTOP), so that B's final acknowledgement is never read; the
// walsender is thawed once B's worker has exited. This is the race of the
// issue (the worker ends its walsender before it read the final
// acknowledgement) made certain.
func leaveBFinalAckLost(t *testing.T, _ *pgtest.Cluster, conn *pgx.Conn, b *harness.Pod, lsn pglogrepl.LSN) {
	t.Helper()
	_, pid := slotPosition(t, conn)
	if pid == 0 {
		t.Fatal("no walsender holds the slot while pod B is active")
	}
	// B's walsender has sent everything up to the rows: B's final
	// acknowledgement would cover them.
	if err := harness.Await(20*time.Second, "B's walsender past B's rows", func() (bool, error) {
		var sent *string
		err := conn.QueryRow(context.Background(), "SELECT sent_lsn::text FROM pg_stat_replication WHERE pid = $1", pid).Scan(&sent)
		if errors.Is(err, pgx.ErrNoRows) || sent == nil {
			return false, err
		}
		s, err := pglogrepl.ParseLSN(*sent)
		return s >= lsn, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	stopPod(t, b, false)
	thaw()
	if err := harness.Await(20*time.Second, "B's walsender gone", func() (bool, error) {
		_, active := slotPosition(t, conn)
		return active == 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("B's final acknowledgements by epoch: %v (its rows end at %s)", gracefulAcks(b.Worker().Output()), lsn)
}
