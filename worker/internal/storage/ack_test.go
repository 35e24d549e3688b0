package storage_test

import (
	"errors"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

func TestRecordAck(t *testing.T) {
	dir := t.TempDir()
	l, err := storage.Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(storage.Record{CommitLSN: 90, EndLSN: 100, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		confirmed uint64
		want      bool
	}{
		{"below the last record", 50, true},
		{"at the last record", 100, true},
		{"beyond it, nothing acknowledged", 150, false},
	}
	for _, tt := range tests {
		if got := l.Continuous(tt.confirmed); got != tt.want {
			t.Errorf("%s: Continuous(%d) = %v, want %v", tt.name, tt.confirmed, got, tt.want)
		}
	}
	if err := l.RecordAck(200); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordAck(150); err != nil { // lower: no-op
		t.Fatal(err)
	}
	if !l.Continuous(200) || l.Continuous(201) {
		t.Fatalf("after RecordAck(200): Continuous(200)=%v Continuous(201)=%v", l.Continuous(200), l.Continuous(201))
	}
	// A newer epoch sees the watermark and fences the old writer.
	l2, err := storage.Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Acked() != 200 {
		t.Fatalf("reopened Acked = %d, want 200", l2.Acked())
	}
	if err := l.RecordAck(300); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("old writer's RecordAck = %v, want ErrFenced", err)
	}
	if l2.Acked() != 200 {
		t.Fatalf("fenced RecordAck changed the watermark to %d", l2.Acked())
	}
	l.Close()
}
