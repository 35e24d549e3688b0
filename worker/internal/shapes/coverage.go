package shapes

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/worker/internal/txn"
)

// schemaLockKey serialises creation of Baton's tables in schema baton
// between brokers and workers of every stream (the broker takes the same
// single-key advisory lock to create baton.streams).
const schemaLockKey int64 = 1650553966_0000

// pubChangesDDL creates the record of publication changes (see the package
// doc, "Publication coverage").
var pubChangesDDL = []string{
	fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", schemaLockKey),
	`CREATE SCHEMA IF NOT EXISTS baton`,
	`CREATE TABLE IF NOT EXISTS baton.publication_changes (
		stream_id  text        NOT NULL,
		lsn        pg_lsn      NOT NULL,
		epoch      bigint      NOT NULL,
		table_name text        NOT NULL,
		action     text        NOT NULL,
		at         timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE INDEX IF NOT EXISTS publication_changes_stream_lsn ON baton.publication_changes (stream_id, lsn)`,
	`COMMENT ON TABLE baton.publication_changes IS 'Baton: every table a worker dropped from its stream''s publication, with the WAL position and epoch; a worker whose stored shapes need a table dropped after its storage''s position rebuilds them'`,
}

// ensurePubChanges creates baton.publication_changes when missing.
func ensurePubChanges(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('baton.publication_changes') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("look up baton.publication_changes: %w", err)
	}
	if exists {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create baton.publication_changes: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, q := range pubChangesDDL {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create baton.publication_changes: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create baton.publication_changes: %w", err)
	}
	return nil
}

// dropFromPublication removes one table from the publication and records
// it, in one transaction that commits only while this worker's epoch is
// still the stream's: the row of baton.streams is locked FOR SHARE, so a
// broker's grant to a successor (which updates that row) waits for this
// commit, and a successor granted before it makes this one fail. So every
// drop that ever committed is visible to every worker granted after it.
func dropFromPublication(ctx context.Context, conn *pgx.Conn, pub, streamID string, epoch uint64, table string) error {
	if err := ensurePubChanges(ctx, conn); err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("drop %s from publication %s: %w", table, pub, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		return fmt.Errorf("drop %s from publication %s: %w", table, pub, err)
	}
	if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+quoteIdent(pub)+" DROP TABLE "+table); err != nil {
		return fmt.Errorf("drop %s from publication %s: %w", table, pub, err)
	}
	var mine bool
	err = tx.QueryRow(ctx, "SELECT true FROM baton.streams WHERE stream_id = $1 AND epoch = $2 FOR SHARE", streamID, int64(epoch)).Scan(&mine)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: drop %s from publication %s: epoch %d is no longer the stream's", ErrSuperseded, table, pub, epoch)
	}
	if err != nil {
		return fmt.Errorf("drop %s from publication %s: check epoch: %w", table, pub, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO baton.publication_changes (stream_id, lsn, epoch, table_name, action)
		VALUES ($1, pg_current_wal_lsn(), $2, $3, 'drop')`, streamID, int64(epoch), table); err != nil {
		return fmt.Errorf("record the drop of %s from publication %s: %w", table, pub, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("drop %s from publication %s: %w", table, pub, err)
	}
	return nil
}

// Coverage is what CheckCoverage found.
type Coverage struct {
	// Dropped counts the shapes removed because the publication did not
	// cover their table over the WAL after the storage's position.
	Dropped int
	// Tables names those shapes' tables.
	Tables []string
}

// CheckCoverage removes every stored shape whose table the publication may
// not have covered since position, the stream log's position (the end of
// its last durable record, or its last recorded acknowledgement if
// higher): the table is missing from the publication now (or the
// publication is missing), a drop of it was recorded after position (and
// after the shape's snapshot), or a drop of it was recorded by an epoch
// newer than prevEpoch, the last epoch that opened this storage before
// this lease. pgoutput reads the publication as of each change's WAL
// position, so the changes made while the table was out of the
// publication are never sent, to anyone, however late they are decoded:
// the shapes would miss them. Their clients refetch (409). Call it once
// per lease, before Reconcile and before streaming (see the package doc,
// "Publication coverage"), on conn, a session opened after the grant or
// one whose first use comes after it (its reads must follow the grant).
func (r *Registry) CheckCoverage(ctx context.Context, conn *pgx.Conn, position, prevEpoch uint64) (Coverage, error) {
	var cov Coverage
	shapes, _ := r.list()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := ensurePubChanges(ctx, conn); err != nil {
		return cov, err
	}
	if err := r.pruneCoverage(ctx, conn); err != nil {
		return cov, err
	}
	if len(shapes) == 0 {
		return cov, nil
	}
	published, all, exists, err := publicationTables(ctx, conn, r.o.Publication)
	if err != nil {
		return cov, err
	}
	drops, err := dropsAfter(ctx, conn, r.o.StreamID, position, prevEpoch)
	if err != nil {
		return cov, err
	}
	why := map[*Shape]string{}
	for _, s := range shapes {
		t := s.meta.Definition.TableSQL()
		d := drops[t]
		switch {
		case !exists:
			why[s] = "the publication " + r.o.Publication + " does not exist"
		case !all && !published[t]:
			why[s] = "the table is not in the publication " + r.o.Publication
		case d.byNewer != 0:
			// Made by a worker granted after this storage's last lease
			// began, which may have streamed on meanwhile (leases can
			// overlap: a lock session that PostgreSQL ended at once,
			// by a restart, is taken over before its broker revokes
			// the lease), so that its position tells nothing.
			why[s] = fmt.Sprintf("the table was dropped from the publication by epoch %d, after this storage's last epoch %d",
				d.byNewer, prevEpoch)
		case d.lsn > s.meta.SnapshotLSN:
			// A shape needs its table's changes after its position (the
			// stream's) or, for a shape made later, after its snapshot
			// (taken after the table was published and every transaction
			// running then had ended).
			why[s] = fmt.Sprintf("the table was dropped from the publication at %s, after this storage's position %s",
				txn.LSN(d.lsn), txn.LSN(position))
		}
	}
	if len(why) == 0 {
		return cov, nil
	}
	tables := map[string]string{}
	for s, w := range why {
		if err := r.Delete(s); err != nil {
			return cov, err
		}
		cov.Dropped++
		tables[s.meta.Definition.TableSQL()] = w
	}
	for t, w := range tables {
		cov.Tables = append(cov.Tables, t)
		// Expected after another pod with storage of its own streamed.
		r.o.Log.Info("shapes dropped: the publication did not cover their table since this storage's position; their clients refetch",
			"table", t, "reason", w)
	}
	sort.Strings(cov.Tables)
	return cov, nil
}

// drop is what the record says of a table's drops that matter to a
// storage: the latest recorded after its position (0: none), and the
// newest epoch after the storage's last one that recorded a drop (0: none).
type drop struct {
	lsn     uint64
	byNewer uint64
}

// dropsAfter returns, per table of the stream, the recorded drops after
// position and those by an epoch above prevEpoch.
func dropsAfter(ctx context.Context, conn *pgx.Conn, streamID string, position, prevEpoch uint64) (map[string]drop, error) {
	drops := map[string]drop{}
	rows, err := conn.Query(ctx, `SELECT table_name,
			coalesce(max(lsn) FILTER (WHERE lsn > $2::text::pg_lsn), '0/0')::text,
			coalesce(max(epoch) FILTER (WHERE epoch > $3), 0)
		FROM baton.publication_changes
		WHERE stream_id = $1 AND action = 'drop' AND (lsn > $2::text::pg_lsn OR epoch > $3)
		GROUP BY table_name`,
		streamID, txn.LSN(position).String(), int64(prevEpoch))
	if err != nil {
		return nil, fmt.Errorf("read baton.publication_changes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t, text string
		var newer int64
		if err := rows.Scan(&t, &text, &newer); err != nil {
			return nil, fmt.Errorf("read baton.publication_changes: %w", err)
		}
		lsn, err := txn.ParseLSN(text)
		if err != nil {
			return nil, fmt.Errorf("read baton.publication_changes: %w", err)
		}
		drops[t] = drop{lsn: uint64(lsn), byNewer: uint64(newer)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read baton.publication_changes: %w", err)
	}
	return drops, nil
}

// WarmUp runs, on conn, the reads that CheckCoverage and Reconcile make
// at the start of a lease of the stream, and discards what they return. A
// standby's session runs it so that, after the grant, those reads find
// the catalogs they need cached in its backend: a new backend loads them
// on first use, which costs more than the reads themselves. It writes
// nothing, and nothing it reads is used.
func WarmUp(ctx context.Context, conn *pgx.Conn, streamID, pub string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('baton.publication_changes') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("look up baton.publication_changes: %w", err)
	}
	if _, _, _, err := publicationTables(ctx, conn, pub); err != nil {
		return err
	}
	if exists {
		if _, err := dropsAfter(ctx, conn, streamID, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

// pruneCoverage forgets drops below the slot's restart_lsn: a storage whose
// position is below it is below the slot's confirmed position too (which
// never goes below restart_lsn, even after a server restart, since
// restart_lsn is saved at once when it moves), so it cannot prove
// continuity with the slot and drops every shape anyway.
func (r *Registry) pruneCoverage(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `DELETE FROM baton.publication_changes
		WHERE stream_id = $1 AND lsn < (SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = $2)`,
		r.o.StreamID, stream.SlotName(r.o.StreamID))
	if err != nil {
		return fmt.Errorf("prune baton.publication_changes: %w", err)
	}
	return nil
}

// publicationTables lists the publication's tables as quoted names, in
// one round trip.
func publicationTables(ctx context.Context, conn *pgx.Conn, pub string) (tables map[string]bool, all, exists bool, err error) {
	var schemas, names []string
	err = conn.QueryRow(ctx, `SELECT p.puballtables,
		       array(SELECT schemaname::text FROM pg_publication_tables t WHERE t.pubname = p.pubname ORDER BY 1, tablename),
		       array(SELECT tablename::text FROM pg_publication_tables t WHERE t.pubname = p.pubname ORDER BY schemaname, 1)
		FROM pg_publication p WHERE p.pubname = $1`, pub).Scan(&all, &schemas, &names)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, fmt.Errorf("list publication %s: %w", pub, err)
	}
	if len(schemas) != len(names) {
		return nil, false, false, fmt.Errorf("list publication %s: %d schemas for %d tables", pub, len(schemas), len(names))
	}
	tables = map[string]bool{}
	for i := range names {
		tables[Definition{Schema: schemas[i], Table: names[i]}.TableSQL()] = true
	}
	return tables, all, true, nil
}
