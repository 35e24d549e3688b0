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
	// body is the record's messages, on their way from the router to
	// advance (for the chunker); nil in the index.
	body []byte
}

// Shape is one open shape.
type Shape struct {
	dir    string
	log    *storage.Log
	schema string // electric-schema header
	// pred is the shape's where clause, bound to its params; nil for every
	// row, or until the router prepares it for a shape opened from disk.
	pred *where.Predicate
	// listed is the fanout sync round that last found the shape listed
	// and not gone (fanout.sync; only the router's goroutine uses it).
	listed uint64
	// streamEnd is the end LSN of the stream log's durable records (nil in
	// tests): every transaction up to it will be routed here.
	streamEnd func() uint64
	// sharedFloor and caught: once the router has caught the shape up with
	// its floor (Registry.floor), the shape is routed as far as the floor
	// without being told each batch (see floor).
	sharedFloor *atomic.Pointer[streamPos]
	caught      atomic.Bool
	// filling: the snapshot is still being written (fill.go). Its records
	// are served as they become durable; the router, persistence,
	// compaction and expiry leave the shape alone until it is complete.
	filling atomic.Bool
	// admitted: a shape this registry made (begin) was added to the set
	// (admit), once its log was durable. Only drop reads it: the shapes
	// Open found are members without it.
	admitted atomic.Bool

	mu    sync.RWMutex
	meta  Meta
	index []entry
	// ends are the chunk boundaries of the log, in order, and chunks the
	// chunker that found them (chunk.go).
	ends   []Offset
	chunks chunker
	// routedLSN is the commit LSN of the last stream transaction routed
	// here (the floor's may be higher: see routedLSNLocked).
	routedLSN uint64
	// persistedRecords is len(index) when the metadata was last written.
	persistedRecords int
	changed          chan struct{}
	gone             bool // deleted or invalidated: its handle is never served again
	// compactBase is the size of the log's messages after the last
	// compaction, or when first checked (compact.go).
	compactBase int64

	use       use        // requests using it, for idle expiry (expire.go)
	persistMu sync.Mutex // one metadata write at a time
	// durable is the metadata as last persisted: what the next Open reads,
	// and, as durable.SeenLSN, what responses advertise.
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
	if m.ChunkBytes == 0 {
		// Made before the threshold was kept: it takes this worker's, kept
		// from the next persist on.
		m.ChunkBytes = r.chunkBytes()
	}
	s := &Shape{dir: dir, log: l, meta: *m, durable: *m, schema: m.schemaHeader(), changed: make(chan struct{}),
		routedLSN: m.SeenLSN, streamEnd: r.streamEnd, sharedFloor: &r.floor, stopAt: r.at, chunks: newChunker(m.ChunkBytes)}
	s.use.restore(m.LastUsedAt)
	if err := s.loadIndex(); err != nil {
		l.Close()
		return nil, err
	}
	// What is stored is what a write of the metadata would say of the
	// records: none came since. (Had it lagged the log, the start routes
	// those transactions again and skips them.) Without this, every shape
	// counted as unpersisted, and each graceful stop rewrote the metadata
	// of every shape (persistFinal), thousands of fsyncs in the drain.
	s.persistedRecords = len(s.index)
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

// loadIndex indexes every record's offset and finds the chunk boundaries
// from the records' heads (storage.Log.ReadHeads), without their bodies:
// a body is read only when a transaction's record ends a chunk in its
// middle (chunker.add asks for it), so that a start costs about the
// number of records, not the bytes of the snapshot.
func (s *Shape) loadIndex() error {
	next := uint64(1)
	for {
		heads, err := s.log.ReadHeads(next, 4096)
		if err != nil {
			return err
		}
		if len(heads) == 0 {
			s.endSnapshotLocked()
			return nil
		}
		for _, h := range heads {
			op, size := h.PrefixUint64(), max(h.Len-8, 0)
			off := Offset{TX: h.CommitLSN, Op: op}
			ends, err := s.chunks.add(off, size, func() ([]byte, error) { return s.recordBody(h.Seq) })
			if err != nil {
				return err
			}
			s.ends = append(s.ends, ends...)
			s.index = append(s.index, entry{seq: h.Seq, off: off, size: size})
			if h.CommitLSN > s.routedLSN {
				s.routedLSN = h.CommitLSN
			}
			next = h.Seq + 1
		}
	}
}

// recordBody reads the body of the shape log's record seq.
func (s *Shape) recordBody(seq uint64) ([]byte, error) {
	recs, err := s.log.Read(seq, 1)
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 || recs[0].Seq != seq {
		return nil, fmt.Errorf("shape log record %d: not found", seq)
	}
	_, body := splitPayload(recs[0].Payload)
	return body, nil
}

// advance adds routed records to the index that readers plan from, moves
// the shape's own routed positions to stream record seq, whose transaction
// committed at lsn, and wakes live requests. A shape already routed up to
// seq is left as it is.
func (s *Shape) advance(entries []entry, lsn, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.meta.RoutedSeq {
		return // routed here before (created after these records)
	}
	s.meta.RoutedSeq = seq
	for _, e := range entries {
		body := e.body
		ends, _ := s.chunks.add(e.off, e.size, func() ([]byte, error) { return body, nil })
		s.ends = append(s.ends, ends...)
		e.body = nil
		s.index = append(s.index, e)
	}
	if lsn > s.routedLSN {
		s.routedLSN = lsn
	}
	if len(entries) > 0 {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// records is how many records the shape's index holds.
func (s *Shape) records() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.index)
}

// addSnapshot adds durable snapshot records to the index and wakes the
// requests streaming the snapshot.
func (s *Shape) addSnapshot(entries []entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexSnapshotLocked(entries)
	close(s.changed)
	s.changed = make(chan struct{})
}

// indexSnapshotLocked adds snapshot records to the index and their chunk
// boundaries (never inside a snapshot record) to ends.
func (s *Shape) indexSnapshotLocked(entries []entry) {
	for _, e := range entries {
		ends, _ := s.chunks.add(e.off, e.size, nil)
		s.ends = append(s.ends, ends...)
		s.index = append(s.index, e)
	}
}

// endSnapshotLocked ends the snapshot's last chunk at its last record when
// nothing follows it yet, for a shape whose snapshot ends with
// snapshot-end (Meta.SnapshotEnd).
func (s *Shape) endSnapshotLocked() {
	if !s.meta.SnapshotEnd {
		return
	}
	if off, ok := s.chunks.endSnapshot(); ok {
		s.ends = append(s.ends, off)
	}
}

// snapshotDone marks the snapshot complete (its metadata without
// SnapshotPartial is durable), adds last, its durable records not served
// yet, to the index, and wakes the requests streaming it.
func (s *Shape) snapshotDone(last []entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexSnapshotLocked(last)
	s.endSnapshotLocked()
	s.meta.SnapshotPartial = false
	s.durable = s.meta
	s.filling.Store(false)
	close(s.changed)
	s.changed = make(chan struct{})
}

// streamPos is a stream log seq and the commit LSN of its transaction.
type streamPos struct{ seq, lsn uint64 }

// floor is the router's floor when s is caught up, else zero.
func (s *Shape) floor() streamPos {
	if s.sharedFloor == nil || !s.caught.Load() {
		return streamPos{}
	}
	if p := s.sharedFloor.Load(); p != nil {
		return *p
	}
	return streamPos{}
}

// routedSeq is the stream log seq up to which every transaction has been
// routed to the shape, the floor included; only the router moves it.
func (s *Shape) routedSeq() uint64 {
	f := s.floor()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return max(s.meta.RoutedSeq, f.seq)
}

// ownRoutedSeq is meta.RoutedSeq, without the floor.
func (s *Shape) ownRoutedSeq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.meta.RoutedSeq
}

// routedLSNLocked is the commit LSN of the last transaction routed here,
// given the floor f. The caller holds s.mu.
func (s *Shape) routedLSNLocked(f streamPos) uint64 { return max(s.routedLSN, f.lsn) }

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
