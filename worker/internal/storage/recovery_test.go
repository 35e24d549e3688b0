package storage_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestTornTail damages the end of the last segment as a crash or a bad
// write would, and checks that Open keeps every earlier record, cuts the
// damage away, and continues from there.
func TestTornTail(t *testing.T) {
	const n = 10
	lastLen := int64(40 + len(payloadFor(n))) // record n's size on disk
	tests := []struct {
		name   string
		damage func(f *os.File, size int64) error
		keep   int // records left after recovery
	}{
		{"cut in the last record's header", func(f *os.File, size int64) error {
			return f.Truncate(size - lastLen + 17)
		}, n - 1},
		{"cut in the last record's payload", func(f *os.File, size int64) error {
			return f.Truncate(size - 3)
		}, n - 1},
		{"byte flipped in the last record's payload", flipAt(-2), n - 1},
		{"byte flipped in the last record's end LSN", flipAt(-lastLen + 24), n - 1},
		{"byte flipped in the last record's length", flipAt(-lastLen + 5), n - 1},
		{"byte flipped in the last record's checksum", flipAt(-lastLen), n - 1},
		{"half-written next record", func(f *os.File, size int64) error {
			_, err := f.WriteAt([]byte{1, 2, 3, 4, 5, 6, 7}, size)
			return err
		}, n},
		{"zeros after the last record", func(f *os.File, size int64) error {
			return f.Truncate(size + 4096)
		}, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := storage.Options{SegmentSize: 8 << 10} // several segments
			l := openLog(t, dir, 1, opts)
			appendSync(t, l, seq(1, n)...)
			l.Close()

			files := segments(t, dir)
			last := files[len(files)-1]
			f, err := os.OpenFile(last, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			if err := tt.damage(f, fi.Size()); err != nil {
				t.Fatal(err)
			}
			f.Close()

			l = openLog(t, dir, 2, opts)
			want := seq(1, uint64(tt.keep))
			if s, end := l.Durable(); s != uint64(tt.keep) || end != uint64(tt.keep) {
				t.Fatalf("Durable = %d, %d; want %d", s, end, tt.keep)
			}
			checkRecords(t, readAll(t, l, 3), want)
			// The damaged file is the previous owner's: it is left as it
			// is, and what follows its last intact record is never read.

			// The log goes on from the last intact record.
			if s, err := l.Append(record(100)); err != nil || s != uint64(tt.keep)+1 {
				t.Fatalf("Append after recovery = %d, %v; want seq %d", s, err, tt.keep+1)
			}
			appendSync(t, l, 101)
			l.Close()
			l = openLog(t, dir, 3, opts)
			checkRecords(t, readAll(t, l, 100), append(want, 100, 101))
		})
	}
}

func flipAt(fromEnd int64) func(f *os.File, size int64) error {
	return func(f *os.File, size int64) error {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, size+fromEnd); err != nil {
			return err
		}
		b[0] ^= 0x40
		_, err := f.WriteAt(b, size+fromEnd)
		return err
	}
}

// TestCorruptionBeforeTail checks that damage a crash cannot explain fails
// Open instead of silently dropping records; a flipped byte in a segment
// before the last, whose payloads Open does not read, fails the Read of
// its record instead, and drops nothing either.
func TestCorruptionBeforeTail(t *testing.T) {
	t.Run("byte flipped in a full segment", func(t *testing.T) {
		dir := t.TempDir()
		opts := storage.Options{SegmentSize: 8 << 10}
		l := openLog(t, dir, 1, opts)
		appendSync(t, l, seq(1, 30)...)
		l.Close()
		files := segments(t, dir)
		if len(files) < 3 {
			t.Fatalf("only %d segments", len(files))
		}
		damageFile(t, files[0], flipAt(-5))
		l = openLog(t, dir, 2, opts)
		if s, _ := l.Durable(); s != 30 {
			t.Fatalf("Open kept %d records; want all 30", s)
		}
		// The first segment's last record is the damaged one.
		var bad uint64
		for from := uint64(1); from <= 30; from++ {
			if _, err := l.Read(from, 1); err != nil {
				if !errors.Is(err, storage.ErrCorrupt) {
					t.Fatalf("Read(%d) = %v, want ErrCorrupt", from, err)
				}
				if bad != 0 {
					t.Fatalf("Read fails at %d and at %d; one record is damaged", bad, from)
				}
				bad = from
			}
		}
		if bad == 0 {
			t.Fatal("every record read back although one is damaged")
		}
		l.Close()
		// Inherited once more, it is still there, and still found.
		l = openLog(t, dir, 3, opts)
		defer l.Close()
		if s, _ := l.Durable(); s != 30 {
			t.Fatalf("the next Open kept %d records; want all 30", s)
		}
		if _, err := l.Read(bad, 1); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("Read(%d) after another Open = %v, want ErrCorrupt", bad, err)
		}
	})
	tests := []struct {
		name   string
		damage func(t *testing.T, files []string)
	}{
		{"full segment cut short", func(t *testing.T, files []string) {
			damageFile(t, files[1], func(f *os.File, size int64) error { return f.Truncate(size - 10) })
		}},
		{"segment missing", func(t *testing.T, files []string) {
			if err := os.Remove(files[1]); err != nil {
				t.Fatal(err)
			}
		}},
		{"segment header damaged", func(t *testing.T, files []string) {
			damageFile(t, files[len(files)-1], func(f *os.File, size int64) error {
				_, err := f.WriteAt([]byte("X"), 0)
				return err
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := storage.Options{SegmentSize: 8 << 10}
			l := openLog(t, dir, 1, opts)
			appendSync(t, l, seq(1, 30)...)
			l.Close()
			files := segments(t, dir)
			if len(files) < 3 {
				t.Fatalf("only %d segments", len(files))
			}
			tt.damage(t, files)
			before := snapshot(t, dir)
			l, err := storage.OpenWith(dir, 2, opts)
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			after := snapshot(t, dir)
			for name, b := range before {
				if name != "EPOCH" && after[name] != b {
					t.Errorf("%s changed by the failed Open", name)
				}
			}
		})
	}
}

func damageFile(t *testing.T, path string, damage func(f *os.File, size int64) error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := damage(f, fi.Size()); err != nil {
		t.Fatal(err)
	}
}

// TestLargeRecordsScanned: Open verifies records larger than the buffer
// its scan reads payloads through (64 KiB) over their whole length. In a
// seeded mix of sizes up to 300 KB, a byte flipped past the first 64 KiB
// of the last record's payload makes Open drop that record (a torn tail of
// the previous owner's file) and keep the others intact; once the log is
// inherited, a byte flipped there in an earlier record fails its Read
// (ErrCorrupt), and Open, which reads an inherited segment's headers only,
// keeps it.
func TestLargeRecordsScanned(t *testing.T) {
	seed := rand.Int64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(uint64(seed), 0))
	for round := range 4 {
		dir := t.TempDir()
		opts := storage.Options{SegmentSize: 64 << 20} // one segment
		l := openLog(t, dir, 1, opts)
		n := 3 + r.IntN(8)
		payloads := make([][]byte, n)
		for i := range payloads {
			size := r.IntN(300 << 10)
			if i == n-1 || i == 0 {
				size = 130<<10 + r.IntN(200<<10) // spans three buffers or more
			}
			payloads[i] = make([]byte, size)
			for j := range payloads[i] {
				payloads[i][j] = byte(r.Uint32())
			}
			if _, err := l.Append(storage.Record{CommitLSN: uint64(i), EndLSN: uint64(i + 1), Payload: payloads[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		l.Close()
		files := segments(t, dir)
		if len(files) != 1 {
			t.Fatalf("%d segment files; want 1", len(files))
		}
		// flip flips a byte past the first 64 KiB of record i's payload.
		flip := func(i int) {
			t.Helper()
			f, err := os.OpenFile(files[0], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			fromEnd := int64(0)
			for j := n - 1; j > i; j-- {
				fromEnd -= 40 + int64(len(payloads[j]))
			}
			at := int64(64<<10) + r.Int64N(int64(len(payloads[i])-64<<10))
			if err := flipAt(fromEnd-int64(len(payloads[i]))+at)(f, fi.Size()); err != nil {
				t.Fatal(err)
			}
		}

		flip(n - 1)
		l = openLog(t, dir, 2, opts)
		if s, _ := l.Durable(); s != uint64(n-1) {
			t.Fatalf("round %d: the last record's payload damaged: Open kept %d records; want %d", round, s, n-1)
		}
		got := readAll(t, l, 1)
		for i, rec := range got {
			if !bytes.Equal(rec.Payload, payloads[i]) {
				t.Fatalf("round %d: record %d differs after reopening", round, i+1)
			}
		}
		l.Close()

		flip(0)
		l = openLog(t, dir, 3, opts)
		if s, _ := l.Durable(); s != uint64(n-1) {
			t.Fatalf("round %d: an inherited record damaged: Open kept %d records; want %d", round, s, n-1)
		}
		if _, err := l.Read(1, 1); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("round %d: the damaged inherited record read: %v; want ErrCorrupt", round, err)
		}
		for i := 2; i <= n-1; i++ {
			recs, err := l.Read(uint64(i), 1)
			if err != nil || len(recs) != 1 || !bytes.Equal(recs[0].Payload, payloads[i-1]) {
				t.Fatalf("round %d: record %d after the damage of record 1: %v", round, i, err)
			}
		}
		l.Close()
	}
}
