package storage

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// writeLegacy lays out a format-1 log in dir: EPOCH for epoch, ACKED, and
// segments holding records with end LSNs 1..n, split every per records;
// with compacted, the first segment is a generation-1 compacted file.
func writeLegacy(t *testing.T, dir string, epoch uint64, n, per int, compacted bool) []Record {
	t.Helper()
	var recs []Record
	for first := 1; first <= n; first += per {
		buf := segmentHeader()
		for s := first; s < first+per && s <= n; s++ {
			r := Record{Seq: uint64(s), CommitLSN: uint64(s), EndLSN: uint64(s), Epoch: epoch, Payload: testPayload(uint64(s), false)}
			buf = appendRecord(buf, &r)
			recs = append(recs, r)
		}
		name := segmentName(uint64(first))
		if compacted && first == 1 {
			name = compactedName(1, 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		epochFileName: fmt.Sprintf("epoch %d open 2\n", epoch),
		ackFileName:   "lsn 1000\n",
		lockFileName:  "",
		// A torn write in progress, and a file that is not the log's.
		segmentName(uint64(n+1)) + tmpSuffix: "partial",
		"meta.json" + tmpSuffix:              "{}",
	}
	if compacted {
		files[compactedFileName] = "gen 1 upto 1\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

// TestMigrateFormat1 opens logs written in format 1: their records and
// acknowledgement are kept, EPOCH then fences format-1 writers, and
// Inspect reads them before and after.
func TestMigrateFormat1(t *testing.T) {
	for _, compacted := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacted %v", compacted), func(t *testing.T) {
			dir := t.TempDir()
			want := &model{recs: writeLegacy(t, dir, 3, 25, 10, compacted), acked: 1000}
			if compacted {
				want.upTo = 1
			}
			var inspected []Record
			if err := Inspect(dir, func(r Record) error { inspected = append(inspected, r); return nil }); err != nil {
				t.Fatal(err)
			}
			compareRecords(t, "Inspect of format 1", inspected, want.recs)

			if _, err := Open(dir, 2); !errors.Is(err, ErrFenced) {
				t.Fatalf("Open(2) of a format-1 log of epoch 3 = %v, want ErrFenced", err)
			}
			l, err := Open(dir, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkModel(t, "migrated", l, want)
			if o, err := readLegacyEpoch(dir); err != nil || o.epoch != math.MaxUint64 {
				t.Fatalf("EPOCH after migration: %v, %v", o, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "meta.json"+tmpSuffix)); err != nil {
				t.Fatalf("a temporary file that is not the log's was removed: %v", err)
			}
			var end uint64 = 25
			want.recs = append(want.recs, appendRecs(t, l, 5, &end)...)
			if _, err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			n, err := l.TruncateBefore(21)
			if err != nil || n != 20 {
				t.Fatalf("TruncateBefore(21) = %d, %v", n, err)
			}
			want.recs = want.recs[20:]
			l.Close()
			l, err = Open(dir, 5)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkModel(t, "reopened", l, want)
			// The truncated format-1 files are gone.
			if _, err := os.Stat(filepath.Join(dir, segmentName(11))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("truncated format-1 segment: %v", err)
			}
		})
	}
}
