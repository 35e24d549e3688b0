// Package replication consumes the stream's logical replication slot with
// pgoutput while the worker holds its lease: it prepares the publication and
// the slot, ends a stale predecessor's walsender (only one with an older
// epoch), streams from the slot's confirmed position, appends each committed
// transaction to durable storage, and acknowledges to PostgreSQL only what
// storage reports durable.
//
// A run's start is the path from a grant to streaming, so it waits for as
// little as it can: the replication connection (named with the epoch from
// its first byte) is dialed from the grant on, alongside the work on the
// admin session (which the caller may have opened while standing by:
// ConnectAdmin, WarmUp), and is first used for CREATE_REPLICATION_SLOT or
// START_REPLICATION, after the slot was found free for this epoch and
// after everything the caller checks before calling Run (the shapes'
// publication coverage). Opening it touches no slot.
package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSuperseded means the slot is being consumed by a worker with a newer
// epoch: this worker is stale and must not touch the stream.
var ErrSuperseded = errors.New("slot is consumed by a worker with a newer epoch")

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// AppName is the application_name of a worker's replication connection:
// baton-worker:<stream id>:<epoch>.
func AppName(streamID string, epoch uint64) string {
	return fmt.Sprintf("baton-worker:%s:%d", streamID, epoch)
}

// epochOf parses the epoch from a worker's application_name; ok is false
// for anything else.
func epochOf(appName, streamID string) (uint64, bool) {
	prefix := "baton-worker:" + streamID + ":"
	if !strings.HasPrefix(appName, prefix) {
		return 0, false
	}
	e, err := strconv.ParseUint(strings.TrimPrefix(appName, prefix), 10, 64)
	return e, err == nil
}

// ensurePublication creates the stream's publication when missing (with no
// tables: shapes add theirs).
func ensurePublication(ctx context.Context, conn *pgx.Conn, pub string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", pub).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE PUBLICATION "+quoteIdent(pub))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.DuplicateObject { // created meanwhile
		return nil
	}
	if err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	return nil
}

// WarmUp runs, on conn, the reads that Run makes of the publication and
// the slot at the start of a lease, and discards what they return: see
// shapes.WarmUp. It writes nothing and touches no slot.
func WarmUp(ctx context.Context, conn *pgx.Conn, slot, pub string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", pub).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	_, err := readSlot(ctx, conn, slot)
	return err
}

// slotState is what pg_replication_slots says about the slot.
type slotState struct {
	exists       bool
	plugin       string
	activePID    int32
	activeApp    string
	confirmed    string
	walStatus    string
	restartLSN   string
	hasActivePID bool
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotState, error) {
	var st slotState
	var pid *int32
	var app, confirmed, walStatus, restart *string
	err := conn.QueryRow(ctx, `
		SELECT s.plugin, s.active_pid, a.application_name, s.confirmed_flush_lsn::text, s.wal_status, s.restart_lsn::text
		FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, slot).Scan(&st.plugin, &pid, &app, &confirmed, &walStatus, &restart)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("look up slot: %w", err)
	}
	st.exists = true
	if pid != nil {
		st.activePID, st.hasActivePID = *pid, true
	}
	for dst, src := range map[*string]*string{&st.activeApp: app, &st.confirmed: confirmed, &st.walStatus: walStatus, &st.restartLSN: restart} {
		if src != nil {
			*dst = *src
		}
	}
	return st, nil
}

// takeSlot makes the slot free for this worker: if a walsender of an older
// (or unknown) epoch still holds it — left by a dead, frozen or partitioned
// predecessor whose lease has expired — it is terminated; a newer epoch's
// walsender is never touched (ErrSuperseded). It returns the slot's state
// once inactive, or exists=false when there is no slot.
func takeSlot(ctx context.Context, conn *pgx.Conn, slot, streamID string, epoch uint64, log func(string, ...any)) (slotState, error) {
	deadline := time.Now().Add(15 * time.Second)
	terminated := int32(0)
	for {
		st, err := readSlot(ctx, conn, slot)
		if err != nil || !st.exists || !st.hasActivePID {
			return st, err
		}
		other, known := epochOf(st.activeApp, streamID)
		if known && other >= epoch {
			return st, fmt.Errorf("%w (slot %s active for pid %d, %s; ours is epoch %d)", ErrSuperseded, slot, st.activePID, st.activeApp, epoch)
		}
		if terminated != st.activePID {
			log("ending a stale walsender that still holds the slot", "slot", slot, "pid", st.activePID,
				"application_name", st.activeApp, "epoch", epoch)
			if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", st.activePID); err != nil {
				return st, fmt.Errorf("terminate stale walsender %d: %w", st.activePID, err)
			}
			terminated = st.activePID
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("slot %s still active for pid %d after terminating it", slot, st.activePID)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// awaitConfirmed waits until the slot's confirmed_flush_lsn has reached
// lsn: the walsender has read the acknowledgement sent up to lsn. It polls
// until ctx ends.
func awaitConfirmed(ctx context.Context, conn *pgx.Conn, slot string, lsn uint64) error {
	for {
		var confirmed *string
		err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&confirmed)
		if err != nil {
			return fmt.Errorf("read the slot's confirmed position: %w", err)
		}
		if confirmed != nil {
			c, err := pglogrepl.ParseLSN(*confirmed)
			if err != nil {
				return fmt.Errorf("read the slot's confirmed position: %w", err)
			}
			if uint64(c) >= lsn {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slot %s confirmed only up to %v: %w", slot, deref(confirmed), ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// endOwnWalsender ends this worker's own walsender (named appName) and
// waits until PostgreSQL no longer lists it, bounded by ctx: a walsender
// whose client closed the connection exits a moment later, and one a proxy
// kept open exits when terminated. The caller sends Released after it, and
// Released promises that the walsender is gone (lease.proto W7).
func endOwnWalsender(ctx context.Context, conn *pgx.Conn, slot, appName string) error {
	for {
		// pg_terminate_backend(pid, timeout) waits up to timeout for the
		// backend to exit.
		var left int
		err := conn.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, 1000))
			FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1`, appName).Scan(&left)
		if err != nil {
			return fmt.Errorf("end own walsender of slot %s: %w", slot, err)
		}
		if left == 0 {
			var active bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
				WHERE backend_type = 'walsender' AND application_name = $1)`, appName).Scan(&active); err != nil {
				return fmt.Errorf("end own walsender of slot %s: %w", slot, err)
			}
			if !active {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("end own walsender of slot %s: %w", slot, context.Cause(ctx))
		case <-time.After(10 * time.Millisecond):
		}
	}
}
