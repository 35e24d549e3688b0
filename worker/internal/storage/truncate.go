package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// TruncateBefore removes the segment files all of whose records have a seq
// below seq, never the last segment that holds records: what no reader
// will ask for again (the caller knows: every consumer has durably moved
// past it). Read from an earlier seq then starts at the first kept record.
// The log's last record always stays: the next Open continues its seqs and
// end LSN from it, so a seq is never given twice. It is fenced like Sync
// and safe concurrently with every other method. It returns how many
// records were removed.
func (l *Log) TruncateBefore(seq uint64) (int, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.RLock()
	err := l.stateErrLocked()
	var drop []*segment
	records := 0
	for i := 0; i < lastWithRecords(l.segs); i++ {
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
	w, err := l.beginWrite()
	if err != nil {
		return 0, l.fail(err)
	}
	err = l.dropSegments(drop)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, l.fail(err)
	}
	l.at(hookRemoving)
	if err := removeFiles(drop); err != nil {
		return 0, l.fail(err)
	}
	return records, nil
}

// lastWithRecords is the index of the last of segs that holds records
// (the last one if none does).
func lastWithRecords(segs []*segment) int {
	for i := len(segs) - 1; i >= 0; i-- {
		if len(segs[i].offsets) > 0 {
			return i
		}
	}
	return len(segs) - 1
}

// dropSegments drops drop (a prefix of l.segs, not all of it) from the
// log: STATE first, then the check that this Open still owns the log. Only
// then may the caller remove the files (see the package doc: a file is
// removed only once a STATE that no longer names it is durable and the
// check after it passed). The caller holds syncMu.
func (l *Log) dropSegments(drop []*segment) error {
	l.mu.RLock()
	kept := l.segs[len(drop):]
	l.mu.RUnlock()
	st := l.st
	st.from = max(st.from, kept[0].firstSeq)
	l.at(hookChecked)
	if err := l.writeState(kept, st); err != nil {
		return err
	}
	l.at(hookWritten)
	if err := l.checkOwner(); err != nil {
		return err
	}
	l.st = st
	l.mu.Lock()
	l.segs = l.segs[len(drop):]
	l.mu.Unlock()
	return nil
}

// removeFiles removes the files of segs, oldest first, and fsyncs their
// folders.
func removeFiles(segs []*segment) error {
	dirs := map[string]bool{}
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove segment: %w", err)
		}
		dirs[filepath.Dir(s.path)] = true
	}
	for d := range dirs {
		// A folder may be gone: an older owner's, removed by a newer Open.
		if err := syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
