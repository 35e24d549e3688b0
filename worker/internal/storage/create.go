package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Create makes a new, empty log in dir for epoch, with metadata meta (as
// SetMeta would set it; nil for none), and returns it open for writing. It
// ends where Open of an empty folder followed by SetMeta ends, with a
// fraction of the file operations: dir must be an empty folder that no
// other writer knows of and that no reader looks into until Create has
// returned, such as a folder Set.NewFolder returned (garbage to every
// other Open of the set until Set.Add). It fails if dir is missing or not
// empty.
//
// Nothing Create writes is durable when it returns: the first call that
// makes anything durable (Sync, SetMeta, RecordAck, TruncateBefore, a
// compaction's Commit, or Settle) first makes the whole log durable, in
// one round of concurrent fsyncs that, for Sync, also covers its
// segments. The folder must not be made visible to other Opens (Set.Add)
// before that.
//
// Why this is as safe as Open there: Open's temporary files and its fsync
// after each step guard against a crash or another writer between the
// steps, which leave a log that a later Open must read. Here nothing
// reads dir until it is made visible after the log is durable: until then
// a crash leaves a folder that is not a member of any set (removed by a
// later OpenSet as garbage), and no other writer opens it. So the files
// are written in place (the format marker EPOCH, the owner folder with
// LIVE and STATE, the first segments) and made durable together by the
// first durable write: the files and the two folders that name them are
// fsynced at once. The folder that names dir is the caller's to make
// durable (Set.Add does). Create, and every write after it, checks its
// LIVE file (R3): a folder that a newer Open of the set removed meanwhile
// fails there, or at the set's Add.
func Create(dir string, epoch uint64, meta []byte) (*Log, error) {
	if epoch == 0 {
		return nil, errors.New("create storage: epoch must be at least 1")
	}
	if len(meta) > MaxMeta {
		return nil, fmt.Errorf("create storage: metadata of %d bytes, want at most %d", len(meta), MaxMeta)
	}
	l, err := create(dir, epoch, meta, DefaultSegmentSize)
	if err != nil {
		return nil, fmt.Errorf("create storage %s: %w", dir, err)
	}
	return l, nil
}

func create(dir string, epoch uint64, meta []byte, segmentSize int64) (*Log, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return nil, fmt.Errorf("the folder is not empty (holds %s)", names[0])
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	me := ownerID{epoch: epoch, open: 1, nonce: randomNonce()}
	own := filepath.Join(dir, me.name())
	marker := legacyEpoch{epoch: migratedEpoch, open: 1}
	st := state{epoch: epoch, meta: meta}
	epochPath := filepath.Join(dir, epochFileName)
	statePath := filepath.Join(own, stateFileName)
	if err := writeNew(epochPath, []byte(marker.String()+"\n")); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, markerOwner.name()), 0o755); err != nil {
		return nil, fmt.Errorf("create format marker: %w", err)
	}
	if err := os.Mkdir(own, 0o755); err != nil {
		return nil, fmt.Errorf("create owner folder: %w", err)
	}
	if err := writeNew(filepath.Join(own, liveFileName), nil); err != nil {
		return nil, err
	}
	if err := writeNew(statePath, st.encode()); err != nil {
		return nil, err
	}
	l := &Log{root: dir, dir: own, me: me, segmentSize: segmentSize, changed: make(chan struct{}),
		live: filepath.Join(own, liveFileName), st: st, meta: st.meta, nextSeq: 1, fresh: true}
	if err := l.checkOwner(); err != nil {
		return nil, err
	}
	return l, nil
}

// Settle makes the log Create made durable, if nothing did yet.
func (l *Log) Settle() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if err := l.stateErr(); err != nil || !l.fresh {
		return err
	}
	w, err := l.beginWrite()
	if err != nil {
		return l.fail(err)
	}
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return l.fail(err)
	}
	return nil
}

func (l *Log) stateErr() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.stateErrLocked()
}

// settle makes what Create wrote durable (while fresh), with files, the
// segments written since, in the same round of fsyncs. The empty LIVE
// file and the marker folder need only their names, which the fsyncs of
// the folders make durable; so do the segments' names. The caller holds
// syncMu.
func (l *Log) settle(files []*os.File) error {
	if !l.fresh {
		return nil
	}
	paths := []string{filepath.Join(l.root, epochFileName), filepath.Join(l.dir, stateFileName), l.dir, l.root}
	errs := make([]error, len(paths)+len(files))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() { errs[i] = syncFile(p) })
	}
	for i, f := range files {
		wg.Go(func() {
			if err := f.Sync(); err != nil {
				errs[len(paths)+i] = fmt.Errorf("sync segment: %w", err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.fresh = false
	return nil
}

// writeNew writes a file that must not exist yet, without fsync.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
