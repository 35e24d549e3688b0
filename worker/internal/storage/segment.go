package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	segmentMagic      = "BATONSEG"
	segmentVersion    = 1
	segmentHeaderSize = 16
	segmentSuffix     = ".seg"
)

// errOtherWriter reports that the files changed under a writer that still
// believed it owned them: some other writer is active, so this one is fenced.
var errOtherWriter = fmt.Errorf("%w: another writer changed this writer's own files", ErrFenced)

// segment indexes one segment file: where each durable record starts.
type segment struct {
	firstSeq uint64   // seq of the record at offsets[0]; also the file's name
	path     string   // the file
	offsets  []uint32 // record firstSeq+i starts at offsets[i]
	size     int64    // end of the last durable record
}

func segmentName(firstSeq uint64) string {
	return fmt.Sprintf("%020d%s", firstSeq, segmentSuffix)
}

func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil && n > 0
}

func segmentHeader() []byte {
	h := make([]byte, segmentHeaderSize)
	copy(h, segmentMagic)
	binary.LittleEndian.PutUint32(h[8:], segmentVersion)
	return h
}

// createSegment creates the segment file for firstSeq holding only its
// header, durably (temporary file, fsync, rename, fsync of the directory),
// and returns it open for writing. The file must not exist yet.
//
// In a log that Create made and that nothing made durable yet (fresh),
// the header is written in place without fsync: the first write that
// makes the log durable fsyncs the file and the folder.
func createSegment(dir string, firstSeq uint64, fresh bool) (*os.File, error) {
	name := segmentName(firstSeq)
	path := filepath.Join(dir, name)
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("create segment %s: %w", name, errOtherWriter)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	if fresh {
		if err := writeNew(path, segmentHeader()); err != nil {
			return nil, fmt.Errorf("create segment %s: %w", name, err)
		}
	} else if err := WriteFileAtomic(dir, name, segmentHeader()); err != nil {
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open segment %s: %w", name, err)
	}
	return f, nil
}

// scanResult is what scanning a segment file found.
type scanResult struct {
	seg      *segment // indexes the valid records
	lastEnd  uint64   // end LSN of the last valid record, or the prevEnd given
	fileSize int64
	tail     error // why the valid records stop before fileSize, if they do
}

// scanSegment reads and verifies the segment file at path. Its records
// must be numbered from firstSeq, with end LSNs increasing from above
// prevEnd. A record that is cut short or fails its checksum ends the valid
// part (res.tail says why); a verified record out of sequence, or a bad
// file header, is an ErrCorrupt error. With limit >= 0, only the first
// limit bytes of the file are read, as if it ended there.
func scanSegment(path string, firstSeq, prevEnd uint64, limit int64) (scanResult, error) {
	return scanSegmentMode(path, firstSeq, prevEnd, limit, true)
}

// scanHeads is scanSegment without the checksums: it reads the records'
// headers and skips their payloads (a seek past each one larger than what
// is buffered), so that its cost follows the number of records, not their
// bytes. Only a record header that runs past the end is a torn record; a
// payload that is not what was written shows when the record is read (Read
// verifies every record). It is for the segments that are known complete:
// see readView.
func scanHeads(path string, firstSeq, prevEnd uint64, limit int64) (scanResult, error) {
	return scanSegmentMode(path, firstSeq, prevEnd, limit, false)
}

func scanSegmentMode(path string, firstSeq, prevEnd uint64, limit int64, verify bool) (scanResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return scanResult{}, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return scanResult{}, fmt.Errorf("stat segment: %w", err)
	}
	res := scanResult{
		seg:      &segment{firstSeq: firstSeq, path: path, size: segmentHeaderSize},
		lastEnd:  prevEnd,
		fileSize: fi.Size(),
	}
	if limit >= 0 && limit < res.fileSize {
		res.fileSize = limit
	}
	bufSize := 1 << 20
	if !verify {
		// Small records are read through; larger ones are skipped.
		bufSize = 16 << 10
	}
	br := bufio.NewReaderSize(f, bufSize)
	hdr := make([]byte, segmentHeaderSize)
	if _, err := io.ReadFull(br, hdr); err != nil || !bytes.Equal(hdr, segmentHeader()) {
		return res, fmt.Errorf("%w: %s: bad segment header", ErrCorrupt, path)
	}
	// The payloads pass through one buffer: io.CopyN into the hash would
	// allocate a 32 KiB buffer per record.
	var chunk []byte
	if verify {
		chunk = make([]byte, 64<<10)
	}
	var rh [recordHeaderSize]byte
	seq := firstSeq
	for off := int64(segmentHeaderSize); off < res.fileSize; {
		if res.fileSize-off < recordHeaderSize {
			res.tail = fmt.Errorf("torn record header at offset %d", off)
			return res, nil
		}
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			return res, fmt.Errorf("read %s: %w", path, err)
		}
		h := decodeHeader(rh[:])
		n := recordHeaderSize + int64(h.payloadLen)
		if h.payloadLen > MaxPayload || off+n > res.fileSize {
			res.tail = fmt.Errorf("torn record at offset %d", off)
			return res, nil
		}
		if verify {
			sum := crc32.Update(0, castagnoli, rh[4:])
			for rest := int(h.payloadLen); rest > 0; {
				k := min(rest, len(chunk))
				if _, err := io.ReadFull(br, chunk[:k]); err != nil {
					return res, fmt.Errorf("read %s: %w", path, err)
				}
				sum = crc32.Update(sum, castagnoli, chunk[:k])
				rest -= k
			}
			if sum != h.crc {
				res.tail = fmt.Errorf("checksum mismatch at offset %d", off)
				return res, nil
			}
		} else if skip := int(h.payloadLen); skip <= br.Buffered() {
			if _, err := br.Discard(skip); err != nil {
				return res, fmt.Errorf("read %s: %w", path, err)
			}
		} else {
			if _, err := f.Seek(off+n, io.SeekStart); err != nil {
				return res, fmt.Errorf("seek %s: %w", path, err)
			}
			br.Reset(f)
		}
		if h.seq != seq || h.endLSN <= res.lastEnd || off > math.MaxUint32 {
			return res, fmt.Errorf("%w: %s: record at offset %d has seq %d end LSN %d, want seq %d end LSN above %d",
				ErrCorrupt, path, off, h.seq, h.endLSN, seq, res.lastEnd)
		}
		res.seg.offsets = append(res.seg.offsets, uint32(off))
		off += n
		res.seg.size = off
		res.lastEnd = h.endLSN
		seq++
	}
	return res, nil
}
