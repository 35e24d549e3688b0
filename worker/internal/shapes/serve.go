package shapes

import (
	"context"
	"errors"
	"fmt"
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

// Plan is what one response serves: the records after From up to Last.
type Plan struct {
	From      Offset
	Last      Offset // electric-offset of the response
	UpToDate  bool   // Last is the end of the log
	GlobalLSN uint64
	entries   []entry
}

// Empty reports whether the plan serves no record.
func (p *Plan) Empty() bool { return len(p.entries) == 0 }

// Plan chooses the records after from, about maxBytes of them (at least
// one). It returns ErrOutOfBounds when from is past the shape's end.
func (s *Shape) Plan(from Offset, maxBytes int) (*Plan, error) {
	fl := s.floor()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return nil, ErrGone
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
	total := 0
	for ; i < len(s.index); i++ {
		e := s.index[i]
		if len(p.entries) > 0 && total+e.size > maxBytes {
			break
		}
		p.entries = append(p.entries, e)
		total += e.size
		p.Last = e.off
	}
	p.UpToDate = i == len(s.index)
	if from.BeforeAll && len(p.entries) == 0 {
		p.Last = Offset{}
	}
	return p, nil
}

// GlobalLSN is what responses advertise as global_last_seen_lsn: a commit
// LSN up to which every transaction is in the shape (persisted).
func (s *Shape) GlobalLSN() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return max(s.durable.SeenLSN, s.endLocked().TX)
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

// Bodies calls fn with the messages of each planned record, in order.
// When the log was compacted after the plan, it serves the compacted
// records from the last one served up to p.Last instead (see compact.go).
func (s *Shape) Bodies(p *Plan, fn func(body []byte) error) error {
	entries, served := p.entries, p.From
	for replans := 0; len(entries) > 0; {
		recs, err := s.log.Read(entries[0].seq, len(entries))
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
				if entries, err = s.entriesBetween(served, p.Last); err != nil {
					return err
				}
				break
			}
			if err := fn(body); err != nil {
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

// entriesBetween returns the index entries after from, up to last.
func (s *Shape) entriesBetween(from, last Offset) ([]entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return nil, ErrGone
	}
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].off.after(from) })
	var out []entry
	for ; i < len(s.index) && !s.index[i].off.after(last); i++ {
		out = append(out, s.index[i])
	}
	return out, nil
}
