package storage

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The files of fencing; see the package documentation.
const (
	ownerPrefix   = "o."
	liveFileName  = "LIVE"
	stateFileName = "STATE"
	tmpSuffix     = ".tmp"
)

// ownerID identifies one Open of a log: its epoch, a number above every
// Open the directory showed it, and a random nonce that makes its folder
// name unique even when two Opens pick the same number. Owners are ordered
// by (epoch, open, nonce); the highest one owns the log.
type ownerID struct {
	epoch, open, nonce uint64
}

// legacyOwner names the state migrated from a format-1 directory; it ranks
// below every Open.
var legacyOwner = ownerID{}

func (o ownerID) name() string {
	return fmt.Sprintf("%s%d.%d.%016x", ownerPrefix, o.epoch, o.open, o.nonce)
}

func (o ownerID) String() string { return fmt.Sprintf("epoch %d open %d", o.epoch, o.open) }

func (o ownerID) less(p ownerID) bool {
	if o.epoch != p.epoch {
		return o.epoch < p.epoch
	}
	if o.open != p.open {
		return o.open < p.open
	}
	return o.nonce < p.nonce
}

// parseOwnerName parses an owner folder's name, strictly.
func parseOwnerName(name string) (ownerID, bool) {
	rest, ok := strings.CutPrefix(name, ownerPrefix)
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 || len(parts[2]) != 16 {
		return ownerID{}, false
	}
	var o ownerID
	var err1, err2, err3 error
	o.epoch, err1 = strconv.ParseUint(parts[0], 10, 64)
	o.open, err2 = strconv.ParseUint(parts[1], 10, 64)
	o.nonce, err3 = strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || o.name() != name {
		return ownerID{}, false
	}
	return o, true
}

// markerOwner names a folder that every log of this version holds: an
// owner above every epoch, with neither LIVE nor STATE, that never writes
// and is never removed. This version ignores it. A binary that predates
// metadata in STATE (SetMeta, which the fenced shapes rely on) lists it as
// a newer epoch and refuses the log with ErrFenced, rather than read a
// STATE it would call corrupt or remove shape folders of a layout it does
// not know (as EPOCH makes format-1 binaries refuse format 2).
var markerOwner = ownerID{epoch: math.MaxUint64}

// listOwners returns the owner folders in root, lowest first.
func listOwners(root string) ([]ownerID, error) {
	owners, _, err := readOwners(root)
	return owners, err
}

// readOwners returns the owner folders in root, lowest first, and whether
// root holds markerOwner's folder.
func readOwners(root string) (owners []ownerID, marked bool, err error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, false, fmt.Errorf("list owners: %w", err)
	}
	for _, e := range entries {
		o, ok := parseOwnerName(e.Name())
		switch {
		case !ok || !e.IsDir():
		case o == markerOwner:
			marked = true
		default:
			owners = append(owners, o)
		}
	}
	sort.Slice(owners, func(i, j int) bool { return owners[i].less(owners[j]) })
	return owners, marked, nil
}

// mark creates markerOwner's folder in root. Its name is made durable by
// the fsync of root that the Open then does once its STATE is written.
func mark(root string) error {
	if err := os.Mkdir(filepath.Join(root, markerOwner.name()), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create format marker: %w", err)
	}
	return nil
}

// newerThan returns an owner in owners that outranks me in epoch, or, when
// sameEpoch, in any way; ok is false if there is none.
func newerThan(owners []ownerID, me ownerID, sameEpoch bool) (ownerID, bool) {
	for _, o := range owners {
		if o.epoch > me.epoch || (sameEpoch && me.less(o)) {
			return o, true
		}
	}
	return ownerID{}, false
}

// claim makes a new owner of root for epoch: it creates the owner's folder
// and its LIVE file, then fences every lower owner by removing theirs. It
// never waits for another process. It fails with ErrFenced when an owner
// of a newer epoch, or a newer Open of the same epoch, exists. On failure
// it removes what it created.
func claim(root string, epoch uint64) (ownerID, error) {
	owners, marked, err := readOwners(root)
	if err != nil {
		return ownerID{}, err
	}
	if !marked {
		if err := mark(root); err != nil {
			return ownerID{}, err
		}
	}
	me := ownerID{epoch: epoch, open: 1, nonce: randomNonce()}
	if o, ok := newerThan(owners, me, false); ok {
		return ownerID{}, fmt.Errorf("%w: stored epoch %d is newer than %d", ErrFenced, o.epoch, epoch)
	}
	for _, o := range owners {
		me.open = max(me.open, o.open+1)
	}
	dir := filepath.Join(root, me.name())
	if err := os.Mkdir(dir, 0o755); err != nil {
		return ownerID{}, fmt.Errorf("create owner folder: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, liveFileName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = fence(root, me)
	}
	if err != nil {
		os.RemoveAll(dir)
		return ownerID{}, err
	}
	return me, nil
}

// fence lists the owners again, now that me's LIVE file exists, and removes
// the LIVE file of every owner below me. Any Open that lists the owners
// later sees me; any that listed them earlier is seen here. So of two
// concurrent claims, the lower one either is fenced here or sees the higher
// one and gives up.
func fence(root string, me ownerID) error {
	owners, err := listOwners(root)
	if err != nil {
		return err
	}
	if o, ok := newerThan(owners, me, true); ok {
		return fmt.Errorf("%w: the log now belongs to %s, this writer is %s", ErrFenced, o, me)
	}
	for _, o := range owners {
		if !o.less(me) {
			continue
		}
		if err := os.Remove(filepath.Join(root, o.name(), liveFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("fence %s: %w", o, err)
		}
	}
	return nil
}

func randomNonce() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// checkOwner reports ErrFenced once a newer Open removed this Open's LIVE
// file; see checkLive.
func (l *Log) checkOwner() error { return checkLive(l.live, l.me) }

// checkLive reports ErrFenced once a newer Open removed the LIVE file live
// of owner me. It opens the file rather than only looking its name up, so
// that on NFS (close-to-open consistency) the client asks the server
// instead of trusting a cached name. It never waits for another process.
func checkLive(live string, me ownerID) error {
	fd, err := openLive(live, me)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// openLive opens owner me's LIVE file live (a bare descriptor: two system
// calls per check, on the path of every write).
func openLive(live string, me ownerID) (int, error) {
	for {
		fd, err := unix.Open(live, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOENT):
			return -1, fmt.Errorf("%w: a newer Open took over from this writer (%s)", ErrFenced, me)
		default:
			return -1, fmt.Errorf("check owner: %w", &fs.PathError{Op: "open", Path: live, Err: err})
		}
	}
}

// writing marks a write in progress, from the check before it to the check
// after it: it holds the owner's LIVE file open with a shared flock(2).
// Nobody ever waits for that lock (a newer Open removes the file without
// looking at it); it is there so that an operator, or a test, can see in
// /proc/locks a process stopped in the middle of a write.
type writing struct {
	fd   int
	live string
	me   ownerID
}

// beginWrite checks ownership and marks the write in progress.
//
// A log Create made is made durable first (settle), so that what the
// write then makes durable is durable with the log that holds it.
func (l *Log) beginWrite() (writing, error) {
	if err := l.settle(nil); err != nil {
		return writing{fd: -1}, err
	}
	return beginWriteAt(l.live, l.me)
}

// beginWriteAt checks that owner me still holds its LIVE file live, and
// marks a write in progress.
func beginWriteAt(live string, me ownerID) (writing, error) {
	fd, err := openLive(live, me)
	if err != nil {
		return writing{fd: -1}, err
	}
	_ = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	return writing{fd: fd, live: live, me: me}, nil
}

// finish checks ownership again and ends the mark. Nothing written since
// beginWrite may be published unless it returns nil.
func (w writing) finish() error {
	err := checkLive(w.live, w.me)
	if w.fd >= 0 {
		unix.Close(w.fd) // releases the flock
	}
	return err
}

// WriteFileAtomic makes dir/name hold b, durably, or leaves it unchanged:
// a temporary file is written and fsynced, renamed over name, and the
// folder fsynced.
func WriteFileAtomic(dir, name string, b []byte) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making the names created, renamed or removed
// in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
