package shapes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/storage"
)

// entry locates one record of a shape log.
type entry struct {
	seq  uint64
	off  Offset
	size int
}

// Shape is one open shape.
type Shape struct {
	dir    string
	log    *storage.Log
	schema string // electric-schema header
	// pred is the shape's where clause, bound to its params; nil for every
	// row, or until the router prepares it for a shape opened from disk.
	pred *where.Predicate
	// routable is the end LSN of the stream log (nil in tests): every
	// transaction up to it will be routed here.
	routable func() uint64
	// routed and caught: once the router has caught the shape up with the
	// position it routed every caught-up shape to, the shape is routed as
	// far as that position without being told each batch (see floor).
	routed *atomic.Pointer[routedPos]
	caught atomic.Bool

	mu    sync.RWMutex
	meta  Meta
	index []entry
	upTo  uint64 // commit LSN of the last stream transaction routed here
	seen  uint64 // meta.SeenLSN as last persisted
	// persistedRecords is len(index) when the metadata was last written.
	persistedRecords int
	changed          chan struct{}
	gone             bool // deleted or invalidated: its handle is never served again
	// compactBase is the size of the log's messages after the last
	// compaction, or when first checked (compact.go).
	compactBase int64

	use       use        // requests using it, for idle expiry (expire.go)
	persistMu sync.Mutex // one metadata write at a time
	// durable is the metadata as last persisted: what the next Open reads.
	durable Meta
	// stopAt, when the registry's test hook is set, stops a writer between
	// the steps of a write.
	stopAt func(stopPoint)
}

// stopPoint is a point between the steps of a registry write, where a
// test stops the writer as a process frozen there would be.
type stopPoint int

const (
	stopPersist stopPoint = iota // persist: the shape log synced, its metadata not written
	stopCreate                   // creation: the shape log filled, its metadata not written
	stopAdd                      // creation: the metadata written, the shape not a member yet
	stopDelete                   // Delete: the shapes closed, their folders still members
)

// Handle is the shape's handle.
func (s *Shape) Handle() string { return s.meta.Handle }

// Definition is what the shape holds.
func (s *Shape) Definition() Definition { return s.meta.Definition }

// Schema is the electric-schema header value.
func (s *Shape) Schema() string { return s.schema }

// errNoShape: a member folder of the set holds no shape (see openShape).
var errNoShape = errors.New("no shape in the folder")

// openShape opens the shape in dir, a member of the registry's set, for
// writing with the registry's epoch. Its metadata is the shape log's
// (storage.Log.Meta); a shape of the layout before that has none, and its
// meta.json, read now that the shape log's writers are fenced, is moved
// there. It returns errNoShape when the folder is gone or holds neither
// (its creation was cut short under that layout by a writer that did not
// fence).
func (r *Registry) openShape(dir string) (*Shape, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, errNoShape
	}
	l, err := storage.Open(dir, r.o.Epoch)
	if err != nil {
		return nil, err
	}
	m, err := logMeta(l, dir)
	if err != nil {
		l.Close()
		return nil, err
	}
	s := &Shape{dir: dir, log: l, meta: *m, durable: *m, schema: m.schemaHeader(), changed: make(chan struct{}),
		upTo: m.SeenLSN, seen: m.SeenLSN, routable: r.routable, routed: &r.routed, stopAt: r.at}
	s.use.restore(m.LastUsedAt)
	if err := s.loadIndex(); err != nil {
		l.Close()
		return nil, err
	}
	return s, nil
}

// logMeta returns the metadata of the shape log l in dir, moving a legacy
// meta.json into it.
func logMeta(l *storage.Log, dir string) (*Meta, error) {
	if b := l.Meta(); b != nil {
		return decodeMeta(b)
	}
	m, err := readLegacyMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoShape
	}
	if err != nil {
		return nil, err
	}
	b, err := encodeMeta(m)
	if err == nil {
		err = l.SetMeta(b)
	}
	if err != nil {
		return nil, fmt.Errorf("move %s into the shape log: %w", legacyMetaFile, err)
	}
	// Only read once: a writer of that layout still running may write it
	// again, to no effect.
	os.Remove(filepath.Join(dir, legacyMetaFile))
	os.Remove(filepath.Join(dir, legacyMetaFile+".tmp"))
	return m, nil
}

// loadIndex reads every record once to index its offset.
func (s *Shape) loadIndex() error {
	next := uint64(1)
	for {
		recs, err := s.log.Read(next, 1024)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		for _, r := range recs {
			op, _ := splitPayload(r.Payload)
			s.index = append(s.index, entry{seq: r.Seq, off: Offset{TX: r.CommitLSN, Op: op}, size: len(r.Payload) - 8})
			if r.CommitLSN > s.upTo {
				s.upTo = r.CommitLSN
			}
			next = r.Seq + 1
		}
	}
}

// advance adds routed records to the index that readers plan from, moves
// the shape's own routing positions (applied, upTo) and wakes live
// requests. A shape already routed up to applied is left as it is.
func (s *Shape) advance(entries []entry, upTo, applied uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if applied <= s.meta.AppliedSeq {
		return // routed here before (created after these records)
	}
	s.meta.AppliedSeq = applied
	s.index = append(s.index, entries...)
	if upTo > s.upTo {
		s.upTo = upTo
	}
	if len(entries) > 0 {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// routedPos is a stream log seq and the commit LSN of its transaction.
type routedPos struct{ seq, lsn uint64 }

// floor is the router's position for caught-up shapes, when s is one.
func (s *Shape) floor() routedPos {
	if s.routed == nil || !s.caught.Load() {
		return routedPos{}
	}
	if p := s.routed.Load(); p != nil {
		return *p
	}
	return routedPos{}
}

// applied is the stream log seq up to which every transaction has been
// routed to the shape; only the router moves it.
func (s *Shape) applied() uint64 {
	f := s.floor()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return max(s.meta.AppliedSeq, f.seq)
}

// ownApplied is meta.AppliedSeq, without the router's floor.
func (s *Shape) ownApplied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.meta.AppliedSeq
}

// upToLocked is the commit LSN of the last transaction routed here.
// The caller holds s.mu.
func (s *Shape) upToLocked(f routedPos) uint64 { return max(s.upTo, f.lsn) }

// markGone ends the shape for readers.
func (s *Shape) markGone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.gone {
		s.gone = true
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *Shape) isGone() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gone
}
