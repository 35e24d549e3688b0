package shapes

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"

	"github.com/batonhq/baton/worker/internal/txn"
)

// headers are the headers of a change message of Electric's HTTP API.
type headers struct {
	Operation     string   `json:"operation"`
	Relation      []string `json:"relation"`
	TXIDs         []uint64 `json:"txids,omitempty"`
	LSN           string   `json:"lsn,omitempty"`
	OpPosition    *uint64  `json:"op_position,omitempty"`
	Last          bool     `json:"last,omitempty"`
	KeyChangeTo   string   `json:"key_change_to,omitempty"`
	KeyChangeFrom string   `json:"key_change_from,omitempty"`
}

// buildKey is Electric's row key: "schema"."table"/"pk1"/"pk2", with / and
// . doubled in the relation names, / doubled in values, and NULL as _.
func buildKey(d Definition, pkValues []*string) string {
	var b strings.Builder
	n := len(d.Schema) + len(d.Table) + 5
	for _, v := range pkValues {
		n += 4
		if v != nil {
			n += len(*v)
		}
	}
	b.Grow(n)
	b.WriteByte('"')
	writeDoubled(&b, d.Schema, true)
	b.WriteString(`"."`)
	writeDoubled(&b, d.Table, true)
	b.WriteByte('"')
	for _, v := range pkValues {
		if v == nil {
			b.WriteString("/_")
			continue
		}
		b.WriteString(`/"`)
		writeDoubled(&b, *v, false)
		b.WriteByte('"')
	}
	return b.String()
}

// writeDoubled writes s with every / doubled, and every . too when dots.
func writeDoubled(b *strings.Builder, s string, dots bool) {
	for {
		i := strings.IndexByte(s, '/')
		if dots {
			if j := strings.IndexByte(s, '.'); j >= 0 && (i < 0 || j < i) {
				i = j
			}
		}
		if i < 0 {
			b.WriteString(s)
			return
		}
		b.WriteString(s[:i+1])
		b.WriteByte(s[i])
		s = s[i+1:]
	}
}

// unit accumulates the messages of one record.
type unit struct {
	body   []byte
	count  int
	lastOp uint64
}

// payload is the stored form of a unit whose offset has op op.
func (u *unit) payload(op uint64) []byte {
	out := make([]byte, 8, 8+len(u.body))
	binary.LittleEndian.PutUint64(out, op)
	return append(out, u.body...)
}

// splitPayload returns the op offset and the messages of a stored record.
func splitPayload(p []byte) (op uint64, body []byte) {
	if len(p) < 8 {
		return 0, nil
	}
	return binary.LittleEndian.Uint64(p), p[8:]
}

// kv is one column of a message's value.
type kv struct {
	col string
	val *string
}

// sortedValue sorts a message's value by column, keeping the last of a
// repeated column, as json.Marshal of a map built in this order gives.
func sortedValue(pairs []kv) []kv {
	if pairs == nil {
		return nil
	}
	slices.SortStableFunc(pairs, func(a, b kv) int { return strings.Compare(a.col, b.col) })
	out := pairs[:0]
	for i, p := range pairs {
		if i+1 < len(pairs) && pairs[i+1].col == p.col {
			continue
		}
		out = append(out, p)
	}
	return out
}

// change is one message of a transaction before encoding.
type change struct {
	key      string
	value    []kv
	oldValue []kv // replica=full updates: the old values of changed columns
	h        headers
}

// membership says whether the old and the new row of a change are in the
// shape (its where clause is true on them). oldKnown is false when the
// change carries no old row to decide on (the table's replica identity is
// not FULL): the change is then told as an insert of the whole new row
// (an upsert for every client) or a delete.
type membership func(k int) (oldIn, newIn, oldKnown bool)

// everyRow is the membership of a shape without a where clause.
func everyRow(int) (bool, bool, bool) { return true, true, true }

// txMessages turns the changes of tx on the shape's table into one unit.
// idx are the positions in tx.Changes of the changes of that table, in
// order, and in tells whether each one's rows are in the shape. The
// messages are byte for byte what json.Marshal of a message with the
// value as a map gives.
func (m *Meta) txMessages(tx *txn.Transaction, idx []int, in membership) unit {
	d := m.Definition
	rel := []string{d.Schema, d.Table}
	lsn := strconv.FormatUint(tx.CommitLSN, 10)
	txids := []uint64{uint64(tx.XID)}
	full := d.Replica == "full"
	msgs := make([]change, 0, len(idx))
	var lay layout
	emit := func(key string, value, old []kv, op, to, from string) {
		msgs = append(msgs, change{key: key, value: sortedValue(value), oldValue: sortedValue(old),
			h: headers{Operation: op, Relation: rel, TXIDs: txids, LSN: lsn, KeyChangeTo: to, KeyChangeFrom: from}})
	}
	for k, ci := range idx {
		c := &tx.Changes[ci]
		oldIn, newIn, oldKnown := in(k)
		if oldKnown && !oldIn && !newIn {
			continue // neither row is in the shape
		}
		r := changeRows{m, c, lay.of(m, c.Columns)}
		switch c.Op {
		case "insert":
			if newIn {
				emit(r.key(true), r.row(true, r.all), nil, "insert", "", "")
			}
		case "delete":
			if oldIn {
				emit(r.key(false), r.oldRow(full), nil, "delete", "", "")
			}
		case "update":
			newKey := r.key(true)
			oldKey := newKey
			if c.Old != nil {
				oldKey = r.key(false)
			}
			switch {
			case !oldKnown:
				if newIn {
					emit(newKey, r.row(true, r.all), nil, "insert", "", "")
				} else {
					emit(newKey, r.pkRow(true), nil, "delete", "", "")
				}
			case oldIn && newIn && oldKey != newKey:
				emit(oldKey, r.oldRow(full), nil, "delete", newKey, "")
				emit(newKey, r.row(true, r.all), nil, "insert", "", oldKey)
			case oldIn && newIn:
				if !r.anyChanged() {
					continue // no selected column changed
				}
				if full {
					emit(newKey, r.row(true, r.all), r.row(false, r.changedNonKey), "update", "", "")
				} else {
					emit(newKey, r.row(true, r.changed), nil, "update", "", "")
				}
			case newIn:
				emit(newKey, r.row(true, r.all), nil, "insert", "", "")
			case oldIn:
				emit(oldKey, r.oldRow(full), nil, "delete", "", "")
			}
		}
	}
	var u unit
	ops := make([]uint64, len(msgs))
	size := 0
	for i := range msgs {
		size += encodedSize(&msgs[i])
	}
	u.body = make([]byte, 0, size)
	for i := range msgs {
		op := uint64(i)
		ops[i] = op
		msgs[i].h.OpPosition = &ops[i]
		msgs[i].h.Last = i == len(msgs)-1
		if u.count > 0 {
			u.body = append(u.body, ',')
		}
		u.body = appendChange(u.body, &msgs[i])
		u.count++
		u.lastOp = op
	}
	return u
}

// encodedSize is about the size of c encoded (appendChange): exact but
// for escapes and the numbers in its headers, for which it leaves room.
func encodedSize(c *change) int {
	n := len(c.key) + len(c.h.Relation[0]) + len(c.h.Relation[1]) + len(c.h.Operation) + len(c.h.LSN) + len(c.h.KeyChangeTo) + len(c.h.KeyChangeFrom) + 160
	for _, kvs := range [][]kv{c.value, c.oldValue} {
		for _, p := range kvs {
			n += len(p.col) + 8
			if p.val != nil {
				n += len(*p.val)
			}
		}
	}
	return n
}

// changeRows reads the rows of one change for one shape.
type changeRows struct {
	m   *Meta
	c   *txn.Change
	lay *layout
}

// layout is what a shape's messages need to know about the columns of a
// change, worked out once for the changes of a transaction that share
// their column names (the decoder gives every row of a relation the same
// slice): the positions of the shape's selected columns in the order of
// their names (stable), and the position of each key column (the last of
// that name, -1 when the change does not carry it).
type layout struct {
	cols     []string
	selected []int
	pk       []int
}

// of returns the layout of cols for m, working it out again only when
// cols is not the slice it was worked out for.
func (l *layout) of(m *Meta, cols []string) *layout {
	if l.cols != nil && len(l.cols) == len(cols) && (len(cols) == 0 || &l.cols[0] == &cols[0] || slices.Equal(l.cols, cols)) {
		return l
	}
	l.cols = cols
	l.selected = l.selected[:0]
	for j, col := range cols {
		if sel := m.Definition.Columns; sel != nil {
			if _, ok := slices.BinarySearch(sel, col); !ok {
				continue
			}
		}
		l.selected = append(l.selected, j)
	}
	slices.SortStableFunc(l.selected, func(a, b int) int { return strings.Compare(cols[a], cols[b]) })
	l.pk = l.pk[:0]
	for _, k := range m.PK {
		p := -1
		for j := len(cols) - 1; j >= 0; j-- {
			if cols[j] == k {
				p = j
				break
			}
		}
		l.pk = append(l.pk, p)
	}
	return l
}

// key is the row key of the new row (or the old one).
func (r changeRows) key(isNew bool) string {
	vals := r.c.Old
	if isNew {
		vals = r.c.New
	}
	out := make([]*string, len(r.m.PK))
	for j, p := range r.lay.pk {
		if p >= 0 {
			out[j], _ = r.value(vals, isNew, p)
		}
	}
	return buildKey(r.m.Definition, out)
}

func (r changeRows) unchanged(col string) bool { return slices.Contains(r.c.Unchanged, col) }

// value is column j of vals; in the new row, an unchanged TOASTed value is
// taken from the old row when it carries it. ok is false when it is unknown.
func (r changeRows) value(vals []*string, isNew bool, j int) (*string, bool) {
	if j >= len(vals) {
		return nil, false
	}
	if isNew && r.unchanged(r.c.Columns[j]) {
		if r.c.OldFull && j < len(r.c.Old) && len(r.c.Old) == len(r.c.Columns) {
			return r.c.Old[j], true
		}
		return nil, false
	}
	return vals[j], true
}

// row is the selected columns of the new row (or the old one) that only
// accepts, in the order of their names.
func (r changeRows) row(isNew bool, only func(col string, j int) bool) []kv {
	vals := r.c.Old
	if isNew {
		vals = r.c.New
	}
	if len(vals) == 0 {
		return nil
	}
	out := make([]kv, 0, len(r.lay.selected))
	for _, j := range r.lay.selected {
		col := r.c.Columns[j]
		if !only(col, j) {
			continue
		}
		if v, ok := r.value(vals, isNew, j); ok {
			out = append(out, kv{col, v})
		}
	}
	return out
}

func (r changeRows) all(string, int) bool { return true }

func (r changeRows) isKey(col string) bool { return slices.Contains(r.m.PK, col) }

// differs reports whether column j changed in an update (true when the
// old row does not tell).
func (r changeRows) differs(j int) bool {
	c := r.c
	if !c.OldFull || len(c.Old) != len(c.Columns) || j >= len(c.New) {
		return true
	}
	if r.unchanged(c.Columns[j]) {
		return false
	}
	o, n := c.Old[j], c.New[j]
	return (o == nil) != (n == nil) || (o != nil && *o != *n)
}

// changed is Electric's default update value: the key and what changed.
func (r changeRows) changed(col string, j int) bool { return r.isKey(col) || r.differs(j) }

func (r changeRows) changedNonKey(col string, j int) bool { return !r.isKey(col) && r.differs(j) }

// anyChanged reports whether a selected column other than the key changed.
func (r changeRows) anyChanged() bool {
	for _, j := range r.lay.selected {
		if r.changedNonKey(r.c.Columns[j], j) {
			return true
		}
	}
	return false
}

// pkRow is the key columns of the new row (or the old one); an unchanged
// TOASTed key value (a table keyed by every column) is the old row's.
func (r changeRows) pkRow(isNew bool) []kv {
	vals := r.c.Old
	if isNew {
		vals = r.c.New
	}
	out := make([]kv, len(r.m.PK))
	for j, k := range r.m.PK {
		out[j] = kv{col: k}
		if p := r.lay.pk[j]; p >= 0 {
			out[j].val, _ = r.value(vals, isNew, p)
		}
	}
	return out
}

// oldRow is a delete's value: the whole old row for replica=full (as far
// as the old row carries it), else the key.
func (r changeRows) oldRow(full bool) []kv {
	if full && r.c.OldFull && len(r.c.Old) == len(r.c.Columns) {
		return r.row(false, r.all)
	}
	return r.pkRow(false)
}

// appendChange appends a message whose value is sorted (sortedValue).
func appendChange(dst []byte, c *change) []byte {
	dst = append(dst, `{"key":`...)
	dst = txn.AppendJSONString(dst, c.key)
	dst = append(dst, `,"value":{`...)
	dst = appendKVs(dst, c.value)
	dst = append(dst, '}')
	if len(c.oldValue) > 0 {
		dst = append(dst, `,"old_value":{`...)
		dst = appendKVs(dst, c.oldValue)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"headers":`...)
	dst = appendHeaders(dst, &c.h)
	return append(dst, '}')
}

// appendKVs appends the members of a sorted value object.
func appendKVs(dst []byte, kvs []kv) []byte {
	for i, p := range kvs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = txn.AppendJSONString(dst, p.col)
		dst = append(dst, ':')
		if p.val == nil {
			dst = append(dst, "null"...)
		} else {
			dst = txn.AppendJSONString(dst, *p.val)
		}
	}
	return dst
}
