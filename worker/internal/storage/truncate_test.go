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
