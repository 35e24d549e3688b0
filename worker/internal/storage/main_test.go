package storage_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestMain fails the run if a goroutine started by this package or its
// tests outlives them.
//
// With BATON_TEST_OPEN_FILES=n, the process keeps at most n active
// segments open (storage.SetOpenFileLimit), so every test also runs with
// logs closing and reopening their files between writes: `make test` runs
// the package once so (Makefile).
func TestMain(m *testing.M) {
	if v := os.Getenv("BATON_TEST_OPEN_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "BATON_TEST_OPEN_FILES=%q: not a number\n", v)
			os.Exit(2)
		}
		storage.SetOpenFileLimit(n)
	}
	code := m.Run()
	if code == 0 {
		if leaked := awaitNoLeaks(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func awaitNoLeaks(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "worker/internal/storage") && !strings.Contains(g, "TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openLog opens dir for epoch and closes it when the test ends.
func openLog(t *testing.T, dir string, epoch uint64, opts storage.Options) *storage.Log {
	t.Helper()
	l, err := storage.OpenWith(dir, epoch, opts)
	if err != nil {
		t.Fatalf("OpenWith(%s, %d): %v", dir, epoch, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// payloadFor is the test payload of the record with end LSN end: its size
// (0 to 4095 bytes) and bytes (byte i is end+7i, modulo 256) derive from end,
// so any record can be checked on its own. It is a slice of pattern, not to
// be modified: 7*183 = 1 modulo 256, so pattern[183*end+i] = end+7i.
func payloadFor(end uint64) []byte {
	size := int(end * 2654435761 % 4096)
	off := int(uint8(end * 183))
	return pattern[off : off+size : off+size]
}

var pattern = func() []byte {
	b := make([]byte, 256+4096)
	for j := range b {
		b[j] = byte(7 * j)
	}
	return b
}()

func record(end uint64) storage.Record {
	return storage.Record{CommitLSN: end - 1, EndLSN: end, Payload: payloadFor(end)}
}

// appendSync appends records with the given end LSNs and syncs them.
func appendSync(t *testing.T, l *storage.Log, ends ...uint64) uint64 {
	t.Helper()
	for _, end := range ends {
		if _, err := l.Append(record(end)); err != nil {
			t.Fatalf("Append(end %d): %v", end, err)
		}
	}
	durable, err := l.Sync()
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return durable
}

// readAll reads every durable record from seq 1, in batches of batch.
func readAll(t *testing.T, l *storage.Log, batch int) []storage.Record {
	t.Helper()
	var all []storage.Record
	for {
		recs, err := l.Read(uint64(len(all))+1, batch)
		if err != nil {
			t.Fatalf("Read(%d): %v", len(all)+1, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
	}
}

// checkRecords verifies that recs are seq 1.. with the given end LSNs, the
// expected payloads and epochs that never decrease.
func checkRecords(t *testing.T, recs []storage.Record, ends []uint64) {
	t.Helper()
	if len(recs) != len(ends) {
		t.Fatalf("got %d records, want %d", len(recs), len(ends))
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.EndLSN != ends[i] || r.CommitLSN != ends[i]-1 {
			t.Fatalf("record %d = seq %d commit %d end %d, want seq %d end %d", i, r.Seq, r.CommitLSN, r.EndLSN, i+1, ends[i])
		}
		if string(r.Payload) != string(payloadFor(r.EndLSN)) {
			t.Fatalf("record %d: payload differs", r.Seq)
		}
		if i > 0 && r.Epoch < recs[i-1].Epoch {
			t.Fatalf("record %d: epoch %d after %d", r.Seq, r.Epoch, recs[i-1].Epoch)
		}
	}
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// segments returns the log's segment files, in the log's folder and in its
// owners' folders, in order of first seq (files of the same first seq in
// owner order).
func segments(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.seg", "o.*/*.seg"} {
		f, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f...)
	}
	sort.SliceStable(files, func(i, j int) bool { return filepath.Base(files[i])[:20] < filepath.Base(files[j])[:20] })
	return files
}

// snapshot returns the contents of every file under dir, by path relative
// to it.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
