package txn

import (
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
)

// TestAppendJSONStringMatchesJSON compares AppendJSONString with
// json.Marshal on random strings: long ASCII runs (the word-at-a-time
// path), every byte that must be escaped at every position of a word,
// invalid UTF-8, U+2028/U+2029 and multi-byte runes.
func TestAppendJSONStringMatchesJSON(t *testing.T) {
	seed := rand.Int63()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	special := []string{"\"", "\\", "<", ">", "&", "\x00", "\x1f", "\n", "\t", "\r", "\b", "\f", "\x7f", "\x80", "\xff", "é", "\u2028", "\u2029", "😀", "\xe2\x80", "/", " ", "~"}
	for n := 0; n < 50000; n++ {
		var b strings.Builder
		for k := r.Intn(6); k >= 0; k-- {
			run := strings.Repeat("abcdefghij", 3)
			b.WriteString(run[:r.Intn(len(run)+1)])
			if r.Intn(3) > 0 {
				b.WriteString(special[r.Intn(len(special))])
			}
		}
		s := b.String()
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSONString([]byte("x"), s); string(got[1:]) != string(want) {
			t.Fatalf("string %q: got %s, want %s", s, got[1:], want)
		}
		if got := AppendJSONString(nil, []byte(s)); string(got) != string(want) {
			t.Fatalf("bytes %q: got %s, want %s", s, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 17; pos++ {
			s := strings.Repeat("a", pos) + string([]byte{byte(c)}) + strings.Repeat("b", 16-pos)
			want, _ := json.Marshal(s)
			if got := AppendJSONString(nil, []byte(s)); string(got) != string(want) {
				t.Fatalf("byte %#x at %d: got %s, want %s", c, pos, got, want)
			}
		}
	}
}

func BenchmarkAppendJSONString(b *testing.B) {
	vals := [][]byte{
		[]byte(`"public"."sync_items"/"123456"`),
		[]byte("123456"),
		[]byte("c4ca4238a0b923820dcc509a6f75849babcdef"),
		[]byte("2026-12-07 17:42:51.123456+00"),
	}
	var n int64
	for _, v := range vals {
		n += int64(len(v))
	}
	b.SetBytes(n)
	dst := make([]byte, 0, 256)
	for b.Loop() {
		dst = dst[:0]
		for _, v := range vals {
			dst = AppendJSONString(dst, v)
		}
	}
}
