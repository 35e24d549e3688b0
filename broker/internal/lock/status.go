package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/proto/stream"
	lsntext "github.com/batonhq/baton/status"
)

// Querier is what ReadStatus needs of a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Status is what PostgreSQL says about a stream's holder.
type Status struct {
	StreamID   string
	Recorded   bool // the state table has a row for the stream
	Holder     string
	Epoch      uint64
	BackendPID int32
	Worker     string
	WorkerURL  string // the current grantee's advertised URL ("" when none)
	// DurableLSN is the last durable position the holder's worker reported
	// (Progress or Released), recorded with the heartbeats of this
	// acquisition; 0 when none was reported yet.
	DurableLSN    uint64
	AcquiredAt    time.Time
	GrantedAt     *time.Time
	LastHeartbeat time.Time
	ReleasedAt    *time.Time
	// ReleaseCause is the release's cause (a Release constant; "" when not
	// released or not recorded).
	ReleaseCause string
	// Alive: the recorded backend still exists (pg_stat_activity).
	Alive bool
	// Held: some session holds the stream's advisory lock right now.
	Held bool
	// HeldByPID is the backend holding the lock (0 when not held); it can
	// differ from BackendPID in the instant between acquisition and Claim.
	HeldByPID int32
	// Now is PostgreSQL's clock at the time of reading.
	Now time.Time
}

// ReadStatus reads the stream's row of baton.streams and checks pg_locks and
// pg_stat_activity. A missing table or row is not an error (Recorded false),
// nor is a table created before the columns worker_url, durable_lsn or
// release_cause (WorkerURL empty, DurableLSN 0, ReleaseCause empty).
func ReadStatus(ctx context.Context, q Querier, streamID string) (Status, error) {
	st := Status{StreamID: streamID}
	ns, objid := stream.LockNamespace, int64(stream.LockObjID(streamID))
	err := q.QueryRow(ctx, `
		SELECT coalesce((SELECT pid FROM pg_locks
		        WHERE locktype = 'advisory' AND classid = $1::int8::oid AND objid = $2::int8::oid
		          AND objsubid = 2 AND granted LIMIT 1), 0), now()`, ns, objid).Scan(&st.HeldByPID, &st.Now)
	if err != nil {
		return st, fmt.Errorf("read lock: %w", err)
	}
	st.Held = st.HeldByPID != 0
	var epoch int64
	var worker, workerURL, durable, cause *string
	err = q.QueryRow(ctx, `
		SELECT holder, epoch, backend_pid, worker, to_jsonb(s) ->> 'worker_url', to_jsonb(s) ->> 'durable_lsn',
		       acquired_at, granted_at, last_heartbeat, released_at, to_jsonb(s) ->> 'release_cause',
		       EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = s.backend_pid)
		FROM baton.streams s WHERE stream_id = $1`, streamID).Scan(
		&st.Holder, &epoch, &st.BackendPID, &worker, &workerURL, &durable, &st.AcquiredAt, &st.GrantedAt,
		&st.LastHeartbeat, &st.ReleasedAt, &cause, &st.Alive)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return st, nil
	case errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName):
		return st, nil // no state table yet: nobody ever held a stream here
	case err != nil:
		return st, fmt.Errorf("read state table: %w", err)
	}
	st.Recorded = true
	st.Epoch = uint64(epoch)
	if worker != nil {
		st.Worker = *worker
	}
	if workerURL != nil {
		st.WorkerURL = *workerURL
	}
	if cause != nil {
		st.ReleaseCause = *cause
	}
	if durable != nil {
		if st.DurableLSN, err = lsntext.ParseLSN(*durable); err != nil {
			return st, fmt.Errorf("read state table: durable_lsn: %w", err)
		}
	}
	return st, nil
}

// Status reads the stream's status on the lock session itself.
func (s *Session) Status(ctx context.Context) (Status, error) {
	return ReadStatus(ctx, s.conn, s.opts.StreamID)
}

// HolderChannel is the PostgreSQL notification channel on which a broker
// announces that it granted a stream (payload: the stream id; see
// Claim.Announce), so that the other brokers' Watchers read the new holder
// at once instead of at their next poll.
const HolderChannel = "baton_holder"

// Watcher reads the stream's status on a connection of its own, for a broker
// whose lock session is busy waiting for the lock (or that holds no lock
// session). It holds no lock; it listens on HolderChannel. A Watcher is not
// safe for concurrent use.
type Watcher struct {
	conn     *pgx.Conn
	streamID string
}

// DialWatcher opens a Watcher's connection (application_name
// baton-broker-watch:<stream id>:<host name>), bounded by the session
// timeout like the lock session.
func DialWatcher(ctx context.Context, opts Options) (*Watcher, error) {
	cfg, err := pgx.ParseConfig(opts.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = strings.Replace(opts.Holder, "baton-broker:", "baton-broker-watch:", 1)
	cfg.ConnectTimeout = opts.SessionTimeout
	cfg.DialFunc = dialer(opts.SessionTimeout).DialContext
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect status watcher: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+HolderChannel); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("status watcher: listen: %w", err)
	}
	return &Watcher{conn: conn, streamID: opts.StreamID}, nil
}

// AwaitChange blocks until a grant of the watched stream is announced on
// HolderChannel, d passes, or ctx is done, and reports whether an
// announcement came. An error means the connection is not usable any more.
func (w *Watcher) AwaitChange(ctx context.Context, d time.Duration) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		n, err := w.conn.WaitForNotification(wctx)
		switch {
		case err != nil && wctx.Err() != nil && !w.conn.IsClosed():
			return false, nil // d passed, or ctx is done
		case err != nil:
			return false, fmt.Errorf("status watcher: %w", err)
		case n.Channel == HolderChannel && n.Payload == w.streamID:
			return true, nil
		}
	}
}

// Status reads the stream's status (see ReadStatus).
func (w *Watcher) Status(ctx context.Context) (Status, error) {
	return ReadStatus(ctx, w.conn, w.streamID)
}

// Close closes the connection.
func (w *Watcher) Close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = w.conn.Close(ctx)
}
