package freeport

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	from, to := band()
	mu.Lock()
	clear(picked) // the picks of the tests before
	mu.Unlock()
	seen := map[int]bool{}
	for range (to - from) / 2 {
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

// Two processes that pick at once pick from disjoint bands: a child process
// (this test binary) claims its band and reports it while this one holds
// its own.
func TestProcessesPickFromDisjointBands(t *testing.T) {
	if ephemeralStart() < high {
		t.Skip("the ephemeral range overlaps the picking range here")
	}
	if os.Getenv("BATON_FREEPORT_CHILD") != "" {
		return // the child's part is TestMain's
	}
	from, to := band()
	if bandLock == nil {
		t.Skip("no band could be claimed here (every band held, or no temporary directory)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BATON_FREEPORT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var cf, ct int
	var ports []int
	for i, f := range strings.Fields(string(out)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("child printed %q", out)
		}
		switch i {
		case 0:
			cf = n
		case 1:
			ct = n
		default:
			ports = append(ports, n)
		}
	}
	if ct <= cf || len(ports) == 0 {
		t.Fatalf("child printed %q", out)
	}
	if cf == low && ct == high {
		t.Skip("the child found every other band held (other test processes): it picks from the whole range")
	}
	if cf < to && from < ct {
		t.Fatalf("the child's band [%d, %d) overlaps this process's [%d, %d)", cf, ct, from, to)
	}
	for _, p := range ports {
		if p < cf || p >= ct {
			t.Fatalf("the child picked %d outside its band [%d, %d)", p, cf, ct)
		}
	}
}

// TestMain: as the child of TestProcessesPickFromDisjointBands, claim a
// band, pick in it, and print the band and the picks.
func TestMain(m *testing.M) {
	if os.Getenv("BATON_FREEPORT_CHILD") != "" {
		from, to := band()
		fmt.Print(from, " ", to)
		for range 20 {
			p, err := Pick()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Print(" ", p)
		}
		fmt.Println()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
