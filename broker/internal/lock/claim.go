package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Claim is one acquisition of the stream's lock by a Session: it owns the
// stream's epoch (DESIGN I5) from Session.Claim, which bumps it, to
// Release. Every later write to the stream's row of baton.streams is fenced
// by that epoch and the session's backend pid, so a broker that lost the
// lock cannot overwrite its successor's row. Like its Session, a Claim is
// not safe for concurrent use.
type Claim struct {
	s     *Session
	epoch uint64
	// granted: epoch has been handed to a worker; the next grant bumps it.
	granted bool
	// acquiredAt is PostgreSQL's clock at the claim.
	acquiredAt time.Time
}

// Claim records a fresh acquisition: it bumps the stream's epoch and
// records this session as holder and, when worker.ID is not empty, the
// grant to that worker (and its advertised URL) in the same statement (one
// round trip on the handoff path; see Claim.Grant). It fails with
// ErrLockLost unless the session holds the lock; this is the one statement
// that checks pg_locks (later writes are fenced by epoch and backend pid,
// which a session lock cannot lose without its session ending).
func (s *Session) Claim(ctx context.Context, worker Grantee) (*Claim, error) {
	c := &Claim{s: s}
	var epoch int64
	err := s.conn.QueryRow(ctx, `
		INSERT INTO baton.streams AS st (stream_id, epoch, holder, backend_pid, worker, worker_url, acquired_at, granted_at, last_heartbeat)
		SELECT $1, 1, $2, pg_backend_pid(), nullif($5, ''), CASE WHEN $5 <> '' THEN nullif($6, '') END,
		       now(), CASE WHEN $5 <> '' THEN now() END, now() WHERE `+ownedSQL+`
		ON CONFLICT (stream_id) DO UPDATE SET
			epoch = st.epoch + 1, holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid,
			worker = EXCLUDED.worker, worker_url = EXCLUDED.worker_url, acquired_at = now(),
			granted_at = EXCLUDED.granted_at, last_heartbeat = now(), released_at = NULL, durable_lsn = NULL
		RETURNING epoch, acquired_at`,
		s.opts.StreamID, s.opts.Holder, s.ns, s.objid, worker.ID, worker.URL).Scan(&epoch, &c.acquiredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrLockLost
	}
	if err != nil {
		return nil, fmt.Errorf("claim stream: %w", err)
	}
	c.epoch = uint64(epoch)
	return c, nil
}

// Epoch is the stream's current epoch: the claim's, or its latest grant's.
func (c *Claim) Epoch() uint64 { return c.epoch }

// Granted reports whether the current epoch has been handed to a worker.
func (c *Claim) Granted() bool { return c.granted }

// AcquiredAt is when the claim was made, on PostgreSQL's clock.
func (c *Claim) AcquiredAt() time.Time { return c.acquiredAt }

// fenceSQL matches the stream's row only while it is still ours: our epoch
// and our backend. $1 stream id, $2 epoch.
const fenceSQL = `stream_id = $1 AND epoch = $2 AND backend_pid = pg_backend_pid()`

// Grant makes the epoch of a new grant current and returns it: the claim's
// own epoch for its first grant, one more than the current epoch for each
// later one (a re-grant within one acquisition). It records the grant to
// worker in baton.streams, fenced by the current epoch, unless recorded
// says that Session.Claim already recorded this very grant (the claim's
// first grant, to the worker the claim was made for). On an error the
// epoch is unchanged; once the statement succeeded the new epoch is
// current even if the caller decides not to hand it out.
func (c *Claim) Grant(ctx context.Context, worker Grantee, recorded bool) (uint64, error) {
	next := c.epoch
	if c.granted {
		next++
	}
	if c.granted || !recorded {
		tag, err := c.s.conn.Exec(ctx, `
		UPDATE baton.streams SET epoch = $3, worker = $4, worker_url = nullif($5, ''), granted_at = now(), last_heartbeat = now()
		WHERE `+fenceSQL,
			c.s.opts.StreamID, int64(c.epoch), int64(next), worker.ID, worker.URL)
		if err != nil {
			return 0, fmt.Errorf("record grant: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return 0, c.whyNot(ctx)
		}
	}
	c.epoch, c.granted = next, true
	return next, nil
}

// Heartbeat proves the session alive to PostgreSQL (it resets
// idle_session_timeout) and checks, in the same statement, that the stored
// epoch and backend are still ours. It returns ErrLockLost or ErrReplaced
// when not. The same statement records durable, the last durable position
// the grantee reported (Progress), unless it is 0 (none reported).
func (c *Claim) Heartbeat(ctx context.Context, durable uint64) error {
	tag, err := c.s.conn.Exec(ctx, `UPDATE baton.streams SET last_heartbeat = now(), durable_lsn = coalesce($3::pg_lsn, durable_lsn)
		WHERE `+fenceSQL, c.s.opts.StreamID, int64(c.epoch), lsnParam(durable))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return c.whyNot(ctx)
	}
	return nil
}

// whyNot tells ErrLockLost from ErrReplaced after a fenced write matched no
// row.
func (c *Claim) whyNot(ctx context.Context) error {
	s := c.s
	var owned bool
	var stored int64
	err := s.conn.QueryRow(ctx, `SELECT `+ownedSQL+`, coalesce((SELECT epoch FROM baton.streams WHERE stream_id = $1), 0)
		FROM (SELECT $2::int8) AS unused(x)`, s.opts.StreamID, int64(c.epoch), s.ns, s.objid).Scan(&owned, &stored)
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
	if uint64(stored) != c.epoch {
		return fmt.Errorf("%w (stored %d, ours %d)", ErrReplaced, stored, c.epoch)
	}
	return ErrLockLost
}

// Release unlocks and records the release, with durable as Heartbeat
// does, in one round trip (the unlock first: it is what the standby waits
// for). It ends the claim; the session stays open: Close it afterwards.
func (c *Claim) Release(ctx context.Context, durable uint64) error {
	s := c.s
	durableSQL := "durable_lsn"
	if durable != 0 {
		durableSQL = "'" + FormatLSN(durable) + "'"
	}
	// Multi-statement simple query; every value is an integer, an LSN or a
	// validated stream id ([a-z0-9_]), written as literals.
	sql := fmt.Sprintf(`SELECT pg_advisory_unlock(%d, %d);
		UPDATE baton.streams SET released_at = now(), worker = NULL, worker_url = NULL, durable_lsn = %s
		WHERE stream_id = '%s' AND epoch = %d AND backend_pid = pg_backend_pid()`,
		s.ns, s.key, durableSQL, s.opts.StreamID, int64(c.epoch))
	results, err := s.conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if len(results) == 0 || len(results[0].Rows) != 1 || string(results[0].Rows[0][0]) != "t" {
		return ErrLockLost
	}
	return nil
}

// lsnParam is durable as a pg_lsn parameter: nil (NULL) for 0.
func lsnParam(durable uint64) any {
	if durable == 0 {
		return nil
	}
	return FormatLSN(durable)
}
