package storage_test

import (
	"errors"
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
// Open instead of silently dropping records.
func TestCorruptionBeforeTail(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, files []string)
	}{
		{"byte flipped in a full segment", func(t *testing.T, files []string) {
			damageFile(t, files[0], flipAt(-5))
		}},
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
