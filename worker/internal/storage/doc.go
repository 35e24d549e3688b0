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
// Several processes may open the same directory, typically an old and a
// new worker during a handoff, and the old one may be frozen (SIGSTOP, a
// paused VM) at any instruction and thawed much later. No lock is held
// across anything: a frozen writer cannot make another one wait.
//
// Guarantees. Let N be an Open that has returned.
//
//   - G1 (nothing lost): every record that an earlier writer's Sync or
//     Write reported, and every RecordAck, SetMeta, TruncateBefore or
//     compaction Commit that returned nil, is part of N's log, as it was;
//     except records that a later TruncateBefore or Commit of that writer
//     dropped or replaced, even one that then returned ErrFenced (its
//     caller had said it no longer needs them as they were).
//   - G2 (nothing late): nothing an earlier writer (older epoch, or an
//     earlier Open of the same epoch) writes after N returned is ever part
//     of the log: not read by N, by any later Open, by Read, nor by
//     Inspect. Its calls that have not passed their last check fail with
//     ErrFenced, and so do all its later calls; it publishes nothing more
//     to its own readers.
//   - G3 (no waiting): Open, Sync and every other call wait for no other
//     process. (Once per log, the first Open of a log written by an
//     older version takes that version's flock: see migrate.)
//
// A write in progress when N took over may still be in N's log (its bytes
// were on disk when N read them) although its Sync returns ErrFenced, as
// after a crash: such records were never reported durable, never
// acknowledged, never served by the old writer.
//
// How. Each Open o creates its own folder o.<epoch>.<open>.<nonce> (a
// random nonce makes the name unique) holding a LIVE file, and orders
// itself by (epoch, open, nonce). The rules:
//
//   - R1 claim: Open creates LIVE, then lists the folders; it gives up
//     (ErrFenced) if a higher one exists, else removes ("fences") the LIVE
//     file of every lower one, and only then reads the log.
//   - R2 own files: a writer writes only into files of its own folder.
//   - R3 check before publishing: a writer looks up its LIVE file after
//     writing (and fsyncing) and before publishing anything: before Sync,
//     Write, RecordAck or SetMeta returns, before readers see records,
//     before acting on a new STATE.
//   - R4 remove only what is dropped: a writer removes a file only after a
//     durable STATE no longer names it and a check after that STATE
//     passed (TruncateBefore, Commit, and the garbage collection of Open).
//   - R5 take over in order: Open reads the previous owner's STATE, then
//     lists that owner's folder, then reads the files; it records the log
//     it found in its own STATE, durably, checks its LIVE file, and only
//     then returns.
//
// STATE names every segment of older owners that is part of the log with
// its exact number of records and bytes ("inherited"); the owner's own
// files are read up to their first torn or bad record. Proof sketch, on
// the assumption that the file system makes each operation visible to
// every later one (a lookup after an unlink fails, a read after a
// completed write sees it; true of a local file system):
//
//  1. Fenced stays fenced: only its own Open creates a LIVE file, under a
//     name never used before, so once removed every later check fails.
//  2. Of two concurrent Opens, the lower is fenced or gives up: each
//     creates its LIVE file before listing, so the later listing sees the
//     other's folder (R1).
//  3. G1: if writer o published W, its check passed after W (R3), so before
//     N fenced o, so before N read the log (R1, R5): N read W. A STATE that
//     o published was written before the listing N makes after reading it
//     (R5), so the files it names were there; a file o removed was not
//     named by the STATE o had published before removing it (R4), and a
//     file once dropped is never named again, so N does not need it.
//  4. Every Open after N builds on N's STATE or a later one: N's STATE was
//     durable before N's final check, which came before any later Open
//     fenced N (1, 2), and that Open picks the highest STATE below itself.
//  5. G2: after N returned, every check of an older writer fails (1), so
//     it publishes nothing (R3) and removes nothing (R4); what it writes
//     goes to its own files (R2), beyond the sizes N's STATE gave them or
//     into files no STATE names, which no Open after N reads (4), and
//     which Open removes when it finds them (R4).
//  6. G3: no step above waits for anything but the local disk.
//
// What Open reads. Only the previous owner's last own file can end torn
// (a crash in the middle of a write): a writer fsyncs a segment before it
// creates the next one (Log.write), and an inherited segment was read to
// its end by the Open that inherited it. So Open verifies the records of
// that last file only, checksums included; of every other segment it reads
// the record headers (their sequence and end LSNs are checked), skipping
// the payloads. A takeover thus reads about one segment's bytes, whatever
// the size of the log, and an index (Log.ReadHeads) is built the same
// way. Damage that no crash explains, in an earlier segment, shows when
// its record is read: Read verifies every record it returns and fails with
// ErrCorrupt, and the record stays in the log (nothing is dropped
// silently).
//
// A shared volume must give the same visibility across nodes, as flock(2)
// needed coherent locks before. On NFS that is close-to-open consistency
// (the default; not "nocto"): every check opens the LIVE file, and every
// Open opens the files it reads after the fence. Records that Write made
// readable but that no Sync made durable count for G1 only on a local file
// system: elsewhere, as after a machine crash, they are made again.
//
// While a write is in progress (from the check that starts it to the one
// that publishes it) its writer holds a shared flock on its LIVE file.
// Nobody waits for that lock; it shows in /proc/locks which process is
// stopped in the middle of a write.
//
// # On-disk format
//
// Format 2. dir/EPOCH says "epoch 18446744073709551615 open <m>\n" (so
// that a writer of format 1 is fenced and its binary refuses the log) and
// dir/LOCK is format 1's lock file. Each Open's folder dir/o.<epoch>.<open>.<nonce>/
// holds LIVE (empty), STATE and its own segment files. STATE, replaced
// atomically (write a temporary file, fsync, rename, fsync the folder), is
//
//	baton-log 2
//	epoch <epoch>
//	acked <lsn>            (see Acked)
//	compacted <gen> <upto> (see PrepareCompaction)
//	from <seq>             (own files before it were truncated away)
//	meta <base64>          (see SetMeta; only once set)
//	seg <path> <first seq> <records> <bytes>   (inherited segments, in order)
//	end
//
// Metadata (SetMeta) is part of STATE, so it is fenced, taken over and
// carried from owner to owner exactly as the acknowledgement is: G1 and
// G2 hold for it. Every log folder also holds the format marker
// o.18446744073709551615.0.0000000000000000, an owner folder above every
// epoch with neither LIVE nor STATE, which this version ignores (nor
// does it ever remove it): a binary from before the "meta" line lists it as
// a newer epoch and refuses the log (ErrFenced) instead of calling the
// STATE corrupt, or, for the shapes, removing folders of a layout it does
// not know.
//
// Segment files are named after their first Seq (%020d.seg, or
// %020d-%020d.seg for compacted ones), created the same atomic way, each
// starting with a 16-byte header ("BATONSEG", format version 1, reserved)
// followed by records:
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
// would take it past Options.SegmentSize (64 MiB by default); a new Open
// starts a new segment of its own.
//
// Format 1 kept EPOCH, ACKED, COMPACTED and the segments directly in dir,
// and fenced with flock(2) on LOCK around every write. The first format-2
// Open of such a log takes that lock (once), describes the format-1 files
// in the STATE of an owner o.0.0.0000000000000000 (they become inherited
// segments, in place), and writes EPOCH.
//
// # Sets
//
// A Set (OpenSet) is a set of folders fenced by the same rules, the shapes
// of a stream. Its folder holds owner folders o.<epoch>.<open>.<nonce>/,
// each with LIVE, a STATE naming the members as of the Open (or of the
// last time the journal was written into it),
//
//	baton-set 1
//	epoch <epoch>
//	journal <gen>
//	member <owner folder>/<name>   (or <name>, for a migrated member)
//	end
//
// and the journal JOURNAL.<gen> of the changes since, appended to (and
// fdatasynced) one line per change: "+ <path> <crc>" or "- <path> <crc>",
// crc the CRC-32C of what precedes it, in hex. A member's folder is inside
// the owner folder of the Open that added it. The journal plays the part
// of an owner's own segments, STATE that of STATE: a reader applies the
// journal STATE names, up to its first line cut short (a crash in the
// middle of a write, or a write in progress), which may only be its last.
// Once a journal has more lines than the set has members (and than 4096),
// the next change first writes the members into a new STATE naming a new,
// empty journal, and removes the old one after the check: reading a set
// costs at most twice its size, a change O(1).
//
// Add, Remove and Open follow R1 to R5 with members for records: Add (R2:
// the folder is the writer's own, made by NewFolder) appends the line
// naming it, then checks (concurrent Adds are committed together: one
// write of their lines, one fsync and one check, each Add returning only
// after the check that followed the write of its line); Remove appends the lines of the folders, checks,
// and only then removes them (R4); Open claims (R1), reads the highest
// STATE below it and then that owner's journal, writes its own STATE,
// checks (R5), and only then removes garbage. So, for N an OpenSet that has
// returned:
//
//   - S1 (nothing lost): every member added, and every removal, by a call
//     that returned nil before N was opened is in N's members, and in
//     those of every later Open (until removed again); a member's folder
//     is never removed while a STATE or journal that a later Open may read
//     names it.
//   - S2 (nothing late): after N returned, an earlier Open's Add and
//     Remove fail with ErrFenced and change no later Open's members; it
//     removes no folder (its check fails before); what it creates goes
//     into its own owner folder, which no later Open reads, and which a
//     later Open removes as garbage.
//   - S3 (no waiting): as G3.
//
// Proof: as 1 to 6 above, with "member" for "record" and the journal for
// the owner's own files: a later Open's members are those of the STATE and
// journal it builds on, changed only by its own Add and Remove. Garbage
// (what Open removes) is what this Open's members do not name in the
// folders of older owners, which no later Open writes (R2) or names (it
// builds on this Open's STATE and journal or later ones, and adds only
// folders of its own), and the folders directly in the set's folder that
// are not members: only the layout before sets made those (a binary of it
// is refused by the marker above, and one still running is stale). The
// first OpenSet of a folder of that layout (one folder per member,
// directly in it) takes the folders it is told are members as they are,
// in place, like format-1 segments.
//
// A member's log is best made by Create in the folder NewFolder returned:
// as no Open reads that folder until Add (it is garbage to every other
// Open, S2), Create writes the log's files in place, without temporary
// files or fsyncs, and the log's first durable write (its first Sync)
// fsyncs them all at once with its own segments; Add comes after that, so
// the folder is durable whole before any journal names it.
//
// # Recovery
//
// Open reads the log the previous owner left (R5): every record of the
// previous owner's last file, CRC included, and the record headers of
// every other segment ("What Open reads" above). That last file may end
// with a torn or corrupt record (a write cut short by a crash, or one in
// progress): the log stops before it, and the bytes stay where they are,
// never read. Since Sync returns only after the fsync of everything it
// wrote, no record it reported durable is ever there. Damage anywhere
// else that the headers show (a file cut short, an inherited segment that
// does not hold what STATE says, a record out of sequence) fails Open with
// ErrCorrupt rather than dropping data; damage inside a payload there
// fails the Read of its record with ErrCorrupt. Open fsyncs the previous owner's files, so that what a killed
// predecessor wrote but did not fsync is durable before this process
// reports it as such.
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
//
// The process keeps at most SetOpenFileLimit logs' active segments open;
// the others are closed once fsynced and reopened at their next write
// (files.go says why that loses and fences nothing).
package storage
