package pgtest

import (
	"net"
	"strings"
	"testing"
)

// Missing programs are an error naming the command that installs them (the
// tests fail with it; they do not skip).
func TestFindBinDirMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := debianGlob
	debianGlob = t.TempDir() + "/*/bin"
	t.Cleanup(func() { debianGlob = old })

	_, err := FindBinDir()
	if err == nil {
		t.Fatal("FindBinDir found programs on an empty PATH")
	}
	if !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("error %q lacks the install command %q", err, InstallHint)
	}
	if InstallHint != "apt-get update && apt-get install -y postgresql" {
		t.Errorf("InstallHint = %q", InstallHint)
	}
}

// A port taken between picking it and the server's bind makes New retry on
// another port, without leaving the failed postmaster behind.
func TestPortTakenRetries(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port

	picks := 0
	old := pickPort
	pickPort = func() (int, error) {
		picks++
		if picks == 1 {
			return taken, nil
		}
		return freePort()
	}
	t.Cleanup(func() { pickPort = old })

	c := Start(t, Options{})
	if picks != 2 {
		t.Errorf("ports picked: %d, want 2", picks)
	}
	if c.Port() == taken {
		t.Errorf("cluster on the taken port %d", taken)
	}
	if !strings.Contains(c.Log(), "Address already in use") {
		t.Errorf("log does not show the conflict:\n%s", c.Log())
	}
}
