package replication

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
)

// Change is one row change of a committed transaction, as stored. Values
// are PostgreSQL text-format strings; nil is NULL. Unchanged TOAST values
// (not sent by the server) are listed in Unchanged.
type Change struct {
	Op      string    `json:"op"` // insert, update, delete, truncate, message
	Schema  string    `json:"schema,omitempty"`
	Table   string    `json:"table,omitempty"`
	Columns []string  `json:"columns,omitempty"`
	Key     []string  `json:"key,omitempty"` // replica identity columns
	New     []*string `json:"new,omitempty"`
	Old     []*string `json:"old,omitempty"` // old key or old row, when sent
	// OldFull: Old is the whole old row (REPLICA IDENTITY FULL), not the
	// old key (whose other columns are NULL).
	OldFull   bool     `json:"old_full,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	// Truncate: the tables truncated (schema-qualified) and options.
	Tables  []string `json:"tables,omitempty"`
	Cascade bool     `json:"cascade,omitempty"`
	// Logical decoding message.
	Prefix  string `json:"prefix,omitempty"`
	Content []byte `json:"content,omitempty"`
}

// Transaction is the payload stored for one committed transaction.
type Transaction struct {
	XID        uint32    `json:"xid"`
	CommitLSN  uint64    `json:"commit_lsn"`
	EndLSN     uint64    `json:"end_lsn"`
	CommitTime time.Time `json:"commit_time"`
	Origin     string    `json:"origin,omitempty"`
	Changes    []Change  `json:"changes"`
}

// DecodeTransaction parses a stored payload.
func DecodeTransaction(b []byte) (*Transaction, error) {
	var t Transaction
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("decode transaction: %w", err)
	}
	return &t, nil
}

// TxCache hands the transactions the stream appends to the stream log to
// the shape router in memory, so that it need not decode them from the log
// again. It holds only transactions whose decoded form is exactly what
// DecodeTransaction gives for their stored payload (every string valid
// UTF-8, no empty non-nil row), a bounded number, in seq order; the router
// decodes from the log whatever it does not find here. A TxCache lives for
// one storage Open: seqs are those of that Log.
type TxCache struct {
	mu      sync.Mutex
	q       []cachedTx
	changes int
}

type cachedTx struct {
	seq uint64
	tx  *Transaction
}

// The bounds of a TxCache: past them, transactions are not cached.
const (
	txCacheMaxTx      = 4096
	txCacheMaxChanges = 1 << 17
)

// NewTxCache returns an empty cache.
func NewTxCache() *TxCache { return &TxCache{} }

// Put notes that tx was appended as record seq. tx must not change after.
func (c *TxCache) Put(seq uint64, tx *Transaction) {
	if c == nil || seq == 0 || !roundTrips(tx) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.q) >= txCacheMaxTx || c.changes+len(tx.Changes) > txCacheMaxChanges {
		return
	}
	if n := len(c.q); n > 0 && c.q[n-1].seq >= seq {
		return
	}
	c.q = append(c.q, cachedTx{seq, tx})
	c.changes += len(tx.Changes)
}

// Take returns the transaction of record seq, or nil when it is not
// cached; it forgets that one and every earlier one.
func (c *TxCache) Take(seq uint64) *Transaction {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for i < len(c.q) && c.q[i].seq < seq {
		c.changes -= len(c.q[i].tx.Changes)
		i++
	}
	var tx *Transaction
	if i < len(c.q) && c.q[i].seq == seq {
		tx = c.q[i].tx
		c.changes -= len(tx.Changes)
		i++
	}
	if i > 0 {
		n := copy(c.q, c.q[i:])
		clear(c.q[n:])
		c.q = c.q[:n]
	}
	return tx
}

// roundTrips reports whether DecodeTransaction(tx.Encode()) gives back tx
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

// decoder turns pgoutput messages into Transactions.
type decoder struct {
	rels map[uint32]*pglogrepl.RelationMessage
	tx   *Transaction
}

func newDecoder() *decoder {
	return &decoder{rels: map[uint32]*pglogrepl.RelationMessage{}}
}

// inTx reports whether a transaction is open (Begin seen, Commit not yet).
func (d *decoder) inTx() bool { return d.tx != nil }

// handle processes one pgoutput message; it returns the transaction when the
// message was its Commit.
func (d *decoder) handle(data []byte) (*Transaction, error) {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		d.rels[m.RelationID] = m
	case *pglogrepl.TypeMessage:
		// Values arrive in text format; a custom type needs no decoding.
	case *pglogrepl.BeginMessage:
		if d.tx != nil {
			return nil, fmt.Errorf("begin of xid %d inside open xid %d", m.Xid, d.tx.XID)
		}
		d.tx = &Transaction{XID: m.Xid, CommitTime: m.CommitTime, Changes: []Change{}}
	case *pglogrepl.OriginMessage:
		if d.tx != nil {
			d.tx.Origin = m.Name
		}
	case *pglogrepl.CommitMessage:
		if d.tx == nil {
			return nil, fmt.Errorf("commit at %s without begin", m.CommitLSN)
		}
		t := d.tx
		d.tx = nil
		t.CommitLSN, t.EndLSN = uint64(m.CommitLSN), uint64(m.TransactionEndLSN)
		return t, nil
	case *pglogrepl.InsertMessage:
		return nil, d.row("insert", m.RelationID, m.Tuple, nil, false)
	case *pglogrepl.UpdateMessage:
		return nil, d.row("update", m.RelationID, m.NewTuple, m.OldTuple, m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld)
	case *pglogrepl.DeleteMessage:
		return nil, d.row("delete", m.RelationID, nil, m.OldTuple, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld)
	case *pglogrepl.TruncateMessage:
		c := Change{Op: "truncate", Cascade: m.Option&1 != 0}
		for _, id := range m.RelationIDs {
			rel, ok := d.rels[id]
			if !ok {
				return nil, fmt.Errorf("truncate of unknown relation %d", id)
			}
			c.Tables = append(c.Tables, rel.Namespace+"."+rel.RelationName)
		}
		return nil, d.add(c)
	case *pglogrepl.LogicalDecodingMessage:
		if m.Transactional {
			return nil, d.add(Change{Op: "message", Prefix: m.Prefix, Content: m.Content})
		}
	}
	return nil, nil
}

func (d *decoder) add(c Change) error {
	if d.tx == nil {
		return fmt.Errorf("%s change outside a transaction", c.Op)
	}
	d.tx.Changes = append(d.tx.Changes, c)
	return nil
}

func (d *decoder) row(op string, relID uint32, newTuple, oldTuple *pglogrepl.TupleData, oldFull bool) error {
	rel, ok := d.rels[relID]
	if !ok {
		return fmt.Errorf("%s on unknown relation %d", op, relID)
	}
	c := Change{Op: op, Schema: rel.Namespace, Table: rel.RelationName}
	for _, col := range rel.Columns {
		c.Columns = append(c.Columns, col.Name)
		if col.Flags&1 != 0 {
			c.Key = append(c.Key, col.Name)
		}
	}
	if newTuple != nil {
		c.New, c.Unchanged = values(rel, newTuple)
	}
	if oldTuple != nil {
		c.Old, _ = values(rel, oldTuple)
		c.OldFull = oldFull
	}
	return d.add(c)
}

func values(rel *pglogrepl.RelationMessage, t *pglogrepl.TupleData) ([]*string, []string) {
	out := make([]*string, len(t.Columns))
	var unchanged []string
	for i, col := range t.Columns {
		switch col.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			s := string(col.Data)
			out[i] = &s
		case pglogrepl.TupleDataTypeToast:
			if i < len(rel.Columns) {
				unchanged = append(unchanged, rel.Columns[i].Name)
			}
		}
	}
	return out, unchanged
}
