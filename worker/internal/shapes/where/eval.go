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

// Evaluator owns the connections on which PostgreSQL evaluates predicates
// that have no fast path: up to DefaultConns of them, dialled lazily (a
// connection is opened only when every open one is busy) and again after
// one broke. Its methods are safe for concurrent use; each connection runs
// one query at a time, so up to DefaultConns queries run at once.
type Evaluator struct {
	dial func(ctx context.Context) (*pgx.Conn, error)
	sem  chan struct{} // one token per connection in use

	mu   sync.Mutex
	idle []*evalConn // open and unused, the most recently used last
}

// evalConn is one connection of an Evaluator with the statements prepared
// on it.
type evalConn struct {
	conn  *pgx.Conn
	stmts map[string]string // SQL → prepared statement name on conn
	seq   int
}

// DefaultConns is how many connections an Evaluator holds at most. The
// work is the server's CPU (a connection is one backend process), so more
// connections than the server has cores only queue; four lets a Match use
// a few cores of the server while keeping the worker's footprint on
// max_connections small. Connections are dialled only when the work of a
// Match is split among them (several chunks or batches), so a worker with
// few such predicates holds one.
const DefaultConns = 4

// maxStatements bounds the statements kept prepared on a connection.
const maxStatements = 256

const closeTimeout = 2 * time.Second

// NewEvaluator returns an Evaluator that connects with dial. The
// connections must carry the worker's output settings (TimeZone UTC,
// DateStyle ISO...), as the replication connection does.
func NewEvaluator(dial func(ctx context.Context) (*pgx.Conn, error)) *Evaluator {
	return newEvaluator(dial, DefaultConns)
}

func newEvaluator(dial func(ctx context.Context) (*pgx.Conn, error), conns int) *Evaluator {
	return &Evaluator{dial: dial, sem: make(chan struct{}, max(conns, 1))}
}

// conns is the number of queries the Evaluator runs at once.
func (e *Evaluator) conns() int { return cap(e.sem) }

// Close waits for the queries running and closes the connections. The
// Evaluator may be used again afterwards (it dials anew).
func (e *Evaluator) Close() error {
	for range cap(e.sem) {
		e.sem <- struct{}{}
	}
	defer func() {
		for range cap(e.sem) {
			<-e.sem
		}
	}()
	e.mu.Lock()
	idle := e.idle
	e.idle = nil
	e.mu.Unlock()
	return closeAll(idle)
}

func closeAll(cs []*evalConn) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.close())
	}
	return errors.Join(errs...)
}

// acquire takes a connection, waiting while all are in use: the idle one
// used last, or one not yet dialled. fresh asks for a new connection and
// drops the idle ones: they were likely ended with the one that just
// failed (a restarted server, terminated backends). So at most cap(sem)
// connections are open: each is idle or held with a token.
func (e *Evaluator) acquire(ctx context.Context, fresh bool) (*evalConn, error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	e.mu.Lock()
	if fresh {
		stale := e.idle
		e.idle = nil
		e.mu.Unlock()
		closeAll(stale)
		return &evalConn{}, nil
	}
	defer e.mu.Unlock()
	for n := len(e.idle); n > 0; n-- {
		c := e.idle[n-1]
		e.idle = e.idle[:n-1]
		if !c.conn.IsClosed() { // else pgconn saw it end (it is closed already)
			return c, nil
		}
	}
	return &evalConn{}, nil
}

// release returns a connection taken by acquire.
func (e *Evaluator) release(c *evalConn) {
	if c.conn != nil {
		e.mu.Lock()
		e.idle = append(e.idle, c)
		e.mu.Unlock()
	}
	<-e.sem
}

func (c *evalConn) close() error {
	if c.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := c.conn.Close(ctx)
	c.conn, c.stmts = nil, nil
	return err
}

// queryAttempts is how many connections a query is tried on: a connection
// that was ended (a restarted server, idle_session_timeout, a terminated
// backend) is replaced and the read-only query run again.
const queryAttempts = 3

// query runs sql with text parameters of the given types and returns the
// text of each result row's single column. Statements are prepared once
// per connection. An error of PostgreSQL's about the query (division by
// zero...) leaves the connection usable; any other error drops it, and
// the query is tried again on a newly dialled one, up to queryAttempts
// times. It blocks while all the connections are busy.
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
		var c *evalConn
		if c, err = e.acquire(ctx, attempt > 0); err != nil {
			return nil, err
		}
		var out [][]byte
		out, err = c.query(ctx, e.dial, sql, oids, vals, prepare)
		e.release(c)
		var ee *evalError
		if err == nil || errors.As(err, &ee) || ctx.Err() != nil {
			return out, err
		}
	}
	return nil, err
}

func (c *evalConn) query(ctx context.Context, dial func(context.Context) (*pgx.Conn, error), sql string, oids []uint32, vals [][]byte, prepare bool) ([][]byte, error) {
	if c.conn == nil {
		conn, err := dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect evaluator: %w", err)
		}
		c.conn, c.stmts = conn, map[string]string{}
	}
	pc := c.conn.PgConn()
	var res *pgconn.Result
	if name, ok := c.stmts[sql]; ok && prepare {
		res = pc.ExecPrepared(ctx, name, vals, nil, nil).Read()
	} else if prepare {
		if len(c.stmts) >= maxStatements {
			if err := pc.Exec(ctx, "DEALLOCATE ALL").Close(); err != nil {
				c.close()
				return nil, fmt.Errorf("deallocate: %w", err)
			}
			clear(c.stmts)
		}
		c.seq++
		name := "where_" + strconv.Itoa(c.seq)
		if _, err := pc.Prepare(ctx, name, sql, oids); err != nil {
			return nil, c.fail(err)
		}
		c.stmts[sql] = name
		res = pc.ExecPrepared(ctx, name, vals, nil, nil).Read()
	} else {
		res = pc.ExecParams(ctx, sql, vals, oids, nil, nil).Read()
	}
	if res.Err != nil {
		if name, ok := c.stmts[sql]; ok { // it may be stale (the table changed): prepare it again next time
			delete(c.stmts, sql)
			if !pc.IsClosed() {
				_ = pc.Exec(ctx, "DEALLOCATE "+name).Close()
			}
		}
		return nil, c.fail(res.Err)
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
func (c *evalConn) fail(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !c.conn.IsClosed() {
		return &evalError{err: pe}
	}
	c.close()
	return fmt.Errorf("evaluate: %w", err)
}

// evalError is an error PostgreSQL raised while evaluating (division by
// zero, an out-of-range cast...): the predicates, not the connection, are
// to blame.
type evalError struct{ err *pgconn.PgError }

func (e *evalError) Error() string { return e.err.Message }
func (e *evalError) Unwrap() error { return e.err }
