package shapes

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"strconv"
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

// message is one change message of Electric's HTTP API, as encoding/json
// writes it: the reference the hand-written encoders are checked against.
type message struct {
	Key      string             `json:"key"`
	Value    map[string]*string `json:"value"`
	OldValue map[string]*string `json:"old_value,omitempty"`
	Headers  headers            `json:"headers"`
}

// reencode parses the messages of body and marshals each again with
// encoding/json: the hand-written encoding must give the same bytes.
func reencode(t *testing.T, body []byte) []byte {
	t.Helper()
	var msgs []json.RawMessage
	if err := json.Unmarshal(append(append([]byte{'['}, body...), ']'), &msgs); err != nil {
		t.Fatalf("messages are not JSON: %v\n%s", err, body)
	}
	var out []byte
	for i, raw := range msgs {
		var m message
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	return out
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
		tx := &txn.Transaction{XID: r.Uint32(), CommitLSN: r.Uint64()}
		for i := r.Intn(5); i > 0; i-- {
			c := txn.Change{Op: []string{"insert", "update", "delete", "truncate", "message"}[r.Intn(5)], Schema: "public", Table: "t"}
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
			c.OldFull = r.Intn(2) == 0
			for _, col := range c.Columns {
				if r.Intn(6) == 0 {
					c.Unchanged = append(c.Unchanged, col)
				}
			}
			tx.Changes = append(tx.Changes, c)
		}
		if r.Intn(3) == 0 {
			m.Definition.Replica = "full"
		}
		var idx []int
		for i, c := range tx.Changes {
			if c.Table == "t" && c.Op != "truncate" && c.Op != "message" {
				idx = append(idx, i)
			}
		}
		in := everyRow
		if r.Intn(2) == 0 {
			bits := make([]int, len(idx))
			for k := range bits {
				bits[k] = r.Intn(8)
			}
			in = func(k int) (bool, bool, bool) { return bits[k]&1 != 0, bits[k]&2 != 0, bits[k]&4 != 0 }
		}
		got := m.txMessages(tx, idx, in)
		// Invalid UTF-8 is written as \ufffd, which decodes to the
		// character itself; json.Marshal writes that one unescaped.
		norm := bytes.ReplaceAll(got.body, []byte(`\ufffd`), []byte("\ufffd"))
		if want := reencode(t, got.body); !bytes.Equal(norm, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", n, got.body, want)
		}
	}
}

func TestBuildKey(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		d    Definition
		pk   []*string
		want string
	}{
		{Definition{Schema: "hello", Table: "world"}, []*string{s("b"), s("d")}, `"hello"."world"/"b"/"d"`},
		{Definition{Schema: "hello", Table: "world"}, []*string{s("test/test"), s("test")}, `"hello"."world"/"test//test"/"test"`},
		{Definition{Schema: "hello", Table: "world"}, []*string{s("1"), nil, s("")}, `"hello"."world"/"1"/_/""`},
		{Definition{Schema: `a"."b`, Table: "c"}, []*string{s("")}, `"a".."b"."c"/""`},
		{Definition{Schema: "a", Table: `b"/"`}, []*string{s("")}, `"a"."b"//""/""`},
		{Definition{Schema: "x/./y", Table: "t.."}, []*string{s("a.b/c//"), nil}, `"x//..//y"."t...."/"a.b//c////"/_`},
	} {
		if got := buildKey(c.d, c.pk); got != c.want {
			t.Errorf("buildKey(%v) = %s; want %s", c.d, got, c.want)
		}
	}
}

// TestTxMessagesNoPKUnchangedToastKey: a table without a primary key keys
// its rows by every column. An update of one column leaves a TOASTed value
// of another unchanged: pgoutput sends it as 'u' (nil in New, listed in
// Unchanged), and the whole old row (REPLICA IDENTITY FULL) carries it.
// The new key is built from the row's real values, not with the unchanged
// column as NULL (_): else the client would hold the row under a key no
// later change names, and the next update would leave it behind as a
// duplicate.
func TestTxMessagesNoPKUnchangedToastKey(t *testing.T) {
	s := func(v string) *string { return &v }
	m := &Meta{Definition: Definition{Schema: "public", Table: "t"}, PK: []string{"body", "n"}}
	tx := &txn.Transaction{XID: 7, CommitLSN: 100, Changes: []txn.Change{{
		Op: "update", Schema: "public", Table: "t", Columns: []string{"body", "n"},
		Old: []*string{s("big"), s("1")}, OldFull: true,
		New: []*string{nil, s("2")}, Unchanged: []string{"body"},
	}}}
	u := m.txMessages(tx, []int{0}, everyRow)
	var got []struct {
		Key     string            `json:"key"`
		Value   map[string]string `json:"value"`
		Headers struct {
			Operation string `json:"operation"`
		} `json:"headers"`
	}
	if err := json.Unmarshal(append(append([]byte{'['}, u.body...), ']'), &got); err != nil {
		t.Fatal(err)
	}
	wantKey := `"public"."t"/"big"/"2"`
	for _, msg := range got {
		if msg.Headers.Operation == "insert" && msg.Key != wantKey {
			t.Fatalf("insert under key %s; want %s (messages %s)", msg.Key, wantKey, u.body)
		}
	}
	if len(got) != 2 {
		t.Fatalf("got %d messages %s; want a delete and an insert", len(got), u.body)
	}
}

// BenchmarkTxMessagesInserts encodes a transaction of 100 inserts of a row
// like the replication bench's for a whole-table shape.
func BenchmarkTxMessagesInserts(b *testing.B) {
	s := func(v string) *string { return &v }
	m := &Meta{Definition: Definition{Schema: "public", Table: "bench_items"}, PK: []string{"id"}}
	cols := []string{"id", "note", "n", "at"}
	tx := &txn.Transaction{XID: 7, CommitLSN: 123456789}
	var idx []int
	for i := range 100 {
		tx.Changes = append(tx.Changes, txn.Change{Op: "insert", Schema: "public", Table: "bench_items", Columns: cols, Key: cols[:1],
			New: []*string{s(strconv.Itoa(1000000 + i)), s("note note note note note note note not"), s("42"), s("2026-12-07 20:04:05.123456+00")}})
		idx = append(idx, i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if u := m.txMessages(tx, idx, everyRow); u.count != 100 {
			b.Fatalf("%d messages", u.count)
		}
	}
}
