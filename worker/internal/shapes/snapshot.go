package shapes

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/txn"
)

// awaitRunning waits until every transaction running now has ended, so
// that none of them made changes to the table before it was published.
func awaitRunning(ctx context.Context, conn *pgx.Conn) error {
	// One snapshot first: with none running (xmin = xmax), done at once.
	var xmin, xmax uint64
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint FROM pg_current_snapshot() s").Scan(&xmin, &xmax); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if xmin >= xmax {
			return nil
		}
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

// beginSnapshot begins the snapshot's transaction (REPEATABLE READ, read
// only) and fills m's visibility fields from it. The caller reads the rows
// in it (copySnapshot), then ends it.
func beginSnapshot(ctx context.Context, conn *pgx.Conn, m *Meta) (pgx.Tx, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin snapshot: %w", err)
	}
	// The statement takes the transaction's snapshot; the insert position
	// is read after it (see Meta.visible).
	var snap, lsn string
	err = tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text").Scan(&snap, &lsn)
	if err == nil {
		var at txn.LSN
		if at, err = txn.ParseLSN(lsn); err == nil {
			m.SnapshotLSN = uint64(at)
			m.Xmin, m.Xmax, m.Xip, err = parseSnapshot(snap)
		}
	}
	if err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	return tx, nil
}

// copySnapshot reads the shape's rows in tx, in table order, and hands
// each to w as an insert message. A shape without params is read with COPY
// ... TO STDOUT, PostgreSQL's fastest way out; one with params (COPY takes
// none) through a query, one DataRow per row.
func copySnapshot(ctx context.Context, tx pgx.Tx, m *Meta, w *snapWriter) error {
	d := m.Definition
	if d.ChangesOnly {
		return nil // log=changes_only: no initial rows
	}
	row := w.row
	if len(d.Params) == 0 {
		q := snapshotSQL(d, m.Columns, true)
		rows := newCopyRows(len(m.Columns), row)
		if _, err := tx.Conn().PgConn().CopyTo(ctx, rows, "COPY ("+q+") TO STDOUT"); err != nil {
			return fmt.Errorf("snapshot of %s: %w", d, err)
		}
		return rows.Close()
	}
	// A prepared statement (pgx caches it by its text) must keep its
	// result types when the table's change: every column is cast.
	q := snapshotSQL(d, m.Columns, false)
	args := []any{pgx.QueryResultFormats{pgx.TextFormatCode}}
	for _, p := range d.Params {
		args = append(args, p)
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", d, err)
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != len(m.Columns) {
			return fmt.Errorf("snapshot of %s: row has %d columns, want %d", d, len(raw), len(m.Columns))
		}
		if err := row(raw); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("snapshot of %s: %w", d, err)
	}
	return nil
}

// snapshotEnd is Electric's snapshot-end control message: the snapshot's
// visibility, every xid a string (JSON numbers lose 64-bit precision in
// JavaScript). It is the last message of the snapshot.
func snapshotEnd(m *Meta) []byte {
	b := []byte(`{"headers":{"control":"snapshot-end","xmin":"`)
	b = strconv.AppendUint(b, m.Xmin, 10)
	b = append(b, `","xmax":"`...)
	b = strconv.AppendUint(b, m.Xmax, 10)
	b = append(b, `","xip_list":[`...)
	for i, x := range m.Xip {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = strconv.AppendUint(b, x, 10)
		b = append(b, '"')
	}
	return append(b, "]}}"...)
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
// columns as text, the where clause's rows, in table order (no ORDER BY:
// as Electric's, and PostgreSQL reads the table without sorting it).
// With plain (the COPY of a shape without params), a column whose ::text
// is its output function (PlainText) is selected as it is: COPY writes
// that same output, and PostgreSQL saves the cast (about a quarter of a
// wide COPY's time). Others (boolean's true, bpchar without padding, inet
// with its mask, xml with its declaration) keep the cast, so every value
// is what Electric's snapshot gives. Without plain every column is cast:
// the query is a prepared statement, whose result types must not change
// with the table's (ERROR: cached plan must not change result type).
func snapshotSQL(d Definition, cols []Column, plain bool) string {
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = quoteIdent(c.Name)
		if !plain || !c.PlainText {
			sel[i] += "::text"
		}
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + d.TableSQL()
	if d.Where != "" {
		q += " WHERE " + d.Where
	}
	return q
}
