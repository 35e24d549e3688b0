package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// schemaLockKey serialises creation of the state table between brokers of all
// streams (single-key advisory lock space, objsubid 1, so it never collides
// with a stream lock).
const schemaLockKey int64 = 1650553966_0000

// ownedSQL is true when this session holds the stream's advisory lock.
// $3 is the namespace, $4 the key as pg_locks.objid shows it.
const ownedSQL = `EXISTS (SELECT 1 FROM pg_locks
	WHERE locktype = 'advisory' AND classid = $3::int8::oid AND objid = $4::int8::oid
	  AND objsubid = 2 AND granted AND pid = pg_backend_pid())`

// EnsureSchema creates schema baton and table baton.streams if missing. It is
// safe to run from many brokers at once.
func (s *Session) EnsureSchema(ctx context.Context) error {
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create state table: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	stmts := []string{
		fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", schemaLockKey),
		`CREATE SCHEMA IF NOT EXISTS baton`,
		`CREATE TABLE IF NOT EXISTS baton.streams (
			stream_id      text PRIMARY KEY,
			epoch          bigint NOT NULL,
			holder         text NOT NULL,
			backend_pid    integer NOT NULL,
			worker         text,
			worker_url     text,
			acquired_at    timestamptz NOT NULL,
			granted_at     timestamptz,
			last_heartbeat timestamptz NOT NULL,
			released_at    timestamptz
		)`,
		`COMMENT ON TABLE baton.streams IS 'Baton: one row per replication stream; who holds its advisory lock, with which epoch, and when it last heartbeat'`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create state table: %w", err)
		}
	}
	if err := addWorkerURL(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create state table: %w", err)
	}
	return nil
}

// addWorkerURL adds the column worker_url to a state table created before
// it existed. The ALTER runs only when the column is missing: it takes an
// ACCESS EXCLUSIVE lock, and a waiting one would hold up the holder's
// heartbeats behind any reader's open transaction, so it also gives up
// after a few seconds (the session is retried).
func addWorkerURL(ctx context.Context, tx pgx.Tx) error {
	var present bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
		WHERE attrelid = 'baton.streams'::regclass AND attname = 'worker_url' AND NOT attisdropped)`).Scan(&present)
	if err != nil {
		return fmt.Errorf("migrate state table: %w", err)
	}
	if present {
		return nil
	}
	for _, q := range []string{
		`SET LOCAL lock_timeout = '5s'`,
		`ALTER TABLE baton.streams ADD COLUMN IF NOT EXISTS worker_url text`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrate state table (add worker_url): %w", err)
		}
	}
	return nil
}

// Grantee is the worker a grant is recorded for: its Hello.worker_id and
// Hello.advertise_url (either may be empty).
type Grantee struct {
	ID  string
	URL string
}

// Acquisition is what Claim records.
type Acquisition struct {
	Epoch      uint64
	AcquiredAt time.Time
}

// Claim records a fresh acquisition: it bumps the stream's epoch and records
// this session as holder and, when worker.ID is not empty, the grant to that
// worker (and its advertised URL) in the same statement (one round trip on the handoff path). It
// fails with ErrLockLost unless the session holds the lock; this is the one
// statement that checks pg_locks (later writes are fenced by epoch and
// backend pid, which a session lock cannot lose without its session ending).
func (s *Session) Claim(ctx context.Context, worker Grantee) (Acquisition, error) {
	var a Acquisition
	var epoch int64
	err := s.conn.QueryRow(ctx, `
		INSERT INTO baton.streams AS st (stream_id, epoch, holder, backend_pid, worker, worker_url, acquired_at, granted_at, last_heartbeat)
		SELECT $1, 1, $2, pg_backend_pid(), nullif($5, ''), CASE WHEN $5 <> '' THEN nullif($6, '') END,
		       now(), CASE WHEN $5 <> '' THEN now() END, now() WHERE `+ownedSQL+`
		ON CONFLICT (stream_id) DO UPDATE SET
			epoch = st.epoch + 1, holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid,
			worker = EXCLUDED.worker, worker_url = EXCLUDED.worker_url, acquired_at = now(),
			granted_at = EXCLUDED.granted_at, last_heartbeat = now(), released_at = NULL
		RETURNING epoch, acquired_at`,
		s.opts.StreamID, s.opts.Holder, s.ns, s.objid, worker.ID, worker.URL).Scan(&epoch, &a.AcquiredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrLockLost
	}
	if err != nil {
		return a, fmt.Errorf("claim stream: %w", err)
	}
	a.Epoch = uint64(epoch)
	return a, nil
}

// fenceSQL matches the stream's row only while it is still ours: our epoch
// and our backend. $1 stream id, $2 epoch.
const fenceSQL = `stream_id = $1 AND epoch = $2 AND backend_pid = pg_backend_pid()`

// Grant records that the lease of epoch next is granted to worker (and the
// URL it advertised). When next differs from current (a re-grant within one
// acquisition) the stored epoch must still be current, and becomes next.
func (s *Session) Grant(ctx context.Context, current, next uint64, worker Grantee) error {
	tag, err := s.conn.Exec(ctx, `
		UPDATE baton.streams SET epoch = $3, worker = $4, worker_url = nullif($5, ''), granted_at = now(), last_heartbeat = now()
		WHERE `+fenceSQL,
		s.opts.StreamID, int64(current), int64(next), worker.ID, worker.URL)
	if err != nil {
		return fmt.Errorf("record grant: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return s.whyNot(ctx, current)
	}
	return nil
}

// Heartbeat proves the session alive to PostgreSQL (it resets
// idle_session_timeout) and checks, in the same statement, that the stored
// epoch and backend are still ours. It returns ErrLockLost or ErrReplaced
// when not.
func (s *Session) Heartbeat(ctx context.Context, epoch uint64) error {
	tag, err := s.conn.Exec(ctx, `UPDATE baton.streams SET last_heartbeat = now() WHERE `+fenceSQL,
		s.opts.StreamID, int64(epoch))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return s.whyNot(ctx, epoch)
	}
	return nil
}

// whyNot tells ErrLockLost from ErrReplaced after a guarded write matched no
// row.
func (s *Session) whyNot(ctx context.Context, epoch uint64) error {
	var owned bool
	var stored int64
	err := s.conn.QueryRow(ctx, `SELECT `+ownedSQL+`, coalesce((SELECT epoch FROM baton.streams WHERE stream_id = $1), 0)
		FROM (SELECT $2::int8) AS unused(x)`, s.opts.StreamID, int64(epoch), s.ns, s.objid).Scan(&owned, &stored)
	if err != nil {
		return fmt.Errorf("check lock ownership: %w", err)
	}
	if !owned {
		return ErrLockLost
	}
	var pid uint32
	if err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err == nil && pid != s.pid {
		return ErrNotDirect
	}
	if uint64(stored) != epoch {
		return fmt.Errorf("%w (stored %d, ours %d)", ErrReplaced, stored, epoch)
	}
	return ErrLockLost
}

// Release unlocks and records the release in one round trip (the unlock
// first: it is what the standby waits for). The session stays open; Close
// it afterwards.
func (s *Session) Release(ctx context.Context, epoch uint64) error {
	// Multi-statement simple query; every value is an integer or a validated
	// stream id ([a-z0-9_]), written as literals.
	sql := fmt.Sprintf(`SELECT pg_advisory_unlock(%d, %d);
		UPDATE baton.streams SET released_at = now(), worker = NULL, worker_url = NULL
		WHERE stream_id = '%s' AND epoch = %d AND backend_pid = pg_backend_pid()`,
		s.ns, s.key, s.opts.StreamID, int64(epoch))
	results, err := s.conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	s.acquired = false
	if len(results) == 0 || len(results[0].Rows) != 1 || string(results[0].Rows[0][0]) != "t" {
		return ErrLockLost
	}
	return nil
}

// Unlock releases the advisory lock without touching the state table.
func (s *Session) Unlock(ctx context.Context) error {
	var ok bool
	if err := s.conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1, $2)", s.ns, s.key).Scan(&ok); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	s.acquired = false
	if !ok {
		return ErrLockLost
	}
	return nil
}
