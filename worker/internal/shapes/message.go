package shapes

import (
	"encoding/binary"
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

// txMessages turns the changes of tx on the shape's table into one unit;
// ok is false when tx does not touch it. truncated reports a TRUNCATE of
// the table (the shape must be rebuilt).
func (m *Meta) txMessages(tx *replication.Transaction) (u unit, truncated bool, err error) {
	d := m.Definition
	rel := []string{d.Schema, d.Table}
	qualified := d.Schema + "." + d.Table
	lsn := strconv.FormatUint(tx.CommitLSN, 10)
	var op uint64
	var msgs []*message
	var ops []uint64
	emit := func(msg *message) {
		msg.Headers.Relation = rel
		msg.Headers.TXIDs = []uint64{uint64(tx.XID)}
		msg.Headers.LSN = lsn
		p := op
		msg.Headers.OpPosition = &p
		msgs = append(msgs, msg)
		ops = append(ops, op)
		op++
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
		idx := make(map[string]int, len(c.Columns))
		for j, col := range c.Columns {
			idx[col] = j
		}
		pkOf := func(vals []*string) []*string {
			out := make([]*string, len(m.PK))
			for j, k := range m.PK {
				if p, ok := idx[k]; ok && p < len(vals) {
					out[j] = vals[p]
				}
			}
			return out
		}
		unchanged := map[string]bool{}
		for _, col := range c.Unchanged {
			unchanged[col] = true
		}
		row := func(vals []*string, only func(col string, j int) bool) map[string]*string {
			out := make(map[string]*string, len(c.Columns))
			for j, col := range c.Columns {
				if j < len(vals) && !unchanged[col] && (only == nil || only(col, j)) {
					out[col] = vals[j]
				}
			}
			return out
		}
		pkRow := func(vals []*string) map[string]*string {
			out := make(map[string]*string, len(m.PK))
			for j, k := range m.PK {
				out[k] = pkOf(vals)[j]
			}
			return out
		}
		switch c.Op {
		case "insert":
			emit(&message{Key: buildKey(d, pkOf(c.New)), Value: row(c.New, nil), Headers: headers{Operation: "insert"}})
		case "delete":
			emit(&message{Key: buildKey(d, pkOf(c.Old)), Value: pkRow(c.Old), Headers: headers{Operation: "delete"}})
		case "update":
			newKey := buildKey(d, pkOf(c.New))
			if c.Old != nil {
				if oldKey := buildKey(d, pkOf(c.Old)); oldKey != newKey {
					emit(&message{Key: oldKey, Value: pkRow(c.Old), Headers: headers{Operation: "delete", KeyChangeTo: newKey}})
					emit(&message{Key: newKey, Value: row(c.New, nil), Headers: headers{Operation: "insert", KeyChangeFrom: oldKey}})
					continue
				}
			}
			isPK := map[string]bool{}
			for _, k := range m.PK {
				isPK[k] = true
			}
			changed := func(col string, j int) bool {
				if isPK[col] || c.Old == nil || j >= len(c.Old) {
					return true
				}
				o, n := c.Old[j], c.New[j]
				return (o == nil) != (n == nil) || (o != nil && *o != *n)
			}
			emit(&message{Key: newKey, Value: row(c.New, changed), Headers: headers{Operation: "update"}})
		}
	}
	if len(msgs) > 0 {
		msgs[len(msgs)-1].Headers.Last = true
	}
	for i, msg := range msgs {
		if err := u.add(msg, ops[i]); err != nil {
			return u, truncated, err
		}
	}
	return u, truncated, nil
}
