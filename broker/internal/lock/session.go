// Package lock owns the broker's lock session: one dedicated, direct
// PostgreSQL session that waits for and holds the stream's session-level
// advisory lock pg_advisory_lock(stream.LockNamespace, stream.LockKey(id)),
// and the state table baton.streams that records epoch, holder and
// heartbeats. Session.Acquire waits for the lock; Session.Claim then bumps
// the epoch and returns the Claim that owns it until Claim.Release.
//
// The session bounds its own life (DESIGN §3): TCP keepalives and
// tcp_user_timeout end it when the network is gone, idle_session_timeout ends
// it when the broker stops talking (frozen or partitioned), so the lock never
// outlives the broker's liveness by more than the configured session timeout.
//
// A Session is not safe for concurrent use: one goroutine (the broker's
// leader loop) drives it.
package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/proto/stream"
)

// ErrNotDirect means the lock session does not reach one PostgreSQL backend
// for its whole life (a transaction-pooling proxy sits in between), so a
// session-level advisory lock would protect nothing.
var ErrNotDirect = errors.New("the lock session is not a direct PostgreSQL session (a proxy or connection pooler sits in between): a session-level advisory lock is only safe on a direct session; point DATABASE_URL at PostgreSQL itself")

// ErrLockLost means the session no longer holds the stream's advisory lock.
var ErrLockLost = errors.New("advisory lock no longer held by this session")

// ErrReplaced means the state table shows another epoch than the one this
// session granted: another broker has taken the stream.
var ErrReplaced = errors.New("stream taken over: state table shows a newer epoch")

// Options configure a lock session.
type Options struct {
	DatabaseURL string
	StreamID    string
	// Holder is the session's application_name:
	// baton-broker:<stream id>:<host name>.
	Holder string
	// SessionTimeout is BATON_LOCK_SESSION_TIMEOUT: the bound within which
	// PostgreSQL ends the session once the broker goes silent.
	SessionTimeout time.Duration
}

// Session is one connected lock session.
type Session struct {
	conn    *pgx.Conn
	opts    Options
	ns, key int32
	objid   int64
	pid     uint32
}

// SessionParams returns the per-session PostgreSQL settings derived from the
// session timeout T: keepalives probe after T/3 and give up by about T,
// tcp_user_timeout and idle_session_timeout are T, and statement_timeout and
// lock_timeout are explicitly off (the lock wait must not be cut short by a
// role or provider default; the broker cancels it itself).
func SessionParams(timeout time.Duration) map[string]string {
	secs := int(timeout / time.Second)
	idle := max(1, secs/3)
	interval := max(1, secs/6)
	count := max(1, (secs-idle)/interval)
	return map[string]string{
		"tcp_keepalives_idle":     strconv.Itoa(idle),
		"tcp_keepalives_interval": strconv.Itoa(interval),
		"tcp_keepalives_count":    strconv.Itoa(count),
		"tcp_user_timeout":        strconv.FormatInt(timeout.Milliseconds(), 10),
		"idle_session_timeout":    strconv.FormatInt(timeout.Milliseconds(), 10),
		// A broker frozen inside a transaction (the state-table creation)
		// must not hold its locks longer than an idle one.
		"idle_in_transaction_session_timeout": strconv.FormatInt(timeout.Milliseconds(), 10),
		"statement_timeout":                   "0",
		"lock_timeout":                        "0",
	}
}

// Connect opens the lock session and verifies that it is a direct session.
// It blocks until connected, ctx is done, or the connect timeout (the session
// timeout) passes.
func Connect(ctx context.Context, opts Options) (*Session, error) {
	if err := stream.Validate(opts.StreamID); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(opts.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = opts.Holder
	for k, v := range SessionParams(opts.SessionTimeout) {
		cfg.RuntimeParams[k] = v
	}
	cfg.ConnectTimeout = opts.SessionTimeout
	// The broker's own side of the socket gives up on a silent server within
	// the same bound, so a partitioned standby stops waiting and reconnects.
	cfg.DialFunc = dialer(opts.SessionTimeout).DialContext
	// Statements are few and simple; the simple protocol keeps the session
	// free of prepared-statement state.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "unsupported startup parameter") {
			// PostgreSQL accepts every setting above; a pooler such as
			// PgBouncer does not.
			return nil, fmt.Errorf("%w (the server refused a session setting: %s)", ErrNotDirect, pgErr.Message)
		}
		return nil, fmt.Errorf("connect lock session: %w", err)
	}
	s := &Session{
		conn:  conn,
		opts:  opts,
		ns:    stream.LockNamespace,
		key:   stream.LockKey(opts.StreamID),
		objid: int64(stream.LockObjID(opts.StreamID)),
	}
	if err := s.verifyDirect(ctx); err != nil {
		s.Close(ctx)
		return nil, err
	}
	return s, nil
}

func dialer(timeout time.Duration) *net.Dialer {
	idle := max(time.Second, timeout/3)
	interval := max(time.Second, timeout/6)
	return &net.Dialer{
		Timeout: timeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     idle,
			Interval: interval,
			Count:    max(1, int((timeout-idle)/interval)),
		},
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setUserTimeout(fd, timeout)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

// verifyDirect checks that consecutive statements run on the same backend
// and see the same session state. A transaction-pooling proxy fails it (it
// hands each statement to whichever backend is free).
func (s *Session) verifyDirect(ctx context.Context) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("session marker: %w", err)
	}
	marker := hex.EncodeToString(b[:])
	if _, err := s.conn.Exec(ctx, "SELECT set_config('baton.session_marker', $1, false)", marker); err != nil {
		return fmt.Errorf("verify lock session: %w", err)
	}
	var first uint32
	if err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&first); err != nil {
		return fmt.Errorf("verify lock session: %w", err)
	}
	// PostgreSQL announces its backend's pid when the session starts; a
	// proxy or pooler announces its own.
	if announced := s.conn.PgConn().PID(); announced != first {
		return fmt.Errorf("%w (the connection announced backend pid %d but statements run on backend %d)", ErrNotDirect, announced, first)
	}
	for range 3 {
		var pid uint32
		var seen string
		err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid(), coalesce(current_setting('baton.session_marker', true), '')").Scan(&pid, &seen)
		if err != nil {
			return fmt.Errorf("verify lock session: %w", err)
		}
		if pid != first || seen != marker {
			return ErrNotDirect
		}
	}
	s.pid = first
	return nil
}

// PID is the PostgreSQL backend pid of the lock session.
func (s *Session) PID() uint32 { return s.pid }

// Acquire blocks until the session holds the stream's advisory lock. It
// wakes as soon as the holder lets go (PostgreSQL's lock manager hands the
// lock to the waiter). A statement timeout imposed from outside is retried;
// ctx cancellation sends a cancel request and returns ctx's error, after
// which the session must be closed. Once it returns nil, Claim the stream.
func (s *Session) Acquire(ctx context.Context) error {
	for {
		_, err := s.conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", s.ns, s.key)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.QueryCanceled && !s.conn.IsClosed() {
			// query_canceled by a statement timeout we did not set (a
			// provider's or a proxy's): keep waiting.
			continue
		}
		return fmt.Errorf("wait for advisory lock: %w", err)
	}
}

// Close ends the session. If the lock was held and not released, PostgreSQL
// releases it when the session ends.
func (s *Session) Close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = s.conn.Close(ctx)
}

// IsClosed reports whether the connection is known to be closed.
func (s *Session) IsClosed() bool { return s.conn.IsClosed() }
