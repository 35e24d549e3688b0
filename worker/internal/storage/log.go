package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// DefaultSegmentSize is the default Options.SegmentSize: 64 MiB.
const DefaultSegmentSize = 64 << 20

// Options tune a Log; the zero value means the defaults.
type Options struct {
	// SegmentSize is the size a segment file may reach before records go to
	// a new one; a record larger than that gets a segment of its own.
	// 0 means DefaultSegmentSize; otherwise between 4 KiB and 1 GiB.
	SegmentSize int64
}

// Validate reports whether the options are usable, naming the bad field.
func (o Options) Validate() error {
	if o.SegmentSize != 0 && (o.SegmentSize < 4<<10 || o.SegmentSize > 1<<30) {
		return fmt.Errorf("SegmentSize %d: must be between 4 KiB and 1 GiB", o.SegmentSize)
	}
	return nil
}

// Log is an open log directory. See the package documentation for what is
// safe concurrently.
type Log struct {
	// acked is the recorded acknowledgement watermark (ack.go).
	acked atomic.Uint64

	dir         string
	me          owner
	owner       ownerCache // the EPOCH file last seen naming me (syncMu)
	segmentSize int64
	lock        *dirLock

	// syncMu serializes Sync, Close and compaction, and guards active,
	// activeSize and compacted.
	syncMu     sync.Mutex
	active     *os.File // the last segment, open for writing; nil before the first
	activeSize int64    // its size as written by this process
	// activeUnsynced: records written to active by Write are not fsynced.
	activeUnsynced bool
	compacted      compacted

	mu sync.RWMutex
	// Appended, not yet handed to Sync; planned layout including them.
	pending  []*chunk
	nextSeq  uint64
	lastEnd  uint64 // end LSN of the last appended record, pending or durable
	planSeg  uint64 // first seq of the segment Append adds to; 0 before any
	planSize int64  // that segment's size with the pending records
	// Durable and published to readers.
	segs       []*segment
	durableSeq uint64
	durableEnd uint64
	swaps      uint64        // how many compactions replaced segs (compact.go)
	changed    chan struct{} // closed and replaced whenever the state below or above changes
	closed     bool
	err        error // sticky: a fencing or I/O error ends the writer
}

// chunk is a run of appended records bound for one segment.
type chunk struct {
	newSegment bool     // the segment file does not exist yet
	segFirst   uint64   // first seq of the segment
	buf        []byte   // the encoded records
	offsets    []uint32 // where each record will start in the segment
	lastSeq    uint64
	lastEnd    uint64
	end        int64 // the segment's size once this chunk is written (set by write)
}

// Open opens the log in dir with the default Options; see OpenWith.
func Open(dir string, epoch uint64) (*Log, error) {
	return OpenWith(dir, epoch, Options{})
}

// OpenWith opens the log in dir, creating dir if missing, as the writer for
// epoch (at least 1). It fails with ErrFenced if the directory already
// belongs to a newer epoch. Otherwise it makes this Open the directory's
// owner, durably, which fences every earlier Open (even one with the same
// epoch), then recovers the records on disk (see the package doc); Append
// continues Seq and EndLSN from them. Open may block while another process
// is inside its short critical section (a Sync's write and fsync).
func OpenWith(dir string, epoch uint64, opts Options) (*Log, error) {
	if epoch == 0 {
		return nil, errors.New("open storage: epoch must be at least 1")
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	lock, err := openDirLock(dir)
	if err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	l := &Log{dir: dir, segmentSize: opts.SegmentSize, lock: lock, changed: make(chan struct{})}
	if err = lock.lock(); err == nil {
		err = l.takeOver(epoch)
		if uerr := lock.unlock(); err == nil {
			err = uerr
		}
	}
	if err != nil {
		if l.active != nil {
			l.active.Close()
		}
		lock.close()
		return nil, fmt.Errorf("open storage %s: %w", dir, err)
	}
	return l, nil
}

// makeDir creates dir if missing, durably.
func makeDir(dir string) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(dir)))
}

// takeOver records this Open as the owner and recovers the log. The caller
// holds the directory lock.
func (l *Log) takeOver(epoch uint64) error {
	cur, err := readOwner(l.dir)
	if err != nil {
		return err
	}
	if cur.epoch > epoch {
		return fmt.Errorf("%w: stored epoch %d is newer than %d", ErrFenced, cur.epoch, epoch)
	}
	l.me = owner{epoch: epoch, open: cur.open + 1}
	if err := writeOwner(l.dir, l.me); err != nil {
		return err
	}
	acked, err := readAck(l.dir)
	if err != nil {
		return err
	}
	l.acked.Store(acked)
	return l.recover()
}

// recover indexes the segments on disk, truncates a torn tail of the last
// one, and makes what is left durable.
func (l *Log) recover() error {
	if err := removeLeftovers(l.dir); err != nil {
		return err
	}
	c, err := removeGarbage(l.dir)
	if err != nil {
		return err
	}
	l.compacted = c
	files, _, _, err := segmentFiles(l.dir)
	if err != nil {
		return err
	}
	var lastSeq, lastEnd uint64
	var tail *scanResult
	for i, sf := range files {
		first := sf.first
		path := filepath.Join(l.dir, sf.name)
		if i > 0 && first != lastSeq+1 {
			return fmt.Errorf("%w: segment %s follows record %d", ErrCorrupt, path, lastSeq)
		}
		res, err := l.scan(path, first, lastEnd, i == len(files)-1)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, res.seg)
		lastSeq = first + uint64(len(res.seg.offsets)) - 1
		lastEnd = res.lastEnd
		tail = &res
	}
	if tail != nil {
		s := tail.seg
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		l.active, l.activeSize = f, s.size
		if tail.fileSize != s.size {
			if err := f.Truncate(s.size); err != nil {
				return fmt.Errorf("truncate torn tail of %s (%s): %w", s.path, tail.tail, err)
			}
		}
		// What a killed predecessor wrote may not have been fsynced yet.
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync segment: %w", err)
		}
		l.planSeg, l.planSize = s.firstSeq, s.size
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	l.nextSeq = lastSeq + 1
	l.lastEnd = lastEnd
	l.durableSeq, l.durableEnd = lastSeq, lastEnd
	return nil
}

// scan verifies one segment during recovery. Only the last one may have a
// torn tail or no records.
func (l *Log) scan(path string, first, prevEnd uint64, last bool) (scanResult, error) {
	res, err := scanSegment(path, first, prevEnd)
	if err != nil {
		return res, err
	}
	if last {
		return res, nil
	}
	if res.tail != nil {
		return res, fmt.Errorf("%w: %s: %s", ErrCorrupt, path, res.tail)
	}
	if len(res.seg.offsets) == 0 {
		return res, fmt.Errorf("%w: %s: no records", ErrCorrupt, path)
	}
	return res, nil
}

// Epoch is the epoch this Log was opened with.
func (l *Log) Epoch() uint64 { return l.me.epoch }

// Append adds r to the records waiting for the next Sync and returns the
// Seq it assigned. It does no I/O, copies r.Payload, ignores r.Seq and sets
// r.Epoch to the Log's epoch. Records must come in increasing EndLSN order:
// a record whose EndLSN is not above the last appended one (such as a
// transaction PostgreSQL replays after a restart) is skipped, with seq 0
// and a nil error. After ErrFenced, an I/O error from Sync, or Close,
// Append returns that error.
func (l *Log) Append(r Record) (seq uint64, err error) {
	if len(r.Payload) > MaxPayload {
		return 0, fmt.Errorf("append: payload of %d bytes is over the limit of %d", len(r.Payload), MaxPayload)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.stateErrLocked(); err != nil {
		return 0, err
	}
	if r.EndLSN <= l.lastEnd {
		return 0, nil
	}
	size := int64(recordHeaderSize + len(r.Payload))
	var c *chunk
	if n := len(l.pending); n > 0 {
		c = l.pending[n-1]
	}
	if l.planSeg == 0 || (l.planSize > segmentHeaderSize && l.planSize+size > l.segmentSize) {
		l.planSeg, l.planSize = l.nextSeq, segmentHeaderSize
		c = &chunk{newSegment: true, segFirst: l.planSeg}
		l.pending = append(l.pending, c)
	} else if c == nil {
		c = &chunk{segFirst: l.planSeg}
		l.pending = append(l.pending, c)
	}
	r.Seq, r.Epoch = l.nextSeq, l.me.epoch
	c.offsets = append(c.offsets, uint32(l.planSize))
	c.buf = appendRecord(c.buf, &r)
	c.lastSeq, c.lastEnd = r.Seq, r.EndLSN
	l.planSize += size
	l.nextSeq++
	l.lastEnd = r.EndLSN
	return r.Seq, nil
}

// Sync writes and fsyncs every record appended so far and returns the
// EndLSN of the last durable record: what may be acknowledged to
// PostgreSQL as flushed. It first checks, under the directory lock, that no
// newer Open has taken the directory over; if one has, it writes nothing
// and returns ErrFenced, as do all later calls. Any other failure is
// sticky too: the records that Sync was writing are in an unknown state,
// so the writer must stop and reopen (recovery sorts it out). Sync blocks
// for the write and fsync, and while another process holds the directory
// lock.
func (l *Log) Sync() (durableEndLSN uint64, err error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err = l.stateErrLocked()
	batch := l.pending
	l.pending = nil
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := l.lock.lock(); err != nil {
		return 0, l.fail(err)
	}
	written, err := l.write(batch)
	if uerr := l.lock.unlock(); err == nil {
		err = uerr
	}
	if err == nil && l.activeUnsynced && l.active != nil {
		// Records Write made readable are made durable too.
		if err = l.active.Sync(); err != nil {
			err = fmt.Errorf("sync segment: %w", err)
		}
	}
	l.activeUnsynced = false
	if err == nil {
		// fsync outside the directory lock: the lock only makes "check the
		// owner, then write" atomic, and stays held for microseconds, not
		// for a disk flush (a writer frozen while holding it would block
		// its successor's Open).
		err = l.flush(written)
	}
	if err != nil {
		return 0, l.fail(err)
	}
	_, end := l.Durable()
	return end, nil
}

// Write makes the records appended so far readable without waiting for
// the disk: they become durable with the next Sync. A crash of the process
// loses nothing written, but a crash of the machine may lose them, so Write
// is for a log whose records can be made again, identically, from a
// durable source (a shape log, from the stream log). Durable then reports
// what was written. Fencing is as for Sync.
func (l *Log) Write() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err := l.stateErrLocked()
	batch := l.pending
	l.pending = nil
	l.mu.Unlock()
	if err != nil || len(batch) == 0 {
		return err
	}
	if err := l.lock.lock(); err != nil {
		return l.fail(err)
	}
	ws, err := l.write(batch)
	if uerr := l.lock.unlock(); err == nil {
		err = uerr
	}
	for _, w := range ws {
		if err != nil {
			break
		}
		if w.closeF { // a finished segment: durable before it is closed
			err = l.flush([]written{w})
			continue
		}
		l.activeUnsynced = true
		for _, c := range w.chunks {
			l.publish(c)
		}
	}
	if err != nil {
		return l.fail(err)
	}
	return nil
}

// written is a segment file written by write and not yet fsynced, with the
// chunks it received.
type written struct {
	f      *os.File
	chunks []*chunk
	closeF bool // not the active segment any more: close after the fsync
}

// flush fsyncs what write wrote and publishes each chunk once durable.
// The caller holds syncMu.
func (l *Log) flush(ws []written) error {
	for _, w := range ws {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("sync segment: %w", err)
		}
		if w.closeF {
			if err := w.f.Close(); err != nil {
				return fmt.Errorf("close segment: %w", err)
			}
		}
		for _, c := range w.chunks {
			l.publish(c)
		}
	}
	return nil
}

// write writes batch (without fsync; see flush) after checking that this
// Open still owns the directory. The caller holds syncMu and the directory
// lock.
func (l *Log) write(batch []*chunk) ([]written, error) {
	cur, err := l.owner.isOwner(l.dir, l.me)
	if err != nil {
		return nil, err
	}
	if cur != l.me {
		return nil, fmt.Errorf("%w: the log now belongs to %s, this writer is %s", ErrFenced, cur, l.me)
	}
	var out []written
	for _, c := range batch {
		if c.newSegment {
			if l.active != nil {
				if n := len(out); n > 0 && out[n-1].f == l.active {
					out[n-1].closeF = true // closed once fsynced
				} else if err := l.syncUnsynced(); err != nil {
					return out, err
				} else if err := l.active.Close(); err != nil { // fsynced by an earlier flush, Sync or recovery
					l.active = nil
					return out, fmt.Errorf("close segment: %w", err)
				}
				l.active = nil
			}
			f, err := createSegment(l.dir, c.segFirst)
			if err != nil {
				return out, err
			}
			l.active, l.activeSize = f, segmentHeaderSize
		}
		fi, err := l.active.Stat()
		if err != nil {
			return out, fmt.Errorf("stat segment: %w", err)
		}
		if fi.Size() != l.activeSize {
			return out, fmt.Errorf("segment %s is %d bytes, want %d: %w", l.active.Name(), fi.Size(), l.activeSize, errOtherWriter)
		}
		if _, err := l.active.WriteAt(c.buf, l.activeSize); err != nil {
			return out, fmt.Errorf("write segment: %w", err)
		}
		l.activeSize += int64(len(c.buf))
		c.end = l.activeSize
		if n := len(out); n > 0 && out[n-1].f == l.active {
			out[n-1].chunks = append(out[n-1].chunks, c)
		} else {
			out = append(out, written{f: l.active, chunks: []*chunk{c}})
		}
	}
	return out, nil
}

// syncUnsynced fsyncs the active segment when Write left records in it
// that are not durable. The caller holds syncMu.
func (l *Log) syncUnsynced() error {
	if !l.activeUnsynced || l.active == nil {
		return nil
	}
	if err := l.active.Sync(); err != nil {
		return fmt.Errorf("sync segment: %w", err)
	}
	l.activeUnsynced = false
	return nil
}

// publish makes a written chunk visible to readers (durable unless it was
// written by Write).
func (l *Log) publish(c *chunk) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.newSegment {
		l.segs = append(l.segs, &segment{
			firstSeq: c.segFirst,
			path:     filepath.Join(l.dir, segmentName(c.segFirst)),
		})
	}
	s := l.segs[len(l.segs)-1]
	s.offsets = append(s.offsets, c.offsets...)
	s.size = c.end
	l.durableSeq, l.durableEnd = c.lastSeq, c.lastEnd
	l.notifyLocked()
}

// fail makes err sticky and returns it.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
	l.pending = nil
	l.notifyLocked()
	return err
}

func (l *Log) stateErrLocked() error {
	if l.closed {
		return ErrClosed
	}
	return l.err
}

func (l *Log) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Durable returns the Seq and EndLSN of the last durable record, or zeros
// if there is none. It does not block on Sync.
func (l *Log) Durable() (seq uint64, endLSN uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.durableSeq, l.durableEnd
}

// Close discards records not yet synced, waits for a Sync in progress, and
// releases the files. Read, Wait, Append and Sync then return ErrClosed;
// Wait calls in progress return it too. Closing twice is a no-op.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.pending = nil
	l.notifyLocked()
	l.mu.Unlock()

	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	var err error
	if l.active != nil {
		err = l.active.Close()
		l.active = nil
	}
	if cerr := l.lock.close(); err == nil {
		err = cerr
	}
	return err
}
