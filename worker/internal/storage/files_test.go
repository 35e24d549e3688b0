package storage_test

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestOpenFileLimitRandom writes many logs at random with room for only 2
// open active segments, so that logs close their segment and reopen it
// between writes; with Write (unsynced) and Sync, segment roll-over,
// TruncateBefore, and takeovers by a newer epoch (which must fence a
// writer whose segment is closed as well as one whose segment is open).
// Every reopened log must hold exactly the records reported written, and
// no more than the limit stay open once every log has written again.
func TestOpenFileLimitRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	defer storage.SetOpenFileLimit(storage.SetOpenFileLimit(2))
	_, reopens0 := storage.OpenFiles()

	type logState struct {
		dir    string
		epoch  uint64
		l      *storage.Log
		ends   []uint64 // end LSNs reported written, in order
		next   uint64   // the next end LSN
		from   int      // index into ends of the first record kept
		fenced *storage.Log
	}
	opts := storage.Options{SegmentSize: 16 << 10}
	logs := make([]*logState, 8)
	for i := range logs {
		dir := filepath.Join(t.TempDir(), "log")
		logs[i] = &logState{dir: dir, epoch: 1, l: openLog(t, dir, 1, opts), next: 10}
	}
	for op := range 600 {
		s := logs[rng.IntN(len(logs))]
		switch r := rng.IntN(20); {
		case r < 15: // append 1–5 records, then Sync or Write
			n := 1 + rng.IntN(5)
			var ends []uint64
			for range n {
				if _, err := s.l.Append(record(s.next)); err != nil {
					t.Fatalf("op %d: Append: %v", op, err)
				}
				ends = append(ends, s.next)
				s.next += uint64(1 + rng.IntN(3))
			}
			var err error
			if rng.IntN(3) == 0 {
				err = s.l.Write()
			} else {
				_, err = s.l.Sync()
			}
			if err != nil {
				t.Fatalf("op %d: write into %s (epoch %d): %v", op, s.dir, s.epoch, err)
			}
			s.ends = append(s.ends, ends...)
		case r < 17: // truncate before a random kept record
			if len(s.ends) == 0 {
				continue
			}
			seq := uint64(1 + rng.IntN(len(s.ends)))
			removed, err := s.l.TruncateBefore(seq)
			if err != nil {
				t.Fatalf("op %d: TruncateBefore(%d): %v", op, seq, err)
			}
			s.from += removed
		default: // a newer epoch takes the log over; the old writer is fenced
			if _, err := s.l.Sync(); err != nil { // what Write left is durable
				t.Fatalf("op %d: Sync before takeover: %v", op, err)
			}
			old := s.l
			s.epoch++
			s.l = openLog(t, s.dir, s.epoch, opts)
			if _, err := old.Append(record(s.next)); err != nil {
				t.Fatalf("op %d: Append to the fenced log: %v", op, err)
			}
			if _, err := old.Sync(); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("op %d: Sync of a writer fenced by epoch %d: %v, want ErrFenced", op, s.epoch, err)
			}
			old.Close()
		}
		// One goroutine: no log is busy when another evicts it, so the
		// limit holds after every operation, unsynced records or not.
		if open, _ := storage.OpenFiles(); open > 2 {
			t.Fatalf("op %d: %d active segments open, limit 2", op, open)
		}
	}
	if _, reopens := storage.OpenFiles(); reopens == reopens0 {
		t.Fatalf("no segment was reopened: the limit of 2 was never reached")
	}
	for _, s := range logs {
		appendSync(t, s.l, s.next)
		s.ends = append(s.ends, s.next)
	}
	if open, _ := storage.OpenFiles(); open > 2 {
		t.Errorf("%d active segments open after every log wrote, limit 2", open)
	}
	for i, s := range logs {
		s.l.Close()
		l := openLog(t, s.dir, s.epoch+1, opts)
		var got []storage.Record
		for from := uint64(1); ; {
			recs, err := l.Read(from, 7)
			if err != nil {
				t.Fatalf("log %d: Read(%d): %v", i, from, err)
			}
			if len(recs) == 0 {
				break
			}
			got = append(got, recs...)
			from = recs[len(recs)-1].Seq + 1
		}
		want := s.ends[s.from:]
		if len(got) > 0 && got[0].Seq != uint64(s.from)+1 {
			t.Errorf("log %d: first record has seq %d, want %d", i, got[0].Seq, s.from+1)
		}
		if len(got) != len(want) {
			t.Fatalf("log %d: %d records, want %d", i, len(got), len(want))
		}
		for j, r := range got {
			if r.EndLSN != want[j] || string(r.Payload) != string(payloadFor(want[j])) {
				t.Fatalf("log %d: record %d has end %d, want %d (or its payload differs)", i, j, r.EndLSN, want[j])
			}
		}
		l.Close()
	}
}

// TestOpenFileLimitConcurrent writes logs from several goroutines at once
// with room for one open segment, so that logs close each other's
// segments while those are being written (or skip them: TryLock), and
// checks every record afterwards.
func TestOpenFileLimitConcurrent(t *testing.T) {
	defer storage.SetOpenFileLimit(storage.SetOpenFileLimit(1))
	opts := storage.Options{SegmentSize: 8 << 10}
	dirs := make([]string, 8)
	logs := make([]*storage.Log, len(dirs))
	for i := range dirs {
		dirs[i] = filepath.Join(t.TempDir(), "log")
		logs[i] = openLog(t, dirs[i], 1, opts)
	}
	const records = 150
	errs := make(chan error, len(logs))
	for i, l := range logs {
		go func() {
			for end := uint64(10); end < 10+records; end++ {
				if _, err := l.Append(record(end)); err != nil {
					errs <- err
					return
				}
				var err error
				if (end+uint64(i))%3 == 0 {
					err = l.Write()
				} else {
					_, err = l.Sync()
				}
				if err != nil {
					errs <- err
					return
				}
			}
			_, err := l.Sync()
			errs <- err
		}()
	}
	for range logs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, l := range logs {
		l.Close()
		l = openLog(t, dirs[i], 2, opts)
		got := readAll(t, l, 32)
		if len(got) != records {
			t.Fatalf("log %d: %d records, want %d", i, len(got), records)
		}
		for j, r := range got {
			if want := uint64(10 + j); r.EndLSN != want || string(r.Payload) != string(payloadFor(want)) {
				t.Fatalf("log %d: record %d has end %d, want %d (or its payload differs)", i, j, r.EndLSN, want)
			}
		}
		l.Close()
	}
}
