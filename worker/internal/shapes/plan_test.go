package shapes

import (
	"errors"
	"testing"
)

// TestPlanBeyondRoutedOffset: an offset past what the shape was routed to
// but within the stream log (a shape log made again after a machine crash,
// while the router catches up) is "nothing new yet"; past the stream log it
// is out of bounds.
func TestPlanBeyondRoutedOffset(t *testing.T) {
	s := &Shape{changed: make(chan struct{}), routedLSN: 100,
		index:     []entry{{seq: 1, off: Offset{TX: 0, Op: 0}}, {seq: 2, off: Offset{TX: 90, Op: 1}}},
		streamEnd: func() uint64 { return 200 }}
	p, err := s.Plan(Offset{TX: 150, Op: 3})
	if err != nil || !p.Empty() || !p.UpToDate || p.Last != (Offset{TX: 150, Op: 3}) {
		t.Fatalf("Plan(150_3) = %+v, %v; want an empty, up-to-date plan at 150_3", p, err)
	}
	if _, err := s.Plan(Offset{TX: 250}); !errors.Is(err, ErrOutOfBounds) {
		t.Fatalf("Plan(250_0) = %v; want ErrOutOfBounds", err)
	}
	if p, err := s.Plan(Offset{TX: 80}); err != nil || p.Empty() {
		t.Fatalf("Plan(80_0) = %+v, %v; want the record at 90_1", p, err)
	}
}
