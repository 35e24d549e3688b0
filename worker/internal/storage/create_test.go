package storage

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestCreateLikeOpen: Create leaves the files that Open of an empty
// folder and SetMeta leave (but LOCK, which only a migration takes), and
// the log it makes behaves as one: records, acknowledgements,
// truncation, compaction and metadata survive later Opens, which fence
// it.
func TestCreateLikeOpen(t *testing.T) {
	meta := []byte(`{"shape":1}`)
	opened, created := t.TempDir(), t.TempDir()
	l, err := Open(opened, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetMeta(meta); err != nil {
		t.Fatal(err)
	}
	l.Close()
	c, err := Create(created, 3, meta)
	if err != nil {
		t.Fatal(err)
	}
	nonce := regexp.MustCompile(`^(o\.3\.1)\.[0-9a-f]{16}`)
	tree := func(dir string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || path == dir {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			body := "folder"
			if !d.IsDir() {
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				body = string(b)
			}
			if rel != lockFileName {
				out[nonce.ReplaceAllString(filepath.ToSlash(rel), "$1.N")] = body
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want, got := tree(opened), tree(created)
	if len(want) != len(got) {
		t.Fatalf("Create left %v, Open and SetMeta %v", got, want)
	}
	for rel, body := range want {
		if got[rel] != body {
			t.Fatalf("%s: Create wrote %q, Open and SetMeta %q", rel, got[rel], body)
		}
	}
	for _, d := range []string{opened, created} {
		if fi, err := os.Stat(filepath.Join(d, markerOwner.name())); err != nil || !fi.IsDir() {
			t.Fatalf("%s: format marker folder: %v", d, err)
		}
	}
	if string(c.Meta()) != string(meta) {
		t.Fatalf("Meta = %q, want %q", c.Meta(), meta)
	}
	c.Close()

	for seed := range uint64(4) {
		dir := t.TempDir()
		l, err := create(dir, 1, meta, 4<<10)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, 7))
		m := &model{meta: meta}
		var end uint64
		checkModel(t, "created", l, m)
		for epoch := uint64(2); epoch <= 6; epoch++ {
			for range 3 {
				m = randomWork(t, rng, l, m, &end)
				checkModel(t, "after work", l, m)
			}
			next, err := OpenWith(dir, epoch, Options{SegmentSize: 4 << 10})
			if err != nil {
				t.Fatalf("seed %d: Open(%d): %v", seed, epoch, err)
			}
			checkModel(t, "reopened", next, m)
			// The newer Open fenced the older writer.
			if _, err := l.Append(Record{EndLSN: end + 1, Epoch: l.Epoch()}); err == nil {
				if _, err := l.Sync(); !errors.Is(err, ErrFenced) {
					t.Fatalf("seed %d: Sync of the writer Open(%d) took over = %v, want ErrFenced", seed, epoch, err)
				}
			}
			l.Close()
			l = next
		}
		l.Close()
	}
}

// TestCreateRefuses: Create needs an empty folder that exists, an epoch and
// metadata within bounds.
func TestCreateRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"a folder that is not empty": func() error { _, err := Create(full, 1, nil); return err },
		"a missing folder":           func() error { _, err := Create(filepath.Join(full, "missing"), 1, nil); return err },
		"epoch 0":                    func() error { _, err := Create(t.TempDir(), 0, nil); return err },
		"metadata too large":         func() error { _, err := Create(t.TempDir(), 1, make([]byte, MaxMeta+1)); return err },
	} {
		if err := call(); err == nil {
			t.Errorf("Create with %s succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(full, "x")); err != nil {
		t.Fatalf("Create touched the folder it refused: %v", err)
	}
}
