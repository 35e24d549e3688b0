package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// TruncateBefore removes the segment files all of whose records have a seq
// below seq, never the last segment: what no reader will ask for again
// (the caller knows: every consumer has durably moved past it). Read from
// an earlier seq then starts at the first kept record. It is fenced like
// Sync and safe concurrently with every other method. It returns how many
// records were removed.
func (l *Log) TruncateBefore(seq uint64) (int, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.RLock()
	err := l.stateErrLocked()
	var drop []*segment
	records := 0
	for i := 0; i+1 < len(l.segs); i++ {
		s := l.segs[i]
		if len(s.offsets) == 0 || s.firstSeq+uint64(len(s.offsets)) > seq {
			break
		}
		drop = append(drop, s)
		records += len(s.offsets)
	}
	l.mu.RUnlock()
	if err != nil || len(drop) == 0 {
		return 0, err
	}
	if err := l.lock.lock(); err != nil {
		return 0, l.fail(err)
	}
	err = l.removeSegments(drop)
	if uerr := l.lock.unlock(); err == nil {
		err = uerr
	}
	if err != nil {
		return 0, l.fail(err)
	}
	return records, nil
}

// removeSegments checks ownership, forgets drop (a prefix of l.segs) and
// deletes their files. The caller holds syncMu and the directory lock.
func (l *Log) removeSegments(drop []*segment) error {
	cur, err := readOwner(l.dir)
	if err != nil {
		return err
	}
	if cur != l.me {
		return fmt.Errorf("%w: the log now belongs to %s, this writer is %s", ErrFenced, cur, l.me)
	}
	l.mu.Lock()
	l.segs = l.segs[len(drop):]
	l.mu.Unlock()
	// Oldest first: a crash midway leaves a shorter prefix, never a hole.
	for _, s := range drop {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove segment: %w", err)
		}
	}
	return syncDir(l.dir)
}
