package storage

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

	root        string  // the log's folder
	dir         string  // this Open's owner folder in it
	live        string  // its LIVE file
	me          ownerID // this Open
	prevEpoch   uint64  // the epoch of the Open this one took over from (0: a new log)
	segmentSize int64

	// syncMu serializes Sync, Write, RecordAck, TruncateBefore, Close and
	// compaction, and guards active, activeSize and st.
	syncMu     sync.Mutex
	active     *os.File // the last own segment, open for writing; nil before the first
	activeSize int64    // its size as written by this process
	// activeUnsynced: records written to active by Write are not fsynced.
	activeUnsynced bool
	st             state // what STATE says, apart from the inherited segments
	// fresh: made by Create, nothing made durable yet (create.go).
	fresh bool
	// idlePath: the active segment, closed to stay within the open-file
	// limit (active is nil then); write reopens it (files.go).
	idlePath string
	lruElem  *list.Element // in openFiles.lru while active is open

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
	meta       []byte        // st.meta, for Meta without syncMu (meta.go)
	spare      []byte        // a written chunk's buffer, for the next chunk (bufpool.go)
	changed    chan struct{} // closed and replaced whenever the state below or above changes
	closed     bool
	err        error // sticky: a fencing or I/O error ends the writer

	// hook, when set (by tests), is called at the points of a write where
	// a writer may be stopped for a long time (see hookPoint).
	hook func(hookPoint)
}

// hookPoint is a point inside a write, for tests that stop a writer there.
type hookPoint int

const (
	hookChecked  hookPoint = iota // ownership checked, nothing written yet
	hookWritten                   // written (and fsynced), not yet checked again
	hookRemoving                  // checked again, files about to be removed
)

func (l *Log) at(p hookPoint) {
	if l.hook != nil {
		l.hook(p)
	}
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
// belongs to a newer epoch. Otherwise it takes the log over: every earlier
// Open (even one with the same epoch) is fenced, and the records they made
// durable, as of this moment, are this log's (see the package doc); Append
// continues Seq and EndLSN from them. Open never waits for another
// process, stopped or not (the one exception: the first Open of a log
// written by an older version of this package, see migrate).
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
	if err := migrate(dir, epoch); err != nil {
		return nil, fmt.Errorf("open storage %s: %w", dir, err)
	}
	me, err := claim(dir, epoch)
	if err != nil {
		return nil, fmt.Errorf("open storage %s: %w", dir, err)
	}
	l := &Log{root: dir, dir: filepath.Join(dir, me.name()), me: me, segmentSize: opts.SegmentSize, changed: make(chan struct{})}
	l.live = filepath.Join(l.dir, liveFileName)
	committed, err := l.takeOver()
	if err != nil {
		if !committed {
			os.RemoveAll(l.dir)
		}
		return nil, fmt.Errorf("open storage %s: %w", dir, err)
	}
	l.collectGarbage()
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

// takeOver reads the log the previous owner left, makes it durable, and
// writes this Open's STATE. Once STATE is written and the check after it
// passed (committed), a later Open may build on this one's STATE.
func (l *Log) takeOver() (committed bool, err error) {
	v, _, err := latestView(l.root, &l.me)
	if err != nil {
		return false, err
	}
	// What the previous owner wrote may not have been fsynced: it is
	// reported durable from now on.
	for _, p := range v.own {
		if err := syncFile(p); err != nil {
			return false, err
		}
	}
	l.st = state{epoch: l.me.epoch, acked: v.st.acked, upTo: v.st.upTo, meta: v.st.meta}
	l.prevEpoch = v.st.epoch
	l.acked.Store(v.st.acked)
	l.segs, l.meta = v.segs, v.st.meta
	// Seqs continue from the last record; upTo (carried from owner to
	// owner) guards against reuse should a log ever be left empty.
	l.nextSeq = max(v.lastSeq, v.st.upTo) + 1
	l.lastEnd = v.lastEnd
	l.durableSeq, l.durableEnd = v.lastSeq, v.lastEnd
	if err := l.writeState(l.segs, l.st); err != nil {
		return false, err
	}
	if err := syncDir(l.root); err != nil {
		return false, err
	}
	if err := l.checkOwner(); err != nil {
		return false, err
	}
	return true, nil
}

// Epoch is the epoch this Log was opened with.
func (l *Log) Epoch() uint64 { return l.me.epoch }

// PreviousEpoch is the epoch of the Open this one took the log over from:
// the last lease that opened it before this one (0 for a new log).
func (l *Log) PreviousEpoch() uint64 { return l.prevEpoch }

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
		c = &chunk{newSegment: true, segFirst: l.planSeg, buf: l.newChunkBufLocked()}
		l.pending = append(l.pending, c)
	} else if c == nil {
		c = &chunk{segFirst: l.planSeg, buf: l.newChunkBufLocked()}
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
// PostgreSQL as flushed. It writes only into this Open's own segment
// files, and publishes what it wrote only if, after the fsync, no newer
// Open has taken the log over; if one has, it returns ErrFenced, as do all
// later calls (what it wrote is then not part of the log, unless the newer
// Open read it before returning). Any other failure is sticky too: the
// records that Sync was writing are in an unknown state, so the writer
// must stop and reopen. Sync blocks for the write and fsync, never for
// another process.
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
	if len(batch) == 0 && !l.activeUnsynced {
		if err := l.checkOwner(); err != nil {
			return 0, l.fail(err)
		}
		_, end := l.Durable()
		return end, nil
	}
	w, err := beginWriteAt(l.live, l.me) // a fresh log settles below
	if err != nil {
		return 0, l.fail(err)
	}
	l.at(hookChecked)
	written, err := l.write(batch)
	l.recycle(batch)
	switch {
	case err != nil:
	case l.fresh:
		// One round of fsyncs for the log Create made and its segments.
		files := make([]*os.File, 0, len(written)+1)
		for _, w := range written {
			files = append(files, w.f)
		}
		if l.active != nil && !slices.Contains(files, l.active) {
			files = append(files, l.active)
		}
		if err = l.settle(files); err == nil {
			err = l.closeFinished(written)
		}
	default:
		if l.activeUnsynced {
			err = l.reopenIfIdle()
		}
		if err == nil && l.activeUnsynced && l.active != nil {
			// Records Write made readable are made durable too.
			if err = l.active.Sync(); err != nil {
				err = fmt.Errorf("sync segment: %w", err)
			}
		}
		if err == nil {
			err = l.flush(written)
		}
	}
	l.activeUnsynced = false
	l.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, l.fail(err)
	}
	for _, w := range written {
		for _, c := range w.chunks {
			l.publish(c)
		}
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
	w, err := l.beginWrite()
	if err != nil {
		return l.fail(err)
	}
	l.at(hookChecked)
	ws, err := l.write(batch)
	l.recycle(batch)
	for _, w := range ws {
		if err != nil {
			break
		}
		if w.closeF { // a finished segment: durable before it is closed
			err = l.flush([]written{w})
			continue
		}
		l.activeUnsynced = true
	}
	l.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return l.fail(err)
	}
	for _, w := range ws {
		for _, c := range w.chunks {
			l.publish(c)
		}
	}
	return nil
}

// written is a segment file written by write and not yet fsynced, with the
// chunks it received.
type written struct {
	f      *os.File
	chunks []*chunk
	closeF bool // not the active segment any more: close after the fsync
	synced bool // fsynced already (write, before the next segment)
}

// flush fsyncs what write wrote, and closes the segments it finished. The
// caller holds syncMu and publishes the chunks once ownership is checked.
func (l *Log) flush(ws []written) error {
	for _, w := range ws {
		if w.synced {
			continue
		}
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("sync segment: %w", err)
		}
	}
	return l.closeFinished(ws)
}

// closeFinished closes the segments of ws that write finished, once
// fsynced. The caller holds syncMu.
func (l *Log) closeFinished(ws []written) error {
	for _, w := range ws {
		if w.closeF {
			if err := w.f.Close(); err != nil {
				return fmt.Errorf("close segment: %w", err)
			}
		}
	}
	return nil
}

// write writes batch into this Open's own segment files (without fsync;
// see flush). The caller holds syncMu and has checked ownership.
func (l *Log) write(batch []*chunk) ([]written, error) {
	var out []written
	defer openFiles.note(l)
	for _, c := range batch {
		// A segment closeIdle closed is reopened, also to be finished
		// below (its unsynced records fsynced before it is closed).
		if err := l.reopenIfIdle(); err != nil {
			return out, err
		}
		if c.newSegment {
			if l.active != nil {
				if n := len(out); n > 0 && out[n-1].f == l.active {
					// Fsynced before the next segment exists, so that
					// only a log's last file can end torn, even after a
					// machine crash (readView relies on it); closed once
					// published. A fresh log needs no such order (no Open
					// reads it before its first durable write, which
					// fsyncs all of it at once: create.go).
					if !l.fresh {
						if err := l.active.Sync(); err != nil {
							return out, fmt.Errorf("sync segment: %w", err)
						}
						out[n-1].synced = true
					}
					out[n-1].closeF = true
				} else if err := l.syncUnsynced(); err != nil {
					return out, err
				} else if err := l.active.Close(); err != nil { // fsynced by an earlier flush, Sync or compaction
					l.active = nil
					return out, fmt.Errorf("close segment: %w", err)
				}
				l.active = nil
			}
			f, err := createSegment(l.dir, c.segFirst, l.fresh)
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

// fail makes err sticky and returns it. An I/O error of a writer that a
// newer Open fenced (which may have removed the files it was writing) is
// reported as ErrFenced.
func (l *Log) fail(err error) error {
	if !errors.Is(err, ErrFenced) {
		if ferr := l.checkOwner(); errors.Is(ferr, ErrFenced) {
			err = fmt.Errorf("%w: %w", ferr, err)
		}
	}
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
	l.idlePath = ""
	openFiles.note(l)
	return err
}
