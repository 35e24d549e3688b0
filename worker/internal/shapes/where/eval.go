package where

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Evaluator owns the connection on which PostgreSQL evaluates predicates
// that have no fast path. It dials lazily, and again after the connection
// broke. Its methods are safe for concurrent use; queries are serialised.
type Evaluator struct {
	dial func(ctx context.Context) (*pgx.Conn, error)

	mu    sync.Mutex
	conn  *pgx.Conn
	stmts map[string]string // SQL → prepared statement name on conn
	seq   int
}

// maxStatements bounds the statements kept prepared on the connection.
const maxStatements = 256

const closeTimeout = 2 * time.Second

// NewEvaluator returns an Evaluator that connects with dial. The
// connections must carry the worker's output settings (TimeZone UTC,
// DateStyle ISO...), as the replication connection does.
func NewEvaluator(dial func(ctx context.Context) (*pgx.Conn, error)) *Evaluator {
	return &Evaluator{dial: dial}
}

// Close closes the connection. The Evaluator may be used again afterwards
// (it dials anew).
func (e *Evaluator) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.drop()
}

func (e *Evaluator) drop() error {
	if e.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := e.conn.Close(ctx)
	e.conn, e.stmts = nil, nil
	return err
}

// queryAttempts is how many connections a query is tried on: a connection
// that was ended (a restarted server, idle_session_timeout, a terminated
// backend) is replaced and the read-only query run again.
const queryAttempts = 3

// query runs sql with text parameters of the given types and returns the
// text of each result row's single column. Statements are prepared once.
// An error of PostgreSQL's about the query (division by zero...) leaves the
// connection usable; any other error drops it, and the query is tried
// again on a new one, up to queryAttempts times.
func (e *Evaluator) query(ctx context.Context, sql string, oids []uint32, vals [][]byte, prepare bool) ([][]byte, error) {
	var err error
	for attempt := 0; attempt < queryAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		var out [][]byte
		out, err = e.queryOnce(ctx, sql, oids, vals, prepare)
		var ee *evalError
		if err == nil || errors.As(err, &ee) || ctx.Err() != nil {
			return out, err
		}
	}
	return nil, err
}

func (e *Evaluator) queryOnce(ctx context.Context, sql string, oids []uint32, vals [][]byte, prepare bool) ([][]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		c, err := e.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect evaluator: %w", err)
		}
		e.conn, e.stmts = c, map[string]string{}
	}
	pc := e.conn.PgConn()
	var res *pgconn.Result
	if name, ok := e.stmts[sql]; ok && prepare {
		res = pc.ExecPrepared(ctx, name, vals, nil, nil).Read()
	} else if prepare {
		if len(e.stmts) >= maxStatements {
			if err := pc.Exec(ctx, "DEALLOCATE ALL").Close(); err != nil {
				e.drop()
				return nil, fmt.Errorf("deallocate: %w", err)
			}
			clear(e.stmts)
		}
		e.seq++
		name := "where_" + strconv.Itoa(e.seq)
		if _, err := pc.Prepare(ctx, name, sql, oids); err != nil {
			return nil, e.fail(err)
		}
		e.stmts[sql] = name
		res = pc.ExecPrepared(ctx, name, vals, nil, nil).Read()
	} else {
		res = pc.ExecParams(ctx, sql, vals, oids, nil, nil).Read()
	}
	if res.Err != nil {
		if name, ok := e.stmts[sql]; ok { // it may be stale (the table changed): prepare it again next time
			delete(e.stmts, sql)
			if !pc.IsClosed() {
				_ = pc.Exec(ctx, "DEALLOCATE "+name).Close()
			}
		}
		return nil, e.fail(res.Err)
	}
	out := make([][]byte, len(res.Rows))
	for i, r := range res.Rows {
		if len(r) != 1 {
			return nil, fmt.Errorf("evaluate: %d columns", len(r))
		}
		out[i] = r[0]
	}
	return out, nil
}

// fail keeps the connection after an error PostgreSQL reported about the
// query and drops it otherwise.
func (e *Evaluator) fail(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !e.conn.IsClosed() {
		return &evalError{err: pe}
	}
	e.drop()
	return fmt.Errorf("evaluate: %w", err)
}

// evalError is an error PostgreSQL raised while evaluating (division by
// zero, an out-of-range cast...): the predicates, not the connection, are
// to blame.
type evalError struct{ err *pgconn.PgError }

func (e *evalError) Error() string { return e.err.Message }
func (e *evalError) Unwrap() error { return e.err }
