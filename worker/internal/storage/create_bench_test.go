package storage_test

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// BenchmarkNewShapeLog measures what a new small shape costs in storage:
// a member folder of a set, a log with metadata in it, one record synced,
// the folder added, the metadata written again (complete), with 4 shapes
// made at a time as the worker makes them. "open" is the way before
// storage.Create (Open, SetMeta, Add, then the records), the same-run
// baseline.
func BenchmarkNewShapeLog(b *testing.B) {
	meta := []byte(`{"handle":"x","definition":{"table":"items"},"snapshot_partial":true}`)
	for _, way := range []string{"open", "create"} {
		b.Run(way, func(b *testing.B) {
			root := b.TempDir()
			set, err := storage.OpenSet(filepath.Join(root, "shapes"), 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer set.Close()
			var mu sync.Mutex
			n := 0
			b.SetParallelism(2) // 2 × GOMAXPROCS (2 here): 4 at a time
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					n++
					name := "s" + strconv.Itoa(n)
					mu.Unlock()
					if err := newShapeLog(set, name, way, meta); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			os.RemoveAll(root)
		})
	}
}

func newShapeLog(set *storage.Set, name, way string, meta []byte) error {
	dir, err := set.NewFolder(name)
	if err != nil {
		return err
	}
	var l *storage.Log
	if way == "open" {
		// Open, SetMeta, Add, the records synced, SetMeta.
		if l, err = storage.Open(dir, 1); err == nil {
			err = l.SetMeta(meta)
		}
		if err == nil {
			err = set.Add(dir)
		}
		if err == nil {
			_, err = l.Append(record(1))
		}
		if err == nil {
			_, err = l.Sync()
		}
	} else {
		// Create, the records synced (with the log), Add, SetMeta.
		if l, err = storage.Create(dir, 1, meta); err == nil {
			_, err = l.Append(record(1))
		}
		if err == nil {
			_, err = l.Sync()
		}
		if err == nil {
			err = set.Add(dir)
		}
	}
	if err == nil {
		err = l.SetMeta(meta)
	}
	if l != nil {
		l.Close()
	}
	return err
}
