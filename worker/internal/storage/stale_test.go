package storage

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests stop a writer inside a write (at a hookPoint), open the log
// for a newer epoch meanwhile, and then let the old writer go on, as a
// process frozen by SIGSTOP and thawed later would (stale_process_test.go
// does it with a real process).

// staleOp is a write started on a writer that will be stopped at a point.
type staleOp struct {
	name   string
	points []hookPoint // where it can be stopped
	// prepare readies the operation on l and returns it, and what the log
	// is once it has taken effect (what a newer Open must see if the
	// operation wrote its change before that Open).
	prepare func(t *testing.T, l *Log, m *model) (run func() error, after *model)
}

// model is what a log must hold: its records in order, and its recorded
// acknowledgement.
type model struct {
	recs  []Record
	acked uint64
	upTo  uint64 // bound of the last compaction
	meta  []byte
}

func (m *model) clone() *model {
	c := *m
	c.recs = append([]Record(nil), m.recs...)
	return &c
}

func (m *model) lastEnd() uint64 {
	if len(m.recs) == 0 {
		return 0
	}
	return m.recs[len(m.recs)-1].EndLSN
}

func (m *model) lastSeq(fallback uint64) uint64 {
	if len(m.recs) == 0 {
		return fallback
	}
	return m.recs[len(m.recs)-1].Seq
}

// testPayload is the payload of the record with end LSN end: up to 1.2 KiB,
// so that 4 KiB segments roll often.
func testPayload(end uint64, compacted bool) []byte {
	s := strconv.FormatUint(end, 10) + strings.Repeat(".", int(end*7919%1200))
	if compacted {
		s = "c" + s
	}
	return []byte(s)
}

// appendRecs appends n records to l after end and returns them as the
// model will see them.
func appendRecs(t *testing.T, l *Log, n int, end *uint64) []Record {
	t.Helper()
	var out []Record
	for range n {
		*end += 1 + uint64(len(out))%3
		seq, err := l.Append(Record{CommitLSN: *end - 1, EndLSN: *end, Payload: testPayload(*end, false)})
		if err != nil || seq == 0 {
			t.Fatalf("Append(end %d) = %d, %v", *end, seq, err)
		}
		out = append(out, Record{Seq: seq, CommitLSN: *end - 1, EndLSN: *end, Payload: testPayload(*end, false)})
	}
	return out
}

// checkModel verifies that l holds exactly m.
func checkModel(t *testing.T, what string, l *Log, m *model) {
	t.Helper()
	var got []Record
	for from := uint64(1); ; {
		recs, err := l.Read(from, 1000)
		if err != nil {
			t.Fatalf("%s: Read(%d): %v", what, from, err)
		}
		if len(recs) == 0 {
			break
		}
		got = append(got, recs...)
		from = recs[len(recs)-1].Seq + 1
	}
	compareRecords(t, what, got, m.recs)
	if l.Acked() != m.acked {
		t.Fatalf("%s: Acked = %d, want %d", what, l.Acked(), m.acked)
	}
	if string(l.Meta()) != string(m.meta) {
		t.Fatalf("%s: Meta = %q, want %q", what, l.Meta(), m.meta)
	}
	var inspected []Record
	if err := Inspect(l.root, func(r Record) error {
		inspected = append(inspected, r)
		return nil
	}); err != nil {
		t.Fatalf("%s: Inspect: %v", what, err)
	}
	compareRecords(t, what+" (Inspect)", inspected, m.recs)
}

func compareRecords(t *testing.T, what string, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d (got %s, want %s)", what, len(got), len(want), summary(got), summary(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.EndLSN != w.EndLSN || string(g.Payload) != string(w.Payload) {
			t.Fatalf("%s: record %d is seq %d end %d (%d bytes), want seq %d end %d (%d bytes)",
				what, i, g.Seq, g.EndLSN, len(g.Payload), w.Seq, w.EndLSN, len(w.Payload))
		}
	}
}

func summary(recs []Record) string {
	if len(recs) == 0 {
		return "none"
	}
	return fmt.Sprintf("seq %d..%d end %d..%d", recs[0].Seq, recs[len(recs)-1].Seq, recs[0].EndLSN, recs[len(recs)-1].EndLSN)
}

// randomMeta is metadata of a random size, with newlines and every byte
// value.
func randomMeta(rng *rand.Rand) []byte {
	b := make([]byte, 1+rng.IntN(3000))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// staleOps are the writes a stopped writer may be in.
func staleOps(rng *rand.Rand, end *uint64) []staleOp {
	return []staleOp{
		{"Sync", []hookPoint{hookChecked, hookWritten}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			after := m.clone()
			after.recs = append(after.recs, appendRecs(t, l, 1+rng.IntN(8), end)...)
			return func() error { _, err := l.Sync(); return err }, after
		}},
		{"Write", []hookPoint{hookChecked, hookWritten}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			after := m.clone()
			after.recs = append(after.recs, appendRecs(t, l, 1+rng.IntN(8), end)...)
			return l.Write, after
		}},
		{"RecordAck", []hookPoint{hookChecked, hookWritten}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			after := m.clone()
			after.acked = max(m.acked, m.lastEnd()) + 1 + rng.Uint64N(5)
			*end = max(*end, after.acked)
			return func() error { return l.RecordAck(after.acked) }, after
		}},
		{"SetMeta", []hookPoint{hookChecked, hookWritten}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			after := m.clone()
			after.meta = randomMeta(rng)
			return func() error { return l.SetMeta(after.meta) }, after
		}},
		{"TruncateBefore", []hookPoint{hookChecked, hookWritten, hookRemoving}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			// Which records go depends on the segments: find out on a copy
			// of the plan, as TruncateBefore does.
			seq := m.lastSeq(0) + 1
			if len(m.recs) > 0 {
				seq = m.recs[0].Seq + rng.Uint64N(uint64(len(m.recs))+1)
			}
			after := m.clone()
			l.mu.RLock()
			n := 0
			for i := 0; i < lastWithRecords(l.segs); i++ {
				s := l.segs[i]
				if len(s.offsets) == 0 || s.firstSeq+uint64(len(s.offsets)) > seq {
					break
				}
				n += len(s.offsets)
			}
			l.mu.RUnlock()
			if n == 0 {
				return func() error { return nil }, m // nothing to remove
			}
			after.recs = after.recs[n:]
			return func() error {
				got, err := l.TruncateBefore(seq)
				if err == nil && got != n {
					return fmt.Errorf("TruncateBefore removed %d records, want %d", got, n)
				}
				return err
			}, after
		}},
		{"Compaction", []hookPoint{hookChecked, hookWritten, hookRemoving}, func(t *testing.T, l *Log, m *model) (func() error, *model) {
			c, after := prepareCompaction(t, rng, l, m)
			if c == nil {
				return func() error { return nil }, m
			}
			return func() error { _, _, err := c.Commit(); return err }, after
		}},
	}
}

// prepareCompaction prepares a random compaction of l, or returns nil when
// the log is too short: it keeps the last few records up to a random seq,
// with new payloads.
func prepareCompaction(t *testing.T, rng *rand.Rand, l *Log, m *model) (*Compaction, *model) {
	t.Helper()
	var cands []int
	for i, r := range m.recs {
		if r.Seq > m.upTo && r.Seq > 3 {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return nil, m
	}
	i := cands[rng.IntN(len(cands))]
	upTo := m.recs[i].Seq
	keep := 1 + rng.IntN(min(3, i+1))
	var recs []Record
	for _, r := range m.recs[i-keep+1 : i+1] {
		recs = append(recs, Record{CommitLSN: r.CommitLSN, EndLSN: r.EndLSN, Payload: testPayload(r.EndLSN, true)})
	}
	c, err := l.PrepareCompaction(upTo, recs)
	if err != nil {
		t.Fatalf("PrepareCompaction(%d, %d records): %v", upTo, len(recs), err)
	}
	after := &model{acked: m.acked, upTo: upTo, meta: m.meta}
	for k, r := range recs {
		r.Seq, r.Epoch = upTo-uint64(len(recs))+1+uint64(k), l.me.epoch
		after.recs = append(after.recs, r)
	}
	after.recs = append(after.recs, m.recs[i+1:]...)
	return c, after
}

// TestStaleWriterRandom runs generations of writers on one log. In each,
// the writer does random work, then is stopped at a random point of a
// random write while the next epoch opens the log; the next Open must
// not wait for it, and once the stopped writer goes on, the log must be
// exactly what it was when the next Open returned, plus what the next
// writer adds: the stopped writer's change counts only if it was written
// before the next Open, and its call then fails with ErrFenced (unless it
// had passed its last check, when it was only removing files).
// BATON_STORAGE_SEED=<n> replays a run.
func TestStaleWriterRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATON_STORAGE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (BATON_STORAGE_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	generations := 40
	if testing.Short() {
		generations = 15
	}
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10}
	var end uint64
	m := &model{}
	cur, err := OpenWith(dir, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cur.Close() }()
	for epoch := uint64(1); epoch <= uint64(generations); epoch++ {
		checkModel(t, fmt.Sprintf("epoch %d at Open", epoch), cur, m)
		m = randomWork(t, rng, cur, m, &end)
		checkModel(t, fmt.Sprintf("epoch %d after its work", epoch), cur, m)

		ops := staleOps(rng, &end)
		op := ops[rng.IntN(len(ops))]
		point := op.points[rng.IntN(len(op.points))]
		cur, m = stopAndTakeOver(t, fmt.Sprintf("epoch %d stopped in %s at %s", epoch, op.name, point), cur, m, op, point, opts, &end)
	}
}

// TestStaleWriterStopped stops a writer at each point of each kind of
// write while a newer epoch opens the log (see TestStaleWriterRandom).
func TestStaleWriterStopped(t *testing.T) {
	var end uint64
	for _, op := range staleOps(rand.New(rand.NewPCG(1, 2)), &end) {
		for _, point := range op.points {
			t.Run(fmt.Sprintf("%s at %s", op.name, point), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(3, 4))
				opts := Options{SegmentSize: 4 << 10}
				cur, err := OpenWith(t.TempDir(), 1, opts)
				if err != nil {
					t.Fatal(err)
				}
				m := &model{}
				for range 3 {
					m = randomWork(t, rng, cur, m, &end)
				}
				recs := appendRecs(t, cur, 20, &end)
				if _, err := cur.Sync(); err != nil {
					t.Fatal(err)
				}
				m.recs = append(m.recs, recs...)
				next, _ := stopAndTakeOver(t, "stopped", cur, m, op, point, opts, &end)
				next.Close()
			})
		}
	}
}

// stopAndTakeOver starts op on cur, stops it at point, opens the log for
// the next epoch meanwhile, then lets op go on and checks what it returns,
// that cur is fenced, and that the new writer holds the log it must. It
// closes cur and returns the new writer and its model.
func stopAndTakeOver(t *testing.T, what string, cur *Log, m *model, op staleOp, point hookPoint, opts Options, end *uint64) (*Log, *model) {
	t.Helper()
	run, after := op.prepare(t, cur, m)
	stopped := make(chan struct{})
	resume := make(chan struct{})
	cur.hook = func(p hookPoint) {
		if p == point {
			close(stopped)
			<-resume
		}
	}
	result := make(chan error, 1)
	go func() { result <- run() }()
	select {
	case <-stopped:
	case err := <-result:
		if after != m || err != nil {
			t.Fatalf("%s: returned %v before reaching the point", what, err)
		}
		// Nothing to do: go on without a stopped write.
		close(resume)
		stopped = nil
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: never reached the point", what)
	}

	next := openWithin(t, what, cur.root, cur.me.epoch+1, opts)
	want := m
	if point != hookChecked {
		want = after // written before the newer Open: part of the log
	}
	if stopped != nil {
		before := dirBytes(cur.dir)
		close(resume)
		err := <-result
		// The resumed writer must really write (else this test proves
		// nothing), unless the newer Open removed as garbage its folder
		// (none of its segments was part of the log: it has nowhere to
		// write) or the file it writes into (one it had created but not
		// written yet).
		if _, serr := os.Stat(cur.dir); serr == nil && (op.name == "Sync" || op.name == "Write") && point == hookChecked && dirBytes(cur.dir) <= before && !activeRemoved(cur) {
			t.Fatalf("%s: the stopped writer wrote nothing once resumed (%d bytes in its folder)", what, before)
		}
		switch {
		case point == hookRemoving && err != nil:
			t.Fatalf("%s: %v after its last check", what, err)
		case point != hookRemoving && !errors.Is(err, ErrFenced):
			t.Fatalf("%s: returned %v, want ErrFenced", what, err)
		}
	}
	if _, err := cur.Sync(); !errors.Is(err, ErrFenced) {
		t.Fatalf("%s: a later Sync = %v, want ErrFenced", what, err)
	}
	if err := cur.RecordAck(*end + 1000); !errors.Is(err, ErrFenced) {
		t.Fatalf("%s: a later RecordAck = %v, want ErrFenced", what, err)
	}
	if err := cur.SetMeta([]byte("late")); !errors.Is(err, ErrFenced) {
		t.Fatalf("%s: a later SetMeta = %v, want ErrFenced", what, err)
	}
	if _, err := cur.Append(Record{EndLSN: *end + 2000}); !errors.Is(err, ErrFenced) {
		t.Fatalf("%s: a later Append = %v, want ErrFenced", what, err)
	}
	cur.Close()
	checkModel(t, what+": the next writer", next, want)
	// And so does every later Open.
	next.Close()
	next = openWithin(t, what, cur.root, cur.me.epoch+1, opts)
	checkModel(t, what+": reopened", next, want)
	return next, want
}

// activeRemoved reports whether the file l writes into was removed.
func activeRemoved(l *Log) bool {
	if l.active == nil {
		return false
	}
	fi, err := l.active.Stat()
	if err != nil {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}

// dirBytes is the size of the files in dir.
func dirBytes(dir string) int64 {
	entries, _ := os.ReadDir(dir)
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func (p hookPoint) String() string {
	return [...]string{"checked", "written", "removing"}[p]
}

// openWithin opens dir for epoch, failing the test if Open takes more than
// a few seconds (it must not wait for the stopped writer).
func openWithin(t *testing.T, what, dir string, epoch uint64, opts Options) *Log {
	t.Helper()
	type opened struct {
		l   *Log
		err error
	}
	done := make(chan opened, 1)
	go func() {
		l, err := OpenWith(dir, epoch, opts)
		done <- opened{l, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("%s: Open(epoch %d): %v", what, epoch, o.err)
		}
		return o.l
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Open(epoch %d) waited for the stopped writer", what, epoch)
		return nil
	}
}

// randomWork does a few random writes on l and returns the model after them.
func randomWork(t *testing.T, rng *rand.Rand, l *Log, m *model, end *uint64) *model {
	t.Helper()
	for range 1 + rng.IntN(6) {
		switch rng.IntN(7) {
		case 0, 1:
			recs := appendRecs(t, l, 1+rng.IntN(10), end)
			if _, err := l.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			m = m.clone()
			m.recs = append(m.recs, recs...)
		case 2:
			recs := appendRecs(t, l, 1+rng.IntN(10), end)
			if err := l.Write(); err != nil {
				t.Fatalf("Write: %v", err)
			}
			m = m.clone()
			m.recs = append(m.recs, recs...)
		case 3:
			m = m.clone()
			m.acked = max(m.acked, m.lastEnd()) + 1
			*end = max(*end, m.acked)
			if err := l.RecordAck(m.acked); err != nil {
				t.Fatalf("RecordAck: %v", err)
			}
		case 4:
			if len(m.recs) > 0 {
				seq := m.recs[0].Seq + rng.Uint64N(uint64(len(m.recs)))
				n, err := l.TruncateBefore(seq)
				if err != nil {
					t.Fatalf("TruncateBefore: %v", err)
				}
				m = m.clone()
				m.recs = m.recs[n:]
			}
		case 5:
			if c, after := prepareCompaction(t, rng, l, m); c != nil {
				if _, _, err := c.Commit(); err != nil {
					t.Fatalf("Commit: %v", err)
				}
				m = after
			}
		case 6:
			m = m.clone()
			m.meta = randomMeta(rng)
			if err := l.SetMeta(m.meta); err != nil {
				t.Fatalf("SetMeta: %v", err)
			}
		}
	}
	return m
}
