package shapes

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"testing"
)

var encodeSamples = []string{
	"", "plain", `q"uote`, `back\slash`, "a/b.c", "<html>&amp;", "\x00\x01\b\f\n\r\t\x1f\x7f",
	"héllo wörld", "\u2028\u2029", "\xff\xfe bad utf8 \xc3", "emoji 😀", "//..//", "\xe2\x80",
}

func randomString(r *rand.Rand) string {
	if r.Intn(3) == 0 {
		return encodeSamples[r.Intn(len(encodeSamples))]
	}
	b := make([]byte, r.Intn(12))
	for i := range b {
		switch r.Intn(4) {
		case 0:
			b[i] = byte(r.Intn(256))
		case 1:
			b[i] = "\"\\/.<>&\n\x00"[r.Intn(9)]
		default:
			b[i] = byte('a' + r.Intn(26))
		}
	}
	return string(b)
}

func TestAppendHeadersMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for n := 0; n < 20000; n++ {
		h := &headers{Operation: []string{"insert", "update", "delete"}[r.Intn(3)]}
		if r.Intn(5) > 0 {
			h.Relation = []string{randomString(r), randomString(r)}
		}
		if r.Intn(2) == 0 {
			h.TXIDs = []uint64{r.Uint64() >> r.Intn(64)}
			h.LSN = "12345"
			p := uint64(r.Intn(1000))
			h.OpPosition = &p
		}
		h.Last = r.Intn(2) == 0
		if r.Intn(4) == 0 {
			h.KeyChangeTo = randomString(r)
		}
		if r.Intn(4) == 0 {
			h.KeyChangeFrom = randomString(r)
		}
		want, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendHeaders(nil, h); !bytes.Equal(got, want) {
			t.Fatalf("appendHeaders:\n got %s\nwant %s", got, want)
		}
	}
}

func TestRowEncoderMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for n := 0; n < 5000; n++ {
		d := Definition{Schema: randomString(r), Table: randomString(r)}
		ncol := 1 + r.Intn(5)
		cols := make([]Column, ncol)
		seen := map[string]bool{}
		for i := range cols {
			name := randomString(r)
			for seen[name] {
				name += "x"
			}
			seen[name] = true
			cols[i].Name = name
		}
		var pkPos []int
		for i := 0; i < ncol; i++ {
			if r.Intn(2) == 0 || (i == ncol-1 && len(pkPos) == 0) {
				pkPos = append(pkPos, i)
			}
		}
		enc := newRowEncoder(d, cols, pkPos)
		for k := 0; k < 3; k++ {
			raw := make([][]byte, ncol)
			vals := make([]*string, ncol)
			value := map[string]*string{}
			for i := range raw {
				if r.Intn(5) > 0 {
					s := randomString(r)
					raw[i] = []byte(s)
					vals[i] = &s
				}
				value[cols[i].Name] = vals[i]
			}
			pk := make([]*string, len(pkPos))
			for i, p := range pkPos {
				pk[i] = vals[p]
			}
			want, err := json.Marshal(&message{Key: buildKey(d, pk), Value: value,
				Headers: headers{Operation: "insert", Relation: []string{d.Schema, d.Table}}})
			if err != nil {
				t.Fatal(err)
			}
			if got := enc.appendRow(nil, raw); !bytes.Equal(got, want) {
				t.Fatalf("appendRow:\n got %s\nwant %s", got, want)
			}
		}
	}
}
