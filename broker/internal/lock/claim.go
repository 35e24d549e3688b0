package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	lsntext "github.com/batonhq/baton/status"
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
	// serverStart is when PostgreSQL last started (its clock).
	serverStart time.Time
	// previous is the stream's row as the claim found it.
	previous Previous
}

// Previous is the stream's previous holding, as the row of baton.streams
// showed it when a claim replaced it.
type Previous struct {
	// Recorded: the stream had been held before (the row existed).
	Recorded bool
	Holder   string
	Epoch    uint64
	// AcquiredAt and LastHeartbeat are on PostgreSQL's clock.
	AcquiredAt    time.Time
	LastHeartbeat time.Time
	// ReleasedAt is when the previous holder released the lock; nil when
	// its session ended without a release (crash, freeze, partition,
	// PostgreSQL restart).
	ReleasedAt *time.Time
	// ReleaseCause is the previous holder's Release cause ("" when it did
	// not release, or when it was a broker that did not record causes).
	ReleaseCause string
}

// End is when the previous holding ended, as far as the row tells: its
// release, or else its last heartbeat (the session ended at most a lock
// session timeout later).
func (p Previous) End() time.Time {
	if p.ReleasedAt != nil {
		return *p.ReleasedAt
	}
	return p.LastHeartbeat
}

// Release causes, recorded in baton.streams.release_cause.
const (
	// ReleaseShutdown: the broker was stopped (SIGTERM) and its worker
	// released, or the drain timeout passed.
	ReleaseShutdown = "shutdown"
	// ReleaseWorkerStopping: the worker released saying its process is
	// stopping (Kubernetes stops the worker before its broker).
	ReleaseWorkerStopping = "worker_stopping"
	// ReleaseWorkerAbsent: no worker attached within
	// BATON_WORKER_ABSENCE_TIMEOUT.
	ReleaseWorkerAbsent = "worker_absent"
)

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
	p := &c.previous
	var prevEpoch *int64
	var prevHolder, prevCause *string
	var prevAcquired, prevBeat *time.Time
	// The CTE reads the row as it was before the upsert (one snapshot for
	// the whole statement).
	err := s.conn.QueryRow(ctx, `
		WITH prev AS (SELECT holder, epoch, acquired_at, last_heartbeat, released_at, release_cause
		              FROM baton.streams WHERE stream_id = $1)
		INSERT INTO baton.streams AS st (stream_id, epoch, holder, backend_pid, worker, worker_url, acquired_at, granted_at, last_heartbeat)
		SELECT $1, 1, $2, pg_backend_pid(), nullif($5, ''), CASE WHEN $5 <> '' THEN nullif($6, '') END,
		       now(), CASE WHEN $5 <> '' THEN now() END, now() WHERE `+ownedSQL+`
		ON CONFLICT (stream_id) DO UPDATE SET
			epoch = st.epoch + 1, holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid,
			worker = EXCLUDED.worker, worker_url = EXCLUDED.worker_url, acquired_at = now(),
			granted_at = EXCLUDED.granted_at, last_heartbeat = now(), released_at = NULL, durable_lsn = NULL,
			release_cause = NULL
		RETURNING st.epoch, st.acquired_at, (SELECT holder FROM prev), (SELECT epoch FROM prev),
			(SELECT acquired_at FROM prev), (SELECT last_heartbeat FROM prev), (SELECT released_at FROM prev),
			(SELECT release_cause FROM prev), pg_postmaster_start_time()`,
		s.opts.StreamID, s.opts.Holder, s.ns, s.objid, worker.ID, worker.URL).Scan(&epoch, &c.acquiredAt,
		&prevHolder, &prevEpoch, &prevAcquired, &prevBeat, &p.ReleasedAt, &prevCause, &c.serverStart)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrLockLost
	}
	if err != nil {
		return nil, fmt.Errorf("claim stream: %w", err)
	}
	c.epoch = uint64(epoch)
	if prevHolder != nil {
		p.Recorded, p.Holder, p.Epoch = true, *prevHolder, uint64(*prevEpoch)
		p.AcquiredAt, p.LastHeartbeat = *prevAcquired, *prevBeat
		if prevCause != nil {
			p.ReleaseCause = *prevCause
		}
	}
	return c, nil
}

// Previous is the stream's previous holding, as the claim found it.
func (c *Claim) Previous() Previous { return c.previous }

// Announce tells the other brokers' Watchers that this claim granted the
// stream (NOTIFY on HolderChannel), so that their workers learn the new
// holder's worker URL at once. It writes nothing; a failure only means they
// learn it at their next poll.
func (c *Claim) Announce(ctx context.Context) error {
	if _, err := c.s.conn.Exec(ctx, "SELECT pg_notify($1, $2)", HolderChannel, c.s.opts.StreamID); err != nil {
		return fmt.Errorf("announce grant: %w", err)
	}
	return nil
}

// Epoch is the stream's current epoch: the claim's, or its latest grant's.
func (c *Claim) Epoch() uint64 { return c.epoch }

// Granted reports whether the current epoch has been handed to a worker.
func (c *Claim) Granted() bool { return c.granted }

// AcquiredAt is when the claim was made, on PostgreSQL's clock.
func (c *Claim) AcquiredAt() time.Time { return c.acquiredAt }

// ServerStartedAt is when PostgreSQL last started, on its clock, as the
// claim read it.
func (c *Claim) ServerStartedAt() time.Time { return c.serverStart }

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

// Release records the release, with durable as Heartbeat does and cause
// (one of the Release constants), commits it, and then unlocks, in one
// round trip. The order matters: the standby is waiting for the lock, and
// its Claim reads the previous holding with a snapshot taken after it got
// the lock, so a release committed before the unlock is one the successor
// sees (its handoff cause); unlocking first let the successor's claim read
// the row before the release was committed, and report the handoff as a
// session that ended. The release's commit does not wait for its WAL to be
// flushed (synchronous_commit off for that transaction only): it is visible
// to the other sessions at once, and what a crash of PostgreSQL could lose
// with it is only the record of a release whose lock that crash ends
// anyway. It ends the claim; the session stays open: Close it afterwards.
// When the record fails, nothing after it runs: the lock is released by
// that Close.
func (c *Claim) Release(ctx context.Context, durable uint64, cause string) error {
	s := c.s
	if strings.ContainsFunc(cause, func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) {
		return fmt.Errorf("release: cause %q is not one of the Release constants", cause)
	}
	durableSQL := "durable_lsn"
	if durable != 0 {
		durableSQL = "'" + lsntext.FormatLSN(durable) + "'"
	}
	// Multi-statement simple query (the explicit transaction commits
	// before the unlock runs, in a transaction of its own); every value is
	// an integer, an LSN, a validated stream id ([a-z0-9_]) or a cause
	// ([a-z_], checked above), written as literals.
	sql := fmt.Sprintf(`BEGIN;
		SET LOCAL synchronous_commit = off;
		UPDATE baton.streams SET released_at = now(), worker = NULL, worker_url = NULL, durable_lsn = %s,
			release_cause = nullif('%s', '')
		WHERE stream_id = '%s' AND epoch = %d AND backend_pid = pg_backend_pid();
		COMMIT;
		SELECT pg_advisory_unlock(%d, %d)`,
		durableSQL, cause, s.opts.StreamID, int64(c.epoch), s.ns, s.key)
	results, err := s.conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if len(results) != 5 || len(results[4].Rows) != 1 || string(results[4].Rows[0][0]) != "t" {
		return ErrLockLost
	}
	return nil
}

// lsnParam is durable as a pg_lsn parameter: nil (NULL) for 0.
func lsnParam(durable uint64) any {
	if durable == 0 {
		return nil
	}
	return lsntext.FormatLSN(durable)
}
