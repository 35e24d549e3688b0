package storage_test

import (
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestInspect checks that Inspect reads every valid record of a log that a
// writer holds open, without changing anything in the directory, not even
// a temporary file that may be the writer's work in progress.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1, storage.Options{SegmentSize: 8 << 10})
	appendSync(t, l, seq(1, 20)...)
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000021.seg.tmp"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	files := segments(t, dir)
	damageFile(t, files[len(files)-1], func(f *os.File, size int64) error {
		_, err := f.WriteAt([]byte{9, 9, 9}, size) // a write in progress
		return err
	})
	before := snapshot(t, dir)

	var recs []storage.Record
	err := storage.Inspect(dir, func(r storage.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	checkRecords(t, recs, seq(1, 20))
	if !maps.Equal(snapshot(t, dir), before) {
		t.Fatal("Inspect changed the directory")
	}
}
