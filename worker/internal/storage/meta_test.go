package storage

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestMetaCarried: metadata survives reopening, and every other change of
// STATE (acknowledgement, truncation, compaction) keeps it; a log that
// never had any has none.
func TestMetaCarried(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10}
	l, err := OpenWith(dir, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	if l.Meta() != nil {
		t.Fatalf("Meta of a new log = %q, want nil", l.Meta())
	}
	if err := l.SetMeta(nil); err == nil {
		t.Fatal("SetMeta(nil) accepted")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	m := &model{}
	var end uint64
	for epoch := uint64(1); epoch <= 8; epoch++ {
		m = m.clone()
		m.meta = randomMeta(rng)
		if err := l.SetMeta(m.meta); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			m = randomWork(t, rng, l, m, &end)
			checkModel(t, "after work", l, m)
		}
		l.Close()
		if l, err = OpenWith(dir, epoch+1, opts); err != nil {
			t.Fatal(err)
		}
		checkModel(t, "reopened", l, m)
	}
	l.Close()
}

// TestFormatMarker: every Open leaves the marker owner that makes a binary
// of the previous revision refuse the log (it lists it as the newest
// epoch), and this revision ignores it.
func TestFormatMarker(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	name := "o.18446744073709551615.0.0000000000000000"
	if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.IsDir() {
		t.Fatalf("marker folder %s: %v", name, err)
	}
	// What the previous revision's claim does: parse every owner folder
	// and give up before a newer epoch.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	refused := false
	for _, e := range entries {
		if o, ok := parseOwnerName(e.Name()); ok && o.epoch == math.MaxUint64 {
			refused = true
		}
	}
	if !refused {
		t.Fatal("the previous revision would not see a newer epoch")
	}
	// This revision goes on as before, and keeps the marker.
	for epoch := uint64(4); epoch < 7; epoch++ {
		l, err := Open(dir, epoch)
		if err != nil {
			t.Fatalf("Open(%d): %v", epoch, err)
		}
		l.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 2); !errors.Is(err, ErrFenced) {
		t.Fatalf("Open of an older epoch = %v, want ErrFenced", err)
	}
}
