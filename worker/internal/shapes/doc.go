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
package shapes
