package shapes

import (
	"encoding/binary"
	"sync"

	"github.com/batonhq/baton/worker/internal/storage"
)

// snapRecordBytes is the size at which a snapshot record is cut inside a
// chunk: small enough that the first one is durable and served soon after
// the rows start coming, large enough that its index entry and fsync share
// are noise.
const snapRecordBytes = 256 << 10

// snapUnsynced bounds the bytes of snapshot records appended and not yet
// synced: the rows wait for the disk beyond it, so a snapshot's memory
// does not grow with the table.
const snapUnsynced = 4 << 20

// snapWriter writes a snapshot's messages into a new shape log as records
// of at most about snapRecordBytes, grouped into chunks: chunk c is what a
// request for the offset before it ("-1" for chunk 0, "0_<c-1>" after)
// gets, and every one of its records has op offset c, so the chunk's end
// offset is known before its records are written. A chunk ends after the
// message that brings its bytes to chunkBytes (as Electric's LogChunker
// cuts); so its boundaries depend only on the rows, and the response to a
// URL is the same whenever it is asked.
//
// A syncer goroutine makes the appended records durable, in batches (one
// fsync for whatever was appended during the previous one), calls durable
// once after the first batch (before anything is published; an error
// ends the writer), and hands each batch to publish, in order: what
// publish gets is durable. The last
// record (the one with snapshot-end) is not published: finish returns it,
// for the caller to publish once the snapshot is recorded as complete. Not
// safe for concurrent use, except that publish is called from the syncer.
type snapWriter struct {
	l          *storage.Log
	enc        *rowEncoder
	chunkBytes int
	durable    func() error
	publish    func([]entry)

	buf     []byte // the record being filled: op offset, then messages
	n       int    // messages in buf
	chunk   uint64
	inChunk int    // message bytes of chunk in records already cut
	records uint64 // records appended: the next one's EndLSN is records+1
	ending  bool   // finish is cutting the last record

	mu           sync.Mutex
	cond         sync.Cond
	pending      []entry // appended, not yet handed to the syncer
	pendingBytes int     // appended, not yet durable
	closed       bool
	final        uint64  // seq of the last record, once finish appended it
	held         []entry // the last record, not published
	err          error
	done         chan struct{}
}

func newSnapWriter(l *storage.Log, enc *rowEncoder, chunkBytes int, durable func() error, publish func([]entry)) *snapWriter {
	w := &snapWriter{l: l, enc: enc, chunkBytes: max(chunkBytes, 1), durable: durable, publish: publish,
		buf: make([]byte, 8, snapRecordBytes+64<<10), done: make(chan struct{})}
	w.cond.L = &w.mu
	go w.syncLoop()
	return w
}

// row adds the insert message of a row of text values.
func (w *snapWriter) row(raw [][]byte) error {
	if w.n > 0 {
		w.buf = append(w.buf, ',')
	}
	w.buf = w.enc.appendRow(w.buf, raw)
	w.n++
	body := len(w.buf) - 8
	switch {
	case w.inChunk+body >= w.chunkBytes:
		if err := w.cut(); err != nil {
			return err
		}
		w.chunk, w.inChunk = w.chunk+1, 0
	case body >= snapRecordBytes:
		w.inChunk += body
		return w.cut()
	}
	return nil
}

// finish adds end (the snapshot-end message) as the last message, and
// returns once every record is durable, and published but the last one,
// which it returns.
func (w *snapWriter) finish(end []byte) (last []entry, err error) {
	if w.n > 0 {
		w.buf = append(w.buf, ',')
	}
	w.buf = append(w.buf, end...)
	w.n++
	w.ending = true
	err = w.cut()
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return w.held, nil
}

// close stops the syncer once it has synced what was appended, and
// returns the first error of a Sync.
func (w *snapWriter) close() error {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// cut appends the record being filled, then waits while too much is
// waiting for the disk.
func (w *snapWriter) cut() error {
	binary.LittleEndian.PutUint64(w.buf, w.chunk)
	w.records++
	seq, err := w.l.Append(storage.Record{EndLSN: w.records, Payload: w.buf})
	if err != nil {
		return err
	}
	e := entry{seq: seq, off: Offset{Op: w.chunk}, size: len(w.buf) - 8}
	final := w.ending
	w.buf, w.n = w.buf[:8], 0
	w.mu.Lock()
	defer w.mu.Unlock()
	if final {
		w.final = seq
	}
	w.pending = append(w.pending, e)
	w.pendingBytes += len(w.buf) + e.size
	w.cond.Broadcast()
	for w.pendingBytes > snapUnsynced && w.err == nil {
		w.cond.Wait()
	}
	return w.err
}

// syncLoop syncs what was appended and publishes it, until closed and
// drained or a Sync fails.
func (w *snapWriter) syncLoop() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.pending) == 0 && !w.closed {
			w.cond.Wait()
		}
		batch, bytes := w.pending, w.pendingBytes
		w.pending = nil
		w.mu.Unlock()
		if len(batch) == 0 {
			return // closed, and everything published
		}
		_, err := w.l.Sync()
		if err == nil && w.durable != nil {
			err, w.durable = w.durable(), nil
		}
		w.mu.Lock()
		w.pendingBytes -= bytes
		if err != nil {
			w.err = err
		}
		w.cond.Broadcast()
		w.mu.Unlock()
		if err != nil {
			return
		}
		w.mu.Lock()
		if n := len(batch); w.final != 0 && batch[n-1].seq == w.final {
			w.held, batch = batch[n-1:], batch[:n-1]
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			w.publish(batch)
		}
	}
}
