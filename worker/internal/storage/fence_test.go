package storage_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestFencing: once epoch 6 has opened the directory, the epoch-5 writer
// cannot write a byte, and the new writer continues from what is on disk.
func TestFencing(t *testing.T) {
	tests := []struct {
		name     string
		newEpoch uint64
	}{
		{"newer epoch", 6},
		{"same epoch opened again", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			old := openLog(t, dir, 5, storage.Options{SegmentSize: 8 << 10})
			appendSync(t, old, seq(1, 3)...)
			for _, end := range seq(4, 20) { // pending, some bound for new segments
				if _, err := old.Append(record(end)); err != nil {
					t.Fatal(err)
				}
			}
			waitErr := make(chan error, 1)
			go func() { waitErr <- old.Wait(context.Background(), 3) }()

			cur := openLog(t, dir, tt.newEpoch, storage.Options{})
			files := snapshot(t, dir)

			if _, err := old.Sync(); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("old writer's Sync = %v, want ErrFenced", err)
			}
			if got := snapshot(t, dir); !maps.Equal(got, files) {
				t.Fatal("the fenced writer changed the directory")
			}
			select {
			case err := <-waitErr:
				if !errors.Is(err, storage.ErrFenced) {
					t.Fatalf("Wait on the fenced log = %v, want ErrFenced", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait on the fenced log did not return")
			}
			if _, err := old.Append(record(21)); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("old writer's Append = %v, want ErrFenced", err)
			}
			if _, err := old.Sync(); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("old writer's second Sync = %v, want ErrFenced", err)
			}
			// What it made durable before stays readable.
			checkRecords(t, readAll(t, old, 10), seq(1, 3))

			if s, end := cur.Durable(); s != 3 || end != 3 {
				t.Fatalf("new writer's Durable = %d, %d; want 3, 3", s, end)
			}
			if s, err := cur.Append(record(10)); err != nil || s != 4 {
				t.Fatalf("new writer's Append = %d, %v; want seq 4", s, err)
			}
			appendSync(t, cur)
			checkRecords(t, readAll(t, cur, 10), []uint64{1, 2, 3, 10})
			if got := snapshot(t, dir); maps.Equal(got, files) {
				t.Fatal("the new writer's Sync changed nothing")
			}
		})
	}
}

func TestOpenOlderEpoch(t *testing.T) {
	tests := []struct {
		name   string
		epoch  uint64
		fenced bool
	}{
		{"older", 4, true},
		{"just older", 5, true},
		{"same", 6, false},
		{"newer", 7, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 6, storage.Options{})
			appendSync(t, l, 1, 2)
			before := snapshot(t, dir)

			stale, err := storage.Open(dir, tt.epoch)
			if !tt.fenced {
				if err != nil {
					t.Fatalf("Open(%d) = %v", tt.epoch, err)
				}
				stale.Close()
				return
			}
			if err == nil {
				stale.Close()
				t.Fatalf("Open(%d) after 6 succeeded", tt.epoch)
			}
			if !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("Open(%d) = %v, want ErrFenced", tt.epoch, err)
			}
			if !maps.Equal(snapshot(t, dir), before) {
				t.Fatal("the refused Open changed the directory")
			}
			// The epoch-6 writer is unaffected.
			if end := appendSync(t, l, 3); end != 3 {
				t.Fatalf("Sync = %d", end)
			}
		})
	}
}
