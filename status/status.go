package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/proto/stream"
)

// Querier is what Read needs of a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Stream is what PostgreSQL says about a stream at one moment.
type Stream struct {
	ID string
	// Now is PostgreSQL's clock; WAL its current WAL position (the
	// replayed one on a standby server).
	Now time.Time
	WAL uint64
	// Lock: the session holding the stream's advisory lock, if any.
	Lock Session
	// Held: some session holds the lock.
	Held bool
	// Holding is the stream's row of baton.streams; nil when no broker
	// ever held the stream here.
	Holding *Holding
	// Slot is the stream's replication slot; nil when there is none.
	Slot *Slot
	// Waiting are the sessions waiting for the lock (standby brokers),
	// longest waiting first.
	Waiting []Session
	// Sessions are every session of the stream (application_name
	// baton-*:<stream id>...), by role then pid.
	Sessions []Session
}

// Holding is the stream's row of baton.streams: the latest holding.
type Holding struct {
	Holder     string
	Epoch      uint64
	BackendPID int32
	// Alive: the recorded backend still exists.
	Alive     bool
	Worker    string
	WorkerURL string
	// DurableLSN is the last durable position the worker reported (0:
	// none yet).
	DurableLSN    uint64
	AcquiredAt    time.Time
	GrantedAt     *time.Time
	LastHeartbeat time.Time
	ReleasedAt    *time.Time
	ReleaseCause  string
}

// Slot is the stream's slot in pg_replication_slots, with its consumer.
type Slot struct {
	Name      string
	Plugin    string
	Active    bool
	ActivePID int32
	// Consumer is the active backend's application_name
	// (baton-worker:<stream id>:<epoch> for a worker).
	Consumer     string
	RestartLSN   uint64
	ConfirmedLSN uint64
	// WALStatus is pg_replication_slots.wal_status ("" when not reported).
	WALStatus string
	// SafeWALSize is how much more WAL can be written before the slot is
	// in danger of losing WAL it needs (nil: unlimited,
	// max_slot_wal_keep_size = -1).
	SafeWALSize *int64
	// Retained is the WAL the slot keeps: WAL - RestartLSN.
	Retained int64
	// Lag is the WAL written since the consumer's confirmed position:
	// WAL - ConfirmedLSN.
	Lag int64
	// Walsender is pg_stat_replication's row of the consumer; nil when
	// inactive (or not visible to this role).
	Walsender *Walsender
}

// Walsender is the consumer's row of pg_stat_replication.
type Walsender struct {
	State    string
	SentLSN  uint64
	FlushLSN uint64
	// FlushLag is PostgreSQL's measure of the time between WAL being
	// written and the consumer confirming it flushed (nil when idle).
	FlushLag *time.Duration
	// ReplyTime is the consumer's last status update.
	ReplyTime *time.Time
}

// Session is a backend of the stream (pg_stat_activity).
type Session struct {
	PID int32
	// App is its application_name; Role the part before the stream id
	// (baton-broker, baton-worker, ...).
	App, Role    string
	State        string
	BackendStart time.Time
	// WaitStart is when it began waiting for the stream's lock (waiting
	// sessions only).
	WaitStart *time.Time
}

// Read reads the stream's status. A missing state table, row or slot is
// not an error (nil Holding or Slot), nor is a state table created before
// its optional columns.
func Read(ctx context.Context, q Querier, streamID string) (Stream, error) {
	st := Stream{ID: streamID}
	var wal string
	err := q.QueryRow(ctx, `SELECT now(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).
		Scan(&st.Now, &wal)
	if err != nil {
		return st, fmt.Errorf("read server position: %w", err)
	}
	if st.WAL, err = ParseLSN(wal); err != nil {
		return st, fmt.Errorf("read server position: %w", err)
	}
	if err := readLock(ctx, q, &st); err != nil {
		return st, err
	}
	if err := readHolding(ctx, q, &st); err != nil {
		return st, err
	}
	if err := readSlot(ctx, q, &st); err != nil {
		return st, err
	}
	if err := readSessions(ctx, q, &st); err != nil {
		return st, err
	}
	return st, nil
}

// readLock reads the lock's holder and waiters from pg_locks.
func readLock(ctx context.Context, q Querier, st *Stream) error {
	rows, err := q.Query(ctx, `
		SELECT l.pid, l.granted, l.waitstart, coalesce(a.application_name, ''), coalesce(a.state, ''), a.backend_start
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid AND l.objsubid = 2
		ORDER BY l.granted DESC, l.waitstart NULLS LAST, l.pid`,
		int64(stream.LockNamespace), int64(stream.LockObjID(st.ID)))
	if err != nil {
		return fmt.Errorf("read lock: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s Session
		var granted bool
		var start *time.Time
		if err := rows.Scan(&s.PID, &granted, &s.WaitStart, &s.App, &s.State, &start); err != nil {
			return fmt.Errorf("read lock: %w", err)
		}
		if start != nil {
			s.BackendStart = *start
		}
		s.Role = role(s.App)
		if granted {
			st.Held, st.Lock = true, s
		} else {
			st.Waiting = append(st.Waiting, s)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read lock: %w", err)
	}
	return nil
}

// readHolding reads the stream's row of baton.streams.
func readHolding(ctx context.Context, q Querier, st *Stream) error {
	var h Holding
	var epoch int64
	var worker, workerURL, durable, cause *string
	err := q.QueryRow(ctx, `
		SELECT holder, epoch, backend_pid, worker, to_jsonb(s) ->> 'worker_url', to_jsonb(s) ->> 'durable_lsn',
		       acquired_at, granted_at, last_heartbeat, released_at, to_jsonb(s) ->> 'release_cause',
		       EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = s.backend_pid)
		FROM baton.streams s WHERE stream_id = $1`, st.ID).Scan(
		&h.Holder, &epoch, &h.BackendPID, &worker, &workerURL, &durable, &h.AcquiredAt, &h.GrantedAt,
		&h.LastHeartbeat, &h.ReleasedAt, &cause, &h.Alive)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName):
		return nil // no state table: nobody ever held a stream here
	case err != nil:
		return fmt.Errorf("read state table: %w", err)
	}
	h.Epoch = uint64(epoch)
	for dst, src := range map[*string]*string{&h.Worker: worker, &h.WorkerURL: workerURL, &h.ReleaseCause: cause} {
		if src != nil {
			*dst = *src
		}
	}
	if durable != nil {
		if h.DurableLSN, err = ParseLSN(*durable); err != nil {
			return fmt.Errorf("read state table: durable_lsn: %w", err)
		}
	}
	st.Holding = &h
	return nil
}

// readSlot reads the stream's slot and its walsender.
func readSlot(ctx context.Context, q Querier, st *Stream) error {
	s := Slot{Name: stream.SlotName(st.ID)}
	var pid *int32
	var restart, confirmed, walStatus, consumer *string
	var state *string
	var sent, flush *string
	var flushLag *float64
	var reply *time.Time
	err := q.QueryRow(ctx, `
		SELECT s.plugin, s.active, s.active_pid, a.application_name, s.restart_lsn::text, s.confirmed_flush_lsn::text,
		       s.wal_status, s.safe_wal_size,
		       r.state, r.sent_lsn::text, r.flush_lsn::text, extract(epoch FROM r.flush_lag)::float8, r.reply_time
		FROM pg_replication_slots s
		LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
		WHERE s.slot_name = $1`, s.Name).Scan(
		&s.Plugin, &s.Active, &pid, &consumer, &restart, &confirmed, &walStatus, &s.SafeWALSize,
		&state, &sent, &flush, &flushLag, &reply)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read slot: %w", err)
	}
	if pid != nil {
		s.ActivePID = *pid
	}
	if consumer != nil {
		s.Consumer = *consumer
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	for dst, src := range map[*uint64]*string{&s.RestartLSN: restart, &s.ConfirmedLSN: confirmed} {
		if src != nil {
			if *dst, err = ParseLSN(*src); err != nil {
				return fmt.Errorf("read slot: %w", err)
			}
		}
	}
	if s.RestartLSN != 0 {
		s.Retained = int64(st.WAL) - int64(s.RestartLSN)
	}
	if s.ConfirmedLSN != 0 {
		s.Lag = int64(st.WAL) - int64(s.ConfirmedLSN)
	}
	if state != nil {
		w := &Walsender{State: *state, ReplyTime: reply}
		for dst, src := range map[*uint64]*string{&w.SentLSN: sent, &w.FlushLSN: flush} {
			if src != nil {
				if *dst, err = ParseLSN(*src); err != nil {
					return fmt.Errorf("read walsender: %w", err)
				}
			}
		}
		if flushLag != nil {
			d := time.Duration(*flushLag * float64(time.Second))
			w.FlushLag = &d
		}
		s.Walsender = w
	}
	st.Slot = &s
	return nil
}

// readSessions reads every session of the stream.
func readSessions(ctx context.Context, q Querier, st *Stream) error {
	rows, err := q.Query(ctx, `
		SELECT pid, application_name, coalesce(state, ''), backend_start FROM pg_stat_activity
		WHERE application_name LIKE 'baton-%' AND split_part(application_name, ':', 2) = $1
		ORDER BY application_name, pid`, st.ID)
	if err != nil {
		return fmt.Errorf("read sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s Session
		var start *time.Time
		if err := rows.Scan(&s.PID, &s.App, &s.State, &start); err != nil {
			return fmt.Errorf("read sessions: %w", err)
		}
		if start != nil {
			s.BackendStart = *start
		}
		s.Role = role(s.App)
		st.Sessions = append(st.Sessions, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read sessions: %w", err)
	}
	return nil
}

// role is the part of a Baton application_name before the stream id.
func role(app string) string {
	r, _, _ := strings.Cut(app, ":")
	return r
}

// ConsumerEpoch is the epoch in the slot consumer's application_name
// (baton-worker:<stream id>:<epoch>); ok is false for any other consumer.
func (s *Slot) ConsumerEpoch(streamID string) (uint64, bool) {
	rest, ok := strings.CutPrefix(s.Consumer, "baton-worker:"+streamID+":")
	if !ok {
		return 0, false
	}
	e, err := strconv.ParseUint(rest, 10, 64)
	return e, err == nil
}

// FormatLSN writes a WAL position as PostgreSQL's pg_lsn does, e.g.
// 0/16B3748.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// ParseLSN reads a WAL position in pg_lsn's text form.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return h<<32 | l, nil
		}
	}
	return 0, fmt.Errorf("%q is not an LSN (e.g. 0/16B3748)", s)
}
