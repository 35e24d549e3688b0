package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ackFileName held, in format 1, the highest position ever acknowledged to
// PostgreSQL for this log ("lsn <n>\n"); format 2 keeps it in STATE. With the records'
// EndLSNs it proves continuity: when a slot's confirmed position is at or
// below max(last EndLSN, ACKED), every change the slot skipped is in this
// log (or was in no published table); when it is above, another consumer
// advanced the slot and this log has a gap.
const ackFileName = "ACKED"

func readAck(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, ackFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", ackFileName, err)
	}
	var lsn uint64
	if _, err := fmt.Sscanf(string(b), "lsn %d\n", &lsn); err != nil {
		return 0, fmt.Errorf("%w: %s holds %q", ErrCorrupt, ackFileName, b)
	}
	return lsn, nil
}

// Acked is the highest acknowledged position recorded for this log (by any
// writer, as of Open, or by this one since).
func (l *Log) Acked() uint64 { return l.acked.Load() }

// Continuous reports whether this log holds every change a slot whose
// confirmed position is confirmed could have skipped: confirmed is at or
// below the last durable EndLSN or the recorded acknowledgement.
func (l *Log) Continuous(confirmed uint64) bool {
	_, end := l.Durable()
	return confirmed <= max(end, l.acked.Load())
}

// RecordAck durably records that the stream is about to be acknowledged up
// to lsn; call it before sending an acknowledgement beyond the last durable
// EndLSN. It is fenced like Sync (ErrFenced once a newer Open took the
// directory) and does nothing when lsn is not above what is recorded.
func (l *Log) RecordAck(lsn uint64) error {
	if lsn <= l.acked.Load() {
		return nil
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err := l.stateErrLocked()
	segs := l.segs
	l.mu.Unlock()
	if err != nil {
		return err
	}
	w, err := l.beginWrite()
	if err != nil {
		return l.fail(err)
	}
	l.at(hookChecked)
	st := l.st
	st.acked = lsn
	err = l.writeState(segs, st)
	l.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return l.fail(err)
	}
	l.st = st
	l.acked.Store(lsn)
	return nil
}
