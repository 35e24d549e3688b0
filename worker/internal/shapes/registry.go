package shapes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
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
	// ChunkBytes is the chunk threshold of the shapes made (0:
	// DefaultChunkBytes): a chunk of a shape log ends after the message
	// that brings it to this size (see "Chunks").
	ChunkBytes int64
}

func (r *Registry) chunkBytes() int64 {
	if r.o.ChunkBytes > 0 {
		return r.o.ChunkBytes
	}
	return DefaultChunkBytes
}

// Counter counts events (a prometheus.Counter fits).
type Counter interface{ Inc() }

// Counters count events of the shapes (prometheus.Counter fits).
type Counters struct {
	// Compacted: shape logs compacted.
	Compacted Counter
	// Invalidated: shapes removed because their table was truncated,
	// dropped, renamed or altered.
	Invalidated Counter
	// WhereErrors: where clauses that raised an error on a changed row.
	WhereErrors Counter
	// Created observes, in seconds, how long each shape that was created
	// took: the table's description, the publication, the snapshot.
	Created Observer
}

// Observer observes values (a prometheus.Histogram fits).
type Observer interface{ Observe(float64) }

func inc(c Counter) {
	if c != nil {
		c.Inc()
	}
}

// Registry is the catalog of the shapes of one stream for one lease: their
// logs are opened with the lease's epoch, so a successor fences them. Its
// methods are safe for concurrent use; Run drives the router and upkeep.
type Registry struct {
	o   Options
	dir string

	// createMu is shared by creations (up to createConcurrency at once, one
	// per definition) and held alone by what changes the publication or
	// the stream log under them (Reconcile, stream truncation).
	createMu sync.RWMutex
	creating singleflight.Group
	// creatingN counts the creations under way (Count).
	creatingN atomic.Int32
	createSem chan struct{}
	// subsetSem bounds the subset snapshots read at once (subset.go).
	subsetSem chan struct{}
	// conns are idle connections of creations, kept between them; one is
	// dropped after a failure that is not the request's fault.
	conns chan *pgx.Conn

	mu       sync.Mutex
	byDef    map[string]*Shape
	byHandle map[string]*Shape
	// failures are snapshots that failed on their rows after they were
	// served (fill.go).
	failures map[string]failure
	added    chan struct{} // closed and replaced when a shape is added
	// gen counts shapes added and removed: the router looks the shapes
	// over again only when it moved.
	gen atomic.Uint64
	// changed are the shapes added, completed or removed since the router
	// last took them (routerView); changedAll: too many to keep, the
	// router takes the whole list instead.
	changed    []*Shape
	changedAll bool
	// floor is how far the router routed every shape it caught up
	// (Shape.floor); kept here across the router's restarts.
	floor  atomic.Pointer[streamPos]
	closed bool
	// life ends when Close is called (end): creations in progress stop
	// then, instead of holding up the end of the lease until their
	// snapshot is taken.
	life context.Context
	end  context.CancelFunc

	// set is the fenced set of the shapes' folders (storage.Set).
	set *storage.Set
	// stop, when set by a test, is called at the points of a write where a
	// writer may be stopped (stopPoint).
	stop func(stopPoint)
}

func (r *Registry) at(p stopPoint) {
	if r.stop != nil {
		r.stop(p)
	}
}

// openConcurrency is how many shape logs Open opens at once.
const openConcurrency = 16

// Open opens the shapes of the storage for writing with o.Epoch: it takes
// over the set of shapes (storage.OpenSet, fencing every earlier lease's
// registry, and removing what earlier ones created but did not finish, or
// removed but did not delete), then opens every shape's log (fencing its
// earlier writers). The first Open of storage of the layout before the
// set keeps its shapes (see doc.go). Open never waits for another process.
func Open(o Options) (*Registry, error) {
	r := &Registry{o: o, dir: filepath.Join(o.Dir, "shapes"), byDef: map[string]*Shape{},
		createSem: make(chan struct{}, createConcurrency), subsetSem: make(chan struct{}, subsetConcurrency), conns: make(chan *pgx.Conn, createConcurrency),
		byHandle: map[string]*Shape{}, failures: map[string]failure{}, added: make(chan struct{})}
	r.life, r.end = context.WithCancel(context.Background())
	set, err := storage.OpenSet(r.dir, o.Epoch, hasLegacyMeta)
	if err != nil {
		return nil, fmt.Errorf("shapes: %w", err)
	}
	r.set = set
	// The shapes' logs are opened several at once: each Open takes its
	// log over with a few fsyncs (storage/doc.go R1, R5) and reads it, and
	// one after another they made a takeover's start-up grow with the
	// number of shapes times the disk's latency. The logs are independent;
	// the registry is filled once every Open returned.
	members := set.Members()
	opened := make([]*Shape, len(members))
	errs := make([]error, len(members))
	var g errgroup.Group
	g.SetLimit(openConcurrency)
	for i, dir := range members {
		g.Go(func() error {
			opened[i], errs[i] = r.openShape(dir)
			return nil
		})
	}
	_ = g.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, errNoShape) {
			for _, s := range opened {
				if s != nil {
					s.log.Close()
				}
			}
			r.Close()
			return nil, fmt.Errorf("shape %s: %w", filepath.Base(members[i]), err)
		}
	}
	var lost, partial []string
	for i, dir := range members {
		s := opened[i]
		if errors.Is(errs[i], errNoShape) {
			lost = append(lost, dir)
			continue
		}
		if s.meta.SnapshotPartial {
			// Its snapshot was cut short (a crash, a handoff, a failure):
			// never served as complete; its clients refetch.
			s.log.Close()
			partial = append(partial, dir)
			continue
		}
		r.byDef[s.meta.Definition.Key()] = s
		r.byHandle[s.meta.Handle] = s
	}
	if len(lost) > 0 {
		o.Log.Warn("removing shapes whose folder or metadata is gone", "shapes", len(lost), "dirs", lost)
	}
	if len(partial) > 0 {
		o.Log.Info("removing shapes whose snapshot was cut short; their clients refetch", "shapes", len(partial), "dirs", partial)
	}
	if dirs := append(lost, partial...); len(dirs) > 0 {
		if err := set.Remove(dirs...); err != nil {
			r.Close()
			return nil, fmt.Errorf("shapes: %w", err)
		}
	}
	return r, nil
}

// Close stops the creations in progress (GetOrCreate returns
// storage.ErrClosed), waits for them, and closes every shape log (Run
// persisted how far each was routed before it returned).
func (r *Registry) Close() error {
	r.end()
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
	if r.set != nil {
		r.set.Close()
	}
	return first
}

// Lookup returns the shape of d, or nil.
func (r *Registry) Lookup(d Definition) *Shape {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byDef[d.Key()]
}

// LookupHandle returns the shape whose handle is h, or nil.
func (r *Registry) LookupHandle(h string) *Shape {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byHandle[h]
}

// Delete removes the shape: its handle is never served again. Its folder
// is removed only once the set durably no longer names it and this
// registry still holds the storage (storage.Set.Remove): a registry that a
// newer lease took over gets storage.ErrFenced and removes nothing.
func (r *Registry) Delete(s *Shape) error {
	return r.remove([]*Shape{s})
}

// remove removes shapes (those still registered), their folders at once.
func (r *Registry) remove(shapes []*Shape) error {
	gone := r.unregister(shapes)
	if len(gone) == 0 {
		return nil
	}
	dirs := make([]string, len(gone))
	for i, s := range gone {
		s.log.Close()
		dirs[i] = s.dir
	}
	r.at(stopDelete)
	if err := r.set.Remove(dirs...); err != nil {
		if len(gone) == 1 {
			return fmt.Errorf("remove shape %s: %w", gone[0].meta.Handle, err)
		}
		return fmt.Errorf("remove %d shapes: %w", len(gone), err)
	}
	for _, s := range gone {
		r.o.Log.Info("shape removed", "handle", s.meta.Handle, "table", s.meta.Definition.String())
	}
	return nil
}

// streamEnd is the end LSN of the stream log's durable records.
func (r *Registry) streamEnd() uint64 {
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

// list returns the shapes whose snapshot is complete (those the router,
// persistence and upkeep take) and the channel closed when one is added.
func (r *Registry) list() ([]*Shape, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked(), r.added
}

// listLocked is list's shapes. The caller holds r.mu.
func (r *Registry) listLocked() []*Shape {
	out := make([]*Shape, 0, len(r.byDef))
	for _, s := range r.byDef {
		if !s.filling.Load() {
			out = append(out, s)
		}
	}
	return out
}

// unregister forgets those of shapes still registered, which are gone
// from then on, and returns them.
func (r *Registry) unregister(shapes []*Shape) []*Shape {
	var gone []*Shape
	r.mu.Lock()
	for _, s := range shapes {
		if r.byDef[s.meta.Definition.Key()] != s {
			continue
		}
		delete(r.byDef, s.meta.Definition.Key())
		delete(r.byHandle, s.meta.Handle)
		gone = append(gone, s)
	}
	if len(gone) > 0 {
		r.gen.Add(1)
		r.noteChanged(gone...)
	}
	r.mu.Unlock()
	for _, s := range gone {
		s.markGone()
	}
	return gone
}

// noteChanged keeps shapes for the router's next routerView. The caller
// holds r.mu. Past one change per registered shape (the router is not
// running, or far behind), the whole list is cheaper: the router takes
// it instead.
func (r *Registry) noteChanged(shapes ...*Shape) {
	if r.changedAll {
		return
	}
	if len(r.changed)+len(shapes) > max(1024, 2*len(r.byDef)) {
		r.changed, r.changedAll = nil, true
		return
	}
	r.changed = append(r.changed, shapes...)
}

// routerView is what the router syncs its fanout with (fanout.apply):
// with all (a router's first sync), or when the changes were too many to
// keep, every listed shape (those list returns) in add and nothing in
// drop, and full true; otherwise the shapes changed since the last call,
// split into those listed now (add) and those not (drop: removed, or
// not complete yet). Each call takes the changes: the next one returns
// only later ones. A shape changed twice is judged once, as it is now.
func (r *Registry) routerView(all bool) (add, drop []*Shape, full bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if all || r.changedAll {
		r.changed, r.changedAll = nil, false
		return r.listLocked(), nil, true
	}
	seen := make(map[*Shape]bool, len(r.changed))
	for _, s := range r.changed {
		if seen[s] {
			continue
		}
		seen[s] = true
		if r.byDef[s.meta.Definition.Key()] == s && !s.filling.Load() {
			add = append(add, s)
		} else {
			drop = append(drop, s)
		}
	}
	r.changed = nil
	return add, drop, false
}

// listAll returns every registered shape, those being filled included.
func (r *Registry) listAll() []*Shape {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Shape, 0, len(r.byDef))
	for _, s := range r.byDef {
		out = append(out, s)
	}
	return out
}

// DropAll removes every shape, for when the stream's continuity is lost
// (the slot was created anew): their clients get 409 and refetch. It
// returns how many it removed.
func (r *Registry) DropAll() (int, error) {
	shapes := r.listAll()
	if err := r.remove(shapes); err != nil {
		return 0, err
	}
	if len(shapes) > 0 {
		r.o.Log.Warn("replication slot created anew: every shape was dropped, clients refetch", "shapes", len(shapes))
	}
	return len(shapes), nil
}
