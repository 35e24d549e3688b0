package storage_test

import (
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// BenchmarkReopen measures a takeover: Open of a small log (100 records)
// by a newer epoch, then Close, as every shape log sees at a worker start.
func BenchmarkReopen(b *testing.B) {
	dir := b.TempDir()
	l, err := storage.Open(dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	for end := uint64(1); end <= 100; end++ {
		if _, err := l.Append(record(end)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	l.Close()
	epoch := uint64(2)
	for b.Loop() {
		l, err := storage.Open(dir, epoch)
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
		epoch++
	}
}
