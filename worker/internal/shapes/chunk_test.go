package shapes

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// response is what one planned response serves.
type response struct {
	last     Offset
	upToDate bool
	body     []byte
}

func (s *Shape) respond(t *testing.T, from Offset) response {
	t.Helper()
	p, err := s.Plan(from)
	if err != nil {
		t.Fatalf("Plan(%v): %v", from, err)
	}
	var b []byte
	if err := s.Bodies(context.Background(), p, func(body []byte) error {
		if len(body) > 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, body...)
		}
		return nil
	}); err != nil {
		t.Fatalf("Bodies from %v: %v", from, err)
	}
	return response{last: p.Last, upToDate: p.UpToDate, body: b}
}

// readChunks reads the shape from offset -1 to its end, one response per
// chunk, as a client does.
func (s *Shape) readChunks(t *testing.T) (froms []Offset, out []response) {
	t.Helper()
	from := BeforeAll
	for range 10000 {
		r := s.respond(t, from)
		froms, out = append(froms, from), append(out, r)
		if r.upToDate {
			return froms, out
		}
		from = r.last
	}
	t.Fatal("no end")
	return nil, nil
}

// TestChunks: responses end at chunk boundaries found from the log alone,
// a transaction larger than the threshold is cut inside (never after its
// first message), every message is served once, in order, a response
// that ends at a boundary is the same after later writes, and the
// boundaries found when the log is read again (a restart, another worker)
// are the ones found while it was written.
func TestChunks(t *testing.T) {
	s := newTestShape(t, 1<<20)
	w := newWorkload(7)
	recs := w.snapshot(40, 7)
	for range 60 {
		recs = append(recs, w.tx())
	}
	// One transaction of 80 inserts, many times the threshold.
	big := w.tx()
	var msgs [][]byte
	for range 80 {
		msgs = append(msgs, w.tx().body)
	}
	big.body, big.op = bytes.Join(msgs, []byte{','}), uint64(len(messageEnds(bytes.Join(msgs, []byte{','})))-1)
	recs = append(recs, big)
	for range 10 {
		recs = append(recs, w.tx())
	}
	s.add(t, recs...)

	var all [][]byte
	for _, r := range recs {
		if len(r.body) > 0 {
			all = append(all, r.body)
		}
	}
	froms, got := s.readChunks(t)
	var served [][]byte
	cuts := 0
	for i, r := range got {
		if len(r.body) > 0 {
			served = append(served, r.body)
		}
		if r.last.TX == big.commit && r.last.Op < big.op {
			cuts++
			if r.last.Op == 0 {
				t.Errorf("response %d ends after the first message of a transaction", i)
			}
		}
		if !r.upToDate && len(r.body) > 2*testChunkBytes {
			t.Errorf("response %d from %v has %d bytes, threshold %d", i, froms[i], len(r.body), testChunkBytes)
		}
	}
	if want := bytes.Join(all, []byte{','}); !bytes.Equal(bytes.Join(served, []byte{','}), want) {
		t.Fatalf("the responses serve\n%s\nwant\n%s", bytes.Join(served, []byte{','}), want)
	}
	if cuts < len(big.body)/(2*testChunkBytes) {
		t.Errorf("the big transaction (%d bytes) ends %d responses, want about %d", len(big.body), cuts, len(big.body)/testChunkBytes)
	}

	// Read again, as a worker opening the log does.
	s.mu.RLock()
	ends, _, err := s.chunkIndex(s.index, nil)
	have := slices.Clone(s.ends)
	s.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ends, have) {
		t.Fatalf("boundaries found reading the log again:\n%v\nwhile writing it:\n%v", ends, have)
	}

	// Later writes change no response that ended at a boundary.
	more := []testRecord{w.tx(), w.tx(), w.tx()}
	s.add(t, more...)
	for i, from := range froms {
		r := s.respond(t, from)
		if got[i].upToDate {
			if !bytes.HasPrefix(r.body, got[i].body) {
				t.Errorf("the open chunk from %v lost messages after writes", from)
			}
			continue
		}
		if r.last != got[i].last || !bytes.Equal(r.body, got[i].body) || r.upToDate {
			t.Errorf("response from %v changed after writes: ends %v (was %v)", from, r.last, got[i].last)
		}
	}
}

// TestOffsetAfterParts: a client's offset inside a transaction (a chunk
// boundary) orders the parts of that transaction; "<lsn>_0" is the whole
// transaction.
func TestOffsetAfterParts(t *testing.T) {
	cases := []struct {
		name     string
		rec, cli Offset
		want     bool
	}{
		{"later part of the same transaction", Offset{TX: 50, Op: 9}, Offset{TX: 50, Op: 4}, true},
		{"the part the client ends at", Offset{TX: 50, Op: 4}, Offset{TX: 50, Op: 4}, false},
		{"lsn_0 is the whole transaction", Offset{TX: 50, Op: 9}, Offset{TX: 50}, false},
		{"later transaction", Offset{TX: 60}, Offset{TX: 50, Op: 4}, true},
		{"earlier transaction", Offset{TX: 40, Op: 9}, Offset{TX: 50, Op: 4}, false},
		{"snapshot after a change", Offset{Op: 3}, Offset{TX: 50}, false},
		{"every record after -1", Offset{Op: 0}, BeforeAll, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rec.after(c.cli); got != c.want {
				t.Fatalf("%v.after(%v) = %v, want %v", c.rec, c.cli, got, c.want)
			}
		})
	}
}
