package shapes

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/batonhq/baton/worker/internal/txn"
)

// Matching: which shapes each change of a transaction goes to, and whether
// its old and new rows are in each (see membership), from the fanout's
// index of the shapes by table.

// txFanout is what one transaction does to the shapes.
type txFanout struct {
	// touched: the shapes that get a unit of messages, and how to make it.
	touched []touch
	// invalid are shapes whose table was truncated or changed.
	invalid []*Shape
}

type touch struct {
	s   *Shape
	idx []int
	in  membership
}

// transaction decides which shapes tx's changes go to.
func (f *fanout) transaction(ctx context.Context, tx *txn.Transaction) (txFanout, error) {
	var out txFanout
	if len(f.tables) == 0 {
		return out, nil
	}
	byTable := map[string][]int{}
	var order []string
	for i := range tx.Changes {
		c := &tx.Changes[i]
		switch c.Op {
		case "truncate":
			// A truncated table is named "schema.table": a dot in a name
			// makes it ambiguous, and the shapes of each table it may be
			// are invalidated (they refetch; nothing is lost).
			for _, name := range c.Tables {
				for key, ts := range f.tables {
					if strings.Replace(key, "\x00", ".", 1) == name {
						out.invalid = append(out.invalid, ts.all()...)
					}
				}
			}
		case "insert", "update", "delete":
			name := tableName(c.Schema, c.Table)
			if f.tables[name] == nil {
				continue
			}
			if _, ok := byTable[name]; !ok {
				order = append(order, name)
			}
			byTable[name] = append(byTable[name], i)
		}
	}
	for _, name := range order {
		ts, idx := f.tables[name], byTable[name]
		if ts.changed(tx, idx) {
			out.invalid = append(out.invalid, ts.all()...)
			continue
		}
		if newRowUnknown(tx, idx) {
			// A new key whose row lacks a TOASTed value, with no old row
			// to take it from: no shape can tell it.
			out.invalid = append(out.invalid, ts.all()...)
			continue
		}
		if oldRowMissing(tx, idx) {
			// REPLICA IDENTITY FULL was taken away when this was logged
			// (perhaps set again since, so the periodic check may never
			// see it): the shapes that need the old row cannot tell it.
			for _, s := range ts.all() {
				if s.meta.FullIdentity {
					out.invalid = append(out.invalid, s)
				}
			}
		}
		for _, s := range ts.whole {
			out.touched = append(out.touched, touch{s: s, idx: idx, in: everyRow})
		}
		if ts.set == nil || ts.set.Len() == 0 {
			continue
		}
		t, err := ts.match(ctx, tx, idx)
		if err != nil {
			return out, err
		}
		out.touched = append(out.touched, t...)
	}
	return out, nil
}

// changed reports whether a change carries other columns than the shapes
// were made with: the table was altered.
func (ts *tableShapes) changed(tx *txn.Transaction, idx []int) bool {
	if ts.cols == nil {
		return false
	}
	for _, i := range idx {
		if !slices.Equal(tx.Changes[i].Columns, ts.cols) {
			return true
		}
	}
	return false
}

// oldRowMissing reports whether an update or delete among the changes idx
// was logged without the whole old row (the table's replica identity was
// not FULL then).
func oldRowMissing(tx *txn.Transaction, idx []int) bool {
	for _, i := range idx {
		c := &tx.Changes[i]
		if (c.Op == "update" || c.Op == "delete") && !(c.OldFull && len(c.Old) == len(c.Columns)) {
			return true
		}
	}
	return false
}

// newRowUnknown reports whether an update among the changes idx changed
// the row's key (it carries the old key) and left a TOASTed column
// unchanged (not sent) without the whole old row to take it from: the row
// under its new key is not known whole.
func newRowUnknown(tx *txn.Transaction, idx []int) bool {
	for _, i := range idx {
		c := &tx.Changes[i]
		if c.Op == "update" && c.Old != nil && len(c.Unchanged) > 0 && !(c.OldFull && len(c.Old) == len(c.Columns)) {
			return true
		}
	}
	return false
}

// Membership bits of one change for one shape.
const (
	inOld = 1 << iota
	inNew
	oldKnown
)

// match evaluates the where clauses on the old and new rows of the
// changes idx of tx.
func (ts *tableShapes) match(ctx context.Context, tx *txn.Transaction, idx []int) ([]touch, error) {
	cols := tx.Changes[idx[0]].Columns
	var rows [][]*string
	type images struct{ old, new int }
	img := make([]images, len(idx))
	for k, i := range idx {
		c := &tx.Changes[i]
		img[k] = images{-1, -1}
		full := c.OldFull && len(c.Old) == len(c.Columns)
		if full && c.Op != "insert" {
			img[k].old = len(rows)
			rows = append(rows, c.Old)
		}
		if c.Op != "delete" {
			img[k].new = len(rows)
			rows = append(rows, newImage(c, full))
		}
		if c.Op == "delete" && !full {
			// Without the old row a delete is told to every shape: a
			// delete of a row a client does not hold changes nothing.
			img[k].old = -2
		}
	}
	matched, err := ts.set.Match(ctx, cols, rows)
	if err != nil {
		return nil, fmt.Errorf("match where clauses: %w", err)
	}
	flags := map[int][]uint8{}
	set := func(id, k int, bit uint8) {
		fl := flags[id]
		if fl == nil {
			fl = make([]uint8, len(idx))
			flags[id] = fl
		}
		fl[k] |= bit
	}
	for k := range idx {
		c := &tx.Changes[idx[k]]
		if img[k].old >= 0 {
			for _, id := range matched[img[k].old] {
				set(id, k, inOld)
			}
		}
		if img[k].new >= 0 {
			for _, id := range matched[img[k].new] {
				set(id, k, inNew)
			}
		}
		if img[k].old == -2 || (c.Op == "update" && img[k].old == -1) {
			for id := range ts.byID {
				set(id, k, 0)
			}
		}
	}
	out := make([]touch, 0, len(flags))
	for id, fl := range flags {
		s := ts.byID[id]
		if s == nil {
			continue
		}
		// The shape's own changes: those with a row in it, and those whose
		// old row is unknown.
		var sub []int
		var subFl []uint8
		for k := range idx {
			c := &tx.Changes[idx[k]]
			if c.Op == "insert" || img[k].old >= 0 {
				fl[k] |= oldKnown
			}
			if img[k].old == -2 {
				fl[k] |= inOld | oldKnown
			}
			if fl[k]&(inOld|inNew) != 0 || fl[k]&oldKnown == 0 {
				sub = append(sub, idx[k])
				subFl = append(subFl, fl[k])
			}
		}
		if len(sub) == 0 {
			continue
		}
		out = append(out, touch{s: s, idx: sub, in: func(j int) (bool, bool, bool) {
			return subFl[j]&inOld != 0, subFl[j]&inNew != 0, subFl[j]&oldKnown != 0
		}})
	}
	return out, nil
}

// newImage is the new row of a change, with unchanged TOASTed values taken
// from the old row when it is whole.
func newImage(c *txn.Change, fullOld bool) []*string {
	if len(c.Unchanged) == 0 || !fullOld {
		return c.New
	}
	row := slices.Clone(c.New)
	for j, col := range c.Columns {
		if j < len(row) && slices.Contains(c.Unchanged, col) {
			row[j] = c.Old[j]
		}
	}
	return row
}
