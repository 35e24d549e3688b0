package storage

import "testing"

// TestChunkBufferReused: the buffer a Sync wrote is kept, and the next
// chunk appends into it instead of growing a new one from nothing.
func TestChunkBufferReused(t *testing.T) {
	l, err := Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	payload := make([]byte, 1024)
	var end uint64
	appendN := func(n int) {
		t.Helper()
		for range n {
			end++
			if _, err := l.Append(Record{EndLSN: end, Payload: payload}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(100)
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.mu.RLock()
	spare := cap(l.spare)
	l.mu.RUnlock()
	if spare < 100*(recordHeaderSize+len(payload)) {
		t.Fatalf("spare buffer of %d bytes after syncing 100 records of 1 KiB, want the written chunk's", spare)
	}
	appendN(1)
	l.mu.RLock()
	got := cap(l.pending[0].buf)
	l.mu.RUnlock()
	if got != spare {
		t.Fatalf("next chunk's buffer has capacity %d, want the spare's %d", got, spare)
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	recs, err := l.Read(1, 200)
	if err != nil || len(recs) != 101 {
		t.Fatalf("read back %d records (%v), want 101", len(recs), err)
	}
}
