package shapes

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"strconv"
	"testing"

	"github.com/batonhq/baton/worker/internal/replication"
)

// txMessagesRef is txMessages as it was with json.Marshal of a map.
func (m *Meta) txMessagesRef(tx *replication.Transaction) (u unit, truncated bool, err error) {
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
		b, err := json.Marshal(msg)
		if err != nil {
			return u, truncated, err
		}
		if u.count > 0 {
			u.body = append(u.body, ',')
		}
		u.body = append(u.body, b...)
		u.count++
		u.lastOp = ops[i]
	}
	return u, truncated, nil
}

func TestTxMessagesMatchesReference(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	names := []string{"id", "a", "b", "<c>", "d/e", "k2"}
	val := func() *string {
		if r.Intn(4) == 0 {
			return nil
		}
		s := []string{"", "x", "1", "2", "a/b", "q\"", "\xff"}[r.Intn(7)]
		return &s
	}
	vals := func(n int) []*string {
		if r.Intn(6) == 0 {
			return nil
		}
		out := make([]*string, max(0, n-r.Intn(2)))
		for i := range out {
			out[i] = val()
		}
		return out
	}
	for n := 0; n < 30000; n++ {
		m := &Meta{Definition: Definition{Schema: "public", Table: "t"}, PK: []string{"id"}}
		if r.Intn(3) == 0 {
			m.PK = []string{"id", "k2"}
		}
		tx := &replication.Transaction{XID: r.Uint32(), CommitLSN: r.Uint64()}
		for i := r.Intn(5); i > 0; i-- {
			c := replication.Change{Op: []string{"insert", "update", "delete", "truncate", "message"}[r.Intn(5)], Schema: "public", Table: "t"}
			if r.Intn(6) == 0 {
				c.Table = "other"
			}
			if c.Op == "truncate" {
				c.Tables = []string{[]string{"public.t", "public.other"}[r.Intn(2)]}
			}
			for _, nm := range names {
				if r.Intn(4) > 0 {
					c.Columns = append(c.Columns, nm)
				}
			}
			if r.Intn(10) == 0 && len(c.Columns) > 0 {
				c.Columns = append(c.Columns, c.Columns[0])
			}
			c.New, c.Old = vals(len(c.Columns)), vals(len(c.Columns))
			if r.Intn(2) == 0 && len(c.New) > 0 {
				c.Old = append([]*string{}, c.New...)
				if r.Intn(2) == 0 {
					c.Old[r.Intn(len(c.Old))] = val()
				}
			}
			for _, col := range c.Columns {
				if r.Intn(6) == 0 {
					c.Unchanged = append(c.Unchanged, col)
				}
			}
			tx.Changes = append(tx.Changes, c)
		}
		want, wtrunc, err := m.txMessagesRef(tx)
		if err != nil {
			t.Fatal(err)
		}
		got, gtrunc, err := m.txMessages(tx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.body, want.body) || got.count != want.count || got.lastOp != want.lastOp || gtrunc != wtrunc {
			t.Fatalf("case %d:\n got %s (%d, %d, %v)\nwant %s (%d, %d, %v)", n, got.body, got.count, got.lastOp, gtrunc,
				want.body, want.count, want.lastOp, wtrunc)
		}
	}
}
