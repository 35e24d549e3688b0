package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Inspect reads the log in dir without opening it for writing: no owner is
// created or fenced, nothing is removed or fsynced, and a torn tail is just
// where reading stops. It calls fn for every record of the log, in order,
// as the newest owner's STATE and files describe it (what a fenced writer
// added after being fenced is not shown). It is safe to run while a worker
// writes (it sees a prefix of the records; when a compaction or truncation
// removes files meanwhile it starts again, skipping what it already gave).
func Inspect(dir string, fn func(Record) error) error {
	if !migrated(dir) {
		return inspectLegacy(dir, fn)
	}
	var next uint64 // the first seq not given to fn yet; 0 before any
	for attempt := 0; ; attempt++ {
		v, _, err := latestView(dir, nil)
		if err == nil {
			err = v.each(next, func(r Record) error {
				next = r.Seq + 1
				return fn(r)
			})
		}
		if errors.Is(err, fs.ErrNotExist) && attempt < 10 {
			continue // removed by the writer meanwhile
		}
		return err
	}
}

// each calls fn for the records of v from seq from on.
func (v view) each(from uint64, fn func(Record) error) error {
	for _, s := range v.segs {
		if n := s.firstSeq + uint64(len(s.offsets)); n <= from {
			continue
		}
		b := make([]byte, s.size)
		f, err := os.Open(s.path)
		if err != nil {
			return err
		}
		_, err = f.ReadAt(b, 0)
		f.Close()
		if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		for i, off := range s.offsets {
			if s.firstSeq+uint64(i) < from {
				continue
			}
			r, _, err := decodeRecord(b[off:])
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// inspectLegacy is Inspect for a format-1 log.
func inspectLegacy(dir string, fn func(Record) error) error {
	files, _, _, err := segmentFiles(dir)
	if err != nil {
		return err
	}
	var prevEnd uint64
	for i, sf := range files {
		first := sf.first
		path := filepath.Join(dir, sf.name)
		res, err := scanSegment(path, first, prevEnd, -1)
		if errors.Is(err, fs.ErrNotExist) && i < len(files)-1 {
			continue // truncated away meanwhile (TruncateBefore)
		}
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && i < len(files)-1 {
			continue
		}
		if err != nil {
			return fmt.Errorf("read segment: %w", err)
		}
		for _, off := range res.seg.offsets {
			r, _, err := decodeRecord(b[off:])
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		prevEnd = res.lastEnd
		if res.tail != nil && i < len(files)-1 {
			return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, res.tail)
		}
	}
	return nil
}
