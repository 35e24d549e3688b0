package shapes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/storage"
)

// Creation of a shape: its table described and checked, the table added to
// the publication, a snapshot consistent with the stream log (see the
// package doc), then the shape stored and registered.

// createConcurrency bounds the shapes created at once (each holds a
// PostgreSQL connection and takes a snapshot).
const createConcurrency = 4

// GetOrCreate returns the shape of d, creating it (publication, snapshot)
// when there is none. Concurrent requests for one definition share one
// creation; different definitions are created side by side. A creation
// still in progress when Close is called stops: it returns
// storage.ErrClosed.
func (r *Registry) GetOrCreate(ctx context.Context, d Definition) (*Shape, error) {
	for {
		if s := r.Lookup(d); s != nil {
			return s, nil
		}
		v, err, _ := r.creating.Do(d.Key(), func() (any, error) { return r.createOne(ctx, d) })
		if err != nil && errors.Is(err, context.Canceled) && ctx.Err() == nil {
			if r.life.Err() != nil {
				return nil, storage.ErrClosed
			}
			continue // the request that led the creation went away: try again
		}
		if err != nil {
			return nil, err
		}
		return v.(*Shape), nil
	}
}

// createOne creates the shape of d (unless one appeared meanwhile) and
// registers it. It returns once the shape is served: its snapshot
// complete, or its first records durable while the rest is written (the
// creation goes on, holding its place among the creations, after the
// request that started it is gone). Close stops it.
func (r *Registry) createOne(ctx context.Context, d Definition) (*Shape, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.life, cancel)()
	if s := r.Lookup(d); s != nil {
		return s, nil
	}
	if err := r.recentFailure(d); err != nil {
		return nil, err
	}
	select {
	case r.createSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.createMu.RLock()
	r.creatingN.Add(1)
	release := func() {
		r.creatingN.Add(-1)
		r.createMu.RUnlock()
		<-r.createSem
	}
	start := time.Now()
	f, err := r.create(ctx, d)
	if err != nil {
		release()
		return nil, err
	}
	go func() {
		defer release()
		err := f.run(r.life)
		r.releaseConn(f.conn, err)
		if err != nil {
			return
		}
		if o := r.o.Counters.Created; o != nil {
			o.Observe(time.Since(start).Seconds())
		}
		r.o.Log.Info("shape created", "handle", f.s.meta.Handle, "table", d.String(), "xmin", f.s.meta.Xmin, "xmax", f.s.meta.Xmax,
			"records", f.s.records(), "took", time.Since(start).Round(time.Millisecond))
	}()
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.s, nil
}

// createConn returns an idle creation connection or a new one.
func (r *Registry) createConn(ctx context.Context) (*pgx.Conn, error) {
	for {
		select {
		case c := <-r.conns:
			if !c.IsClosed() {
				return c, nil
			}
		default:
			return r.dial(ctx, "shapes")
		}
	}
}

// releaseConn keeps conn for the next creation, unless err (not the
// request's fault) may have left its session in a bad state.
func (r *Registry) releaseConn(conn *pgx.Conn, err error) {
	var ie *InvalidError
	if err != nil && !errors.As(err, &ie) {
		conn.Close(context.Background())
		return
	}
	select {
	case r.conns <- conn:
	default:
		conn.Close(context.Background())
	}
}

// create prepares the shape of d: its table described and checked, the
// table published, the snapshot's transaction begun (visibility read),
// the shape stored with partial metadata (begin). The returned fill writes
// the rows; it owns the connection.
func (r *Registry) create(ctx context.Context, d Definition) (f *fill, err error) {
	conn, err := r.createConn(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.releaseConn(conn, err)
		}
	}()
	t, err := describe(ctx, conn, d)
	if err != nil {
		return nil, err
	}
	cols, err := selectColumns(d, t)
	if err != nil {
		return nil, err
	}
	pred, err := prepareWhere(ctx, conn, d, t.columns)
	if err != nil {
		return nil, err
	}
	// Every served table gets REPLICA IDENTITY FULL, as Electric sets it:
	// updates are then told with the changed columns only (the old row to
	// diff against), and a where clause is decided on both rows. full says
	// whether the shape cannot be told without it (see needsFullIdentity).
	full := needsFullIdentity(d, t)
	if err := fullIdentity(ctx, conn, d, t); err != nil {
		return nil, err
	}
	// Every transaction in the stream log up to here committed before the
	// table was published: visible in the snapshot, or without changes
	// to it.
	routed, _ := r.o.Stream.Durable()
	seen, err := r.initialSeenLSN(routed)
	if err != nil {
		return nil, err
	}
	if err := addToPublication(ctx, conn, r.o.Publication, d); err != nil {
		return nil, err
	}
	if err := awaitRunning(ctx, conn); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	// The request that creates the shape uses it: LastUsedAt is stored
	// with the first metadata, so that expiry need not write the metadata
	// of every new shape again for that use (persistUse).
	m := &Meta{
		Handle:     d.id() + "-" + strconv.FormatInt(now.UnixMicro(), 10),
		Definition: d, Columns: cols, PK: t.pk, RoutedSeq: routed, SeenLSN: seen, StartLSN: seen, CreatedAt: now, LastUsedAt: now,
		TableColumns: t.columns, TableSig: t.sig, FullIdentity: full, ChunkBytes: r.chunkBytes(), SnapshotEnd: true,
	}
	tx, err := beginSnapshot(ctx, conn, m)
	if err != nil {
		return nil, err
	}
	s, err := r.begin(m, pred)
	if err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return &fill{r: r, s: s, conn: conn, tx: tx, t: t, ready: make(chan struct{})}, nil
}

// store stores a new shape of d with metadata m and registers it, its
// records written by fill (a snapshot given whole, as tests give it):
// begin, fill, the records synced, complete, then registered. Each step
// is fenced: a registry that a newer lease took over fails with
// storage.ErrFenced, and whatever it stored is garbage to the newer
// registry. pred is the where clause (nil for every row, or to prepare
// later).
func (r *Registry) store(d Definition, m *Meta, fill func(*storage.Log) error, pred *where.Predicate) (_ *Shape, err error) {
	s, err := r.begin(m, pred)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.log.Close()
		}
	}()
	if err := fill(s.log); err != nil {
		return nil, err
	}
	// The snapshot is durable before the metadata says it is complete,
	// and the shape a member of the set.
	if _, err := s.log.Sync(); err != nil {
		return nil, fmt.Errorf("store snapshot: %w", err)
	}
	if err := r.admit(s); err != nil {
		return nil, err
	}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	if err := r.complete(s, nil); err != nil {
		return nil, err
	}
	if err := r.register(s); err != nil {
		// Stored and a member: the next Open has it.
		return nil, err
	}
	return s, nil
}

// initialSeenLSN is the SeenLSN of a shape created now, routed from stream
// record seq on: a commit LSN up to which every transaction is already
// handled, as it is in the stream log at or before seq (so visible in the
// snapshot or without changes to the table), or below the stream's
// recorded acknowledgement.
func (r *Registry) initialSeenLSN(seq uint64) (uint64, error) {
	var seen uint64
	if seq > 0 {
		recs, err := r.o.Stream.Read(seq, 1)
		if err != nil {
			return 0, fmt.Errorf("read stream log: %w", err)
		}
		if len(recs) > 0 {
			seen = recs[0].CommitLSN
		}
	}
	if a := r.o.Stream.Acked(); a > 0 {
		seen = max(seen, a-1)
	}
	return seen, nil
}
