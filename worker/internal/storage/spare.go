package storage

// A Log keeps the buffer of its last written chunk for the next one: a
// catch-up appends megabytes between two Syncs, and growing a fresh
// buffer by doubling each time cost about a tenth of the worker's CPU
// (copies, page faults, and the scavenger handing the memory back). Only
// buffers within these bounds are kept: small ones are cheap to grow, and
// keeping them would hold memory for every idle shape log.
const (
	minSpareBuf = 64 << 10
	maxSpareBuf = 8 << 20
)

// newChunkBufLocked returns an empty buffer for a new chunk: the spare
// one if there is one. The caller holds mu.
func (l *Log) newChunkBufLocked() []byte {
	b := l.spare
	l.spare = nil
	return b[:0]
}

// recycle keeps the largest buffer of written chunks as the spare. The
// caller holds syncMu, and write has returned (nothing reads the
// buffers any more).
func (l *Log) recycle(batch []*chunk) {
	var keep []byte
	for _, c := range batch {
		if cap(c.buf) >= minSpareBuf && cap(c.buf) <= maxSpareBuf && cap(c.buf) > cap(keep) {
			keep = c.buf
		}
		c.buf = nil
	}
	if keep == nil {
		return
	}
	l.mu.Lock()
	if cap(keep) > cap(l.spare) {
		l.spare = keep[:0]
	}
	l.mu.Unlock()
}
