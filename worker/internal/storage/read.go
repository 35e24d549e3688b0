package storage

import (
	"context"
	"fmt"
	"os"
	"sort"
)

// maxReadBytes bounds what one Read loads, beyond its first record.
const maxReadBytes = 8 << 20

// span is a run of consecutive durable records in one segment file.
type span struct {
	path     string
	firstSeq uint64 // seq of the first record in the span
	start    int64  // where it starts in the file
	end      int64  // where the last record ends
	count    int
}

// Read returns durable records with Seq >= fromSeq, in order: at most max
// of them, and fewer if they add up to more than a few MiB (always at least
// one if any exists). It returns no records, and no error, when none is
// durable yet past fromSeq; use Wait to block for one. Payloads are fresh
// memory the caller may keep. Read is safe from many goroutines, and
// concurrently with Append and Sync: it looks up the in-memory index, then
// reads the files without holding any lock. When a compaction commits
// meanwhile, it reads again: the records are all from before or all from
// after it (see PrepareCompaction).
func (l *Log) Read(fromSeq uint64, max int) ([]Record, error) {
	recs, _, err := l.ReadInto(nil, fromSeq, max)
	return recs, err
}

// ReadInto is Read with the file bytes read into buf's memory, grown if
// it is too small: the payloads alias the returned buffer, which the
// caller may pass to the next ReadInto once it is done with them. A reader
// that streams records out (a response) so reads without allocating.
func (l *Log) ReadInto(buf []byte, fromSeq uint64, max int) ([]Record, []byte, error) {
	for {
		spans, swaps, err := l.plan(fromSeq, max)
		if err != nil {
			return nil, buf, err
		}
		var total int64
		for _, sp := range spans {
			total += sp.end - sp.start
		}
		if int64(cap(buf)) < total {
			buf = make([]byte, total)
		}
		var out []Record
		rest := buf[:total]
		for _, sp := range spans {
			n := sp.end - sp.start
			if out, err = sp.read(out, rest[:n:n]); err != nil {
				break
			}
			rest = rest[n:]
		}
		l.mu.RLock()
		again := l.swaps != swaps
		l.mu.RUnlock()
		if again {
			continue
		}
		if err != nil {
			return nil, buf, err
		}
		return out, buf, nil
	}
}

// plan finds, in the index, where the records Read returns are, and how
// many compactions had replaced segments then.
func (l *Log) plan(fromSeq uint64, max int) ([]span, uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, 0, ErrClosed
	}
	spans, err := l.planLocked(fromSeq, max)
	return spans, l.swaps, err
}

// planLocked is plan; the caller holds mu.
func (l *Log) planLocked(fromSeq uint64, max int) ([]span, error) {
	if fromSeq == 0 {
		fromSeq = 1
	}
	if max <= 0 || fromSeq > l.durableSeq {
		return nil, nil
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].firstSeq > fromSeq }) - 1
	if i < 0 {
		i, fromSeq = 0, l.segs[0].firstSeq
	}
	var spans []span
	var total int64
	for ; i < len(l.segs) && max > 0; i++ {
		s := l.segs[i]
		k := int(fromSeq - s.firstSeq)
		n, full := 0, false
		for k+n < len(s.offsets) && n < max {
			size := s.recordEnd(k+n) - int64(s.offsets[k+n])
			if total > 0 && total+size > maxReadBytes {
				full = true
				break
			}
			total += size
			n++
		}
		if n > 0 {
			spans = append(spans, span{
				path:     s.path,
				firstSeq: fromSeq,
				start:    int64(s.offsets[k]),
				end:      s.recordEnd(k + n - 1),
				count:    n,
			})
		}
		if full {
			break
		}
		max -= n
		fromSeq = s.firstSeq + uint64(len(s.offsets))
	}
	return spans, nil
}

// recordEnd is where the durable record at index i ends. The caller holds
// the Log's mu.
func (s *segment) recordEnd(i int) int64 {
	if i+1 < len(s.offsets) {
		return int64(s.offsets[i+1])
	}
	return s.size
}

// read appends the span's records to out, verifying each; buf, of the
// span's size, receives the file's bytes, which the payloads alias.
func (sp span) read(out []Record, buf []byte) ([]Record, error) {
	f, err := os.Open(sp.path)
	if err != nil {
		return out, fmt.Errorf("read: %w", err)
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, sp.start); err != nil {
		return out, fmt.Errorf("read %s at %d: %w", sp.path, sp.start, err)
	}
	for i := range sp.count {
		r, n, err := decodeRecord(buf)
		if err != nil {
			return out, fmt.Errorf("read %s: %w", sp.path, err)
		}
		if want := sp.firstSeq + uint64(i); r.Seq != want {
			return out, fmt.Errorf("read %s: %w: found seq %d where %d was indexed", sp.path, ErrCorrupt, r.Seq, want)
		}
		out = append(out, r)
		buf = buf[n:]
	}
	return out, nil
}

// Wait blocks until a durable record with Seq > afterSeq exists, and then
// returns nil. It returns ctx.Err() when ctx ends first, ErrClosed when the
// Log is or gets closed, and ErrFenced (or the I/O error) when the writer
// has stopped, since no record will come then. Wait is safe from many
// goroutines.
func (l *Log) Wait(ctx context.Context, afterSeq uint64) error {
	for {
		l.mu.RLock()
		seq, changed, err := l.durableSeq, l.changed, l.stateErrLocked()
		l.mu.RUnlock()
		if seq > afterSeq {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
