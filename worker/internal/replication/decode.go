package replication

import (
	"fmt"

	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/jackc/pglogrepl"
)

// decoder turns pgoutput messages into txn.Transactions.
type decoder struct {
	rels map[uint32]*pglogrepl.RelationMessage
	tx   *txn.Transaction
}

func newDecoder() *decoder {
	return &decoder{rels: map[uint32]*pglogrepl.RelationMessage{}}
}

// inTx reports whether a transaction is open (Begin seen, Commit not yet).
func (d *decoder) inTx() bool { return d.tx != nil }

// handle processes one pgoutput message; it returns the transaction when the
// message was its Commit.
func (d *decoder) handle(data []byte) (*txn.Transaction, error) {
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
		d.tx = &txn.Transaction{XID: m.Xid, CommitTime: m.CommitTime, Changes: []txn.Change{}}
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
		c := txn.Change{Op: "truncate", Cascade: m.Option&1 != 0}
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
			return nil, d.add(txn.Change{Op: "message", Prefix: m.Prefix, Content: m.Content})
		}
	}
	return nil, nil
}

func (d *decoder) add(c txn.Change) error {
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
	c := txn.Change{Op: op, Schema: rel.Namespace, Table: rel.RelationName}
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
