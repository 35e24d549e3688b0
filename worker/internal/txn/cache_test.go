package txn

import (
	"math/rand"
	"reflect"
	"testing"
)

// TestCacheRoundTrips: what the cache accepts decodes back to itself.
func TestCacheRoundTrips(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	str := func() string {
		b := make([]byte, r.Intn(6))
		for i := range b {
			if r.Intn(8) == 0 {
				b[i] = byte(r.Intn(256))
			} else {
				b[i] = "ab<&\"\\\n\x00é"[r.Intn(10)]
			}
		}
		return string(b)
	}
	strs := func() []string {
		switch r.Intn(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+r.Intn(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	vals := func() []*string {
		switch r.Intn(4) {
		case 0:
			return nil
		case 1:
			return []*string{}
		}
		out := make([]*string, 1+r.Intn(3))
		for i := range out {
			if r.Intn(3) > 0 {
				s := str()
				out[i] = &s
			}
		}
		return out
	}
	cached := 0
	for n := 0; n < 20000; n++ {
		tx := &Transaction{XID: r.Uint32(), CommitLSN: r.Uint64(), EndLSN: r.Uint64(), Changes: []Change{}}
		for i := r.Intn(3); i > 0; i-- {
			c := Change{Op: []string{"insert", "update", "delete", "truncate"}[r.Intn(4)], Schema: str(), Table: str(),
				Columns: strs(), Key: strs(), New: vals(), Old: vals(), Unchanged: strs(), Tables: strs(), Cascade: r.Intn(2) == 0}
			tx.Changes = append(tx.Changes, c)
		}
		if !roundTrips(tx) {
			continue
		}
		cached++
		b, err := tx.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.XID != tx.XID || got.CommitLSN != tx.CommitLSN || !reflect.DeepEqual(got.Changes, tx.Changes) {
			t.Fatalf("round trip differs:\n got %#v\nwant %#v", got.Changes, tx.Changes)
		}
	}
	if cached < 100 {
		t.Fatalf("only %d transactions cacheable", cached)
	}
}

func TestCacheTake(t *testing.T) {
	c := NewCache()
	a, b, d := &Transaction{Changes: []Change{}}, &Transaction{Changes: []Change{}}, &Transaction{Changes: []Change{}}
	c.Put(1, a, 10)
	c.Put(2, b, 10)
	c.Put(4, d, 10)
	if c.Take(2) != b || c.Take(1) != nil || c.Take(3) != nil || c.Take(4) != d || c.Take(4) != nil {
		t.Fatal("Take")
	}
	var nilCache *Cache
	nilCache.Put(1, a, 10)
	if nilCache.Take(1) != nil {
		t.Fatal("nil cache")
	}
}

// TestCacheBounds: past any of its bounds (transactions, changes, bytes)
// the cache takes no more, and taking makes room again.
func TestCacheBounds(t *testing.T) {
	tx := func(changes int) *Transaction { return &Transaction{Changes: make([]Change, changes)} }
	for _, tt := range []struct {
		name    string
		changes int
		size    int
		fits    int // how many fit
	}{
		{"transactions", 0, 1, cacheMaxTx},
		{"changes", 1000, 1, cacheMaxChanges / 1000},
		{"bytes", 0, 1 << 20, cacheMaxBytes / (1 << 20)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCache()
			for seq := uint64(1); seq <= uint64(tt.fits)+1; seq++ {
				c.Put(seq, tx(tt.changes), tt.size)
			}
			if c.Take(uint64(tt.fits)) == nil {
				t.Fatalf("transaction %d not cached; want %d to fit", tt.fits, tt.fits)
			}
			if c.Take(uint64(tt.fits)+1) != nil {
				t.Fatalf("transaction %d cached past the bound of %d", tt.fits+1, tt.fits)
			}
			// Everything was taken: the same number fits again.
			next := uint64(tt.fits) + 2
			for i := 0; i < tt.fits; i++ {
				c.Put(next+uint64(i), tx(tt.changes), tt.size)
			}
			if c.Take(next+uint64(tt.fits)-1) == nil {
				t.Fatal("the cache did not make room again after Take")
			}
		})
	}
}
