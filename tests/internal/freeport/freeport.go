// Package freeport picks TCP ports for test servers outside the kernel's
// ephemeral range.
//
// A port the kernel hands out for "127.0.0.1:0" comes from the ephemeral
// range (net.ipv4.ip_local_port_range), the same range every outgoing
// connection takes its source port from. Between the moment such a port is
// picked and the moment the server binds it, any connection made by a test
// running in parallel (a pgx pool, a gRPC client, a proxy) can take it, and
// the server then fails with "address already in use". The kernel never
// assigns a port below the ephemeral range on its own, so a port picked at
// random there is only taken by another picker's choice.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// low and high bound the range picked from when the ephemeral range starts
// at or above high (Linux's default starts at 32768).
const (
	low  = 20000
	high = 32768
	// bands is how many processes can pick at once without sharing ports;
	// each band has (high-low)/bands ports.
	bands = 16
)

// Pick returns a TCP port on 127.0.0.1 that was free a moment ago, chosen at
// random below the ephemeral range. When that range cannot be used it falls
// back to a port the kernel picks.
func Pick() (int, error) {
	if ephemeralStart() >= high {
		from, to := band()
		for range 64 {
			port := from + rand.IntN(to-from)
			if fresh(port, to-from) && free(port) {
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	mu     sync.Mutex
	picked = map[int]bool{}

	bandOnce         sync.Once
	bandFrom, bandTo int
	bandLock         *os.File // held open: its flock claims the band
)

// band returns the part of the range this process picks from: the band
// whose lock file it holds, or the whole range when it holds none.
func band() (from, to int) {
	bandOnce.Do(func() {
		bandFrom, bandTo = low, high
		dir := filepath.Join(os.TempDir(), "baton-freeport")
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return
		}
		_ = os.Chmod(dir, 0o777) // other users' test runs share it
		width := (high - low) / bands
		first := rand.IntN(bands)
		for i := range bands {
			k := (first + i) % bands
			// Read-only is enough for flock, and works on a file another
			// user created (the umask may leave it 0644).
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("band-%d", k)), os.O_RDONLY|os.O_CREATE, 0o666)
			if err != nil {
				continue
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
				f.Close()
				continue
			}
			bandLock = f
			bandFrom, bandTo = low+k*width, low+(k+1)*width
			return
		}
	})
	return bandFrom, bandTo
}

// fresh reports whether port was not picked before by this process (two
// picks in a row, before either port is bound, must not be the same), and
// marks it picked. Once half of the n ports picked from were picked, it
// starts over.
func fresh(port, n int) bool {
	mu.Lock()
	defer mu.Unlock()
	if picked[port] {
		return false
	}
	if len(picked) >= n/2 {
		clear(picked)
	}
	picked[port] = true
	return true
}

// free reports whether port can be listened on now.
func free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralStart is the first port of the kernel's ephemeral range, 0 when
// it is unknown.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return n
}
