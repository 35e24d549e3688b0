package lock

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
			durable_lsn    pg_lsn,
			acquired_at    timestamptz NOT NULL,
			granted_at     timestamptz,
			last_heartbeat timestamptz NOT NULL,
			released_at    timestamptz,
			release_cause  text
		)`,
		`COMMENT ON TABLE baton.streams IS 'Baton: one row per replication stream; who holds its advisory lock, with which epoch, and when it last heartbeat'`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create state table: %w", err)
		}
	}
	if err := addColumns(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create state table: %w", err)
	}
	return nil
}

// addedColumns are the columns of baton.streams that tables created by
// earlier brokers lack, with their types.
var addedColumns = []struct{ name, typ string }{
	{"worker_url", "text"},
	{"durable_lsn", "pg_lsn"},
	{"release_cause", "text"},
}

// addColumns adds the addedColumns missing from a state table created
// before they existed. The ALTER runs only when a column is missing: it
// takes an ACCESS EXCLUSIVE lock, and a waiting one would hold up the
// holder's heartbeats behind any reader's open transaction, so it also
// gives up after a few seconds (the session is retried).
func addColumns(ctx context.Context, tx pgx.Tx) error {
	var present []string
	err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(attname::text), '{}') FROM pg_attribute
		WHERE attrelid = 'baton.streams'::regclass AND NOT attisdropped`).Scan(&present)
	if err != nil {
		return fmt.Errorf("migrate state table: %w", err)
	}
	var names, adds []string
	for _, c := range addedColumns {
		if !slices.Contains(present, c.name) {
			names = append(names, c.name)
			adds = append(adds, "ADD COLUMN IF NOT EXISTS "+c.name+" "+c.typ)
		}
	}
	if len(adds) == 0 {
		return nil
	}
	for _, q := range []string{
		`SET LOCAL lock_timeout = '5s'`,
		`ALTER TABLE baton.streams ` + strings.Join(adds, ", "),
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrate state table (add %s): %w", strings.Join(names, ", "), err)
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
