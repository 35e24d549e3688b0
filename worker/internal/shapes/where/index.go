package where

import (
	"math"
	"slices"
)

// intervals finds the entries whose integer range [lo, hi] holds a value:
// an implicit interval tree over the entries sorted by lo (each node of the
// balanced tree over the array keeps the greatest hi below it), so a lookup
// costs O(log n + matches). Entries added or removed since the last build
// are kept aside (added ones scanned, removed ones skipped) until scanning
// them has cost about as much as a rebuild, or there are many of them.
type intervals struct {
	lo, hi, maxHi []int64
	ent           []*entry
	pending       []*entry
	gone          map[*entry]bool
	n             int // live entries
	debt          int // entries scanned aside since the last build
}

func (x *intervals) add(e *entry) {
	x.pending = append(x.pending, e)
	x.n++
	x.maybeBuild()
}

func (x *intervals) remove(e *entry) {
	x.n--
	if i := slices.Index(x.pending, e); i >= 0 {
		x.pending = slices.Delete(x.pending, i, i+1)
		return
	}
	if x.gone == nil {
		x.gone = map[*entry]bool{}
	}
	x.gone[e] = true
	x.maybeBuild()
}

func (x *intervals) maybeBuild() {
	if len(x.pending)+len(x.gone) > 32+len(x.ent)/8 {
		x.build()
	}
}

func (x *intervals) build() {
	all := make([]*entry, 0, x.n)
	for _, e := range x.ent {
		if !x.gone[e] {
			all = append(all, e)
		}
	}
	all = append(all, x.pending...)
	slices.SortFunc(all, func(a, b *entry) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	x.ent, x.pending, x.gone, x.debt = all, nil, nil, 0
	x.lo = make([]int64, len(all))
	x.hi = make([]int64, len(all))
	x.maxHi = make([]int64, len(all))
	for i, e := range all {
		x.lo[i], x.hi[i] = e.lo, e.hi
	}
	x.fill(0, len(all))
}

// fill computes maxHi for the subtree rooted at the middle of [l, r).
func (x *intervals) fill(l, r int) int64 {
	if l >= r {
		return math.MinInt64
	}
	m := int(uint(l+r) >> 1)
	x.maxHi[m] = max(x.hi[m], x.fill(l, m), x.fill(m+1, r))
	return x.maxHi[m]
}

// find appends to out the entries whose range holds v.
func (x *intervals) find(v int64, out []*entry) []*entry {
	if k := len(x.pending) + len(x.gone); k > 0 {
		if x.debt += k; x.debt > x.n+64 {
			x.build()
		}
	}
	out = x.walk(0, len(x.ent), v, out)
	for _, e := range x.pending {
		if e.lo <= v && v <= e.hi {
			out = append(out, e)
		}
	}
	return out
}

func (x *intervals) walk(l, r int, v int64, out []*entry) []*entry {
	for l < r {
		m := int(uint(l+r) >> 1)
		if x.maxHi[m] < v {
			return out
		}
		out = x.walk(l, m, v, out)
		if x.lo[m] > v {
			return out
		}
		if x.hi[m] >= v && (x.gone == nil || !x.gone[x.ent[m]]) {
			out = append(out, x.ent[m])
		}
		l = m + 1
	}
	return out
}
