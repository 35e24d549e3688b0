package shapes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/storage"
)

// A shape's snapshot is written and served while it runs (see doc.go,
// "Streaming snapshots"): the shape is stored first with SnapshotPartial
// metadata (begin), its rows are read into the log by a fill, which
// registers the shape as soon as its first records are durable, and its
// metadata is written complete only once the snapshot-end message is
// durable (complete).

// failedFor is how long a snapshot that failed on its rows after it was
// served (a where clause raising an error on a row) answers a request for
// the same definition with that error, instead of being taken again.
const failedFor = time.Minute

// fill is one snapshot being written.
type fill struct {
	r    *Registry
	s    *Shape
	conn *pgx.Conn
	tx   pgx.Tx
	t    *table

	mu         sync.Mutex
	registered bool
	ready      chan struct{} // closed once registered, or when the fill ended first
	err        error         // why it ended before it was registered
}

// begin makes a new shape with metadata m (SnapshotPartial) and no
// records yet: a folder of the set's (storage.Set.NewFolder) and a log
// with m made in it (storage.Create). Nothing of it is durable yet, and
// the folder is garbage to every other Open: the first Sync of its log
// makes the whole log durable, and only then does admit add the folder
// to the set (concurrent Adds share their writes), before anything of it
// is served. Each step is fenced. The shape is not registered: the fill
// does that. A folder that is a member with partial metadata is dropped
// by the next Open; one that never became a member is garbage to it.
func (r *Registry) begin(m *Meta, pred *where.Predicate) (*Shape, error) {
	m.SnapshotPartial = true
	b, err := encodeMeta(m)
	if err != nil {
		return nil, fmt.Errorf("write shape metadata: %w", err)
	}
	dir, err := r.set.NewFolder(m.Handle)
	if err != nil {
		return nil, fmt.Errorf("new shape folder: %w", err)
	}
	l, err := storage.Create(dir, r.o.Epoch, b)
	if err != nil {
		r.set.Discard(dir)
		return nil, err
	}
	s := &Shape{dir: dir, log: l, meta: *m, durable: *m, schema: m.schemaHeader(), changed: make(chan struct{}),
		streamEnd: r.streamEnd, sharedFloor: &r.floor, routedLSN: m.SeenLSN, pred: pred, stopAt: r.at, chunks: newChunker(m.ChunkBytes)}
	s.filling.Store(true)
	return s, nil
}

// admit makes s, made by begin, a member of the set, once its log is
// durable (a Sync of it returned): from then on an Open has it (and
// drops it while its metadata is partial). It fails with ErrFenced once
// a newer lease took the set over: the folder may then be a member of
// that lease's set or garbage to it, so it is left alone.
func (r *Registry) admit(s *Shape) error {
	r.at(stopAdd)
	if err := s.log.Settle(); err != nil {
		return err
	}
	if err := r.set.Add(s.dir); err != nil {
		return fmt.Errorf("add shape: %w", err)
	}
	s.admitted.Store(true)
	return nil
}

// drop undoes a shape begin made that was never served: its log closed,
// its folder removed (a member's durably, with the set's Remove).
func (r *Registry) drop(s *Shape) error {
	s.log.Close()
	if s.admitted.Load() {
		return r.set.Remove(s.dir)
	}
	return r.set.Discard(s.dir)
}

// complete writes s's metadata without SnapshotPartial, once every record
// of its snapshot is durable: from then on an Open keeps the shape. Then
// last, the durable records not yet served (the snapshot-end), are.
func (r *Registry) complete(s *Shape, last []entry) error {
	r.at(stopCreate)
	s.mu.RLock()
	m := s.meta
	s.mu.RUnlock()
	m.SnapshotPartial = false
	b, err := encodeMeta(&m)
	if err != nil {
		return err
	}
	if err := s.log.SetMeta(b); err != nil {
		return fmt.Errorf("write shape metadata: %w", err)
	}
	s.snapshotDone(last)
	return nil
}

// register makes s served: Lookup finds it, and, once its snapshot is
// complete, the router, persistence and upkeep take it.
func (r *Registry) register(s *Shape) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return storage.ErrClosed
	}
	r.byDef[s.meta.Definition.Key()] = s
	r.byHandle[s.meta.Handle] = s
	r.moved(s)
	return nil
}

// moved tells the router that s was added or completed. The caller holds
// r.mu.
func (r *Registry) moved(s *Shape) {
	r.gen.Add(1)
	r.noteChanged(s)
	close(r.added)
	r.added = make(chan struct{})
}

// publish serves durable snapshot records: the syncer of the fill's
// snapWriter calls it, in order. The first call registers the shape.
func (f *fill) publish(entries []entry) {
	f.s.addSnapshot(entries)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.registered && f.r.register(f.s) == nil {
		f.registered = true
		close(f.ready)
	}
}

// run writes the snapshot: the rows, the snapshot-end message, the
// complete metadata. It ends the snapshot's transaction and reports how
// it ended; ctx is the registry's life, not a request's.
func (f *fill) run(ctx context.Context) error {
	s := f.s
	s.mu.RLock()
	m := s.meta
	s.mu.RUnlock()
	last, err := f.rows(ctx, &m)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && m.Definition.Where != "" && pgerrcode.IsDataException(pgErr.Code) {
		// The where clause fails on a row (division by zero, a bad cast).
		err = &InvalidError{Field: "where", Problem: "evaluating the where clause on the table's rows failed: " + pgErr.Message}
	}
	if err == nil {
		// The snapshot-end record is served only once the snapshot is
		// recorded as complete (S2, S3).
		err = f.r.complete(s, last)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.failed(err)
		return err
	}
	r := f.r
	if f.registered {
		r.mu.Lock()
		if r.byDef[m.Definition.Key()] == s {
			r.moved(s) // complete: the router takes it
		}
		r.mu.Unlock()
		return nil
	}
	if err := r.register(s); err != nil {
		s.log.Close() // stored and a member: the next Open has it
		f.err = err
		close(f.ready)
		return err
	}
	f.registered = true
	close(f.ready)
	return nil
}

// rows writes the snapshot's records, the snapshot-end message last, and
// ends the snapshot's transaction. It returns the last record, durable and
// not published.
func (f *fill) rows(ctx context.Context, m *Meta) ([]entry, error) {
	pkPos := make([]int, len(f.t.pk))
	for i, k := range f.t.pk {
		for j, c := range m.Columns {
			if c.Name == k {
				pkPos[i] = j
			}
		}
	}
	w := newSnapWriter(f.s.log, newRowEncoder(m.Definition, m.Columns, pkPos), int(m.ChunkBytes), func() error { return f.r.admit(f.s) }, f.publish)
	if err := copySnapshot(ctx, f.tx, m, w); err != nil {
		f.tx.Rollback(context.WithoutCancel(ctx))
		w.close()
		return nil, err
	}
	last, err := w.finish(snapshotEnd(m))
	if err != nil {
		f.tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store snapshot of %s: %w", m.Definition, err)
	}
	// The transaction ends once its rows are durable: a snapshot is
	// complete only after its transaction committed.
	if err := f.tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", m.Definition, err)
	}
	return last, nil
}

// failed undoes the shape after its fill failed with err. f.mu is held.
// Once the registry is closing (or fenced), the shape is left as it is:
// the next Open drops it, its metadata being partial.
func (f *fill) failed(err error) {
	r, s := f.r, f.s
	closing := r.life.Err() != nil || errors.Is(err, storage.ErrFenced)
	if !f.registered {
		if closing {
			s.log.Close()
		} else {
			if rerr := r.drop(s); rerr != nil {
				r.o.Log.Warn("shape whose snapshot failed not removed; the next start drops it", "handle", s.meta.Handle, "err", rerr)
			}
		}
		f.err = err
		close(f.ready)
		return
	}
	var ie *InvalidError
	if errors.As(err, &ie) {
		r.mu.Lock()
		r.failures[s.meta.Definition.Key()] = failure{err: err, at: time.Now()}
		r.mu.Unlock()
	}
	if closing {
		s.markGone()
		return
	}
	// Served in part: its clients are told to refetch (ErrGone), and never
	// get its end.
	r.o.Log.Warn("shape snapshot failed while served; the shape is removed and its clients refetch", "handle", s.meta.Handle, "err", err)
	if rerr := r.remove([]*Shape{s}); rerr != nil {
		r.o.Log.Warn("shape whose snapshot failed not removed; the next start drops it", "handle", s.meta.Handle, "err", rerr)
	}
	s.markGone()
}

// failure is a snapshot that failed on its rows (failedFor).
type failure struct {
	err error
	at  time.Time
}

// recentFailure returns the error of a recent failed snapshot of d.
func (r *Registry) recentFailure(d Definition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.failures[d.Key()]
	if !ok {
		return nil
	}
	if time.Since(f.at) > failedFor {
		delete(r.failures, d.Key())
		return nil
	}
	return f.err
}
