package shapes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
// registers it. Close stops it.
func (r *Registry) createOne(ctx context.Context, d Definition) (*Shape, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.life, cancel)()
	if s := r.Lookup(d); s != nil {
		return s, nil
	}
	select {
	case r.createSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.createSem }()
	r.createMu.RLock()
	defer r.createMu.RUnlock()
	r.creatingN.Add(1)
	start := time.Now()
	s, err := r.create(ctx, d)
	r.creatingN.Add(-1)
	if err != nil {
		return nil, err
	}
	if o := r.o.Counters.Created; o != nil {
		o.Observe(time.Since(start).Seconds())
	}
	r.o.Log.Info("shape created", "handle", s.meta.Handle, "table", d.String(), "xmin", s.meta.Xmin, "xmax", s.meta.Xmax)
	return s, nil
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

func (r *Registry) create(ctx context.Context, d Definition) (s *Shape, err error) {
	conn, err := r.createConn(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		var ie *InvalidError
		if err != nil && !errors.As(err, &ie) {
			// Whatever state the failure left the session in goes with it.
			conn.Close(context.WithoutCancel(ctx))
			return
		}
		select {
		case r.conns <- conn:
		default:
			conn.Close(context.WithoutCancel(ctx))
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
	m := &Meta{
		Handle:     d.id() + "-" + strconv.FormatInt(time.Now().UnixMicro(), 10),
		Definition: d, Columns: cols, PK: t.pk, RoutedSeq: routed, SeenLSN: seen, StartLSN: seen, CreatedAt: time.Now().UTC(),
		TableColumns: t.columns, TableSig: t.sig, FullIdentity: full, ChunkBytes: r.chunkBytes(),
	}
	return r.store(d, m, func(l *storage.Log) error {
		err := snapshot(ctx, conn, t, m, l)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && d.Where != "" && pgerrcode.IsDataException(pgErr.Code) {
			// The where clause fails on a row (division by zero, a bad cast).
			return &InvalidError{Field: "where", Problem: "evaluating the where clause on the table's rows failed: " + pgErr.Message}
		}
		return err
	}, pred)
}

// store stores a new shape of d with metadata m and registers it: a folder
// of the set's (storage.Set.NewFolder), a log filled by fill (the
// snapshot), m in the log (SetMeta), and only then the folder added to the
// set, which publishes it. Each step is fenced: a registry that a newer
// lease took over fails with storage.ErrFenced, and whatever it stored is
// garbage to the newer registry. pred is the where clause (nil for every
// row, or to prepare later).
func (r *Registry) store(d Definition, m *Meta, fill func(*storage.Log) error, pred *where.Predicate) (s *Shape, err error) {
	dir, err := r.set.NewFolder(m.Handle)
	if err != nil {
		return nil, fmt.Errorf("new shape folder: %w", err)
	}
	added := false // once Add is tried, the folder may be a member: never discard it
	l, err := storage.Open(dir, r.o.Epoch)
	if err != nil {
		r.set.Discard(dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			l.Close()
			if !added {
				r.set.Discard(dir)
			}
		}
	}()
	if err := fill(l); err != nil {
		return nil, err
	}
	// The snapshot is durable before the metadata names it.
	if _, err := l.Sync(); err != nil {
		return nil, fmt.Errorf("store snapshot: %w", err)
	}
	r.at(stopCreate)
	b, err := encodeMeta(m)
	if err != nil {
		return nil, err
	}
	if err := l.SetMeta(b); err != nil {
		return nil, fmt.Errorf("write shape metadata: %w", err)
	}
	r.at(stopAdd)
	added = true
	if err := r.set.Add(dir); err != nil {
		return nil, fmt.Errorf("add shape: %w", err)
	}
	s = &Shape{dir: dir, log: l, meta: *m, durable: *m, schema: m.schemaHeader(), changed: make(chan struct{}), streamEnd: r.streamEnd, sharedFloor: &r.floor,
		routedLSN: m.SeenLSN, pred: pred, stopAt: r.at, chunks: newChunker(m.ChunkBytes)}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		// Stored and a member: the next Open has it.
		return nil, storage.ErrClosed
	}
	r.byDef[d.Key()] = s
	r.byHandle[s.meta.Handle] = s
	r.gen.Add(1)
	close(r.added)
	r.added = make(chan struct{})
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
