package shapes

// Chunks: where responses end. See "Chunks" in the package doc for why
// every chunk a URL names is the same wherever and whenever it is served.

// DefaultChunkBytes is Electric's default chunk_bytes_threshold (10 MiB).
const DefaultChunkBytes = 10 << 20

// chunker finds the chunk boundaries of a shape log, record by record in
// log order. Its state depends only on the records added and on the
// threshold, so two chunkers fed the same log agree.
type chunker struct {
	threshold int
	open      int    // message bytes in the open chunk (always below threshold)
	last      Offset // the last record added
	any       bool   // a record was added
}

// newChunker returns a chunker for threshold (0: DefaultChunkBytes).
func newChunker(threshold int64) chunker {
	if threshold <= 0 {
		threshold = DefaultChunkBytes
	}
	return chunker{threshold: int(threshold)}
}

// add takes the next record of the log, at offset off with size bytes of
// messages, and returns the chunk boundaries it makes, in order. body
// returns its messages; it is called only when the record may have to be
// cut inside.
//
// The rule is Electric's (LogChunker): a chunk ends after the message
// that brings it to threshold bytes or more. A snapshot record is never
// cut inside (its offset names the whole record) and the snapshot's last
// record ends a chunk. A transaction's record is cut after the message
// that reaches the threshold, but never after its first message unless
// that is its only one ("<lsn>_0" means the whole transaction: see
// Offset.after), and only when its messages are numbered 0..Op (true of
// every record the router writes; a compacted record may hold fewer
// messages, and then ends a chunk as a whole).
func (c *chunker) add(off Offset, size int, body func() ([]byte, error)) ([]Offset, error) {
	if c.threshold <= 0 {
		c.threshold = DefaultChunkBytes
	}
	var out []Offset
	if off.TX != 0 && c.any && c.last.TX == 0 && c.open > 0 {
		// The first change after the snapshot: the snapshot's last record
		// ends its chunk.
		out = append(out, c.last)
		c.open = 0
	}
	c.last, c.any = off, true
	if c.open+size < c.threshold {
		c.open += size
		return out, nil
	}
	if off.TX == 0 {
		c.open = 0
		return append(out, off), nil
	}
	b, err := body()
	if err != nil {
		return nil, err
	}
	ends := messageEnds(b)
	if len(ends) == 0 || uint64(len(ends)) != off.Op+1 {
		c.open = 0
		return append(out, off), nil
	}
	base := 0 // where the open chunk starts in b
	for i, e := range ends {
		if c.open+e-base >= c.threshold && (i > 0 || len(ends) == 1) {
			out = append(out, Offset{TX: off.TX, Op: uint64(i)})
			c.open, base = 0, e
		}
	}
	c.open += len(b) - base
	return out, nil
}

// endSnapshot ends the open chunk at the snapshot's last record, when the
// records added so far are all the snapshot's (a shape whose snapshot ends
// with snapshot-end: Meta.SnapshotEnd); it returns that boundary. The
// first change would end it there too: this only ends it before one.
func (c *chunker) endSnapshot() (Offset, bool) {
	if !c.any || c.last.TX != 0 || c.open == 0 {
		return Offset{}, false
	}
	c.open = 0
	return c.last, true
}

// messageEnds returns the end (exclusive) of each message of a record's
// messages: JSON objects joined by commas.
func messageEnds(body []byte) []int {
	var ends []int
	depth, inStr, esc := 0, false, false
	for i, ch := range body {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
		case ch == '"':
			inStr = true
		case ch == '{' || ch == '[':
			depth++
		case ch == '}' || ch == ']':
			depth--
			if depth == 0 {
				ends = append(ends, i+1)
			}
		}
	}
	return ends
}

// partOf returns the messages of a transaction's record (offset off)
// after a client's offset from and up to offset last: the whole body
// unless from or last falls inside the record (a chunk boundary there).
// When the record's messages are not numbered 0..off.Op (compacted since
// the plan), it returns the whole body: its compacted messages set each
// row they name to its state after the transaction, which is right for a
// client anywhere inside it (see Compaction).
func partOf(body []byte, off, from, last Offset) []byte {
	if off.TX == 0 {
		return body
	}
	skip, keep := uint64(0), off.Op+1
	if !from.BeforeAll && from.TX == off.TX && from.Op < off.Op {
		skip = from.Op + 1
	}
	if last.TX == off.TX && last.Op < off.Op {
		keep = last.Op + 1
	}
	if skip == 0 && keep == off.Op+1 {
		return body
	}
	ends := messageEnds(body)
	if uint64(len(ends)) != off.Op+1 {
		return body
	}
	if skip >= keep {
		return body[:0]
	}
	start := 0
	if skip > 0 {
		start = ends[skip-1] + 1 // after the comma
	}
	return body[start:ends[keep-1]]
}
