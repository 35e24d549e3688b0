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
	c.Put(1, a)
	c.Put(2, b)
	c.Put(4, d)
	if c.Take(2) != b || c.Take(1) != nil || c.Take(3) != nil || c.Take(4) != d || c.Take(4) != nil {
		t.Fatal("Take")
	}
	var nilCache *Cache
	nilCache.Put(1, a)
	if nilCache.Take(1) != nil {
		t.Fatal("nil cache")
	}
}
