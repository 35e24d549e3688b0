package storage

import (
	"fmt"
	"slices"
)

// MaxMeta is the largest metadata SetMeta stores.
const MaxMeta = 16 << 20

// Meta returns the log's metadata: what the last SetMeta of this Open
// stored, or, before one, what the previous owner's STATE held when Open
// took the log over (nil when none was ever set). The caller must not
// modify it.
func (l *Log) Meta() []byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.meta
}

// SetMeta durably replaces the log's metadata (opaque to storage; the
// shapes keep their definition and progress there). It is fenced like
// Sync and follows the same rules (see the package doc): it writes this
// Open's STATE, and returns nil only if this Open still owned the log
// after the write, so that every later Open reads meta, or a later
// value, from Meta. After ErrFenced (sticky, as for Sync) a later Open
// may or may not read meta, as for records whose Sync was fenced. It
// waits for a Sync in progress, never for another process.
func (l *Log) SetMeta(meta []byte) error {
	if len(meta) == 0 || len(meta) > MaxMeta {
		return fmt.Errorf("set meta: %d bytes, want 1 to %d", len(meta), MaxMeta)
	}
	meta = slices.Clone(meta)
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.RLock()
	err := l.stateErrLocked()
	segs := l.segs
	l.mu.RUnlock()
	if err != nil {
		return err
	}
	w, err := l.beginWrite()
	if err != nil {
		return l.fail(err)
	}
	l.at(hookChecked)
	st := l.st
	st.meta = meta
	err = l.writeState(segs, st)
	l.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return l.fail(err)
	}
	l.st = st
	l.mu.Lock()
	l.meta = meta
	l.mu.Unlock()
	return nil
}
