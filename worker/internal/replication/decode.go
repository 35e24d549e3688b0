package replication

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/jackc/pglogrepl"
)

// decoder turns pgoutput messages into txn.Transactions.
//
// Row messages (insert, update, delete), nearly all of a stream, are
// decoded here rather than by pglogrepl.Parse: Parse allocates a column
// struct and a copy of each value, which the changes then copied again
// into strings. Here a tuple's values are copied once, into one string
// that its values share, and a change's column names and replica
// identity are shared by every row of its relation (they are never
// modified). TestDecoderMatchesPglogrepl compares both decodings on
// seeded random messages.
type decoder struct {
	rels map[uint32]*relation
	tx   *txn.Transaction
	// lastChanges is the size of the last transaction, the capacity its
	// successor's changes start with (bounded by maxChangesHint).
	lastChanges int
}

// relation is a relation message and the column names and replica
// identity columns that every change of its rows shares. Both slices have
// their length as capacity, so an append to a change's copy never writes
// into the shared array.
type relation struct {
	msg  *pglogrepl.RelationMessage
	cols []string
	key  []string
}

func newRelation(m *pglogrepl.RelationMessage) *relation {
	r := &relation{msg: m}
	for _, col := range m.Columns {
		r.cols = append(r.cols, col.Name)
		if col.Flags&1 != 0 {
			r.key = append(r.key, col.Name)
		}
	}
	r.cols, r.key = slices.Clip(r.cols), slices.Clip(r.key)
	return r
}

// maxChangesHint bounds the capacity a transaction's changes start with.
const maxChangesHint = 1024

func newDecoder() *decoder {
	return &decoder{rels: map[uint32]*relation{}}
}

// inTx reports whether a transaction is open (Begin seen, Commit not yet).
func (d *decoder) inTx() bool { return d.tx != nil }

// handle processes one pgoutput message; it returns the transaction when the
// message was its Commit.
func (d *decoder) handle(data []byte) (*txn.Transaction, error) {
	if len(data) > 0 {
		switch data[0] {
		case 'I', 'U', 'D':
			return nil, d.rowMessage(data)
		}
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		d.rels[m.RelationID] = newRelation(m)
	case *pglogrepl.TypeMessage:
		// Values arrive in text format; a custom type needs no decoding.
	case *pglogrepl.BeginMessage:
		if d.tx != nil {
			return nil, fmt.Errorf("begin of xid %d inside open xid %d", m.Xid, d.tx.XID)
		}
		d.tx = &txn.Transaction{XID: m.Xid, CommitTime: m.CommitTime, Changes: make([]txn.Change, 0, min(d.lastChanges, maxChangesHint))}
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
		d.lastChanges = len(t.Changes)
		if cap(t.Changes) > 2*len(t.Changes)+8 {
			// Started with a bigger transaction's capacity: keep (in
			// caches) only what it holds.
			t.Changes = slices.Clone(t.Changes)
		}
		t.CommitLSN, t.EndLSN = uint64(m.CommitLSN), uint64(m.TransactionEndLSN)
		return t, nil
	case *pglogrepl.TruncateMessage:
		c := txn.Change{Op: "truncate", Cascade: m.Option&1 != 0}
		for _, id := range m.RelationIDs {
			rel, ok := d.rels[id]
			if !ok {
				return nil, fmt.Errorf("truncate of unknown relation %d", id)
			}
			c.Tables = append(c.Tables, rel.msg.Namespace+"."+rel.msg.RelationName)
		}
		return nil, d.add(c)
	case *pglogrepl.LogicalDecodingMessage:
		if m.Transactional {
			return nil, d.add(txn.Change{Op: "message", Prefix: m.Prefix, Content: m.Content})
		}
	}
	return nil, nil
}

// rowMessage decodes an insert, update or delete message (protocol
// version 1: no xid) and adds its change:
//
//	Insert: 'I' relid:uint32 'N' TupleData
//	Update: 'U' relid:uint32 [('K'|'O') TupleData] 'N' TupleData
//	Delete: 'D' relid:uint32 ('K'|'O') TupleData
func (d *decoder) rowMessage(data []byte) error {
	kind, op := data[0], "insert"
	switch kind {
	case 'U':
		op = "update"
	case 'D':
		op = "delete"
	}
	if len(data) < 6 {
		return fmt.Errorf("parse pgoutput message: %s message of %d bytes", op, len(data))
	}
	relID := binary.BigEndian.Uint32(data[1:5])
	rel, ok := d.rels[relID]
	if !ok {
		return fmt.Errorf("%s on unknown relation %d", op, relID)
	}
	c := txn.Change{Op: op, Schema: rel.msg.Namespace, Table: rel.msg.RelationName, Columns: rel.cols, Key: rel.key}
	src := data[5:]
	part := src[0]
	src = src[1:]
	if part == 'K' || part == 'O' {
		if kind == 'I' {
			return fmt.Errorf("parse pgoutput message: insert with an old tuple (%q)", part)
		}
		var n int
		var err error
		if c.Old, _, n, err = decodeTuple(src, rel, false); err != nil {
			return fmt.Errorf("parse pgoutput message: %s old tuple: %w", op, err)
		}
		c.OldFull = part == 'O'
		src = src[n:]
		if kind == 'U' {
			if len(src) == 0 {
				return fmt.Errorf("parse pgoutput message: update without its new tuple")
			}
			part, src = src[0], src[1:]
		}
	} else if kind == 'D' {
		return fmt.Errorf("parse pgoutput message: delete tuple type %q, want K or O", part)
	}
	if kind != 'D' {
		if part != 'N' {
			return fmt.Errorf("parse pgoutput message: %s tuple type %q, want N", op, part)
		}
		var err error
		if c.New, c.Unchanged, _, err = decodeTuple(src, rel, true); err != nil {
			return fmt.Errorf("parse pgoutput message: %s new tuple: %w", op, err)
		}
	}
	return d.add(c)
}

// decodeTuple decodes the TupleData at the start of src: a value per
// column (nil for NULL and for an unchanged TOASTed value), the names of
// the unchanged TOASTed columns when unchanged is asked for, and the
// bytes it read. The values' bytes are copied once, into one string that
// they share.
func decodeTuple(src []byte, rel *relation, unchanged bool) ([]*string, []string, int, error) {
	if len(src) < 2 {
		return nil, nil, 0, fmt.Errorf("tuple of %d bytes", len(src))
	}
	ncols := int(binary.BigEndian.Uint16(src))
	// First pass: check the lengths and count the bytes.
	pos, total := 2, 0
	for i := range ncols {
		if pos >= len(src) {
			return nil, nil, 0, fmt.Errorf("tuple ends before column %d of %d", i+1, ncols)
		}
		switch src[pos] {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if pos+5 > len(src) {
				return nil, nil, 0, fmt.Errorf("tuple ends in the length of column %d", i+1)
			}
			l := int(binary.BigEndian.Uint32(src[pos+1:]))
			if l < 0 || l > len(src)-pos-5 {
				return nil, nil, 0, fmt.Errorf("column %d: length %d past the tuple's end", i+1, l)
			}
			pos += 5 + l
			total += l
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
			pos++
		default:
			return nil, nil, 0, fmt.Errorf("column %d: unknown kind %q", i+1, src[pos])
		}
	}
	end := pos
	var b strings.Builder
	b.Grow(total)
	for pos = 2; pos < end; {
		switch src[pos] {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			l := int(binary.BigEndian.Uint32(src[pos+1:]))
			b.Write(src[pos+5 : pos+5+l])
			pos += 5 + l
		default:
			pos++
		}
	}
	all := b.String()
	strs := make([]string, ncols)
	vals := make([]*string, ncols)
	var toast []string
	at := 0
	for i, pos := 0, 2; i < ncols; i++ {
		switch src[pos] {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			l := int(binary.BigEndian.Uint32(src[pos+1:]))
			strs[i] = all[at : at+l]
			vals[i] = &strs[i]
			at += l
			pos += 5 + l
		case pglogrepl.TupleDataTypeToast:
			if unchanged && i < len(rel.cols) {
				toast = append(toast, rel.cols[i])
			}
			pos++
		default:
			pos++
		}
	}
	return vals, toast, end, nil
}

func (d *decoder) add(c txn.Change) error {
	if d.tx == nil {
		return fmt.Errorf("%s change outside a transaction", c.Op)
	}
	d.tx.Changes = append(d.tx.Changes, c)
	return nil
}
