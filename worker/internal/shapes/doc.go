// Package shapes keeps the worker's shapes: a registry of shape definitions
// (whole tables for now), each with an initial snapshot and a durable,
// epoch-fenced log of the changes that followed it, in the message format of
// ElectricSQL's HTTP API v1.
//
// # Layout
//
// BATON_STORAGE_DIR/<stream>/shapes/<handle>/ holds one shape: meta.json
// (definition, handle, column metadata, the snapshot's xmin/xmax/xip and
// applied_seq, replaced atomically) and a storage.Log of records. A folder
// without meta.json is a creation that did not finish; Open removes it.
//
// # Records and offsets
//
// Every record of a shape log is one unit a client can stop after: a chunk
// of snapshot rows, or the changes of one transaction on the shape's table.
// Its payload is an 8-byte little-endian op offset, then the JSON messages
// of the unit joined by commas, ready to be copied into a response. Offsets
// follow Electric's LogOffset: "<tx>_<op>". Snapshot chunk j has offset
// "0_j" (EndLSN j+1, below any real LSN); a transaction has offset
// "<commit lsn>_<op of its last message>" and the stream record's EndLSN, so
// storage.Log.Append skips a transaction routed twice (after a crash, or
// when applied_seq was persisted late): nothing is doubled.
//
// # Consistency of the snapshot with the log (DESIGN I2)
//
// Creating a shape (1) notes the stream log's durable seq S, (2) adds the
// table to the publication, (3) waits until every transaction that was
// running when that committed has ended (so none has changes decoded before
// the table was published), then (4) takes the snapshot in one REPEATABLE
// READ transaction with pg_current_snapshot(). The router then applies, from
// stream record S+1 on, exactly the transactions not visible in that
// snapshot. Tables without a primary key are refused (400).
//
// # Continuity across leases (DESIGN I2): what is proven, and from what
//
// A worker keeps its stored shapes (same handles) only when it can prove
// that they hold every committed change to their tables up to where the
// slot will stream from. Two facts are needed, checked at each lease start
// before anything is streamed or acknowledged:
//
//  1. Slot continuity (replication.Run, storage.Log.Continuous): the slot's
//     confirmed position C is at or below the stream log's position L (the
//     end of its last durable record, or its recorded acknowledgement if
//     higher). Everything the slot will send again after C that the log
//     holds is skipped by EndLSN; everything after L it sends.
//  2. Publication coverage (Registry.CheckCoverage): pgoutput sends a change
//     only if its table is in the publication as of the change's WAL
//     position (the historic catalog), so a table dropped from the
//     publication and added back leaves a gap that no replay fills. Every
//     drop a worker makes is committed in one transaction with a row of
//     baton.publication_changes holding pg_current_wal_lsn() (at or below
//     the drop's commit, so below every change it filtered) and the epoch.
//     A shape of table T is kept only if T is in the publication now and no
//     drop of T is recorded after max(L, the shape's SnapshotLSN).
//
// Why the record is complete: the drop's transaction locks the stream's
// row of baton.streams FOR SHARE and commits only if the row still holds
// the worker's epoch. A broker's grant to any later epoch updates that row,
// so it either waits for the drop's commit or makes the drop fail; the
// successor, which reads the record after its grant, sees every drop that
// ever committed. (A standby runs the same reads earlier, on the session it
// will use, only to load that backend's caches: WarmUp; nothing it reads
// then is used.) An unrecorded drop (by an operator) that is still in
// effect shows as a missing table; one reverted before the lease started
// cannot be seen, and is the one case not covered.
//
// Why L is below every later drop that matters: L only moves while the
// worker holds a valid lease (every write and acknowledgement checks it on
// the monotonic clock), and is a position the server had sent by then; a
// drop by another worker happens during that worker's lease, which starts
// after this lease has expired on this worker's clock. A drop this worker
// made itself after L is found too, which costs a refetch, not a change.
// A shape made after a drop has SnapshotLSN above it: its snapshot was
// taken after its table was published again and after every transaction
// running then had ended (step 3 above), so it needs no change from before.
//
// Records below the slot's restart_lsn are pruned: the confirmed position
// never goes below restart_lsn (restart_lsn is saved at once when it moves,
// so a server restart cannot take confirmed_flush_lsn below it), so a
// storage whose position is that old fails fact 1 and drops every shape.
//
// The final acknowledgement of a graceful stop is awaited in the slot's
// confirmed_flush_lsn before the walsender is ended (replication.Run), so
// the next consumer does not stream again what this one stored. A server
// restart can still move confirmed_flush_lsn back (it is saved lazily);
// both facts above hold across that, since a replay only resends changes.
package shapes
