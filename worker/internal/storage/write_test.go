package storage_test

import (
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestWriteThenSync: Write makes records readable at once (across segment
// rotations), Sync after it makes them durable, and a reopened log holds
// everything written; a successor's fencing applies to Write too.
func TestWriteThenSync(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts storage.Options
	}{
		{"one segment", storage.Options{}},
		{"segment rotation", storage.Options{SegmentSize: 16 << 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 1, tt.opts)
			ends := seq(1, 200)
			for i, end := range ends {
				if _, err := l.Append(record(end)); err != nil {
					t.Fatal(err)
				}
				if i%7 == 6 {
					if err := l.Write(); err != nil {
						t.Fatalf("Write: %v", err)
					}
					checkRecords(t, readAll(t, l, 50), ends[:i+1])
				}
			}
			if err := l.Write(); err != nil {
				t.Fatal(err)
			}
			if s, _ := l.Durable(); s != uint64(len(ends)) {
				t.Fatalf("Durable after Write = %d; want %d (what was written)", s, len(ends))
			}
			if _, err := l.Sync(); err != nil {
				t.Fatalf("Sync after Write: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := openLog(t, dir, 2, tt.opts)
			checkRecords(t, readAll(t, l2, 50), ends)
			// The first Open is fenced: its Write fails.
			if _, err := l2.Append(record(1000)); err != nil {
				t.Fatal(err)
			}
			if err := l2.Write(); err != nil {
				t.Fatalf("successor's Write: %v", err)
			}
		})
	}
}

// TestWriteFenced: a Write by a writer whose directory was taken over
// fails like its Sync would.
func TestWriteFenced(t *testing.T) {
	dir := t.TempDir()
	old := openLog(t, dir, 1, storage.Options{})
	appendSync(t, old, 10)
	openLog(t, dir, 2, storage.Options{})
	if _, err := old.Append(record(20)); err != nil {
		t.Fatal(err)
	}
	if err := old.Write(); err == nil {
		t.Fatal("Write by a fenced writer succeeded")
	}
}
