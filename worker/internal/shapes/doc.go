// Package shapes keeps the worker's shapes: a registry of shape definitions
// (whole tables for now), each with an initial snapshot and a durable,
// epoch-fenced log of the changes that followed it, in the message format of
// ElectricSQL's HTTP API v1.
//
// # Roles
//
//   - The catalog (Registry, registry.go) opens the stored shapes, looks
//     them up, lists and deletes them. Creation (create.go) adds one: its
//     table described and checked (table.go), added to the publication
//     (publication.go), its snapshot taken (snapshot.go) and written
//     while it is served (fill.go, snapwriter.go).
//   - The router (router.go) is the one writer of the shape logs after
//     their snapshot: it finds the shapes each stored transaction's changes
//     go to (fanout.go, match.go) and appends them as messages (message.go,
//     encode.go).
//   - Upkeep runs beside it, each duty a named loop in Run's errgroup
//     (maintain.go): persistence of how far each shape was routed
//     (persist.go), the schema watch (schema.go), truncation of the stream
//     log (truncate.go), compaction of shape logs (compact.go). Idle expiry
//     (expire.go) runs apart, from when shapes are served.
//   - Serving (serve.go) plans a response from a shape's index of records
//     and its chunk boundaries (chunk.go) and reads them; coverage.go checks, at a lease's start, that the
//     publication covered every stored shape's table.
//
// # Positions
//
// Positions in the stream log are seqs of its records and commit LSNs of
// their transactions (a streamPos is both); an Offset is a position in a
// shape log (see "Records and offsets").
//
//   - Routed seq (Meta.RoutedSeq, stored as applied_seq): every stream
//     transaction up to it has been routed to the shape; only the router
//     moves it (Shape.advance). The shape's routedLSN is the commit LSN of
//     the last of them.
//   - Floor (Registry.floor, router.floor): how far the router has routed
//     every caught-up shape. A shape is caught up (Shape.caught) once its
//     routed seq reached the floor; from then on the router moves only the
//     floor, not the shape, so a shape's position is the larger of its own
//     and the floor (Shape.routedSeq, Shape.routedLSNLocked). The others
//     are behind (router.behind), routed one by one.
//   - Seen LSN (Meta.SeenLSN, seen_lsn): every transaction with a commit
//     LSN at or below it is in the snapshot or in the shape log. persist
//     raises it to the routed LSN and writes the metadata; only the
//     persisted value (Shape.durable, whose RoutedSeq also bounds the
//     stream log's truncation) is advertised as global_last_seen_lsn.
//   - Stream end (Shape.streamEnd): the end LSN of the stream log's
//     durable records; every transaction up to it will be routed.
//   - The snapshot (Meta Xmin, Xmax, Xip, SnapshotLSN) tells the
//     transactions whose changes it already holds (Meta.visible).
//
// # Layout
//
// BATON_STORAGE_DIR/<stream>/shapes/ is a storage.Set: owner folders
// o.<epoch>.<open>.<nonce>/, one per Open of a registry, each with LIVE, a
// STATE and a journal naming the shapes, and each shape's folder inside
// the owner folder of the registry that created it.
// shapes/o.<...>/<handle>/ holds a
// storage.Log of records, and the shape's metadata (Meta as JSON:
// definition, handle, column metadata, the snapshot's xmin/xmax/xip,
// applied_seq, seen_lsn, last use) is that log's (storage.Log.SetMeta, kept
// in its STATE). A folder that the set does not name is a creation that
// did not finish, or a shape removed; Open removes it.
//
// Storage of the layout before (shapes/<handle>/ holding meta.json beside
// the log, written without fencing) is migrated by the first Open: the set
// takes the folders that have a meta.json as its shapes, in place (those
// without are creations that did not finish, removed as before), and each
// shape's meta.json moves into its log, read once, after Open fenced that
// log's writers; it is never read again. A worker of that version refuses
// the storage from then on (storage's format marker: it sees a newer
// epoch), rather than remove shape folders it does not recognise. That
// version fenced neither meta.json nor the removal of a shape, so the
// migration assumes none of its workers is frozen inside a removal: a shape
// whose folder such a worker removes anyway is dropped at the next Open
// (its clients refetch).
//
// # Fencing (DESIGN I5): a stale worker cannot change the shapes
//
// On a shared volume a worker can be frozen (SIGSTOP, a paused VM) and
// thawed after a newer lease opened the storage; its lease has expired, but
// a write it had started goes on. Every write under shapes/ goes through
// storage, and so follows its rules (storage's package doc, R1 to R5):
//
//   - metadata (persist): the shape log synced, then SetMeta, which writes
//     the STATE of this writer's own folder of the shape log and returns nil
//     only if the check of ownership after it passed;
//   - creation (begin, admit): a folder in the registry's own owner
//     folder (Set.NewFolder), a new log there with the shape's metadata
//     (storage.Create: nothing durable, and the folder garbage to every
//     other Open, until the log's first Sync makes the whole log and its
//     first records durable), and only then Set.Add, which publishes the
//     shape by a line of its journal naming it, checked after (concurrent
//     Adds share one journal write); nothing of the shape is served
//     before the Add returned. A newer registry never sees a folder whose
//     Add had not returned before it took the set over (it removes it as
//     garbage), and sees every log whose Add returned durable as it was;
//   - removal (DELETE, idle expiry, invalidation, DropAll): the shape's log
//     closed, then Set.Remove: a line of its journal removing it, the
//     check, and only then the folder removed;
//   - truncation of the stream log: up to the applied_seq every shape's
//     metadata had when this registry last persisted it, through the stream
//     log's fenced TruncateBefore.
//
// The worker opens the stream log, then the registry: the set (which fences
// the earlier registries' sets), then the log of every shape the set names
// (which fences their earlier writers). Let N be a registry whose Open
// returned. From storage's G1, G2 and S1, S2:
//
//   - F1: N serves exactly the shapes of every creation that returned nil
//     before N opened the set, less every removal that did, each shape with
//     the metadata of the last persist that returned nil before N opened its
//     log (or a later one of N's own), and every record written before.
//   - F2: after N's Open, every creation, removal and persist of an earlier
//     registry fails with storage.ErrFenced (its set's check fails, and so
//     does the check of every shape log N took over), and none of them
//     changes what N, or any later Open, reads: its STATE and journal
//     files are its own, no later Open reads them, and it removes no
//     folder (the check before removing fails). What it creates meanwhile
//     is garbage that a later Open removes.
//
// So the applied_seq that drives the stream log's truncation is never set
// back or forward under N by a stale worker, and no folder N uses is
// removed. A write in progress when N opened may be in N's view although
// it fails, as a record whose Sync was fenced: a persist (it synced its
// records first, and it names stream records that the stream log N took
// over holds: storage G1), a creation (complete before Add), or a removal
// (its handle then answers 409 as after any removal). A persist of a shape
// between N's Open of the set and of that shape's log passed its check
// before N read the log, so it is as if it had come before.
//
// # Records and offsets
//
// Every record of a shape log is a run of snapshot rows or the changes of
// one transaction on the shape's table. Its payload is an 8-byte
// little-endian op offset, then the JSON messages of the record joined by
// commas, ready to be copied into a response. Offsets follow Electric's
// LogOffset: "<tx>_<op>". Every snapshot record of chunk c has offset
// "0_c" (snapWriter; its EndLSN is its number, below any real LSN), so
// the end of a chunk still being written is known (shapes made before
// held one record per offset); the snapshot's last message is Electric's
// snapshot-end control message with its xmin, xmax and xip_list. A
// transaction has offset "<commit lsn>_<op of its
// last message>" and the stream record's EndLSN, so storage.Log.Append
// skips a transaction routed twice (after a crash, or when applied_seq was
// persisted late): nothing is doubled. A transaction's messages are
// numbered 0, 1, ... (op_position); "<commit lsn>_<k>", k > 0, is the
// position after its message k, where a chunk may end (see Chunks), and
// "<commit lsn>_0" the whole transaction (Offset.after).
//
// # Chunks: every response that a URL names ends at the same place
//
// As Electric's, a response serves the records after the client's offset
// up to the end of the chunk that holds the first of them, or, when that
// chunk is still open, to the end of the log (then with up-to-date).
// Chunk boundaries are found by walking the log from its start (chunker,
// chunk.go): a chunk ends after the message that brings it to the shape's
// threshold or more (Electric's LogChunker), the snapshot's last record
// ends a chunk (once it is complete, for a shape whose snapshot ends with
// snapshot-end: Meta.SnapshotEnd; else at the first change), and a
// snapshot record is never cut inside. A transaction
// larger than what is left of the threshold is cut inside, after the
// message that reaches it, as Electric's log is (one item per change):
// the client gets it over several responses, none of them up to date
// before its last message, so it applies the transaction whole. A cut
// falls at a message k > 0 (a one-message transaction is whole), so that
// "<lsn>_0" keeps meaning the whole transaction; serving reads the
// transaction's record and sends the messages between the two offsets
// (partOf).
//
// A response that ends at a boundary is the same, body and etag
// (handle:offset:end), from every worker, forever:
//
//   - The records up to a boundary never change: a shape log is only
//     appended to, and storage never rewrites a record (but compaction,
//     below).
//   - The boundaries up to a record depend only on the records up to it
//     and on the shape's threshold, Meta.ChunkBytes, which is fixed when
//     the shape is made and kept in its fenced metadata (a shape made
//     before it was kept takes the threshold of the first worker that
//     opens it, kept from its next persist): changing
//     BATON_SHAPE_CHUNK_BYTES_THRESHOLD changes the chunks of new shapes
//     only. So a boundary, once found, stays.
//   - A worker that opens the log (a restart, a handoff, a pod taking over
//     a shared volume) walks the same records (loadIndex), and so finds
//     the same boundaries as the worker that wrote them (TestChunks).
//   - A shape log made again after a machine crash (its records are not
//     fsynced; routing resumes from the persisted applied_seq) holds the
//     same records: the messages of a transaction are encoded byte for
//     byte the same from the durable stream log, so Append skips those
//     that survived and rewrites the others identically.
//
// A response that runs into the open chunk is the only kind that changes
// as the log grows: it ends with up-to-date and the global_last_seen_lsn
// of the moment, and its etag names its end and that LSN, so a cache
// revalidating it gets the new body. Once the chunk closes, the same URL
// serves the whole chunk, up to the boundary and no further. A response
// that ends at a boundary has no up-to-date even when the log ends there
// (Electric's would, and would so change when the log grows): the
// client's next request, from the boundary, gets an empty up-to-date
// response. Live requests are planned the same way, from what has arrived.
//
// Compaction (compact.go) rewrites a prefix of the log, and the walk finds
// the boundaries of the compacted log (chunkIndex): a URL of that range
// then serves fewer messages and may end elsewhere. A response from before
// that a cache still holds stays right to serve: by compaction's argument,
// a client that applies it and reads on from its end ends with the same
// rows. Should a record the client is inside have been compacted, its
// messages are served whole (partOf): each sets its row to its state after
// the transaction.
//
// # Consistency of the snapshot with the log (DESIGN I2)
//
// Creating a shape (1) notes the stream log's durable seq S, (2) adds the
// table to the publication, (3) waits until every transaction that was
// running when that committed has ended (so none has changes decoded before
// the table was published), then (4) takes the snapshot in one REPEATABLE
// READ transaction with pg_current_snapshot(). The router then applies, from
// stream record S+1 on, exactly the transactions not visible in that
// snapshot. The table's REPLICA IDENTITY FULL is set before step (1); its
// ALTER TABLE waits for every transaction holding a lock on the table, so
// a change logged without the whole old row committed before the snapshot
// and is in it. Should the identity be set back later, a shape that needs
// the old row (Meta.FullIdentity) is invalidated by the first change the
// router sees logged without the whole old row (an update leaving a
// TOASTed column unchanged would otherwise be told without that column),
// and by the periodic check of the tables; the others tell updates with
// whole rows, which is still right, except an update that changes the key
// and leaves a TOASTed column unchanged: without the old row, the row
// under its new key is not known whole, and every shape of the table is
// invalidated.
//
// # Subset snapshots: merged with the log, nothing lost or doubled
//
// A subset snapshot (QuerySubset, subset.go) is not stored: the rows of
// the shape that match the subset are read in one REPEATABLE READ
// transaction, which first reads pg_current_snapshot() (xmin, xmax, xip:
// the transaction's snapshot, taken by that statement) and then
// pg_current_wal_insert_lsn() (database_lsn). The client (Electric's
// ShapeStream.requestSnapshot) injects the rows, goes on reading the shape
// log from the response's electric-offset, and drops a change of the log
// when its row is one of the snapshot's and its transaction (txids) is
// visible in the snapshot; it stops checking once a change's lsn or an
// up-to-date's global_last_seen_lsn reaches database_lsn, or a change's
// xid reaches xmax.
//
//   - Nothing doubled: a transaction visible in the snapshot committed
//     before the snapshot was taken, so its commit record, and with it the
//     commit LSN that is every message's lsn, is below database_lsn (read
//     after); in the log it comes before any transaction with an xid at or
//     above xmax (one that began after the snapshot, so committed after
//     it). So the client is still checking when such a change of one of
//     the snapshot's rows arrives, and drops it. Every transaction with a
//     commit LSN up to global_last_seen_lsn is in the log before the
//     up-to-date that advertises it, so stopping there drops nothing late.
//   - Nothing lost: a change the snapshot does not show belongs to a
//     transaction it does not show, which the client keeps. It is in the
//     log after electric-offset: for a request at a real offset (or -1),
//     electric-offset is the request's own, so the client skips nothing
//     it had not read (Electric answers the end of the chunk after it,
//     which skips the changes in between). For offset=now (a client that
//     has read nothing yet), it is the log's end read before the snapshot
//     was taken: every transaction in the log up to there was routed, so
//     committed, before the snapshot, and is in it. That holds as long as
//     PostgreSQL shows a committed transaction to new snapshots before the
//     worker has received, stored and routed it; a commit held back after
//     its WAL flush (a synchronous standby that does not answer) is the
//     one case where a client starting from offset=now could miss that
//     transaction's changes (Electric's server has the same window).
//   - Rows outside the subset: a visible change to a row that is not in
//     the snapshot is not dropped (the client keeps changes to rows it
//     does not hold from this snapshot, as with Electric's server).
//   - A subset request answered 409 (the shape was deleted or rotated):
//     the official client asks again at the new handle but keeps its
//     offset, of the old shape's log, and follows the new shape from
//     there without refetching; what committed between that offset and
//     the new shape's snapshot is in neither log it reads. Its next log
//     request, at an offset below the new shape's start (ErrOtherLog), is
//     answered 409 must-refetch, and it starts over.
//
// The query runs on a connection of the registry's, canceled when the
// request ends or the registry is closed (its lease ended), like a
// snapshot at creation; at most subsetConcurrency run at once.
//
// # Streaming snapshots
//
// The rows are read in table order (no ORDER BY), with COPY ... TO STDOUT
// when the where clause has no params: in the snapshot's transaction, so
// with its visibility, whatever the order. A snapshot is served while it
// is written, and a client never takes a part of one for the whole:
//
//   - S1, durable before served: the shape's log is made with metadata
//     marked SnapshotPartial before any row is read; the fill (fill.go)
//     appends records and a syncer makes them durable in batches
//     (storage.Log.Sync; the first also makes the log durable, and the
//     shape is then added to the set, admit), and only then adds them to
//     the index that requests plan from. The shape is registered (Lookup finds it) once
//     its first records are durable, or once it is complete when that
//     comes first. Memory is bounded: the rows wait for the disk when
//     snapUnsynced bytes are not durable yet, a response reads readBytes
//     at a time, and COPY's rows are encoded as they come.
//   - S2, complete only at the end: the metadata loses SnapshotPartial
//     only after the snapshot-end message, the last of the snapshot, is
//     durable (complete). A shape whose metadata is partial is never
//     opened: Open removes it, whoever wrote it (a crash, a handoff or a
//     fenced registry mid-snapshot), so its handle answers 409 and its
//     clients start again from offset -1 on a new shape. In the registry
//     that took it, a fill that fails removes the shape (its requests get
//     ErrGone, so 409), and Close leaves it for the next Open to remove.
//   - S3, no up-to-date inside the snapshot: while the snapshot is written
//     its chunk boundaries are those of its durable records (Chunks), and
//     a request whose chunk has no boundary yet gets that chunk, "0_c",
//     streamed until its boundary is found or the snapshot is complete
//     (planFillingLocked, Bodies), never up to date; the snapshot's last
//     record, which holds snapshot-end, is indexed only with the complete
//     metadata, and ends a chunk then. So a response is up to date only
//     from the end of the snapshot on, after the whole snapshot and
//     snapshot-end.
//   - S4, the log starts where the snapshot is consistent: the router,
//     persistence, compaction and expiry see the shape only once it is
//     complete (Registry.list); the creation holds createMu shared until
//     then, so the stream log is not truncated past S meanwhile, and the
//     router then routes the shape from S+1 as any shape behind the floor.
//
// A snapshot chunk streamed while it is written is the same bytes as when
// it is served complete: snapWriter ends a chunk where the chunker finds
// its boundary (after the record that brings it to Meta.ChunkBytes). A
// response cut short by a crash is not a complete HTTP response, so no
// cache keeps it.
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
//     A shape of table T is kept only if T is in the publication now, no
//     drop of T is recorded after max(L, the shape's SnapshotLSN), and no
//     drop of T is recorded by an epoch newer than the storage's previous
//     one (the last lease that opened it before this one).
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
// Why a drop by an older epoch, or by the storage's previous epoch itself,
// matters only after L: a worker drops only tables that no shape of its
// own storage uses, so the previous epoch's drops never cut its own
// shapes (one made after such a drop has its snapshot after the table was
// published again); and a drop by an older epoch committed before the
// previous epoch was granted (the FOR SHARE above), so before anything
// that lease streamed: the previous lease's own check, at its start,
// found it if its L was below it then, and a shape it made later has its
// snapshot after the table was published again.
//
// Why drops by newer epochs count whatever L is: leases of successive
// epochs can overlap. The lease TTL is shorter than the lock session
// timeout, so when a broker's session ends by the timeout its worker's
// lease has expired first (I1); but when PostgreSQL ends the session at
// once (a server restart), another broker can take the lock and grant
// the next epoch before the old broker's next heartbeat fails and it
// revokes, and the old worker, its lease still valid on its clock, may
// open the slot again meanwhile. It then stores changes, and may
// acknowledge positions, past a drop the new epoch makes at the same
// time, while the changes the drop filters never reach it: its L passes
// the drop and proves nothing. Seen in the randomized fault test with
// storage per pod: a shape's client was sent the delete of a row whose
// insert its shape never got. A drop by a newer epoch was made by a
// worker that did not have this storage's shapes (or it would not have
// dropped their table), so they are rebuilt; the cost is a refetch.
//
// Why L is below every later drop of an older or the same epoch that
// matters: L only moves while the worker holds a valid lease (every write
// and acknowledgement checks it on the monotonic clock), and is a
// position the server had sent by then. A drop this worker made itself
// after L is found too, which costs a refetch, not a change.
// A shape made after a drop has SnapshotLSN above it: its snapshot was
// taken after its table was published again and after every transaction
// running then had ended (step 3 above), so it needs no change from before.
//
// Records below the slot's restart_lsn are pruned: the confirmed position
// never goes below restart_lsn (restart_lsn is saved at once when it moves,
// so a server restart cannot take confirmed_flush_lsn below it), so a
// storage whose position is that old fails fact 1 and drops every shape.
// A drop by a newer epoch is pruned the same way, and there the argument
// is weaker: an old lease that streamed past such a drop while leases
// overlapped, and whose position the slot never passed since (nobody
// acknowledged further), could then keep its shapes once the slot's
// restart_lsn has moved past the drop. Not seen; it needs the overlap
// above and the slot's restart_lsn to move during it.
//
// The final acknowledgement of a graceful stop is awaited in the slot's
// confirmed_flush_lsn before the walsender is ended (replication.Run), so
// the next consumer does not stream again what this one stored. A server
// restart can still move confirmed_flush_lsn back (it is saved lazily);
// both facts above hold across that, since a replay only resends changes.
package shapes
