package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	epochFileName = "EPOCH"
	lockFileName  = "LOCK"
	tmpSuffix     = ".tmp"
)

// owner identifies one Open of the directory: its epoch, and how many Opens
// the directory had seen before it. The EPOCH file names the current owner;
// only it may write.
type owner struct {
	epoch uint64
	open  uint64
}

func (o owner) String() string { return fmt.Sprintf("epoch %d open %d", o.epoch, o.open) }

// readOwner reads dir's EPOCH file; a missing file is the zero owner.
func readOwner(dir string) (owner, error) {
	b, err := os.ReadFile(filepath.Join(dir, epochFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return owner{}, nil
	}
	if err != nil {
		return owner{}, fmt.Errorf("read epoch: %w", err)
	}
	var o owner
	if _, err := fmt.Sscanf(string(b), "epoch %d open %d", &o.epoch, &o.open); err != nil || o.String()+"\n" != string(b) {
		return owner{}, fmt.Errorf("%w: %s holds %q", ErrCorrupt, epochFileName, b)
	}
	return o, nil
}

// ownerCache remembers the EPOCH file last read as naming this Open, by
// its identity and times: EPOCH is only ever replaced by a rename (see
// writeOwner), which gives it another inode and newer times, so while stat
// shows the same file it still names this Open. It saves reading the file
// on every write. Guarded by the directory lock's holder (syncMu).
type ownerCache struct {
	fi fs.FileInfo
}

// isOwner reports whether dir's EPOCH file names me.
func (c *ownerCache) isOwner(dir string, me owner) (owner, error) {
	path := filepath.Join(dir, epochFileName)
	fi, err := os.Stat(path)
	if err == nil && c.fi != nil && sameVersion(fi, c.fi) {
		return me, nil
	}
	c.fi = nil
	cur, err := readOwner(dir)
	if err != nil || cur != me {
		return cur, err
	}
	// Stat again after the read: the file read is the one remembered only
	// if it did not change in between.
	if fi2, err := os.Stat(path); err == nil && fi != nil && sameVersion(fi, fi2) {
		c.fi = fi2
	}
	return cur, nil
}

// sameVersion reports whether two stats are of the same file, unchanged.
func sameVersion(a, b fs.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) &&
		sa.Ctim == sb.Ctim
}

// writeOwner replaces dir's EPOCH file durably: temporary file, fsync,
// rename, fsync of the directory.
func writeOwner(dir string, o owner) error {
	if err := WriteFileAtomic(dir, epochFileName, []byte(o.String()+"\n")); err != nil {
		return fmt.Errorf("write epoch: %w", err)
	}
	return nil
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

// dirLock is an exclusive flock(2) on dir/LOCK, shared by the processes
// that open the directory. flock locks belong to the open file description,
// so two Logs in one process exclude each other too.
type dirLock struct {
	path string
	f    *os.File // while locked
}

// openDirLock makes sure the lock file exists. The file is opened only
// while locked, so that an idle Log holds no descriptor for it (a worker
// keeps thousands of shape logs open).
func openDirLock(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return &dirLock{path: path}, nil
}

// lock blocks until this process holds the lock. Calls of lock and unlock
// on one dirLock are serialized by its Log (syncMu).
func (l *dirLock) lock() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err == nil {
			l.f = f
			return nil
		}
		if !errors.Is(err, unix.EINTR) {
			f.Close()
			return fmt.Errorf("lock %s: %w", l.path, err)
		}
	}
}

func (l *dirLock) unlock() error {
	f := l.f
	l.f = nil
	if f == nil {
		return nil
	}
	err := unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if cerr := f.Close(); err == nil && cerr != nil {
		return fmt.Errorf("unlock %s: %w", l.path, cerr)
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.path, err)
	}
	return nil
}

func (l *dirLock) close() error { return l.unlock() }
