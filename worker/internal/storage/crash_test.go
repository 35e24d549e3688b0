package storage_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

const (
	crashDirEnv   = "BATON_STORAGE_CRASH_DIR"
	crashEpochEnv = "BATON_STORAGE_CRASH_EPOCH"
	crashSegment  = 1 << 20
)

// TestCrash runs a writer in a child process, SIGKILLs it at a random
// moment, and checks on reopening that every EndLSN the child was told is
// durable is there, and that the log is intact. Each round's child is a
// new epoch continuing the log, as after a handoff.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	reported := map[uint64]bool{}
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for epoch := uint64(1); epoch <= uint64(rounds); epoch++ {
		runAndKill(t, dir, epoch, 1+rand.IntN(20), reported)

		tailBefore := lastSegmentSize(t, dir)
		l, err := storage.OpenWith(dir, epoch, storage.Options{SegmentSize: crashSegment})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", epoch, err)
		}
		recs := readAll(t, l, 64)
		l.Close()
		found := map[uint64]bool{}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("round %d: record %d has seq %d", epoch, i+1, r.Seq)
			}
			if i > 0 && (r.EndLSN <= recs[i-1].EndLSN || r.Epoch < recs[i-1].Epoch) {
				t.Fatalf("round %d: record %d (end %d, epoch %d) after end %d, epoch %d",
					epoch, r.Seq, r.EndLSN, r.Epoch, recs[i-1].EndLSN, recs[i-1].Epoch)
			}
			if r.Epoch > epoch || !bytes.Equal(r.Payload, payloadFor(r.EndLSN)) {
				t.Fatalf("round %d: record %d: bad epoch %d or payload", epoch, r.Seq, r.Epoch)
			}
			found[r.EndLSN] = true
		}
		for end := range reported {
			if !found[end] {
				t.Fatalf("round %d: end LSN %d was reported durable but is missing", epoch, end)
			}
		}
		t.Logf("round %d: %d records on disk, %d end LSNs reported durable, %d torn bytes cut",
			epoch, len(recs), len(reported), tailBefore-lastSegmentSize(t, dir))
	}
}

func lastSegmentSize(t *testing.T, dir string) int64 {
	t.Helper()
	files := segments(t, dir)
	if len(files) == 0 {
		return 0
	}
	fi, err := os.Stat(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// runAndKill starts the helper writer and SIGKILLs it after it reported
// kill durable positions plus a random delay; every reported position ends
// up in reported.
func runAndKill(t *testing.T, dir string, epoch uint64, kill int, reported map[uint64]bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashEpochEnv+"="+strconv.FormatUint(epoch, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	lines := bufio.NewScanner(stdout)
	seen := 0
	for lines.Scan() {
		end, err := strconv.ParseUint(lines.Text(), 10, 64)
		if err != nil {
			t.Fatalf("helper printed %q", lines.Text())
		}
		reported[end] = true
		if seen++; seen == kill {
			// The random moment: somewhere in the child's next batches.
			time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Lines the child wrote before dying were read above, up to EOF.
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, not SIGKILL; stderr:\n%s", err, stderr.String())
	}
}

// TestHelperProcess is the child of TestCrash: it appends and syncs batches
// of records forever, printing each durable EndLSN to stdout.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return // not a child of TestCrash
	}
	epoch, err := strconv.ParseUint(os.Getenv(crashEpochEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	l, err := storage.OpenWith(dir, epoch, storage.Options{SegmentSize: crashSegment})
	if err != nil {
		t.Fatal(err)
	}
	_, end := l.Durable()
	for {
		for range 1 + rand.IntN(400) {
			end += 1 + rand.Uint64N(3)
			if _, err := l.Append(record(end)); err != nil {
				t.Fatal(err)
			}
		}
		durable, err := l.Sync()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintln(os.Stdout, durable); err != nil {
			t.Fatal(err)
		}
	}
}
