package shapes

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"

	"github.com/batonhq/baton/worker/internal/replication"
)

// message is one change message of Electric's HTTP API.
type message struct {
	Key     string             `json:"key"`
	Value   map[string]*string `json:"value"`
	Headers headers            `json:"headers"`
}

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
	esc := func(s string) string {
		return strings.ReplaceAll(strings.ReplaceAll(s, "/", "//"), ".", "..")
	}
	b.WriteString(`"` + esc(d.Schema) + `"."` + esc(d.Table) + `"`)
	for _, v := range pkValues {
		if v == nil {
			b.WriteString("/_")
			continue
		}
		b.WriteString(`/"` + strings.ReplaceAll(*v, "/", "//") + `"`)
	}
	return b.String()
}

// unit accumulates the messages of one record.
type unit struct {
	body   []byte
	count  int
	lastOp uint64
}

func (u *unit) add(m *message, op uint64) error {
	if u.count > 0 {
		u.body = append(u.body, ',')
	}
	u.body = appendMessage(u.body, m)
	u.count++
	u.lastOp = op
	return nil
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
	key   string
	value []kv
	h     headers
}

// txMessages turns the changes of tx on the shape's table into one unit;
// ok is false when tx does not touch it. truncated reports a TRUNCATE of
// the table (the shape must be rebuilt). The messages are byte for byte
// what json.Marshal of a message with the value as a map gives.
func (m *Meta) txMessages(tx *replication.Transaction) (u unit, truncated bool, err error) {
	d := m.Definition
	rel := []string{d.Schema, d.Table}
	qualified := d.Schema + "." + d.Table
	lsn := strconv.FormatUint(tx.CommitLSN, 10)
	txids := []uint64{uint64(tx.XID)}
	var msgs []change
	emit := func(key string, value []kv, op, to, from string) {
		msgs = append(msgs, change{key: key, value: sortedValue(value),
			h: headers{Operation: op, Relation: rel, TXIDs: txids, LSN: lsn, KeyChangeTo: to, KeyChangeFrom: from}})
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		if c.Op == "truncate" {
			for _, t := range c.Tables {
				if t == qualified {
					truncated = true
				}
			}
			continue
		}
		if c.Schema != d.Schema || c.Table != d.Table {
			continue
		}
		// pos is the position of a column (the last of that name).
		pos := func(col string) (int, bool) {
			for j := len(c.Columns) - 1; j >= 0; j-- {
				if c.Columns[j] == col {
					return j, true
				}
			}
			return 0, false
		}
		pkOf := func(vals []*string) []*string {
			out := make([]*string, len(m.PK))
			for j, k := range m.PK {
				if p, ok := pos(k); ok && p < len(vals) {
					out[j] = vals[p]
				}
			}
			return out
		}
		unchanged := func(col string) bool { return slices.Contains(c.Unchanged, col) }
		row := func(vals []*string, only func(col string, j int) bool) []kv {
			out := make([]kv, 0, len(c.Columns))
			for j, col := range c.Columns {
				if j < len(vals) && !unchanged(col) && (only == nil || only(col, j)) {
					out = append(out, kv{col, vals[j]})
				}
			}
			return out
		}
		pkRow := func(vals []*string) []kv {
			pk := pkOf(vals)
			out := make([]kv, len(m.PK))
			for j, k := range m.PK {
				out[j] = kv{k, pk[j]}
			}
			return out
		}
		switch c.Op {
		case "insert":
			emit(buildKey(d, pkOf(c.New)), row(c.New, nil), "insert", "", "")
		case "delete":
			emit(buildKey(d, pkOf(c.Old)), pkRow(c.Old), "delete", "", "")
		case "update":
			newKey := buildKey(d, pkOf(c.New))
			if c.Old != nil {
				if oldKey := buildKey(d, pkOf(c.Old)); oldKey != newKey {
					emit(oldKey, pkRow(c.Old), "delete", newKey, "")
					emit(newKey, row(c.New, nil), "insert", "", oldKey)
					continue
				}
			}
			changed := func(col string, j int) bool {
				if slices.Contains(m.PK, col) || c.Old == nil || j >= len(c.Old) {
					return true
				}
				o, n := c.Old[j], c.New[j]
				return (o == nil) != (n == nil) || (o != nil && *o != *n)
			}
			emit(newKey, row(c.New, changed), "update", "", "")
		}
	}
	for i := range msgs {
		op := uint64(i)
		msgs[i].h.OpPosition = &op
		msgs[i].h.Last = i == len(msgs)-1
		if u.count > 0 {
			u.body = append(u.body, ',')
		}
		u.body = appendChange(u.body, &msgs[i])
		u.count++
		u.lastOp = op
	}
	return u, truncated, nil
}

// appendChange appends a message whose value is sorted (sortedValue).
func appendChange(dst []byte, c *change) []byte {
	dst = append(dst, `{"key":`...)
	dst = replication.AppendJSONString(dst, c.key)
	dst = append(dst, `,"value":{`...)
	for i, p := range c.value {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = replication.AppendJSONString(dst, p.col)
		dst = append(dst, ':')
		if p.val == nil {
			dst = append(dst, "null"...)
		} else {
			dst = replication.AppendJSONString(dst, *p.val)
		}
	}
	dst = append(dst, `},"headers":`...)
	dst = appendHeaders(dst, &c.h)
	return append(dst, '}')
}
