package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Format 1 (before per-owner folders): the log's folder held EPOCH
// ("epoch <n> open <m>\n"), LOCK (flocked by every write), ACKED,
// COMPACTED and the segment files. Writers of that format check EPOCH,
// under the flock, before every change.
const (
	epochFileName = "EPOCH"
	lockFileName  = "LOCK"
)

// migratedEpoch is the epoch format 2 writes into EPOCH: above any real
// one, so a format-1 writer still running is fenced at its next write, and
// a format-1 binary refuses to open the log.
const migratedEpoch = math.MaxUint64

// legacyEpoch is what a format-1 EPOCH file says.
type legacyEpoch struct{ epoch, open uint64 }

func (o legacyEpoch) String() string { return fmt.Sprintf("epoch %d open %d", o.epoch, o.open) }

func readLegacyEpoch(root string) (legacyEpoch, error) {
	b, err := os.ReadFile(filepath.Join(root, epochFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return legacyEpoch{}, nil
	}
	if err != nil {
		return legacyEpoch{}, fmt.Errorf("read epoch: %w", err)
	}
	var o legacyEpoch
	if _, err := fmt.Sscanf(string(b), "epoch %d open %d", &o.epoch, &o.open); err != nil || o.String()+"\n" != string(b) {
		return legacyEpoch{}, fmt.Errorf("%w: %s holds %q", ErrCorrupt, epochFileName, b)
	}
	return o, nil
}

// migrated reports whether root's EPOCH says format 2.
func migrated(root string) bool {
	o, err := readLegacyEpoch(root)
	return err == nil && o.epoch == migratedEpoch
}

// migrate makes root a format-2 log, once: a new folder gets EPOCH, and a
// format-1 log is fenced (EPOCH, under its flock, as its writers expect)
// and described by the STATE of legacyOwner, whose inherited segments are
// its files in place. This is the only place format 2 takes the flock, and
// only until EPOCH says format 2: a format-1 writer frozen inside its
// critical section delays the first format-2 Open of its log, never a
// later one.
func migrate(root string, epoch uint64) error {
	if migrated(root) {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(root, lockFileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	defer f.Close()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	o, err := readLegacyEpoch(root)
	if err != nil || o.epoch == migratedEpoch {
		return err
	}
	if o.epoch > epoch {
		return fmt.Errorf("%w: stored epoch %d is newer than %d", ErrFenced, o.epoch, epoch)
	}
	if err := migrateFiles(root, o.epoch); err != nil {
		return err
	}
	next := legacyEpoch{epoch: migratedEpoch, open: o.open + 1}
	if err := WriteFileAtomic(root, epochFileName, []byte(next.String()+"\n")); err != nil {
		return fmt.Errorf("write epoch: %w", err)
	}
	return nil
}

// migrateFiles writes legacyOwner's STATE for the format-1 files in root,
// if there are any. The caller holds the format-1 lock.
func migrateFiles(root string, epoch uint64) error {
	if err := removeLegacyLeftovers(root); err != nil {
		return err
	}
	c, err := removeGarbage(root)
	if err != nil {
		return err
	}
	files, _, _, err := segmentFiles(root)
	if err != nil {
		return err
	}
	acked, err := readAck(root)
	if err != nil {
		return err
	}
	st := state{epoch: epoch, acked: acked, gen: c.gen, upTo: c.upTo}
	var lastSeq, lastEnd uint64
	var lastPath string
	for i, sf := range files {
		path := filepath.Join(root, sf.name)
		if i > 0 && sf.first != lastSeq+1 {
			return fmt.Errorf("%w: segment %s follows record %d", ErrCorrupt, path, lastSeq)
		}
		res, err := scanSegment(path, sf.first, lastEnd, -1)
		if err != nil {
			return err
		}
		n := len(res.seg.offsets)
		if i < len(files)-1 && (res.tail != nil || n == 0) {
			return fmt.Errorf("%w: %s: %v (%d records)", ErrCorrupt, path, res.tail, n)
		}
		if n == 0 {
			continue
		}
		st.inherited = append(st.inherited, fixedSegment{path: sf.name, first: sf.first, count: n, size: res.seg.size})
		lastSeq, lastEnd, lastPath = sf.first+uint64(n)-1, res.lastEnd, path
	}
	if len(st.inherited) == 0 && acked == 0 {
		return nil
	}
	if lastPath != "" {
		// What a killed format-1 writer wrote may not have been fsynced.
		if err := syncFile(lastPath); err != nil {
			return err
		}
	}
	dir := filepath.Join(root, legacyOwner.name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create owner folder: %w", err)
	}
	if err := WriteFileAtomic(dir, stateFileName, st.encode()); err != nil {
		return fmt.Errorf("write %s: %w", stateFileName, err)
	}
	return syncDir(root)
}

// removeLegacyLeftovers removes the temporary files of format-1 atomic
// writes (segments, EPOCH, ACKED, COMPACTED) that a crash interrupted.
// Other temporary files in the folder are not the log's.
func removeLegacyLeftovers(root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("list directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		base, ok := strings.CutSuffix(name, tmpSuffix)
		if !ok {
			continue
		}
		if base == epochFileName || base == ackFileName || base == compactedFileName || strings.Contains(base, segmentSuffix) {
			if err := os.Remove(filepath.Join(root, name)); err != nil {
				return fmt.Errorf("remove leftover %s: %w", name, err)
			}
		}
	}
	return nil
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
