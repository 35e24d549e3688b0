package replication

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/batonhq/baton/worker/internal/txn"
)

// pgoutput messages, as the walsender sends them (protocol version 1).

func relationMsg(id uint32, ns, name string, cols []string, key []bool) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, ns...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if key[i] {
			flags = 1
		}
		b = append(b, flags)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

func beginMsg(xid uint32) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, 0x1000)
	b = binary.BigEndian.AppendUint64(b, 1)
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMsg(lsn uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, lsn)
	b = binary.BigEndian.AppendUint64(b, lsn+8)
	return binary.BigEndian.AppendUint64(b, 1)
}

// tupleCol is one column of a TupleData: kind 'n', 'u', 't' or 'b'.
type tupleCol struct {
	kind byte
	data []byte
}

func appendTuple(b []byte, cols []tupleCol) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
			b = append(b, c.data...)
		}
	}
	return b
}

// rowMsg is an insert ('I'), update ('U') or delete ('D') of relation id;
// old is 0, 'K' or 'O'.
func rowMsg(kind byte, id uint32, old byte, oldCols, newCols []tupleCol) []byte {
	b := binary.BigEndian.AppendUint32([]byte{kind}, id)
	if old != 0 {
		b = appendTuple(append(b, old), oldCols)
	}
	if kind != 'D' {
		b = appendTuple(append(b, 'N'), newCols)
	}
	return b
}

// referenceChange is the change as decoded before rowMessage, through
// pglogrepl.Parse.
func referenceChange(t *testing.T, rel *pglogrepl.RelationMessage, data []byte) txn.Change {
	t.Helper()
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		t.Fatalf("pglogrepl: %v", err)
	}
	values := func(tup *pglogrepl.TupleData) ([]*string, []string) {
		out := make([]*string, len(tup.Columns))
		var unchanged []string
		for i, col := range tup.Columns {
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
	var c txn.Change
	var newT, oldT *pglogrepl.TupleData
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		c.Op, newT = "insert", m.Tuple
	case *pglogrepl.UpdateMessage:
		c.Op, newT, oldT, c.OldFull = "update", m.NewTuple, m.OldTuple, m.OldTupleType == 'O'
	case *pglogrepl.DeleteMessage:
		c.Op, oldT, c.OldFull = "delete", m.OldTuple, m.OldTupleType == 'O'
	}
	c.Schema, c.Table = rel.Namespace, rel.RelationName
	for _, col := range rel.Columns {
		c.Columns = append(c.Columns, col.Name)
		if col.Flags&1 != 0 {
			c.Key = append(c.Key, col.Name)
		}
	}
	if newT != nil {
		c.New, c.Unchanged = values(newT)
	}
	if oldT != nil {
		c.Old, _ = values(oldT)
	}
	return c
}

// TestDecoderMatchesPglogrepl decodes seeded random row messages with the
// decoder and with pglogrepl.Parse (as the decoder did before): the
// changes must be equal, and every strict prefix of a message must be an
// error, never a panic.
func TestDecoderMatchesPglogrepl(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	d := newDecoder()
	rels := map[uint32]*pglogrepl.RelationMessage{}
	for id := uint32(1); id <= 4; id++ {
		n := 1 + rng.IntN(6)
		cols, key := make([]string, n), make([]bool, n)
		for i := range n {
			cols[i], key[i] = fmt.Sprintf("c%d_%d", id, i), rng.IntN(3) == 0
		}
		data := relationMsg(id, "s", fmt.Sprintf("t%d", id), cols, key)
		if _, err := d.handle(data); err != nil {
			t.Fatal(err)
		}
		m, err := pglogrepl.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		rels[id] = m.(*pglogrepl.RelationMessage)
	}
	randCols := func(n int, kinds string) []tupleCol {
		out := make([]tupleCol, n)
		for i := range out {
			out[i].kind = kinds[rng.IntN(len(kinds))]
			if out[i].kind == 't' || out[i].kind == 'b' {
				out[i].data = make([]byte, rng.IntN(40))
				for j := range out[i].data {
					out[i].data[j] = byte(rng.IntN(256))
				}
			}
		}
		return out
	}
	if _, err := d.handle(beginMsg(1)); err != nil {
		t.Fatal(err)
	}
	var want []txn.Change
	var msgs [][]byte
	for range 2000 {
		id := uint32(1 + rng.IntN(4))
		n := len(rels[id].Columns)
		var data []byte
		switch rng.IntN(3) {
		case 0:
			data = rowMsg('I', id, 0, nil, randCols(n, "nttb"))
		case 1:
			old := []byte{0, 'K', 'O'}[rng.IntN(3)]
			data = rowMsg('U', id, old, randCols(n, "nt"), randCols(n, "nttub"))
		default:
			data = rowMsg('D', id, []byte{'K', 'O'}[rng.IntN(2)], randCols(n, "ntt"), nil)
		}
		want = append(want, referenceChange(t, rels[id], data))
		msgs = append(msgs, data)
		if _, err := d.handle(data); err != nil {
			t.Fatalf("message %x: %v", data, err)
		}
	}
	tx, err := d.handle(commitMsg(0x2000))
	if err != nil || tx == nil {
		t.Fatalf("commit: %v %v", tx, err)
	}
	if len(tx.Changes) != len(want) {
		t.Fatalf("%d changes, want %d", len(tx.Changes), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(tx.Changes[i], want[i]) {
			t.Fatalf("message %d %x:\n got %+v\nwant %+v", i, msgs[i], tx.Changes[i], want[i])
		}
	}
	// Changes share their relation's column names: an append to one
	// change's must copy them (capacity = length), never reach another's.
	for i, c := range tx.Changes {
		if cap(c.Columns) != len(c.Columns) || cap(c.Key) != len(c.Key) {
			t.Fatalf("change %d: columns %d/%d, key %d/%d (length/capacity)", i, len(c.Columns), cap(c.Columns), len(c.Key), cap(c.Key))
		}
	}

	if _, err := d.handle(beginMsg(2)); err != nil {
		t.Fatal(err)
	}
	for i, data := range msgs[:200] {
		for n := 1; n < len(data); n++ {
			if _, err := d.handle(data[:n]); err == nil {
				t.Fatalf("message %d %x: its first %d bytes decoded without an error", i, data, n)
			}
		}
	}
}

// BenchmarkDecodeInserts decodes a transaction of 100 inserts of a row
// like the replication bench's (id, text of 38 characters, int,
// timestamptz).
func BenchmarkDecodeInserts(b *testing.B) {
	rel := relationMsg(1, "public", "bench_items", []string{"id", "note", "n", "at"}, []bool{true, false, false, false})
	var msgs [][]byte
	for i := range 100 {
		msgs = append(msgs, rowMsg('I', 1, 0, nil, []tupleCol{
			{'t', fmt.Appendf(nil, "%d", 1000000+i)},
			{'t', []byte("note note note note note note note not")},
			{'t', []byte("42")},
			{'t', []byte("2026-12-07 20:04:05.123456+00")},
		}))
	}
	d := newDecoder()
	if _, err := d.handle(rel); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.handle(beginMsg(1)); err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if _, err := d.handle(m); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := d.handle(commitMsg(1)); err != nil {
			b.Fatal(err)
		}
	}
}
