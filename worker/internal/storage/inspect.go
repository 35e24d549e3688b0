package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Inspect reads the log in dir without opening it for writing: no epoch is
// recorded, nothing is truncated or fsynced, and a torn tail is just where
// reading stops. It calls fn for every valid record in order. It is safe to
// run while a worker writes (it sees a prefix of the records).
func Inspect(dir string, fn func(Record) error) error {
	files, _, _, err := segmentFiles(dir)
	if err != nil {
		return err
	}
	var prevEnd uint64
	for i, sf := range files {
		first := sf.first
		path := filepath.Join(dir, sf.name)
		res, err := scanSegment(path, first, prevEnd)
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
