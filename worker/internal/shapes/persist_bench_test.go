package shapes

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// benchShape opens a registry in a temporary folder with one shape.
func benchShape(b *testing.B) *Shape {
	b.Helper()
	e := &regEnv{dir: b.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		r.Close()
		stream.Close()
	})
	s, err := e.newShape(r, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkPersist is the write of a shape's metadata alone (its last use
// changed; no records to sync), as the persist loop does for a shape in
// use.
func BenchmarkPersist(b *testing.B) {
	s := benchShape(b)
	b.ResetTimer()
	for range b.N {
		s.mu.Lock()
		s.meta.LastUsedAt = time.Now().UTC()
		s.mu.Unlock()
		if err := s.persist(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPersistRouted is a transaction routed to a shape (written, not
// synced), then the shape persisted: the log synced and the metadata
// written, as the persist loop does for a shape that got records.
func BenchmarkPersistRouted(b *testing.B) {
	s := benchShape(b)
	lsn := uint64(1000)
	b.ResetTimer()
	for i := range b.N {
		lsn += 10
		p := binary.LittleEndian.AppendUint64(nil, 0)
		p = append(p, `{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1"},"headers":{"operation":"update"}}`...)
		seq, err := s.log.Append(storage.Record{CommitLSN: lsn, EndLSN: lsn + 1, Payload: p})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.log.Write(); err != nil {
			b.Fatal(err)
		}
		s.advance([]entry{{seq: seq, off: Offset{TX: lsn}, size: len(p) - 8}}, lsn, uint64(i+1))
		if err := s.persist(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate is the storage part of creating a shape (a snapshot of
// one record): its folder, its log, its metadata, and its publication.
func BenchmarkCreate(b *testing.B) {
	e := &regEnv{dir: b.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		r.Close()
		stream.Close()
	})
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for range b.N {
		if _, err := e.newShape(r, rng); err != nil {
			b.Fatal(err)
		}
	}
}
