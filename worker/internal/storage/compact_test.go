package storage_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// compactedPayload marks the replacement of the record with end LSN end.
func compactedPayload(end uint64) []byte { return []byte(fmt.Sprintf("compacted %d", end)) }

// replacement is the compaction of the records up to end LSN upToEnd that
// keeps those with an end LSN divisible by every (and the last one).
func replacement(upToEnd, every uint64) []storage.Record {
	var recs []storage.Record
	for e := uint64(1); e <= upToEnd; e++ {
		if e%every == 0 || e == upToEnd {
			recs = append(recs, storage.Record{CommitLSN: e - 1, EndLSN: e, Payload: compactedPayload(e)})
		}
	}
	return recs
}

// wantLog is what the log holds after a compaction of the records up to
// end LSN upToEnd (see replacement), followed by records up to lastEnd.
func wantLog(upToEnd, every, lastEnd uint64) []storage.Record {
	want := replacement(upToEnd, every)
	for e := upToEnd + 1; e <= lastEnd; e++ {
		want = append(want, record(e))
	}
	for i := range want {
		want[i].Seq = upToEnd - uint64(len(want)-int(lastEnd-upToEnd)) + 1 + uint64(i)
	}
	return want
}

// checkLog reads the whole log and compares it with want (seq, end LSN,
// payload).
func checkLog(t *testing.T, l *storage.Log, want []storage.Record) {
	t.Helper()
	got, err := l.Read(1, 1<<20)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	for len(got) > 0 && got[len(got)-1].Seq < want[len(want)-1].Seq {
		more, err := l.Read(got[len(got)-1].Seq+1, 1<<20)
		if err != nil || len(more) == 0 {
			t.Fatalf("Read on: %d records, %v", len(more), err)
		}
		got = append(got, more...)
	}
	if err := sameRecords(got, want); err != nil {
		t.Fatal(err)
	}
}

func sameRecords(got, want []storage.Record) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.EndLSN != w.EndLSN || g.CommitLSN != w.CommitLSN || string(g.Payload) != string(w.Payload) {
			return fmt.Errorf("record %d: got seq %d end %d (%d bytes), want seq %d end %d (%d bytes)",
				i, g.Seq, g.EndLSN, len(g.Payload), w.Seq, w.EndLSN, len(w.Payload))
		}
	}
	return nil
}

func compact(t *testing.T, l *storage.Log, upTo uint64, recs []storage.Record) {
	t.Helper()
	c, err := l.PrepareCompaction(upTo, recs)
	if err != nil {
		t.Fatalf("PrepareCompaction(%d): %v", upTo, err)
	}
	if _, _, err := c.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func TestCompaction(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records uint64 // synced before the compaction
		upTo    uint64 // compacted prefix
		pending uint64 // appended, not synced, during the compaction
	}{
		{name: "cut inside the last segment", records: 60, upTo: 57},
		{name: "cut at the end of the log", records: 60, upTo: 60},
		{name: "cut in an earlier segment", records: 60, upTo: 20},
		{name: "appends waiting for Sync", records: 60, upTo: 58, pending: 5},
		{name: "appends waiting, cut at the end", records: 60, upTo: 60, pending: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := storage.Options{SegmentSize: 16 << 10}
			l := openLog(t, dir, 1, opts)
			appendSync(t, l, seq(1, tc.records)...)
			for e := tc.records + 1; e <= tc.records+tc.pending; e++ {
				if _, err := l.Append(record(e)); err != nil {
					t.Fatal(err)
				}
			}
			compact(t, l, tc.upTo, replacement(tc.upTo, 4))
			last := tc.records + tc.pending
			if _, err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			checkLog(t, l, wantLog(tc.upTo, 4, last))
			// Appends go on, across segments, and survive a reopen.
			appendSync(t, l, seq(last+1, last+30)...)
			last += 30
			want := wantLog(tc.upTo, 4, last)
			checkLog(t, l, want)
			if seq, end := l.Durable(); seq != want[len(want)-1].Seq || end != last {
				t.Fatalf("Durable = %d, %d", seq, end)
			}
			l.Close()
			l2 := openLog(t, dir, 2, opts)
			checkLog(t, l2, want)
			var seen []storage.Record
			if err := storage.Inspect(dir, func(r storage.Record) error { seen = append(seen, r); return nil }); err != nil {
				t.Fatal(err)
			}
			if err := sameRecords(seen, want); err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			// A second compaction over the first.
			compact(t, l2, last-2, replacement(last-2, 10))
			want = wantLog(last-2, 10, last)
			checkLog(t, l2, want)
			l2.Close()
			checkLog(t, openLog(t, dir, 3, opts), want)
			if n := len(leftovers(t, dir)); n != 0 {
				t.Fatalf("%d leftover files: %v", n, leftovers(t, dir))
			}
		})
	}
}

// leftovers lists temporary files.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	tmp, err := filepath.Glob(filepath.Join(dir, "o.*", "*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return tmp
}

func TestCompactionRejects(t *testing.T) {
	l := openLog(t, t.TempDir(), 1, storage.Options{})
	appendSync(t, l, seq(1, 10)...)
	for _, tc := range []struct {
		name string
		upTo uint64
		recs []storage.Record
	}{
		{"no records", 5, nil},
		{"more records than seqs", 2, replacement(3, 1)},
		{"not durable", 11, replacement(11, 1)},
		{"end LSN above the last replaced", 5, replacement(6, 1)},
		{"end LSNs out of order", 5, append(replacement(5, 5), record(1))},
	} {
		if _, err := l.PrepareCompaction(tc.upTo, tc.recs); err == nil {
			t.Errorf("%s: PrepareCompaction accepted", tc.name)
		}
	}
	compact(t, l, 6, replacement(6, 3))
	if _, err := l.PrepareCompaction(6, replacement(6, 6)); err == nil {
		t.Error("a second compaction of the same prefix was accepted")
	}
	c, err := l.PrepareCompaction(8, replacement(8, 2))
	if err != nil {
		t.Fatal(err)
	}
	c.Abort()
	if _, _, err := c.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

// TestCompactionCrash leaves the directory as a crash between two steps of
// Commit would, and checks that Open finds the old log or the new one.
func TestCompactionCrash(t *testing.T) {
	opts := storage.Options{SegmentSize: 16 << 10}
	build := func(t *testing.T) (string, *storage.Log) {
		dir := t.TempDir()
		l, err := storage.OpenWith(dir, 1, opts)
		if err != nil {
			t.Fatal(err)
		}
		appendSync(t, l, seq(1, 60)...)
		return dir, l
	}
	oldLog := wantLog(0, 1, 60)
	newLog := wantLog(50, 5, 60)
	reopen := func(t *testing.T, dir string, want []storage.Record) {
		t.Helper()
		l := openLog(t, dir, 2, opts)
		checkLog(t, l, want)
		if tmp := leftovers(t, dir); len(tmp) != 0 {
			t.Fatalf("leftovers after Open: %v", tmp)
		}
		for _, f := range segments(t, dir) {
			if _, err := os.Stat(f); err != nil {
				t.Fatal(err)
			}
		}
		// The log goes on.
		appendSync(t, l, 61)
		checkLog(t, l, append(want, storage.Record{Seq: want[len(want)-1].Seq + 1, CommitLSN: 60, EndLSN: 61, Payload: payloadFor(61)}))
	}
	t.Run("staged files only", func(t *testing.T) {
		dir, l := build(t)
		if _, err := l.PrepareCompaction(50, replacement(50, 5)); err != nil {
			t.Fatal(err)
		}
		if len(leftovers(t, dir)) == 0 {
			t.Fatal("Prepare staged nothing")
		}
		l.Close() // crash: nothing committed
		reopen(t, dir, oldLog)
	})
	t.Run("renamed, not committed", func(t *testing.T) {
		dir, l := build(t)
		c, err := l.PrepareCompaction(50, replacement(50, 5))
		if err != nil {
			t.Fatal(err)
		}
		// What install does before COMPACTED is written: the staged files
		// under their generation 1 names.
		for _, tmp := range leftovers(t, dir) {
			final := strings.SplitN(filepath.Base(tmp), ".seg.", 2)[0] + ".seg"
			if err := os.Rename(tmp, filepath.Join(filepath.Dir(tmp), final)); err != nil {
				t.Fatal(err)
			}
		}
		c.Abort()
		l.Close()
		reopen(t, dir, oldLog)
	})
	t.Run("committed, old files not removed", func(t *testing.T) {
		dir, l := build(t)
		before := snapshot(t, dir)
		compact(t, l, 50, replacement(50, 5))
		l.Close()
		for name, content := range before {
			if strings.HasSuffix(name, ".seg") {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		reopen(t, dir, newLog)
		for name := range before {
			if filepath.Base(name) > "00000000000000000050.seg" || !strings.HasSuffix(name, ".seg") {
				continue // kept: after the compacted records
			}
			if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("old segment %s survived Open: %v", name, err)
			}
		}
	})
	t.Run("committed", func(t *testing.T) {
		dir, l := build(t)
		compact(t, l, 50, replacement(50, 5))
		l.Close()
		reopen(t, dir, newLog)
	})
}

// TestCompactionFenced checks that a writer that a newer Open fenced cannot
// commit a compaction, prepared before or after that Open.
func TestCompactionFenced(t *testing.T) {
	dir := t.TempDir()
	opts := storage.Options{SegmentSize: 16 << 10}
	old := openLog(t, dir, 1, opts)
	appendSync(t, old, seq(1, 40)...)
	before, err := old.PrepareCompaction(30, replacement(30, 3))
	if err != nil {
		t.Fatal(err)
	}
	next := openLog(t, dir, 2, opts)
	after, err := old.PrepareCompaction(30, replacement(30, 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := before.Commit(); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("fenced Commit = %v, want ErrFenced", err)
	}
	if _, _, err := after.Commit(); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("fenced Commit = %v, want ErrFenced", err)
	}
	appendSync(t, next, 41)
	checkLog(t, next, wantLog(0, 1, 41))
	next.Close()
	checkLog(t, openLog(t, dir, 3, opts), wantLog(0, 1, 41))
}

// TestCompactionReaders reads the log over and over while it is compacted
// and appended to: every Read returns the records of one version of the
// log, and never fails.
func TestCompactionReaders(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1, storage.Options{SegmentSize: 8 << 10})
	appendSync(t, l, seq(1, 20)...)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				recs, err := l.Read(1, 1<<20)
				if err != nil {
					errs <- err
					return
				}
				for i, r := range recs {
					compacted := string(r.Payload) == string(compactedPayload(r.EndLSN))
					if !compacted && string(r.Payload) != string(payloadFor(r.EndLSN)) || i > 0 && (r.Seq != recs[i-1].Seq+1 || r.EndLSN <= recs[i-1].EndLSN) {
						errs <- fmt.Errorf("read record seq %d end %d after %v", r.Seq, r.EndLSN, recs[max(i-1, 0)].Seq)
						return
					}
				}
			}
		}()
	}
	end := uint64(20)
	for round := uint64(1); round <= 30; round++ {
		appendSync(t, l, seq(end+1, end+10)...)
		end += 10
		for e := end + 1; e <= end+3; e++ { // waiting for the next Sync
			if _, err := l.Append(record(e)); err != nil {
				t.Fatal(err)
			}
		}
		end += 3
		upTo, _ := l.Durable()
		_, upToEnd := l.Durable()
		recs := replacement(upToEnd, 7)
		if uint64(len(recs)) > upTo {
			continue
		}
		compact(t, l, upTo, recs)
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
