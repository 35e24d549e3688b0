// Package stream holds the naming rules of a Baton replication stream that
// are part of the external contract (DESIGN §4): which stream ids are valid,
// and how an id maps to the slot, the publication and the advisory lock key.
// Brokers and workers in any language must compute the same names; the Go
// implementations live here so both binaries share one definition.
package stream

import (
	"errors"
	"fmt"
	"hash/fnv"
)

// LockNamespace is the first key of the two-key advisory lock
// pg_advisory_lock(LockNamespace, LockKey(id)). In pg_locks the lock shows as
// locktype 'advisory', classid 1650553966, objsubid 2. The number is the
// ASCII bytes "batn" read as a big-endian integer, fixed forever.
const LockNamespace int32 = 1650553966

// DefaultID is the stream id used when REPLICATION_STREAM_ID is not set.
const DefaultID = "default"

// MaxIDLength bounds a stream id so that the derived object names stay well
// inside PostgreSQL's 63-byte identifier limit.
const MaxIDLength = 40

// ErrInvalidID is returned (wrapped) by Validate.
var ErrInvalidID = errors.New("invalid stream id")

// Validate reports whether id is a valid stream id: 1 to 40 characters, each a
// lower-case ASCII letter, a digit or '_'.
func Validate(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %q is %d characters, at most %d allowed", ErrInvalidID, id, len(id), MaxIDLength)
	}
	for i, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("%w: %q has %q at position %d; use lower-case letters, digits and _", ErrInvalidID, id, r, i)
		}
	}
	return nil
}

// SlotName is the logical replication slot of the stream: baton_slot_<id>.
func SlotName(id string) string { return "baton_slot_" + id }

// PublicationName is the publication of the stream: baton_pub_<id>.
func PublicationName(id string) string { return "baton_pub_" + id }

// LockKey is the second key of the stream's advisory lock: the 32-bit
// FNV-1a hash of the stream id's bytes, reinterpreted as a signed int4.
// pg_locks.objid shows the same 32 bits as an unsigned oid
// (LockObjID).
func LockKey(id string) int32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int32(h.Sum32())
}

// LockObjID is LockKey as pg_locks.objid shows it (unsigned).
func LockObjID(id string) uint32 { return uint32(LockKey(id)) }
