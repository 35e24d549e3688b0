package txn

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"testing"
	"time"
)

func TestEncodeMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	str := func() string {
		b := make([]byte, r.Intn(8))
		for i := range b {
			if r.Intn(6) == 0 {
				b[i] = byte(r.Intn(256))
			} else {
				b[i] = "ab<>&\"\\\n\x00\x1f\b\f\t\r/é"[r.Intn(17)]
			}
		}
		if r.Intn(10) == 0 {
			return "\u2028x\u2029😀"
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
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+1800), time.FixedZone("y", -7*3600), time.Local}
	for n := 0; n < 20000; n++ {
		tx := &Transaction{XID: r.Uint32(), CommitLSN: r.Uint64() >> r.Intn(64), EndLSN: r.Uint64(),
			CommitTime: time.Unix(r.Int63n(4e9), r.Int63n(1e9)).In(zones[r.Intn(len(zones))])}
		if r.Intn(3) == 0 {
			tx.Origin = str()
		}
		if r.Intn(5) > 0 {
			tx.Changes = []Change{}
		}
		for i := r.Intn(4); i > 0; i-- {
			c := Change{Op: str(), Schema: str(), Table: str(),
				Columns: strs(), Key: strs(), New: vals(), Old: vals(), Unchanged: strs(), Tables: strs(), Cascade: r.Intn(2) == 0,
				Prefix: str()}
			if r.Intn(2) == 0 {
				c.Content = []byte(str())
			}
			tx.Changes = append(tx.Changes, c)
		}
		want, err := json.Marshal(tx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tx.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Encode:\n got %s\nwant %s", got, want)
		}
	}
	bad := &Transaction{CommitTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := bad.Encode(); err == nil {
		t.Fatal("Encode of a year past 9999: no error (json.Marshal fails)")
	}
}
