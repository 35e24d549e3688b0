package shapes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/batonhq/baton/worker/internal/storage"
)

// Serving: what a request reads of a shape. A response is planned from the
// index (Plan), then its records are read from the log (Bodies); a live
// request waits for records after its offset (Wait). All of it is safe
// concurrently with routing, persistence and compaction.

// ErrGone is returned when a shape was deleted or invalidated while being
// read: the client must refetch.
var ErrGone = errors.New("shape is gone")

// ErrOutOfBounds is returned for an offset past what the shape has seen.
var ErrOutOfBounds = errors.New("out of bounds for this shape")

// ErrOtherLog is returned for the offset of a transaction that committed
// before the shape was made (below Meta.StartLSN, or a part of the
// transaction at it): the shape never handed it out, it is a position in
// another shape's log. The official client sends one when a subset
// request is answered 409: it asks again at the new handle keeping its
// offset, then follows the new shape from there, which would skip what
// committed in between. The client must refetch. "<StartLSN>_0" is not
// refused: the shape hands it out (global_last_seen_lsn, which an SSE
// client turns into its offset), so the offset of another shape's log
// whose last transaction is the last one the stream had stored when this
// shape was made still passes (a change committed after that and before
// this shape's snapshot is then missed, as it is with Electric).
var ErrOtherLog = errors.New("offset of another shape's log")

// Plan is what one response serves: the records after From up to Last,
// the first and the last of them possibly in part (a chunk boundary
// inside a transaction).
type Plan struct {
	From Offset
	Last Offset // electric-offset of the response
	// UpToDate: Last is the end of the log, inside the open chunk. A
	// response that ends at a chunk boundary is not up to date even when
	// the log ends there, so that its body never changes (see "Chunks").
	UpToDate  bool
	GlobalLSN uint64
	entries   []entry
	// stream: the plan is snapshot chunk Last.Op, still being written;
	// Bodies serves its records as they become durable, until it ends.
	stream bool
}

// Empty reports whether the plan serves no record.
func (p *Plan) Empty() bool { return len(p.entries) == 0 && !p.stream }

// Streaming reports whether the plan's records are still being written:
// its body comes over time, and the response should be flushed as it goes.
func (p *Plan) Streaming() bool { return p.stream }

// Plan chooses the records after from up to the end of the chunk that
// holds the first of them, or to the end of the log when that chunk is
// still open. It returns ErrOutOfBounds when from is past the shape's end.
func (s *Shape) Plan(from Offset) (*Plan, error) {
	fl := s.floor()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return nil, ErrGone
	}
	if p := s.planFillingLocked(from); p != nil {
		return p, nil
	}
	if !from.BeforeAll && from.TX != 0 && (from.TX < s.meta.StartLSN || (from.TX == s.meta.StartLSN && from.Op > 0)) {
		return nil, ErrOtherLog
	}
	end := s.endLocked()
	if !from.BeforeAll && end.Less(from) && from.TX > s.routedLSNLocked(fl) {
		// An offset the stream log holds but the router has not reached
		// for this shape (after a machine crash, a shape log is made
		// again from there): nothing new yet, not a bad offset.
		if s.streamEnd == nil || from.TX > s.streamEnd() {
			return nil, ErrOutOfBounds
		}
		return &Plan{From: from, Last: from, UpToDate: true, GlobalLSN: max(s.durable.SeenLSN, end.TX)}, nil
	}
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].off.after(from) })
	p := &Plan{From: from, Last: from, GlobalLSN: max(s.durable.SeenLSN, end.TX)}
	b := sort.Search(len(s.ends), func(j int) bool { return s.ends[j].after(from) })
	if b < len(s.ends) {
		p.Last = s.ends[b]
		for ; i < len(s.index) && upTo(s.index[i].off, p.Last); i++ {
			p.entries = append(p.entries, s.index[i])
		}
		return p, nil
	}
	p.entries = append(p.entries, s.index[i:]...)
	if len(p.entries) > 0 {
		p.Last = p.entries[len(p.entries)-1].off
	}
	p.UpToDate = true
	switch {
	case from.BeforeAll && len(p.entries) == 0:
		p.Last = Offset{}
	case from.TX == 0 && len(p.entries) == 0 && s.meta.SnapshotEnd:
		// At the end of a complete snapshot, nothing after it yet: the
		// offset is the snapshot's end, "0_inf", as Electric's.
		p.Last = Offset{Op: opInf}
	}
	return p, nil
}

// upTo reports whether a response ending at last serves (some of) the
// record at offset off: off is at or before last, or is the transaction
// that last cuts.
func upTo(off, last Offset) bool {
	return off.TX < last.TX || (off.TX == last.TX && (last.TX != 0 || off.Op <= last.Op))
}

// planFillingLocked plans a snapshot chunk still being written: the chunk
// after from when no boundary after from is known yet. Its records all have
// offset "0_c" (snapWriter), c being 0 for offset -1 and n+1 for "0_n", so
// the response's offset is known before its end; Bodies streams the
// records that are not durable yet. A snapshot chunk is never up to date.
// It returns nil when the shape is complete or the chunk is.
func (s *Shape) planFillingLocked(from Offset) *Plan {
	if !s.filling.Load() || !from.BeforeAll && (from.TX != 0 || from.Op == opInf) {
		return nil
	}
	if b := sort.Search(len(s.ends), func(j int) bool { return s.ends[j].after(from) }); b < len(s.ends) {
		return nil
	}
	c := uint64(0)
	if !from.BeforeAll {
		c = from.Op + 1
	}
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].off.after(from) })
	return &Plan{From: from, Last: Offset{Op: c}, entries: slices.Clone(s.index[i:]), stream: true, GlobalLSN: s.durable.SeenLSN}
}

// Now is the plan of an offset=now request: nothing, from the shape's
// last record, up to date, with the global_last_seen_lsn (a commit LSN up
// to which every transaction is in the shape) of that same moment. The
// two are read under one lock: a transaction routed between two reads
// would be covered by global_last_seen_lsn while lying after the offset
// the client goes on from, and a client that drops what its last-seen LSN
// covers would skip it.
func (s *Shape) Now() *Plan {
	s.mu.RLock()
	defer s.mu.RUnlock()
	end := s.endLocked()
	return &Plan{From: end, Last: end, UpToDate: true, GlobalLSN: max(s.durable.SeenLSN, end.TX)}
}

// End is the offset of the shape's last record.
func (s *Shape) End() Offset {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.endLocked()
}

func (s *Shape) endLocked() Offset {
	if n := len(s.index); n > 0 {
		return s.index[n-1].off
	}
	return Offset{}
}

// Changed returns a channel closed when records are added after the
// current state, or the shape goes.
func (s *Shape) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Wait blocks until the shape has a record after off, ctx ends, or the
// shape goes; it reports whether there is something new.
func (s *Shape) Wait(ctx context.Context, off Offset) (bool, error) {
	for {
		s.mu.RLock()
		gone, ch := s.gone, s.changed
		n := len(s.index)
		newer := n > 0 && s.index[n-1].off.after(off)
		s.mu.RUnlock()
		if gone {
			return false, ErrGone
		}
		if newer {
			return true, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false, nil
		}
	}
}

// Bodies calls fn with the messages of each planned record (or of the
// part of it the plan serves), in order. body is valid until fn returns:
// its memory is reused for the next.
// When the log was compacted after the plan, it serves the compacted
// records from the last one served up to p.Last instead (see compact.go).
// A streaming plan's records are served as they become durable, until
// the chunk ends; ctx ends the wait for them.
func (s *Shape) Bodies(ctx context.Context, p *Plan, fn func(body []byte) error) error {
	if err := s.bodies(p.entries, p.From, p.Last, fn); err != nil {
		return err
	}
	if !p.stream {
		return nil
	}
	var lastSeq uint64
	if n := len(p.entries); n > 0 {
		lastSeq = p.entries[n-1].seq
	}
	for {
		more, open, err := s.chunkAfter(ctx, p.From, p.Last, lastSeq)
		if err != nil {
			return err
		}
		if len(more) > 0 {
			if err := s.bodies(more, p.From, p.Last, fn); err != nil {
				return err
			}
			lastSeq = more[len(more)-1].seq
		}
		if !open {
			return nil
		}
	}
}

// chunkAfter waits for durable records of the snapshot chunk ending at
// last after seq afterSeq (and after offset from), and returns them; open
// is false once the chunk has no more to come (its boundary is known, or
// the snapshot is complete).
func (s *Shape) chunkAfter(ctx context.Context, from, last Offset, afterSeq uint64) (more []entry, open bool, err error) {
	for {
		s.mu.RLock()
		gone, ch := s.gone, s.changed
		i := sort.Search(len(s.index), func(i int) bool {
			e := s.index[i]
			return e.seq > afterSeq && e.off.after(from)
		})
		j := i
		for j < len(s.index) && s.index[j].off == last {
			j++
		}
		more = slices.Clone(s.index[i:j])
		_, ended := slices.BinarySearchFunc(s.ends, last, func(e, t Offset) int {
			if e.Less(t) {
				return -1
			}
			if t.Less(e) {
				return 1
			}
			return 0
		})
		open = !ended && s.filling.Load()
		s.mu.RUnlock()
		if gone {
			return nil, false, ErrGone
		}
		if len(more) > 0 || !open {
			return more, open, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// bodies serves entries, (parts of) records after from up to last.
func (s *Shape) bodies(entries []entry, from, last Offset, fn func(body []byte) error) error {
	served := from
	var buf []byte // the records' bytes, reused: fn is done with a body when it returns
	for replans := 0; len(entries) > 0; {
		recs, b, err := s.log.ReadInto(buf, entries[0].seq, readCount(entries))
		buf = b
		if err != nil {
			if errors.Is(err, storage.ErrClosed) {
				return ErrGone
			}
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("shape %s: record %d is indexed but not readable", s.meta.Handle, entries[0].seq)
		}
		for _, r := range recs {
			e := entries[0]
			op, body := splitPayload(r.Payload)
			if r.Seq != e.seq || r.CommitLSN != e.off.TX || op != e.off.Op {
				if replans++; replans > 16 {
					return fmt.Errorf("shape %s: read record %d at %d_%d, want %v", s.meta.Handle, r.Seq, r.CommitLSN, op, e.off)
				}
				if entries, err = s.entriesBetween(served, last); err != nil {
					return err
				}
				break
			}
			if err := fn(partOf(body, e.off, served, last)); err != nil {
				return err
			}
			served, entries = e.off, entries[1:]
			if len(entries) == 0 {
				break
			}
		}
	}
	return nil
}

// readBytes bounds the bytes a response reads at once (at least one
// record), so that its memory does not grow with the chunk size.
const readBytes = 1 << 20

// readCount is how many of entries to read at once.
func readCount(entries []entry) int {
	n, total := 0, 0
	for _, e := range entries {
		if n > 0 && total+e.size > readBytes {
			break
		}
		n, total = n+1, total+e.size
	}
	return n
}

// entriesBetween returns the index entries after from, up to last.
func (s *Shape) entriesBetween(from, last Offset) ([]entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return nil, ErrGone
	}
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].off.after(from) })
	var out []entry
	for ; i < len(s.index) && upTo(s.index[i].off, last); i++ {
		out = append(out, s.index[i])
	}
	return out, nil
}
