package storage_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestReadHeadsMatchesRead: in a seeded log of records from empty to
// 200 KB (runs of small ones, which ReadHeads reads together, and large
// ones, whose heads it reads alone) over several segments, ReadHeads from
// random places returns what Read returns, payload excepted, with the
// payload's length and first bytes; before and after the log is taken
// over (its segments inherited, indexed from their headers only), and
// after a compaction replaced segments.
func TestReadHeadsMatchesRead(t *testing.T) {
	seed := rand.Int64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	dir := t.TempDir()
	opts := storage.Options{SegmentSize: 1 << 20}
	l := openLog(t, dir, 1, opts)
	n := 0
	for batch := range 20 {
		for range 1 + r.IntN(40) {
			size := r.IntN(200)
			switch r.IntN(10) {
			case 0:
				size = 64<<10 + r.IntN(200<<10)
			case 1:
				size = r.IntN(8)
			}
			p := make([]byte, size)
			for j := range p {
				p[j] = byte(r.Uint32())
			}
			n++
			if _, err := l.Append(storage.Record{CommitLSN: uint64(2 * n), EndLSN: uint64(2*n + 1), Payload: p}); err != nil {
				t.Fatal(err)
			}
		}
		if batch%2 == 0 {
			if _, err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		} else if err := l.Write(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(l *storage.Log, what string) {
		t.Helper()
		all := readFrom(t, l, 1)
		if len(all) == 0 {
			t.Fatalf("%s: empty log", what)
		}
		first := all[0].Seq
		for range 50 {
			from := first + uint64(r.IntN(len(all)+2))
			max := 1 + r.IntN(len(all)+5)
			heads, err := l.ReadHeads(from, max)
			if err != nil {
				t.Fatalf("%s: ReadHeads(%d, %d): %v", what, from, max, err)
			}
			i := int(from - first)
			want := all[min(i, len(all)):min(i+max, len(all))]
			if len(heads) != len(want) {
				t.Fatalf("%s: ReadHeads(%d, %d): %d heads, want %d", what, from, max, len(heads), len(want))
			}
			for k, h := range heads {
				w := want[k]
				p := w.Payload[:min(8, len(w.Payload))]
				if h.Seq != w.Seq || h.CommitLSN != w.CommitLSN || h.EndLSN != w.EndLSN || h.Epoch != w.Epoch ||
					h.Len != len(w.Payload) || !bytes.Equal(h.Prefix[:len(p)], p) || !bytes.Equal(h.Prefix[len(p):], make([]byte, 8-len(p))) {
					t.Fatalf("%s: ReadHeads(%d, %d)[%d] = %+v; the record is seq %d commit %d end %d epoch %d, %d bytes starting %x",
						what, from, max, k, h, w.Seq, w.CommitLSN, w.EndLSN, w.Epoch, len(w.Payload), p)
				}
			}
		}
	}
	check(l, "writer")
	l.Close()
	l = openLog(t, dir, 2, opts)
	check(l, "after a takeover")
	l.Close()
	l = openLog(t, dir, 3, opts)
	check(l, "after a second takeover")
	// Drop every other record of the first half in a compaction.
	all := readFrom(t, l, 1)
	upTo := all[len(all)/2].Seq
	var keep []storage.Record
	for _, rec := range all[:len(all)/2+1] {
		if rec.Seq%2 == 0 {
			keep = append(keep, rec)
		}
	}
	c, err := l.PrepareCompaction(upTo, keep)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Commit(); err != nil {
		t.Fatal(err)
	}
	check(l, "after a compaction")
}

// readFrom reads every durable record from seq from on (or from the first
// one, if later).
func readFrom(t *testing.T, l *storage.Log, from uint64) []storage.Record {
	t.Helper()
	var all []storage.Record
	for {
		recs, err := l.Read(from, 1000)
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		from = recs[len(recs)-1].Seq + 1
	}
}
