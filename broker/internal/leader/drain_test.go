package leader

import (
	"testing"
	"time"
)

// TestDrainSent: the drain time a shutdown's Revoked tells the worker stays
// inside the broker's own drain timeout by a delivery margin (lease.proto
// B4), and is never negative.
func TestDrainSent(t *testing.T) {
	tests := []struct {
		name          string
		timeout, want time.Duration
	}{
		{"default", 20 * time.Second, 18 * time.Second},
		{"one second", time.Second, 900 * time.Millisecond},
		{"short: at least 100 ms margin", 500 * time.Millisecond, 400 * time.Millisecond},
		{"shorter than the margin", 50 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := drainSent(tt.timeout); got != tt.want {
				t.Fatalf("drainSent(%v) = %v, want %v", tt.timeout, got, tt.want)
			}
		})
	}
}
