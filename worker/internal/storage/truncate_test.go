package storage_test

import (
	"errors"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

func TestTruncateBefore(t *testing.T) {
	dir := t.TempDir()
	l, err := storage.OpenWith(dir, 1, storage.Options{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	for i := uint64(1); i <= 40; i++ {
		if _, err := l.Append(storage.Record{CommitLSN: i * 100, EndLSN: i*100 + 10, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if _, err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	removed, err := l.TruncateBefore(25)
	if err != nil {
		t.Fatal(err)
	}
	if removed == 0 || removed >= 25 {
		t.Fatalf("removed %d records; want some, all below seq 25", removed)
	}
	recs, err := l.Read(1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[0].Seq != uint64(removed)+1 || recs[len(recs)-1].Seq != 40 {
		t.Fatalf("after truncation read %d records from %d to %d; want %d..40", len(recs), recs[0].Seq, recs[len(recs)-1].Seq, removed+1)
	}
	// Everything is truncatable but the last segment.
	if _, err := l.TruncateBefore(1 << 60); err != nil {
		t.Fatal(err)
	}
	if recs, _ := l.Read(40, 1); len(recs) != 1 || recs[0].Seq != 40 {
		t.Fatal("the last record is gone")
	}
	l.Close()
	// A new Open recovers from the kept suffix and continues it.
	l2, err := storage.OpenWith(dir, 2, storage.Options{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if seq, end := l2.Durable(); seq != 40 || end != 4010 {
		t.Fatalf("reopened Durable = %d, %d; want 40, 4010", seq, end)
	}
	if _, err := l2.Append(storage.Record{CommitLSN: 4100, EndLSN: 4110, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Sync(); err != nil {
		t.Fatal(err)
	}
	var seen []uint64
	if err := storage.Inspect(dir, func(r storage.Record) error { seen = append(seen, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if seen[len(seen)-1] != 41 {
		t.Fatalf("inspect ends at %d, want 41", seen[len(seen)-1])
	}
	// The old writer is fenced.
	if _, err := l.TruncateBefore(41); !errors.Is(err, storage.ErrFenced) && !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("fenced TruncateBefore = %v", err)
	}
	l2.Close()
}

// TestTruncateKeepsLastRecord compacts a log up to its last record (which
// leaves an empty file for the next appends as its last segment), then
// truncates everything: the last record must stay, so that the next Open
// continues the seqs and end LSNs instead of starting again at seq 1 (whose
// records it would then hide behind the compaction).
func TestTruncateKeepsLastRecord(t *testing.T) {
	dir := t.TempDir()
	opts := storage.Options{SegmentSize: 4096}
	l, err := storage.OpenWith(dir, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 17; i++ {
		if _, err := l.Append(storage.Record{CommitLSN: i * 100, EndLSN: i*100 + 10, Payload: make([]byte, 300)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	c, err := l.PrepareCompaction(17, []storage.Record{{CommitLSN: 1700, EndLSN: 1710, Payload: []byte("compacted")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.TruncateBefore(1 << 60); err != nil {
		t.Fatal(err)
	}
	if recs, err := l.Read(1, 10); err != nil || len(recs) != 1 || recs[0].Seq != 17 {
		t.Fatalf("after truncating everything: %d records (%v), want the last one, seq 17", len(recs), err)
	}
	l.Close()

	for epoch := uint64(2); epoch <= 3; epoch++ {
		l, err = storage.OpenWith(dir, epoch, opts)
		if err != nil {
			t.Fatal(err)
		}
		want := 16 + epoch // 18, then 19
		if seq, end := l.Durable(); seq != want-1 || end != (want-1)*100+10 {
			t.Fatalf("epoch %d: Durable = %d, %d; want %d, %d", epoch, seq, end, want-1, (want-1)*100+10)
		}
		seq, err := l.Append(storage.Record{CommitLSN: want * 100, EndLSN: want*100 + 10, Payload: []byte("next")})
		if err != nil || seq != want {
			t.Fatalf("epoch %d: Append = seq %d, %v; want seq %d", epoch, seq, err, want)
		}
		if _, err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	var seen []uint64
	if err := storage.Inspect(dir, func(r storage.Record) error { seen = append(seen, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) == 0 || seen[len(seen)-1] != 19 {
		t.Fatalf("Inspect sees seqs %v, want them to end at 19", seen)
	}
}
