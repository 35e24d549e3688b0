package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/broker/internal/lock"
	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const streamID = "claims"

// session connects a lock session named name and creates the state table.
func session(t *testing.T, ctx context.Context, url, name string) *lock.Session {
	t.Helper()
	s, err := lock.Connect(ctx, lock.Options{
		DatabaseURL: url, StreamID: streamID, Holder: "baton-broker:" + streamID + ":" + name, SessionTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	if err := s.EnsureSchema(ctx); err != nil {
		t.Fatalf("EnsureSchema: %v", err)
	}
	return s
}

// TestClaimOwnsTheEpoch: a claim bumps the stream's epoch, each grant after
// the first bumps it again, every write is fenced by it, and the next
// holder's claim continues from it.
func TestClaimOwnsTheEpoch(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	status := func() lock.Status {
		t.Helper()
		st, err := lock.ReadStatus(ctx, conn, streamID)
		if err != nil {
			t.Fatalf("ReadStatus: %v", err)
		}
		return st
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	a := session(t, ctx, pg.URL(), "a")
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	c1, err := a.Claim(ctx, lock.Grantee{})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if c1.Epoch() != 1 || c1.Granted() || c1.Previous().Recorded {
		t.Fatalf("first claim: epoch %d, granted %v, previous %+v; want 1, false, none", c1.Epoch(), c1.Granted(), c1.Previous())
	}
	grants := []struct {
		worker   lock.Grantee
		recorded bool
		want     uint64
	}{
		{lock.Grantee{ID: "w1", URL: "http://10.0.0.1:3000"}, false, 1}, // the claim's own epoch
		{lock.Grantee{ID: "w2"}, true, 2},                               // recorded only counts for the first grant
	}
	for _, g := range grants {
		e, err := c1.Grant(ctx, g.worker, g.recorded)
		if err != nil || e != g.want || c1.Epoch() != g.want || !c1.Granted() {
			t.Fatalf("Grant(%+v) = %d, %v (Epoch %d); want %d", g.worker, e, err, c1.Epoch(), g.want)
		}
		if st := status(); st.Epoch != g.want || st.Worker != g.worker.ID || st.WorkerURL != g.worker.URL {
			t.Fatalf("after Grant(%+v): state table %+v", g.worker, st)
		}
	}
	// Heartbeats record the worker's durable position; 0 keeps the last.
	for _, d := range []uint64{0x1_016B3748, 0} {
		if err := c1.Heartbeat(ctx, d); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
		if st := status(); st.DurableLSN != 0x1_016B3748 {
			t.Fatalf("after Heartbeat(%X): durable lsn %X, want 1/16B3748", d, st.DurableLSN)
		}
	}

	// Another epoch in the row while the lock is still held: replaced.
	exec(`UPDATE baton.streams SET epoch = 9 WHERE stream_id = '` + streamID + `'`)
	if err := c1.Heartbeat(ctx, 0x2_0000000); !errors.Is(err, lock.ErrReplaced) {
		t.Fatalf("Heartbeat after another epoch was stored = %v, want ErrReplaced", err)
	}
	if _, err := c1.Grant(ctx, lock.Grantee{ID: "w3"}, false); !errors.Is(err, lock.ErrReplaced) || c1.Epoch() != 2 {
		t.Fatalf("Grant after another epoch was stored = %v (Epoch %d), want ErrReplaced and epoch 2", err, c1.Epoch())
	}
	exec(`UPDATE baton.streams SET epoch = 2 WHERE stream_id = '` + streamID + `'`)

	// Handoff: b waits, a releases, b's claim continues the epoch and
	// records its worker in the same statement.
	b := session(t, ctx, pg.URL(), "b")
	acquired := make(chan error, 1)
	go func() { acquired <- b.Acquire(ctx) }()
	if err := c1.Release(ctx, 0x1_10000000, "shutdown; DROP TABLE x"); err == nil {
		t.Fatal("Release with a cause that is not a constant succeeded")
	}
	if err := c1.Release(ctx, 0x1_10000000, lock.ReleaseWorkerStopping); err != nil {
		t.Fatalf("Release: %v", err)
	}
	released := status()
	if released.ReleasedAt == nil || released.DurableLSN != 0x1_10000000 || released.ReleaseCause != lock.ReleaseWorkerStopping {
		t.Fatalf("after Release: %+v, want released (worker_stopping) with durable lsn 1/10000000", released)
	}
	if err := <-acquired; err != nil {
		t.Fatalf("b Acquire: %v", err)
	}
	c2, err := b.Claim(ctx, lock.Grantee{ID: "w4", URL: "http://10.0.0.4:3000"})
	if err != nil || c2.Epoch() != 3 {
		t.Fatalf("b Claim: epoch %v, %v; want 3", c2, err)
	}
	if st := status(); st.DurableLSN != 0 || st.ReleaseCause != "" {
		t.Fatalf("a new claim kept its predecessor's durable lsn %X or release cause %q", st.DurableLSN, st.ReleaseCause)
	}
	// The claim saw the row it replaced.
	if p := c2.Previous(); !p.Recorded || p.Holder != released.Holder || p.Epoch != 2 || p.ReleasedAt == nil ||
		!p.ReleasedAt.Equal(*released.ReleasedAt) || p.ReleaseCause != lock.ReleaseWorkerStopping ||
		!p.End().Equal(*released.ReleasedAt) || !p.AcquiredAt.Equal(released.AcquiredAt) {
		t.Fatalf("b's claim: previous %+v, want a's released holding %+v", p, released)
	}
	claimed := status()
	if e, err := c2.Grant(ctx, lock.Grantee{ID: "w4", URL: "http://10.0.0.4:3000"}, true); err != nil || e != 3 {
		t.Fatalf("recorded Grant = %d, %v; want 3", e, err)
	}
	if st := status(); st.Worker != "w4" || st.GrantedAt == nil || !st.GrantedAt.Equal(*claimed.GrantedAt) {
		t.Fatalf("recorded Grant wrote the row: %+v, claimed %+v", st, claimed)
	}

	// a no longer holds the lock: its claim is fenced out.
	if err := c1.Heartbeat(ctx, 0x3_0000000); !errors.Is(err, lock.ErrLockLost) {
		t.Fatalf("old claim's Heartbeat = %v, want ErrLockLost", err)
	}
	if err := c1.Release(ctx, 0x3_0000000, lock.ReleaseShutdown); !errors.Is(err, lock.ErrLockLost) {
		t.Fatalf("old claim's Release = %v, want ErrLockLost", err)
	}
	if st := status(); st.Epoch != 3 || st.Worker != "w4" || st.ReleasedAt != nil || st.DurableLSN != 0 {
		t.Fatalf("the old claim changed the new holder's row: %+v", st)
	}

	// b's session ends without a release: the next claim finds no release,
	// and the holding's end is its last heartbeat.
	if err := c2.Heartbeat(ctx, 0); err != nil {
		t.Fatalf("b Heartbeat: %v", err)
	}
	beat := status()
	b.Close(ctx)
	c := session(t, ctx, pg.URL(), "c")
	if err := c.Acquire(ctx); err != nil {
		t.Fatalf("c Acquire: %v", err)
	}
	c3, err := c.Claim(ctx, lock.Grantee{})
	if err != nil {
		t.Fatalf("c Claim: %v", err)
	}
	if p := c3.Previous(); !p.Recorded || p.Epoch != 3 || p.ReleasedAt != nil || p.ReleaseCause != "" ||
		!p.End().Equal(beat.LastHeartbeat) {
		t.Fatalf("c's claim after b's session ended: previous %+v, want epoch 3, unreleased, ended at %s", p, beat.LastHeartbeat)
	}
}

// TestWatcherHearsAnnounce: a Watcher wakes when the stream's grant is
// announced, not for another stream's, and after its wait when nothing is;
// it stays usable after a wait that timed out.
func TestWatcherHearsAnnounce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	a := session(t, ctx, pg.URL(), "a")
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	c, err := a.Claim(ctx, lock.Grantee{ID: "w1", URL: "http://10.0.0.1:3000"})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	opts := lock.Options{DatabaseURL: pg.URL(), StreamID: streamID, Holder: "baton-broker:" + streamID + ":b", SessionTimeout: 10 * time.Second}
	w, err := lock.DialWatcher(ctx, opts)
	if err != nil {
		t.Fatalf("DialWatcher: %v", err)
	}
	defer w.Close(context.Background())
	other, err := lock.DialWatcher(ctx, lock.Options{DatabaseURL: pg.URL(), StreamID: "other", Holder: "baton-broker:other:b", SessionTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("DialWatcher: %v", err)
	}
	defer other.Close(context.Background())

	start := time.Now()
	if heard, err := w.AwaitChange(ctx, 200*time.Millisecond); heard || err != nil || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("nothing announced: AwaitChange = %v, %v after %s; want false, nil after 200ms", heard, err, time.Since(start))
	}
	if err := c.Announce(ctx); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	if heard, err := w.AwaitChange(ctx, 10*time.Second); !heard || err != nil {
		t.Fatalf("after Announce: AwaitChange = %v, %v; want true", heard, err)
	}
	if heard, err := other.AwaitChange(ctx, 200*time.Millisecond); heard || err != nil {
		t.Fatalf("another stream's watcher: AwaitChange = %v, %v; want false, nil", heard, err)
	}
	st, err := w.Status(ctx)
	if err != nil || st.WorkerURL != "http://10.0.0.1:3000" {
		t.Fatalf("Status after the wait: %+v, %v; want worker url http://10.0.0.1:3000", st, err)
	}
}

// TestReleaseCommittedBeforeUnlock: the successor's claim sees the
// release, cause included, even when the release's write has to wait: the
// lock is let go only once the release is committed. A third session holds
// the stream's row locked while the holder releases; until it lets go, the
// holder must still hold the advisory lock (before, it unlocked first, and
// the waiting broker's claim read the row without the release).
func TestReleaseCommittedBeforeUnlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pg := pgtest.Start(t, pgtest.Options{})
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	blocker, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(context.Background())

	a := session(t, ctx, pg.URL(), "a")
	if err := a.Acquire(ctx); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	ca, err := a.Claim(ctx, lock.Grantee{ID: "w1"})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	b := session(t, ctx, pg.URL(), "b")
	type claimed struct {
		c   *lock.Claim
		err error
	}
	bClaim := make(chan claimed, 1)
	go func() {
		if err := b.Acquire(ctx); err != nil {
			bClaim <- claimed{nil, err}
			return
		}
		c, err := b.Claim(ctx, lock.Grantee{ID: "w2"})
		bClaim <- claimed{c, err}
	}()
	// b waits for the lock.
	awaitSQL(t, ctx, conn, "b to wait for the advisory lock", `SELECT EXISTS (SELECT FROM pg_locks
		WHERE locktype = 'advisory' AND NOT granted AND pid = $1)`, int32(b.PID()))

	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT FROM baton.streams WHERE stream_id = $1 FOR NO KEY UPDATE", streamID); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() { released <- ca.Release(ctx, 0x5_00000000, lock.ReleaseWorkerStopping) }()
	// a's release waits for the row lock.
	awaitSQL(t, ctx, conn, "a's release to wait for the row", `SELECT EXISTS (SELECT FROM pg_stat_activity
		WHERE pid = $1 AND wait_event_type = 'Lock')`, int32(a.PID()))
	var held bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1)`,
		int32(a.PID())).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatal("a let go of the lock while its release was not yet committed")
	}
	select {
	case r := <-bClaim:
		t.Fatalf("b claimed (%v) while a's release was not yet committed", r.err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatalf("Release: %v", err)
	}
	var r claimed
	select {
	case r = <-bClaim:
	case <-ctx.Done():
		t.Fatal("b did not claim the lock after a's release")
	}
	if r.err != nil {
		t.Fatalf("b: %v", r.err)
	}
	if p := r.c.Previous(); p.ReleasedAt == nil || p.ReleaseCause != lock.ReleaseWorkerStopping || p.Epoch != ca.Epoch() {
		t.Fatalf("b's claim: previous %+v, want a's release (worker_stopping, epoch %d)", p, ca.Epoch())
	}
}

// awaitSQL waits until query (one boolean) is true.
func awaitSQL(t *testing.T, ctx context.Context, conn *pgx.Conn, what, query string, args ...any) {
	t.Helper()
	if err := harness.Await(10*time.Second, what, func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, query, args...).Scan(&ok)
		return ok, err
	}); err != nil {
		t.Fatal(err)
	}
}
