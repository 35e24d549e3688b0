package txn

import (
	"sync"
	"unicode/utf8"
)

// Cache hands the transactions the stream appends to the stream log to
// the shape router in memory, so that it need not decode them from the log
// again. It holds only transactions whose decoded form is exactly what
// Decode gives for their stored payload (every string valid UTF-8, no empty
// non-nil row), a bounded number, in seq order; the router decodes from the
// log whatever it does not find here. A Cache lives for one storage Open:
// seqs are those of that Log. It is safe for concurrent use; a nil *Cache
// holds nothing.
type Cache struct {
	mu      sync.Mutex
	q       []cachedTx // from head on: the cached transactions
	head    int
	changes int
	bytes   int // sum of the cached transactions' encoded sizes
}

type cachedTx struct {
	seq  uint64
	tx   *Transaction
	size int
}

// The bounds of a Cache: past them, transactions are not cached. The
// bytes (of the transactions' stored, encoded form) bound its memory,
// whatever the rows' width; the transactions' own bound is what a catch-up
// of single-row transactions (the router behind the streamer by tens of
// thousands) reaches first, and each uncached one is decoded from its JSON
// again (encoding/json: about 4% of the worker's CPU at 10,000 shapes when
// it was 4096).
const (
	cacheMaxTx      = 1 << 15
	cacheMaxChanges = 1 << 17
	cacheMaxBytes   = 32 << 20
)

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{} }

// Put notes that tx was appended as record seq, size bytes long. tx must
// not change after.
func (c *Cache) Put(seq uint64, tx *Transaction, size int) {
	if c == nil || seq == 0 || !roundTrips(tx) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.q)-c.head >= cacheMaxTx || c.changes+len(tx.Changes) > cacheMaxChanges || c.bytes+size > cacheMaxBytes {
		return
	}
	if c.head > 0 && len(c.q) == cap(c.q) {
		// Move the queue to the front (amortized: Take only moves head).
		n := copy(c.q, c.q[c.head:])
		clear(c.q[n:])
		c.q, c.head = c.q[:n], 0
	}
	if n := len(c.q); n > 0 && c.q[n-1].seq >= seq {
		return
	}
	c.q = append(c.q, cachedTx{seq, tx, size})
	c.changes += len(tx.Changes)
	c.bytes += size
}

// Take returns the transaction of record seq, or nil when it is not
// cached; it forgets that one and every earlier one.
func (c *Cache) Take(seq uint64) *Transaction {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.head
	for i < len(c.q) && c.q[i].seq < seq {
		c.changes -= len(c.q[i].tx.Changes)
		c.bytes -= c.q[i].size
		i++
	}
	var tx *Transaction
	if i < len(c.q) && c.q[i].seq == seq {
		tx = c.q[i].tx
		c.changes -= len(tx.Changes)
		c.bytes -= c.q[i].size
		i++
	}
	clear(c.q[c.head:i])
	c.head = i
	if c.head == len(c.q) {
		c.q, c.head = c.q[:0], 0
	}
	return tx
}

// roundTrips reports whether Decode(tx.Encode()) gives back tx
// in everything a reader looks at: JSON replaces invalid UTF-8, and
// omitempty drops empty slices.
func roundTrips(tx *Transaction) bool {
	strs := func(ss []string) bool {
		for _, s := range ss {
			if !utf8.ValidString(s) {
				return false
			}
		}
		return true
	}
	vals := func(vs []*string) bool {
		if vs != nil && len(vs) == 0 {
			return false
		}
		for _, v := range vs {
			if v != nil && !utf8.ValidString(*v) {
				return false
			}
		}
		return true
	}
	if tx.Changes == nil || !utf8.ValidString(tx.Origin) {
		return false
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		if !utf8.ValidString(c.Op) || !utf8.ValidString(c.Schema) || !utf8.ValidString(c.Table) ||
			!utf8.ValidString(c.Prefix) || !strs(c.Columns) || !strs(c.Key) || !strs(c.Unchanged) ||
			!strs(c.Tables) || !vals(c.New) || !vals(c.Old) ||
			(c.Columns != nil && len(c.Columns) == 0) || (c.Key != nil && len(c.Key) == 0) ||
			(c.Unchanged != nil && len(c.Unchanged) == 0) || (c.Tables != nil && len(c.Tables) == 0) ||
			(c.Content != nil && len(c.Content) == 0) {
			return false
		}
	}
	return true
}
