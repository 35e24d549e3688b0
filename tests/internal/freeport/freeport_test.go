package freeport

import (
	"net"
	"strconv"
	"testing"
)

// A picked port is below the ephemeral range when that range leaves room,
// and can be listened on.
func TestPick(t *testing.T) {
	for range 20 {
		port, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if ephemeralStart() >= high && (port < low || port >= high) {
			t.Fatalf("port %d is outside [%d, %d) although the ephemeral range starts at %d", port, low, high, ephemeralStart())
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("listen on the picked port %d: %v", port, err)
		}
		l.Close()
	}
}

// A port something listens on is not picked.
func TestPickSkipsBusy(t *testing.T) {
	if ephemeralStart() < high {
		t.Skip("the ephemeral range overlaps the picking range here")
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(low))
	if err != nil {
		t.Skipf("port %d is not free here: %v", low, err)
	}
	defer l.Close()
	if free(low) {
		t.Fatalf("free(%d) is true while a listener holds it", low)
	}
}

// Picks in a row, none of them bound, are all different.
func TestPickTwiceNotSame(t *testing.T) {
	if ephemeralStart() < high {
		t.Skip("the ephemeral range overlaps the picking range here")
	}
	seen := map[int]bool{}
	for range 2000 {
		port, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d picked twice", port)
		}
		seen[port] = true
	}
}
