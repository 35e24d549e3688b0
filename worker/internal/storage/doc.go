// Package storage is the worker's embedded, crash-safe, epoch-fenced log of
// replicated transactions: one Record per committed transaction, numbered
// densely from 1 (Seq), each tagged with the epoch of the writer.
//
// The replication loop Appends each committed transaction and acknowledges to
// PostgreSQL only the EndLSN that Sync reports durable (DESIGN.md I2). A
// transaction that PostgreSQL replays after a restart has an EndLSN not above
// the last stored one, and Append skips it, so nothing is stored twice.
//
// # Fencing (DESIGN.md I5)
//
// Several processes may open the same directory, typically an old and a new
// worker during a handoff. Open records its epoch, together with an open
// counter, in the EPOCH file. Every Sync checks that file before writing a
// byte (reading it again whenever stat shows it was replaced), inside a short critical section guarded by flock(2) on the LOCK
// file; Open updates it inside the same kind of section. So once a newer
// epoch's Open has returned, an older writer (or an earlier Open of the same
// epoch) cannot write anything: its next Sync returns ErrFenced, and so does
// every call after it. The newest writer continues Seq and EndLSN from the
// records on disk as of its Open; it never needs to look again, since no
// older writer can append after that.
//
// # On-disk format
//
// dir/EPOCH holds "epoch <n> open <m>\n", replaced atomically (write a
// temporary file, fsync, rename, fsync dir). dir/LOCK is empty and only
// flocked. Records live in segment files named after their first Seq
// (%020d.seg), created the same atomic way, each starting with a 16-byte
// header ("BATONSEG", format version, reserved) followed by records:
//
//	offset size field
//	 0     4    CRC-32C (Castagnoli) of bytes 4..40 and the payload
//	 4     4    payload length
//	 8     8    seq
//	16     8    commit LSN
//	24     8    end LSN
//	32     8    epoch
//	40     n    payload
//
// all integers little-endian. A segment is closed once the next record
// would take it past Options.SegmentSize (64 MiB by default).
//
// # Recovery
//
// Open scans every segment and verifies every CRC. A torn or corrupt tail of
// the last segment (a write cut short by a crash) is truncated away; since
// Sync returns only after the fsync of everything it wrote, no record it
// reported durable is ever in that tail. Damage anywhere else, or a record
// with a valid CRC but out of sequence, fails Open with ErrCorrupt rather
// than dropping data. Open then fsyncs the last segment and the directory,
// so that what a killed predecessor wrote but did not fsync is durable before
// this process reports it as such.
//
// # Concurrency
//
// Read, Wait and Durable are safe from any number of goroutines at once, and
// concurrently with Append and Sync; readers see only durable records, or,
// on a log that uses Write, records written but not yet fsynced (for logs
// that can be made again from a durable source after a machine crash: the
// shape logs).
// Append and Sync are meant for the replication loop; they are safe to call
// from different goroutines (Append does no I/O and does not wait for a Sync
// in progress), but records are numbered in Append order. Close may be
// called from any goroutine; it waits for a Sync in progress and discards
// records not yet synced.
package storage
