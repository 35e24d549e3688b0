package shapes

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// Compaction keeps a shape log from growing without bound: the records up
// to a cut (the whole log as indexed when it starts) are rewritten so
// that every row key has one message left, at the offset of its last
// operation before the cut: an insert of the whole row when the row exists
// at the cut, a delete otherwise (a client at an earlier offset may hold
// the row). Records left without a message are dropped, except the last
// one before the cut; the others keep their offset.
//
// # What clients see
//
// A client holds rows and an offset Y. Call its rows right for the log if
// applying the log's messages after Y to them gives the rows that applying
// the whole log to nothing gives (what the official client does: insert
// sets the row, update merges the values into it, delete removes it).
// Compaction keeps every client right: for a key whose last operation
// before the cut is after Y, the client gets the compacted message, which
// sets the key's row regardless of what the client had, then the same
// messages as before; for a key whose last operation is at or before Y,
// the client gets, as before, no message until the cut and the same ones
// after. So a client resuming at any offset, before, during or after a
// compaction, ends with the same rows, and no offset becomes invalid (Plan
// finds records by offset, and every offset a client holds still orders
// the same against the records left).
//
// A response planned before the swap reads records by seq; Bodies checks
// each record's offset and, on a mismatch, plans the rest again from the
// last record it served, up to the same end: the client then has the old
// log up to some offset and the new log after it, which is right by the
// above.
//
// # When
//
// A shape log is compacted when its records add up to compactFactor times
// the size they had after its last compaction (or when the shape was
// opened), and to at least compactMinBytes; a compaction that would save
// less than a quarter is not written.
const (
	compactFactor   = 4
	compactMinBytes = 1 << 20
	// compactEvery is how often the shapes are checked.
	compactEvery = 10 * time.Second
)

// compactLoop compacts the shapes that grew enough, every compactEvery,
// until ctx ends. It logs failures (a fenced or failed log also stops the
// router).
func (r *Registry) compactLoop(ctx context.Context) error {
	return every(ctx, compactEvery, func() error {
		r.compactShapes(ctx)
		return nil
	})
}

// compactShapes compacts the shapes that grew enough.
func (r *Registry) compactShapes(ctx context.Context) {
	shapes, _ := r.list()
	for _, s := range shapes {
		if ctx.Err() != nil {
			return
		}
		if !s.shouldCompact() {
			continue
		}
		st, err := s.compact()
		switch {
		case err != nil && !s.isGone():
			r.o.Log.Warn("shape log not compacted", "handle", s.meta.Handle, "err", err)
		case st.committed:
			inc(r.o.Counters.Compacted)
			r.o.Log.Info("shape log compacted", "handle", s.meta.Handle, "records_before", st.recordsBefore,
				"records_after", st.recordsAfter, "bytes_before", st.bytesBefore, "bytes_after", st.bytesAfter)
		}
	}
}

// shouldCompact reports whether the log grew enough since the last
// compaction.
func (s *Shape) shouldCompact() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := s.logBytesLocked()
	if s.compactBase == 0 {
		s.compactBase = max(size, 1) // the size when opened
	}
	return !s.gone && size >= compactMinBytes && size >= compactFactor*s.compactBase
}

func (s *Shape) logBytesLocked() int64 {
	var n int64
	for _, e := range s.index {
		n += int64(e.size)
	}
	return n
}

// compactStats describes one compaction (message bodies, without headers).
type compactStats struct {
	committed                   bool
	recordsBefore, recordsAfter int
	bytesBefore, bytesAfter     int64
}

// compact compacts the log up to its last indexed record. It runs
// alongside routing and reading; one compaction at a time per shape.
func (s *Shape) compact() (compactStats, error) {
	s.mu.RLock()
	prefix := slices.Clone(s.index)
	s.mu.RUnlock()
	var st compactStats
	if len(prefix) == 0 {
		return st, nil
	}
	upTo := prefix[len(prefix)-1].seq
	recs, err := s.readPrefix(upTo)
	if err != nil {
		return st, err
	}
	out, err := compactRecords(recs)
	if err != nil {
		return st, err
	}
	st.recordsBefore, st.recordsAfter = len(recs), len(out)
	for _, r := range recs {
		st.bytesBefore += int64(len(r.Payload) - 8)
	}
	for _, r := range out {
		st.bytesAfter += int64(len(r.Payload) - 8)
	}
	if st.bytesAfter*4 > st.bytesBefore*3 {
		s.mu.Lock()
		s.compactBase = max(s.logBytesLocked(), 1)
		s.mu.Unlock()
		return st, nil
	}
	c, err := s.log.PrepareCompaction(upTo, out)
	if err != nil {
		return st, err
	}
	defer c.Abort()
	first := upTo - uint64(len(out)) + 1
	entries := make([]entry, len(out))
	for i, r := range out {
		op, body := splitPayload(r.Payload)
		entries[i] = entry{seq: first + uint64(i), off: Offset{TX: r.CommitLSN, Op: op}, size: len(body)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.index, upTo+1, func(e entry, seq uint64) int { return cmpUint(e.seq, seq) })
	index := append(entries, s.index[i:]...)
	ends, chunks, err := s.chunkIndex(index, out)
	if err != nil {
		return st, err
	}
	if _, _, err := c.Commit(); err != nil {
		return st, err
	}
	s.index, s.ends, s.chunks = index, ends, chunks
	s.compactBase = max(s.logBytesLocked(), 1)
	st.committed = true
	return st, nil
}

// chunkIndex finds the chunk boundaries of the log index, whose first
// records are head (the compacted ones) and the others in the log, as
// loadIndex would find them in the log after the compaction.
func (s *Shape) chunkIndex(index []entry, head []storage.Record) ([]Offset, chunker, error) {
	ch := newChunker(s.meta.ChunkBytes)
	var ends []Offset
	for k, e := range index {
		body := func() ([]byte, error) {
			if k < len(head) {
				_, b := splitPayload(head[k].Payload)
				return b, nil
			}
			recs, err := s.log.Read(e.seq, 1)
			if err != nil {
				return nil, err
			}
			if len(recs) == 0 || recs[0].Seq != e.seq {
				return nil, fmt.Errorf("shape log: record %d is indexed but not readable", e.seq)
			}
			_, b := splitPayload(recs[0].Payload)
			return b, nil
		}
		more, err := ch.add(e.off, e.size, body)
		if err != nil {
			return nil, ch, err
		}
		ends = append(ends, more...)
	}
	if s.meta.SnapshotEnd {
		if off, ok := ch.endSnapshot(); ok {
			ends = append(ends, off)
		}
	}
	return ends, ch, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readPrefix reads the records up to seq upTo.
func (s *Shape) readPrefix(upTo uint64) ([]storage.Record, error) {
	var out []storage.Record
	next := uint64(1)
	for next <= upTo {
		recs, err := s.log.Read(next, int(min(upTo-next+1, 1024)))
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, fmt.Errorf("shape log: record %d is indexed but not readable", next)
		}
		for _, r := range recs {
			if r.Seq > upTo {
				break
			}
			out = append(out, r)
		}
		next = recs[len(recs)-1].Seq + 1
	}
	if len(out) == 0 || out[len(out)-1].Seq != upTo {
		return nil, fmt.Errorf("shape log: record %d not found", upTo)
	}
	return out, nil
}

// logMessage is a change message as stored, parsed as far as compaction
// needs: the values stay raw JSON, and only operation and relation of the
// headers are kept.
type logMessage struct {
	Key     string                     `json:"key"`
	Value   map[string]json.RawMessage `json:"value"`
	Headers struct {
		Operation string          `json:"operation"`
		Relation  json.RawMessage `json:"relation"`
		Control   string          `json:"control"`
	} `json:"headers"`
	// control is a control message as stored (snapshot-end): kept as it
	// is, in its record.
	control []byte
}

func (m *logMessage) UnmarshalJSON(b []byte) error {
	type plain logMessage
	if err := json.Unmarshal(b, (*plain)(m)); err != nil {
		return err
	}
	if m.Key == "" && m.Headers.Control != "" {
		m.control = slices.Clone(b)
	}
	return nil
}

// keyState is a row key as of the messages compacted so far.
type keyState struct {
	exists   bool
	value    map[string]json.RawMessage // the row; for a deleted key, the delete's value
	relation json.RawMessage
	last     int // index of the record with the key's last message
	order    int // position of that message among the kept ones
}

// compactRecords returns the compacted form of recs, a prefix of a shape
// log (see Compaction).
func compactRecords(recs []storage.Record) ([]storage.Record, error) {
	keys := map[string]*keyState{}
	var order []string // keys in the order of their last message, with stale repeats
	// controls are the control messages of each record, kept after its
	// other messages (snapshot-end is the last of its record).
	controls := make([][][]byte, len(recs))
	for i, r := range recs {
		_, body := splitPayload(r.Payload)
		msgs, err := parseMessages(body)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", r.Seq, err)
		}
		for _, m := range msgs {
			if m.control != nil {
				controls[i] = append(controls[i], m.control)
				continue
			}
			k := keys[m.Key]
			if k == nil {
				k = &keyState{}
				keys[m.Key] = k
			}
			switch m.Headers.Operation {
			case "insert":
				k.exists, k.value = true, m.Value
			case "update":
				if !k.exists {
					// As the official client: an update of a row it does
					// not hold creates it with the values given.
					k.exists, k.value = true, map[string]json.RawMessage{}
				}
				for c, v := range m.Value {
					k.value[c] = v
				}
			case "delete":
				k.exists, k.value = false, m.Value
			default:
				return nil, fmt.Errorf("record %d: message for key %s has operation %q", r.Seq, m.Key, m.Headers.Operation)
			}
			k.relation, k.last, k.order = m.Headers.Relation, i, len(order)
			order = append(order, m.Key)
		}
	}
	byRecord := make([][]string, len(recs))
	for j, key := range order {
		if k := keys[key]; k.order == j {
			byRecord[k.last] = append(byRecord[k.last], key)
		}
	}
	var out []storage.Record
	for i, r := range recs {
		if len(byRecord[i]) == 0 && len(controls[i]) == 0 && i < len(recs)-1 {
			continue
		}
		op, _ := splitPayload(r.Payload)
		p := binary.LittleEndian.AppendUint64(nil, op)
		for j, key := range byRecord[i] {
			if j > 0 {
				p = append(p, ',')
			}
			p = appendCompacted(p, key, keys[key])
		}
		for j, c := range controls[i] {
			if j > 0 || len(byRecord[i]) > 0 {
				p = append(p, ',')
			}
			p = append(p, c...)
		}
		out = append(out, storage.Record{CommitLSN: r.CommitLSN, EndLSN: r.EndLSN, Payload: p})
	}
	return out, nil
}

func parseMessages(body []byte) ([]logMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var msgs []logMessage
	b := make([]byte, 0, len(body)+2)
	b = append(append(append(b, '['), body...), ']')
	if err := json.Unmarshal(b, &msgs); err != nil {
		return nil, err
	}
	return msgs, nil
}

// appendCompacted appends the message that stands for k: an insert of the
// row, or a delete, with the headers of a snapshot row.
func appendCompacted(dst []byte, key string, k *keyState) []byte {
	dst = append(dst, `{"key":`...)
	dst = txn.AppendJSONString(dst, key)
	dst = append(dst, `,"value":{`...)
	cols := make([]string, 0, len(k.value))
	for c := range k.value {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for i, c := range cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = txn.AppendJSONString(dst, c)
		dst = append(dst, ':')
		dst = append(dst, k.value[c]...)
	}
	op := "delete"
	if k.exists {
		op = "insert"
	}
	dst = append(dst, `},"headers":{"operation":"`+op+`","relation":`...)
	if len(k.relation) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, k.relation...)
	}
	return append(dst, "}}"...)
}
