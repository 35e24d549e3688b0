package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/worker/internal/txn"
)

// ConnectAdmin opens a normal session named app for the stream's
// administration (publication, slot state, publication coverage). It
// carries the fixed txn.OutputSettings, so that it may serve a shape's queries
// too, and runs every statement in one round trip (pgx's exec mode: no
// separate prepare on a fresh session, which matters on the path from a
// grant to streaming). The caller closes it.
func ConnectAdmin(ctx context.Context, url, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = app
	for k, v := range txn.OutputSettings {
		cfg.RuntimeParams[k] = v
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// Dialing is a replication connection being opened in the background, so
// that its start-up (a new backend, the walsender's) overlaps with the
// rest of a lease's start: opening storage, checking the publication, the
// slot's state. Opening it touches no slot; Run takes it over.
type Dialing struct {
	cancel context.CancelFunc
	done   chan struct{}
	conn   *pgconn.PgConn
	err    error
	took   time.Duration // how long the dial took (once done)
}

// Dial starts opening the replication connection of o (its
// application_name carries o.Epoch: AppName). The dial ends when ctx does.
// Pass the result to Run as Options.Dialing, or Close it.
func Dial(ctx context.Context, o Options) *Dialing {
	if o.WalSenderTimeout == 0 {
		o.WalSenderTimeout = defaultWalSenderTimeout
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Dialing{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		start := time.Now()
		d.conn, d.err = connectReplication(ctx, o.DatabaseURL, AppName(o.StreamID, o.Epoch), o.WalSenderTimeout)
		d.took = time.Since(start)
	}()
	return d
}

// Conn waits for the connection; the caller owns it from then on. Conn
// and Close are not safe for concurrent use. After
// ctx is done it returns ctx's error, and the connection, if it is made,
// is closed by Close.
func (d *Dialing) Conn(ctx context.Context) (*pgconn.PgConn, error) {
	select {
	case <-d.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d.err != nil {
		return nil, d.err
	}
	c := d.conn
	d.conn = nil
	return c, nil
}

// Close stops the dial and closes the connection unless Conn handed it
// over. It waits for the dial to end.
func (d *Dialing) Close(ctx context.Context) {
	d.cancel()
	<-d.done
	if d.conn != nil {
		closeConn(ctx, d.conn)
		d.conn = nil
	}
}

// defaultWalSenderTimeout is Options.WalSenderTimeout's default.
const defaultWalSenderTimeout = 30 * time.Second
