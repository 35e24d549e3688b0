package shapes

import "testing"

func TestVisible(t *testing.T) {
	m := Meta{Xmin: 100, Xmax: 110, Xip: []uint64{103, 107}}
	for xid, want := range map[uint32]bool{99: true, 100: true, 103: false, 105: true, 107: false, 110: false, 200: false} {
		if got := m.visible(xid, 0); got != want {
			t.Errorf("visible(%d) = %v; want %v", xid, got, want)
		}
	}
	// Across a 32-bit wraparound: snapshot in epoch 1, xids near the edge.
	e1 := uint64(1) << 32
	m = Meta{Xmin: e1 + 5, Xmax: e1 + 10}
	if !m.visible(0xFFFFFFF0, 0) { // epoch 0, long committed
		t.Error("xid before the wraparound should be visible")
	}
	if m.visible(12, 0) {
		t.Error("xid after xmax should not be visible")
	}
	if widen(3, e1+0xFFFFFFF0) != 2*e1+3 {
		t.Errorf("widen(3) = %d", widen(3, e1+0xFFFFFFF0))
	}
}

// TestVisibleLongAfterSnapshot: a shape lives as long as clients use it;
// its snapshot's xids stay in meta.json. Once more than 2^31 transactions
// have started since, a new transaction's 32-bit xid is nearer to the xid
// a whole wraparound before it, which widen would map below the
// snapshot's xmin. A commit at or past SnapshotLSN is never visible, so
// its changes are not left out of the shape. (At 10,000 transactions a
// second that is two and a half days.)
func TestVisibleLongAfterSnapshot(t *testing.T) {
	e1 := uint64(1) << 32
	m := Meta{Xmin: e1 + 100, Xmax: e1 + 100, SnapshotLSN: 5000}
	later := m.Xmax + 1<<31 + 10         // a transaction that started long after the snapshot
	if m.visible(uint32(later), 1<<40) { // committed long after the snapshot
		t.Fatalf("xid %d (32-bit %d), 2^31+10 after the snapshot's xmax %d, is taken as visible in the snapshot: its changes are dropped",
			later, uint32(later), m.Xmax)
	}
}
