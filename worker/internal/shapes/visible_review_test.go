package shapes

import "testing"

// A shape lives as long as clients use it; its snapshot's xids stay in
// meta.json. Once more than 2^31 transactions have started since, a new
// transaction's 32-bit xid is nearer to the xid a whole wraparound before
// it, so widen maps it below the snapshot's xmin and visible says its
// changes are in the snapshot: they are silently left out of the shape.
// (At 10,000 transactions a second that is two and a half days.)
func TestReviewVisibleLongAfterSnapshot(t *testing.T) {
	e1 := uint64(1) << 32
	m := Meta{Xmin: e1 + 100, Xmax: e1 + 100, SnapshotLSN: 5000}
	later := m.Xmax + 1<<31 + 10         // a transaction that started long after the snapshot
	if m.visible(uint32(later), 1<<40) { // committed long after the snapshot

		t.Fatalf("xid %d (32-bit %d), 2^31+10 after the snapshot's xmax %d, is taken as visible in the snapshot: its changes are dropped",
			later, uint32(later), m.Xmax)
	}
}
