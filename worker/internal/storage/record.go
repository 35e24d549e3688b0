package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record is one committed transaction.
type Record struct {
	Seq       uint64 // assigned by Append: 1, 2, 3, ... dense, never reused
	CommitLSN uint64 // the transaction's commit LSN
	EndLSN    uint64 // the transaction's end LSN (what is acknowledged as flushed once durable)
	Epoch     uint64 // epoch of the writer, set by Append
	Payload   []byte // opaque encoded changes
}

// MaxPayload is the largest payload a Record may carry.
const MaxPayload = 1 << 30

// ErrFenced is returned once another Open of the directory, with a newer
// epoch (or a later Open with the same epoch), has taken over: this writer
// must stop, and it can no longer write anything.
var ErrFenced = errors.New("storage fenced: a newer epoch opened the log")

// ErrClosed is returned by calls on a closed Log.
var ErrClosed = errors.New("storage closed")

// ErrCorrupt is returned when stored data fails verification somewhere a
// crash cannot explain (not the tail of the last segment).
var ErrCorrupt = errors.New("storage corrupt")

// recordHeaderSize is the size of a record's header; see the package doc.
const recordHeaderSize = 40

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordHeader is a decoded record header.
type recordHeader struct {
	crc        uint32
	payloadLen uint32
	seq        uint64
	commitLSN  uint64
	endLSN     uint64
	epoch      uint64
}

// appendRecord appends r's encoding to dst.
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	var h [recordHeaderSize]byte
	binary.LittleEndian.PutUint32(h[4:], uint32(len(r.Payload)))
	binary.LittleEndian.PutUint64(h[8:], r.Seq)
	binary.LittleEndian.PutUint64(h[16:], r.CommitLSN)
	binary.LittleEndian.PutUint64(h[24:], r.EndLSN)
	binary.LittleEndian.PutUint64(h[32:], r.Epoch)
	dst = append(dst, h[:]...)
	dst = append(dst, r.Payload...)
	crc := crc32.Checksum(dst[start+4:], castagnoli)
	binary.LittleEndian.PutUint32(dst[start:], crc)
	return dst
}

func decodeHeader(b []byte) recordHeader {
	return recordHeader{
		crc:        binary.LittleEndian.Uint32(b[0:]),
		payloadLen: binary.LittleEndian.Uint32(b[4:]),
		seq:        binary.LittleEndian.Uint64(b[8:]),
		commitLSN:  binary.LittleEndian.Uint64(b[16:]),
		endLSN:     binary.LittleEndian.Uint64(b[24:]),
		epoch:      binary.LittleEndian.Uint64(b[32:]),
	}
}

// decodeRecord decodes and verifies the record at the start of b, which
// must hold it entirely. The payload aliases b.
func decodeRecord(b []byte) (Record, int, error) {
	if len(b) < recordHeaderSize {
		return Record{}, 0, fmt.Errorf("%w: short record header", ErrCorrupt)
	}
	h := decodeHeader(b)
	n := recordHeaderSize + int(h.payloadLen)
	if h.payloadLen > MaxPayload || len(b) < n {
		return Record{}, 0, fmt.Errorf("%w: record %d: bad length %d", ErrCorrupt, h.seq, h.payloadLen)
	}
	if crc32.Checksum(b[4:n], castagnoli) != h.crc {
		return Record{}, 0, fmt.Errorf("%w: record %d: checksum mismatch", ErrCorrupt, h.seq)
	}
	return Record{
		Seq:       h.seq,
		CommitLSN: h.commitLSN,
		EndLSN:    h.endLSN,
		Epoch:     h.epoch,
		Payload:   b[recordHeaderSize:n:n],
	}, n, nil
}
