package storage

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
)

// Head is a record without its payload: what an index of the log needs.
type Head struct {
	Seq       uint64
	CommitLSN uint64
	EndLSN    uint64
	Epoch     uint64
	// Len is the payload's length; Prefix holds its first min(Len, 8)
	// bytes (the rest are zero).
	Len    int
	Prefix [8]byte
}

// headsWindow is the most ReadHeads reads at once: the headers of records
// that start within it are read together; a record further on is read
// alone (its header and prefix only).
const headsWindow = 64 << 10

// ReadHeads returns the heads of the durable records with Seq >= fromSeq,
// in order, at most max of them (none, and no error, when none is durable
// past fromSeq). It reads about the first 48 bytes of each record, not the
// payloads, so that indexing a log of large records (a snapshot) costs
// about its number of records, not its bytes. The heads are not verified
// (a record's checksum covers its payload): Read, which every served
// record goes through, verifies them. It is safe concurrently with the
// writer and with compaction, as Read is.
func (l *Log) ReadHeads(fromSeq uint64, max int) ([]Head, error) {
	for {
		runs, swaps, err := l.planHeads(fromSeq, max)
		if err != nil {
			return nil, err
		}
		var out []Head
		for _, r := range runs {
			if out, err = r.read(out); err != nil {
				break
			}
		}
		l.mu.RLock()
		again := l.swaps != swaps
		l.mu.RUnlock()
		if again {
			continue
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// headRun is a run of consecutive durable records in one segment file:
// where each starts, and where the last ends.
type headRun struct {
	path     string
	firstSeq uint64
	offsets  []uint32 // not to be changed: shared with the segment
	end      int64
}

// planHeads finds, in the index, where the records ReadHeads returns are,
// and how many compactions had replaced segments then.
func (l *Log) planHeads(fromSeq uint64, max int) ([]headRun, uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, 0, ErrClosed
	}
	if fromSeq == 0 {
		fromSeq = 1
	}
	if max <= 0 || fromSeq > l.durableSeq {
		return nil, l.swaps, nil
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].firstSeq > fromSeq }) - 1
	if i < 0 {
		i, fromSeq = 0, l.segs[0].firstSeq
	}
	var runs []headRun
	for ; i < len(l.segs) && max > 0 && fromSeq <= l.durableSeq; i++ {
		s := l.segs[i]
		k := int(fromSeq - s.firstSeq)
		// Only durable records: the active segment may hold more.
		n := min(len(s.offsets)-k, max, int(l.durableSeq-fromSeq)+1)
		if n > 0 {
			runs = append(runs, headRun{
				path:     s.path,
				firstSeq: fromSeq,
				offsets:  s.offsets[k : k+n : k+n],
				end:      s.recordEnd(k + n - 1),
			})
			max -= n
		}
		fromSeq = s.firstSeq + uint64(len(s.offsets))
	}
	return runs, l.swaps, nil
}

// read appends the run's heads to out.
func (r headRun) read(out []Head) ([]Head, error) {
	f, err := os.Open(r.path)
	if err != nil {
		return out, fmt.Errorf("read heads: %w", err)
	}
	defer f.Close()
	buf := make([]byte, headsWindow)
	var win []byte // buf's bytes from winStart
	winStart := int64(0)
	for i, o := range r.offsets {
		off := int64(o)
		next := r.end
		if i+1 < len(r.offsets) {
			next = int64(r.offsets[i+1])
		}
		need := min(off+recordHeaderSize+8, next) // header and prefix
		if off < winStart || need > winStart+int64(len(win)) {
			// Read from here up to the last record that starts within
			// the window (only this one's head if the next is beyond).
			until := need
			for j := i + 1; j < len(r.offsets) && int64(r.offsets[j])+recordHeaderSize+8 <= off+headsWindow; j++ {
				until = int64(r.offsets[j]) + recordHeaderSize + 8
			}
			until = min(until, r.end, off+headsWindow)
			win = buf[:until-off]
			winStart = off
			if _, err := f.ReadAt(win, off); err != nil {
				return out, fmt.Errorf("read heads of %s at %d: %w", r.path, off, err)
			}
		}
		b := win[off-winStart:]
		if int64(len(b)) < need-off || need-off < recordHeaderSize {
			return out, fmt.Errorf("read heads of %s: %w: record at %d is %d bytes long", r.path, ErrCorrupt, off, next-off)
		}
		h := decodeHeader(b)
		want := r.firstSeq + uint64(i)
		if h.seq != want || int64(h.payloadLen) != next-off-recordHeaderSize {
			return out, fmt.Errorf("read heads of %s: %w: found seq %d (%d bytes) where %d (%d bytes) was indexed",
				r.path, ErrCorrupt, h.seq, h.payloadLen, want, next-off-recordHeaderSize)
		}
		hd := Head{Seq: h.seq, CommitLSN: h.commitLSN, EndLSN: h.endLSN, Epoch: h.epoch, Len: int(h.payloadLen)}
		copy(hd.Prefix[:], b[recordHeaderSize:need-off])
		out = append(out, hd)
	}
	return out, nil
}

// PrefixUint64 is the payload's first 8 bytes as a little-endian integer
// (0 when the payload is shorter).
func (h Head) PrefixUint64() uint64 {
	if h.Len < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(h.Prefix[:])
}
