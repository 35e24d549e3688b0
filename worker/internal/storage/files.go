package storage

import (
	"container/list"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Open files. Each log keeps its last own segment open for writing
// (Log.active), so a worker with many shape logs would keep one descriptor
// per shape and run out of them (RLIMIT_NOFILE) long before it runs out of
// anything else. The process therefore keeps at most openFiles.limit
// active segments open: when a log opens one beyond that, the least
// recently written logs close theirs, and reopen them (by path, O_RDWR)
// the next time they write.
//
// Only a settled segment is closed (not fresh: Sync fsyncs a fresh log's
// files all at once), under the log's syncMu, so closing never loses or
// reorders a write: a closed segment is exactly what it was, and write
// checks its size after reopening as it does before every write. A
// segment holding records that Write left unsynced (activeUnsynced) may
// be closed too, or a worker routing to more shapes than the limit would
// keep them all open until their next Sync: Sync then reopens it to
// fsync it, and fsync(2) makes the file's data durable whichever
// descriptor it is called on (on Linux, a write-back error that no
// descriptor has seen yet is reported to one opened after it). Closing
// does not change the log's files, names or STATE, so fencing (doc.go) is
// unaffected; a reopen of a segment that a newer Open removed fails, as a
// write into it would, and the writer reports ErrFenced (Log.fail).
//
// Eviction takes other logs' syncMu with TryLock only: a log busy writing
// is skipped, so no lock order between logs arises and no writer waits
// for another.

// openFiles is the process's budget of open active segments.
var openFiles = newFileBudget(defaultOpenFiles())

// defaultOpenFiles is half of the process's open-file limit (Go raises the
// soft limit to the hard one at start): the rest is for sockets, readers
// and everything else. At least 64.
func defaultOpenFiles() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 512
	}
	return int(max(64, min(r.Cur/2, 1<<20)))
}

// SetOpenFileLimit sets how many shape and stream logs may keep their
// active segment open at once (at least 1), and returns the previous
// limit. Logs over the limit are closed at their next write.
func SetOpenFileLimit(n int) int {
	if n < 1 {
		n = 1
	}
	openFiles.mu.Lock()
	defer openFiles.mu.Unlock()
	old := openFiles.limit
	openFiles.limit = n
	return old
}

// OpenFiles is how many active segments are open now, and how many times
// one was reopened after being closed to stay within the limit.
func OpenFiles() (open int, reopens uint64) {
	openFiles.mu.Lock()
	defer openFiles.mu.Unlock()
	return openFiles.lru.Len(), openFiles.reopens
}

type fileBudget struct {
	mu      sync.Mutex
	limit   int
	lru     *list.List // of *Log with an open active segment, most recent first
	reopens uint64
}

func newFileBudget(limit int) *fileBudget {
	return &fileBudget{limit: limit, lru: list.New()}
}

// note records l's active segment as open (most recently used) or closed,
// after l changed or wrote it, and closes the least recently used other
// logs' segments while more than the limit are open. The caller holds
// l.syncMu.
func (b *fileBudget) note(l *Log) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case l.active == nil && l.lruElem != nil:
		b.lru.Remove(l.lruElem)
		l.lruElem = nil
		return
	case l.active == nil:
		return
	case l.lruElem != nil:
		b.lru.MoveToFront(l.lruElem)
	default:
		l.lruElem = b.lru.PushFront(l)
	}
	for e := b.lru.Back(); e != nil && b.lru.Len() > b.limit; {
		prev := e.Prev()
		if o := e.Value.(*Log); o != l && o.syncMu.TryLock() {
			if o.closeIdle() {
				b.lru.Remove(e)
				o.lruElem = nil
			}
			o.syncMu.Unlock()
		}
		e = prev
	}
}

// closeIdle closes l's active segment if it is settled, keeping its path
// for the next write or Sync. The caller holds l.syncMu and
// openFiles.mu.
func (l *Log) closeIdle() bool {
	if l.active == nil || l.fresh {
		return false
	}
	l.idlePath = l.active.Name()
	// The data written stays in the file (and is fsynced by the next
	// Sync when unsynced); close reports no error that fsync would not.
	l.active.Close()
	l.active = nil
	return true
}

// reopenIfIdle reopens the active segment if closeIdle closed it. The
// caller holds syncMu.
func (l *Log) reopenIfIdle() error {
	if l.active != nil || l.idlePath == "" {
		return nil
	}
	f, err := os.OpenFile(l.idlePath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reopen segment: %w", err)
	}
	l.active, l.idlePath = f, ""
	openFiles.note(l)
	openFiles.mu.Lock()
	openFiles.reopens++
	openFiles.mu.Unlock()
	return nil
}
