package shapes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/singleflight"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// Options open a Registry.
type Options struct {
	// Dir is the stream's storage folder; shapes live in Dir/shapes.
	Dir         string
	Epoch       uint64
	DatabaseURL string
	StreamID    string
	Publication string
	// Stream is the stream log the router tails.
	Stream *storage.Log
	Log    *slog.Logger
	// Decoded, when set, holds transactions of Stream already decoded
	// (filled by the replication stream on the same Log).
	Decoded *txn.Cache
	// Counters count what happens to shapes; nil ones are not counted.
	Counters Counters
}

// Counters count events of the shapes (prometheus.Counter fits).
type Counters struct {
	// Compacted: shape logs compacted.
	Compacted Counter
	// Invalidated: shapes removed because their table was truncated,
	// dropped, renamed or altered.
	Invalidated Counter
	// WhereErrors: where clauses that raised an error on a changed row.
	WhereErrors Counter
}

func inc(c Counter) {
	if c != nil {
		c.Inc()
	}
}

// Registry holds the shapes of one stream for one lease: their logs are
// opened with the lease's epoch, so a successor fences them.
type Registry struct {
	o   Options
	dir string

	// createMu is shared by creations (up to createConcurrency at once, one
	// per definition) and held alone by what changes the publication or
	// the stream log under them (Reconcile, stream truncation).
	createMu  sync.RWMutex
	creating  singleflight.Group
	createSem chan struct{}
	// conns are idle connections of creations, kept between them; one is
	// dropped after a failure that is not the request's fault.
	conns chan *pgx.Conn

	mu       sync.Mutex
	byDef    map[string]*Shape
	byHandle map[string]*Shape
	added    chan struct{} // closed and replaced when a shape is added
	// gen counts shapes added and removed: the router looks the shapes
	// over again only when it moved.
	gen atomic.Uint64
	// routed is how far the router routed every shape it caught up
	// (Shape.floor).
	routed atomic.Pointer[routedPos]
	closed bool
}

// Open opens every stored shape for writing with o.Epoch, and removes
// creations that did not finish.
func Open(o Options) (*Registry, error) {
	r := &Registry{o: o, dir: filepath.Join(o.Dir, "shapes"), byDef: map[string]*Shape{},
		createSem: make(chan struct{}, createConcurrency), conns: make(chan *pgx.Conn, createConcurrency),
		byHandle: map[string]*Shape{}, added: make(chan struct{})}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("shapes: %w", err)
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("shapes: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(r.dir, e.Name())
		m, err := readMeta(dir)
		if errors.Is(err, os.ErrNotExist) {
			o.Log.Warn("removing a shape whose creation did not finish", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				r.Close()
				return nil, fmt.Errorf("shapes: %w", err)
			}
			continue
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("shapes: %w", err)
		}
		s, err := openShape(dir, m, o.Epoch)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("shape %s: %w", m.Handle, err)
		}
		s.routable, s.routed = r.routable, &r.routed
		r.byDef[m.Definition.Key()] = s
		r.byHandle[m.Handle] = s
	}
	return r, nil
}

// Close closes every shape log, persisting how far each was routed.
func (r *Registry) Close() error {
	r.createMu.Lock()
	for len(r.conns) > 0 {
		(<-r.conns).Close(context.Background())
	}
	r.createMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var first error
	for _, s := range r.byDef {
		s.markGone()
		if err := s.log.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Lookup returns the shape of d, or nil.
func (r *Registry) Lookup(d Definition) *Shape {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byDef[d.Key()]
}

// createConcurrency bounds the shapes created at once (each holds a
// PostgreSQL connection and takes a snapshot).
const createConcurrency = 4

// GetOrCreate returns the shape of d, creating it (publication, snapshot)
// when there is none. Concurrent requests for one definition share one
// creation; different definitions are created side by side.
func (r *Registry) GetOrCreate(ctx context.Context, d Definition) (*Shape, error) {
	for {
		if s := r.Lookup(d); s != nil {
			return s, nil
		}
		v, err, _ := r.creating.Do(d.Key(), func() (any, error) { return r.createOne(ctx, d) })
		if err != nil && errors.Is(err, context.Canceled) && ctx.Err() == nil {
			continue // the request that led the creation went away: try again
		}
		if err != nil {
			return nil, err
		}
		return v.(*Shape), nil
	}
}

// createOne creates the shape of d (unless one appeared meanwhile) and
// registers it.
func (r *Registry) createOne(ctx context.Context, d Definition) (*Shape, error) {
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
	s, err := r.create(ctx, d)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		s.log.Close()
		return nil, storage.ErrClosed
	}
	r.byDef[d.Key()] = s
	r.byHandle[s.meta.Handle] = s
	r.gen.Add(1)
	close(r.added)
	r.added = make(chan struct{})
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
			return connect(ctx, r.o.DatabaseURL, "baton-worker-shapes:"+r.o.StreamID+":"+strconv.FormatUint(r.o.Epoch, 10))
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
	full := needsFullIdentity(d, t)
	if full {
		if err := fullIdentity(ctx, conn, d, t); err != nil {
			return nil, err
		}
	}
	// Every transaction in the stream log up to here committed before the
	// table was published: visible in the snapshot, or without changes
	// to it.
	applied, _ := r.o.Stream.Durable()
	seen, err := r.seenFloor(applied)
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
		Definition: d, Columns: cols, PK: t.pk, AppliedSeq: applied, SeenLSN: seen, CreatedAt: time.Now().UTC(),
		TableColumns: t.columns, TableSig: t.sig, FullIdentity: full,
	}
	dir := filepath.Join(r.dir, m.Handle)
	l, err := storage.Open(dir, r.o.Epoch)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
			os.RemoveAll(dir)
		}
	}()
	if err := snapshot(ctx, conn, t, m, l); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && d.Where != "" && pgerrcode.IsDataException(pgErr.Code) {
			// The where clause fails on a row (division by zero, a bad cast).
			return nil, &InvalidError{Field: "where", Problem: "evaluating the where clause on the table's rows failed: " + pgErr.Message}
		}
		return nil, err
	}
	if err := writeMeta(dir, m); err != nil {
		return nil, fmt.Errorf("write shape meta: %w", err)
	}
	s = &Shape{dir: dir, log: l, meta: *m, schema: m.schemaHeader(), changed: make(chan struct{}), routable: r.routable, routed: &r.routed,
		upTo: m.SeenLSN, seen: m.SeenLSN, pred: pred}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Delete removes the shape: its handle is never served again.
func (r *Registry) Delete(s *Shape) error {
	r.mu.Lock()
	if r.byDef[s.meta.Definition.Key()] != s {
		r.mu.Unlock()
		return nil
	}
	delete(r.byDef, s.meta.Definition.Key())
	r.gen.Add(1)
	delete(r.byHandle, s.meta.Handle)
	r.mu.Unlock()
	s.markGone()
	s.log.Close()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove shape %s: %w", s.meta.Handle, err)
	}
	r.o.Log.Info("shape removed", "handle", s.meta.Handle, "table", s.meta.Definition.String())
	return nil
}

// routable is the end LSN of the stream log's durable records.
func (r *Registry) routable() uint64 {
	if r.o.Stream == nil {
		return 0
	}
	_, end := r.o.Stream.Durable()
	return end
}

// addedChan returns the channel closed when a shape is added.
func (r *Registry) addedChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.added
}

// list returns the shapes and the channel closed when one is added.
func (r *Registry) list() ([]*Shape, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Shape, 0, len(r.byDef))
	for _, s := range r.byDef {
		out = append(out, s)
	}
	return out, r.added
}

// DropAll removes every shape, for when the stream's continuity is lost
// (the slot was created anew): their clients get 409 and refetch. It
// returns how many it removed.
func (r *Registry) DropAll() (int, error) {
	shapes, _ := r.list()
	for i, s := range shapes {
		if err := r.Delete(s); err != nil {
			return i, err
		}
	}
	if len(shapes) > 0 {
		r.o.Log.Warn("replication slot created anew: every shape was dropped, clients refetch", "shapes", len(shapes))
	}
	return len(shapes), nil
}

// seenFloor is a commit LSN up to which every transaction is already handled
// for a shape created now: it is in the stream log at or before seq applied
// (so visible in the snapshot or without changes to the table), or below the
// stream's recorded acknowledgement.
func (r *Registry) seenFloor(applied uint64) (uint64, error) {
	var floor uint64
	if applied > 0 {
		recs, err := r.o.Stream.Read(applied, 1)
		if err != nil {
			return 0, fmt.Errorf("read stream log: %w", err)
		}
		if len(recs) > 0 {
			floor = recs[0].CommitLSN
		}
	}
	if a := r.o.Stream.Acked(); a > 0 {
		floor = max(floor, a-1)
	}
	return floor, nil
}
