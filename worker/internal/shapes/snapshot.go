package shapes

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// snapshotChunkBytes is the size of one snapshot record.
const snapshotChunkBytes = 1 << 20

// snapshotSyncChunks is how many snapshot records are appended between
// syncs of the shape log while the snapshot is taken.
const snapshotSyncChunks = 16

// awaitRunning waits until every transaction running now has ended, so
// that none of them made changes to the table before it was published.
func awaitRunning(ctx context.Context, conn *pgx.Conn) error {
	var xmax uint64
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").Scan(&xmax); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var xmin uint64
		if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").Scan(&xmin); err != nil {
			return fmt.Errorf("read snapshot: %w", err)
		}
		if xmin >= xmax {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("transactions older than xid %d still running after 30s; cannot take a consistent snapshot", xmax)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// snapshot writes the table's rows into l as insert messages, in chunks,
// and fills m's visibility fields.
func snapshot(ctx context.Context, conn *pgx.Conn, t *table, m *Meta, l *storage.Log) error {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The statement takes the transaction's snapshot; the insert position
	// is read after it (see Meta.visible).
	var snap, lsn string
	if err := tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text").Scan(&snap, &lsn); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	at, err := txn.ParseLSN(lsn)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	m.SnapshotLSN = uint64(at)
	if m.Xmin, m.Xmax, m.Xip, err = parseSnapshot(snap); err != nil {
		return err
	}
	d := m.Definition
	if d.ChangesOnly {
		return tx.Commit(ctx) // log=changes_only: no initial rows
	}
	var args []any
	for _, p := range d.Params {
		args = append(args, p)
	}
	rows, err := tx.Query(ctx, snapshotSQL(d, m.Columns, t.pk, t.noPK), append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", d, err)
	}
	defer rows.Close()
	pkPos := make([]int, len(t.pk))
	for i, k := range t.pk {
		for j, c := range m.Columns {
			if c.Name == k {
				pkPos[i] = j
			}
		}
	}
	enc := newRowEncoder(d, m.Columns, pkPos)
	chunk := uint64(0)
	// buf is one record's payload: the op offset (the chunk), then the messages.
	// Append copies it, so it is reused for every chunk.
	buf := make([]byte, 8, snapshotChunkBytes+64<<10)
	count := 0
	// Every snapshotSyncChunks chunks, what is pending is written and
	// synced by another goroutine while rows are read on (Append and
	// Sync may run concurrently), which bounds the memory held for the
	// snapshot; at most one such Sync runs, and rows wait for it when
	// twice that many chunks are pending.
	synced := make(chan error, 1)
	syncing := false
	var syncFrom uint64 // chunk count when the running Sync started
	awaitSync := func(block bool) error {
		if !syncing {
			return nil
		}
		if block {
			syncing = false
			return <-synced
		}
		select {
		case err := <-synced:
			syncing = false
			return err
		default:
			return nil
		}
	}
	defer func() { _ = awaitSync(true) }()
	flush := func() error {
		binary.LittleEndian.PutUint64(buf, chunk)
		_, err := l.Append(storage.Record{EndLSN: chunk + 1, Payload: buf})
		chunk++
		buf, count = buf[:8], 0
		if err != nil || chunk%snapshotSyncChunks != 0 {
			return err
		}
		if err := awaitSync(chunk-syncFrom >= 2*snapshotSyncChunks); err != nil {
			return fmt.Errorf("store snapshot of %s: %w", d, err)
		}
		if !syncing {
			syncing, syncFrom = true, chunk
			go func() {
				_, err := l.Sync()
				synced <- err
			}()
		}
		return nil
	}
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != len(m.Columns) {
			return fmt.Errorf("snapshot of %s: row has %d columns, want %d", d, len(raw), len(m.Columns))
		}
		if count > 0 {
			buf = append(buf, ',')
		}
		buf = enc.appendRow(buf, raw)
		count++
		if len(buf)-8 >= snapshotChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("snapshot of %s: %w", d, err)
	}
	if count > 0 || chunk == 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	if err := awaitSync(true); err != nil {
		return fmt.Errorf("store snapshot of %s: %w", d, err)
	}
	if _, err := l.Sync(); err != nil {
		return fmt.Errorf("store snapshot of %s: %w", d, err)
	}
	return tx.Commit(ctx)
}

// parseSnapshot parses pg_snapshot text: xmin:xmax:xip,xip,...
func parseSnapshot(s string) (xmin, xmax uint64, xip []uint64, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, nil, fmt.Errorf("bad snapshot %q", s)
	}
	if xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("bad snapshot %q", s)
	}
	if xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("bad snapshot %q", s)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return 0, 0, nil, fmt.Errorf("bad snapshot %q", s)
			}
			xip = append(xip, v)
		}
	}
	return xmin, xmax, xip, nil
}

// snapshotSQL is the query of the shape's initial rows: the served
// columns as text, the where clause's rows, in key order.
func snapshotSQL(d Definition, cols []Column, pk []string, noPK bool) string {
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = quoteIdent(c.Name) + "::text"
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + d.TableSQL()
	if d.Where != "" {
		q += " WHERE " + d.Where
	}
	if !noPK {
		order := make([]string, len(pk))
		for i, k := range pk {
			order[i] = quoteIdent(k)
		}
		q += " ORDER BY " + strings.Join(order, ", ")
	}
	return q
}
