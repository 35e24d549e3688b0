package shapes

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// rows is what a client holds, applying messages as the official client
// does: insert sets the row, update merges into it, delete removes it.
type rows map[string]map[string]json.RawMessage

func (r rows) clone() rows {
	out := make(rows, len(r))
	for k, v := range r {
		out[k] = maps.Clone(v)
	}
	return out
}

func (r rows) apply(t *testing.T, body []byte) {
	t.Helper()
	msgs, err := parseMessages(body)
	if err != nil {
		t.Fatalf("bad body %s: %v", body, err)
	}
	for _, m := range msgs {
		switch m.Headers.Operation {
		case "insert":
			r[m.Key] = maps.Clone(m.Value)
		case "update":
			v := maps.Clone(r[m.Key])
			if v == nil {
				v = map[string]json.RawMessage{}
			}
			maps.Copy(v, m.Value)
			r[m.Key] = v
		case "delete":
			delete(r, m.Key)
		default:
			t.Fatalf("operation %q", m.Headers.Operation)
		}
	}
}

func (r rows) equal(o rows) bool {
	return maps.EqualFunc(r, o, func(a, b map[string]json.RawMessage) bool {
		return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return string(x) == string(y) })
	})
}

// testMsg is a stored message as the router writes it, with the headers
// compaction drops.
type testMsg struct {
	Key      string             `json:"key"`
	Value    map[string]*string `json:"value"`
	OldValue map[string]*string `json:"old_value,omitempty"`
	Headers  headers            `json:"headers"`
}

// workload generates a shape log: a snapshot of nKeys rows in chunks, then
// transactions of a few messages each on few keys (inserts, partial
// updates, deletes, key changes).
type workload struct {
	rng   *rand.Rand
	live  map[int]map[string]string // id -> row
	next  int
	lsn   uint64
	chunk uint64
}

type testRecord struct {
	commit, end, op uint64
	body            []byte
}

func (r testRecord) offset() Offset { return Offset{TX: r.commit, Op: r.op} }

func newWorkload(seed uint64) *workload {
	return &workload{rng: rand.New(rand.NewPCG(seed, 1)), live: map[int]map[string]string{}, lsn: 1000}
}

func key(id int) string { return `"public"."items"/"` + strconv.Itoa(id) + `"` }

func encodeMsgs(msgs []testMsg) []byte {
	var b []byte
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		j, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		b = append(b, j...)
	}
	return b
}

func strp(s string) *string { return &s }

func rowValue(row map[string]string) map[string]*string {
	out := map[string]*string{}
	for c, v := range row {
		out[c] = strp(v)
	}
	return out
}

var rel = []string{"public", "items"}

// snapshot returns nKeys insert messages in chunks of per.
func (w *workload) snapshot(nKeys, per int) []testRecord {
	var out []testRecord
	var msgs []testMsg
	for range nKeys {
		id := w.next
		w.next++
		row := map[string]string{"id": strconv.Itoa(id), "a": "a0", "b": "b0", "c": "c0"}
		w.live[id] = row
		msgs = append(msgs, testMsg{Key: key(id), Value: rowValue(row), Headers: headers{Operation: "insert", Relation: rel}})
		if len(msgs) == per {
			out = append(out, testRecord{commit: 0, end: w.chunk + 1, op: w.chunk, body: encodeMsgs(msgs)})
			w.chunk++
			msgs = nil
		}
	}
	if len(msgs) > 0 {
		out = append(out, testRecord{commit: 0, end: w.chunk + 1, op: w.chunk, body: encodeMsgs(msgs)})
		w.chunk++
	}
	return out
}

// tx returns one transaction touching up to 4 rows.
func (w *workload) tx() testRecord {
	w.lsn += 10
	lsn := strconv.FormatUint(w.lsn, 10)
	var msgs []testMsg
	h := func(op string) headers {
		return headers{Operation: op, Relation: rel, TXIDs: []uint64{w.lsn}, LSN: lsn}
	}
	for range 1 + w.rng.IntN(4) {
		ids := make([]int, 0, len(w.live))
		for id := range w.live {
			ids = append(ids, id)
		}
		n := w.rng.IntN(10)
		switch {
		case len(ids) < 3 || n == 0: // insert a new row, or one deleted before
			id := w.rng.IntN(w.next + 1)
			if w.live[id] != nil {
				id = w.next
			}
			w.next = max(w.next, id+1)
			row := map[string]string{"id": strconv.Itoa(id), "a": "a" + lsn, "b": "b" + lsn, "c": "c" + lsn}
			w.live[id] = row
			msgs = append(msgs, testMsg{Key: key(id), Value: rowValue(row), Headers: h("insert")})
		case n == 1: // delete
			id := ids[w.rng.IntN(len(ids))]
			msgs = append(msgs, testMsg{Key: key(id), Value: map[string]*string{"id": strp(strconv.Itoa(id))},
				OldValue: rowValue(w.live[id]), Headers: h("delete")})
			delete(w.live, id)
		case n == 2: // primary key change: delete and insert
			id, to := ids[w.rng.IntN(len(ids))], w.next
			w.next++
			row := w.live[id]
			row["id"] = strconv.Itoa(to)
			delete(w.live, id)
			w.live[to] = row
			del, ins := h("delete"), h("insert")
			del.KeyChangeTo, ins.KeyChangeFrom = key(to), key(id)
			msgs = append(msgs, testMsg{Key: key(id), Value: map[string]*string{"id": strp(strconv.Itoa(id))}, Headers: del},
				testMsg{Key: key(to), Value: rowValue(row), Headers: ins})
		default: // update of some columns
			id := ids[w.rng.IntN(len(ids))]
			v := map[string]*string{"id": strp(strconv.Itoa(id))}
			for _, c := range []string{"a", "b", "c"} {
				if w.rng.IntN(2) == 0 {
					w.live[id][c] = c + lsn
					v[c] = strp(c + lsn)
				}
			}
			if w.rng.IntN(5) == 0 {
				v["b"] = nil
				w.live[id]["b"] = ""
			}
			msgs = append(msgs, testMsg{Key: key(id), Value: v, OldValue: rowValue(w.live[id]), Headers: h("update")})
		}
	}
	return testRecord{commit: w.lsn, end: w.lsn + 1, op: uint64(len(msgs) - 1), body: encodeMsgs(msgs)}
}

const testChunkBytes = 2000

// newTestShape opens a shape log in a temporary folder.
func newTestShape(t *testing.T, segmentSize int64) *Shape {
	t.Helper()
	dir := t.TempDir()
	l, err := storage.OpenWith(dir, 1, storage.Options{SegmentSize: segmentSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// Chunks of about 2000 bytes: responses end inside transactions too.
	s := &Shape{dir: dir, log: l, changed: make(chan struct{}), chunks: newChunker(testChunkBytes)}
	s.meta.Handle, s.meta.ChunkBytes = "test", testChunkBytes
	return s
}

// add appends, syncs and indexes records as the router does.
func (s *Shape) add(t *testing.T, recs ...testRecord) {
	t.Helper()
	var entries []entry
	for _, r := range recs {
		p := binary.LittleEndian.AppendUint64(nil, r.op)
		seq, err := s.log.Append(storage.Record{CommitLSN: r.commit, EndLSN: r.end, Payload: append(p, r.body...)})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{seq: seq, off: r.offset(), size: len(r.body), body: r.body})
	}
	if _, err := s.log.Sync(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	for _, e := range entries {
		ends, err := s.chunks.add(e.off, e.size, func() ([]byte, error) { return e.body, nil })
		if err != nil {
			t.Fatal(err)
		}
		s.ends = append(s.ends, ends...)
		e.body = nil
		s.index = append(s.index, e)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// readOn applies to have every message after from, one chunk per
// response, until the end of the log; it returns the last offset.
func (s *Shape) readOn(t *testing.T, have rows, from Offset) (Offset, error) {
	for {
		p, err := s.Plan(from)
		if err != nil {
			return from, err
		}
		if err := s.Bodies(context.Background(), p, func(body []byte) error { have.apply(t, body); return nil }); err != nil {
			return from, err
		}
		if p.UpToDate {
			return p.Last, nil
		}
		from = p.Last
	}
}

// states returns the rows as of each record of recs (states[i+1] after
// recs[i]; states[0] is empty).
func states(t *testing.T, recs []testRecord) []rows {
	st := []rows{{}}
	for _, r := range recs {
		next := st[len(st)-1].clone()
		next.apply(t, r.body)
		st = append(st, next)
	}
	return st
}

// checkEveryOffset verifies the guarantee of compaction: a client at any
// offset a log before the compaction (before) could have handed out, with
// the rows that log gave it, reads the shape on to the end and holds the
// rows of the whole history.
func checkEveryOffset(t *testing.T, s *Shape, before []testRecord, final rows) {
	t.Helper()
	st := states(t, before)
	for i := range st {
		from := BeforeAll
		if i > 0 {
			from = before[i-1].offset()
		}
		have := st[i].clone()
		if _, err := s.readOn(t, have, from); err != nil {
			t.Fatalf("read on from %v: %v", from, err)
		}
		if !have.equal(final) {
			t.Fatalf("client at %v (record %d of %d) ends with %d rows, want %d:\n got %v\nwant %v", from, i, len(before), len(have), len(final), have, final)
		}
	}
}

// logRecords reads the whole shape log as testRecords.
func (s *Shape) logRecords(t *testing.T) []testRecord {
	t.Helper()
	var out []testRecord
	s.mu.RLock()
	index := slices.Clone(s.index)
	s.mu.RUnlock()
	for _, e := range index {
		recs, err := s.log.Read(e.seq, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("read %d: %v", e.seq, err)
		}
		op, body := splitPayload(recs[0].Payload)
		out = append(out, testRecord{commit: recs[0].CommitLSN, end: recs[0].EndLSN, op: op, body: body})
	}
	return out
}

func logSize(recs []testRecord) (msgs, bytes int) {
	for _, r := range recs {
		m, _ := parseMessages(r.body)
		msgs += len(m)
		bytes += len(r.body)
	}
	return msgs, bytes
}

func TestCompactEveryOffset(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			w := newWorkload(seed)
			s := newTestShape(t, 64<<10)
			all := w.snapshot(20, 7)
			for range 400 {
				all = append(all, w.tx())
			}
			s.add(t, all...)
			final := states(t, all)[len(all)]
			before := s.logRecords(t)
			st, err := s.compact()
			if err != nil {
				t.Fatal(err)
			}
			if !st.committed {
				t.Fatalf("not compacted: %+v", st)
			}
			after := s.logRecords(t)
			m0, b0 := logSize(before)
			m1, b1 := logSize(after)
			t.Logf("compacted %d records, %d messages, %d bytes into %d records, %d messages, %d bytes (%d live rows)",
				len(before), m0, b0, len(after), m1, b1, len(final))
			checkEveryOffset(t, s, before, final)

			// More changes, then a second compaction of a log that was
			// compacted already; then a reopen.
			var more []testRecord
			for range 300 {
				more = append(more, w.tx())
			}
			s.add(t, more...)
			all = append(all, more...)
			final = states(t, all)[len(all)]
			before = s.logRecords(t)
			if st, err = s.compact(); err != nil || !st.committed {
				t.Fatalf("second compaction: %+v, %v", st, err)
			}
			checkEveryOffset(t, s, before, final)
			// The history of a client who read the original log, up to any
			// of its offsets, then the compacted ones.
			checkEveryOffset(t, s, all, final)

			dir := s.dir
			s.log.Close()
			m := Meta{Handle: "test"}
			l, err := storage.Open(dir, 2)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			s2 := &Shape{log: l, meta: m, changed: make(chan struct{})}
			if err := s2.loadIndex(); err != nil {
				t.Fatal(err)
			}
			checkEveryOffset(t, s2, all, final)
		})
	}
}

func TestCompactSnapshotOnly(t *testing.T) {
	w := newWorkload(9)
	s := newTestShape(t, 0)
	all := w.snapshot(50, 10)
	s.add(t, all...)
	st, err := s.compact()
	if err != nil {
		t.Fatal(err)
	}
	if st.committed { // nothing to save: not written
		t.Fatalf("a snapshot without changes was rewritten: %+v", st)
	}
	checkEveryOffset(t, s, all, states(t, all)[len(all)])
}

func TestCompactRecordsRules(t *testing.T) {
	rec := func(commit, op uint64, msgs ...testMsg) storage.Record {
		return storage.Record{CommitLSN: commit, EndLSN: commit + 1, Payload: append(binary.LittleEndian.AppendUint64(nil, op), encodeMsgs(msgs)...)}
	}
	ins := testMsg{Key: "k1", Value: map[string]*string{"id": strp("1"), "a": strp("x"), "b": strp("y")}, Headers: headers{Operation: "insert", Relation: rel}}
	upd := testMsg{Key: "k1", Value: map[string]*string{"id": strp("1"), "b": nil}, OldValue: map[string]*string{"id": strp("1")},
		Headers: headers{Operation: "update", Relation: rel, TXIDs: []uint64{7}, LSN: "20"}}
	del := testMsg{Key: "k2", Value: map[string]*string{"id": strp("2")}, Headers: headers{Operation: "delete", Relation: rel}}
	ins2 := testMsg{Key: "k2", Value: map[string]*string{"id": strp("2")}, Headers: headers{Operation: "insert", Relation: rel}}
	out, err := compactRecords([]storage.Record{rec(0, 0, ins, ins2), rec(10, 0, upd), rec(20, 0, del), rec(30, 0)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]string{}
	for _, r := range out {
		_, body := splitPayload(r.Payload)
		got[r.CommitLSN] = string(body)
	}
	want := map[uint64]string{
		10: `{"key":"k1","value":{"a":"x","b":null,"id":"1"},"headers":{"operation":"insert","relation":["public","items"]}}`,
		20: `{"key":"k2","value":{"id":"2"},"headers":{"operation":"delete","relation":["public","items"]}}`,
		30: ``, // the last record stays
	}
	if !maps.Equal(got, want) {
		t.Fatalf("compacted to\n%v\nwant\n%v", got, want)
	}
}

// TestCompactConcurrentReaders reads the shape from many offsets while it
// is appended to and compacted: no read fails, and every client ends with
// the rows of the whole history.
func TestCompactConcurrentReaders(t *testing.T) {
	w := newWorkload(42)
	s := newTestShape(t, 16<<10)
	all := w.snapshot(30, 8)
	for range 100 {
		all = append(all, w.tx())
	}
	s.add(t, all...)
	history := slices.Clone(all)
	st := states(t, history)
	done := make(chan struct{})
	var mu sync.Mutex // guards all
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			{
				i := rng.IntN(len(history) + 1)
				from := BeforeAll
				if i > 0 {
					from = history[i-1].offset()
				}
				have := st[i].clone()
				finished := false
				for {
					select {
					case <-done:
						finished = true
					default:
					}
					last, err := s.readOn(t, have, from)
					if err != nil {
						errs <- fmt.Errorf("reader %d from %v: %w", g, from, err)
						return
					}
					from = last
					if finished {
						break
					}
				}
				mu.Lock()
				want := states(t, all)[len(all)]
				mu.Unlock()
				if !have.equal(want) {
					errs <- fmt.Errorf("reader %d from record %d: %d rows, want %d", g, i, len(have), len(want))
				}
			}
		}()
	}
	compactions := 0
	for round := range 40 {
		var more []testRecord
		for range 10 {
			more = append(more, w.tx())
		}
		mu.Lock()
		all = append(all, more...)
		mu.Unlock()
		s.add(t, more...)
		if round%3 == 0 {
			c, err := s.compact()
			if err != nil {
				t.Fatal(err)
			}
			if c.committed {
				compactions++
			}
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if compactions == 0 {
		t.Error("no compaction happened")
	}
}
