package shapes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// InvalidError is bad input about a shape: HTTP 400 naming the field.
type InvalidError struct {
	Field   string
	Problem string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Problem }

// snapshotChunkBytes is the size of one snapshot record.
const snapshotChunkBytes = 1 << 20

// snapshotSyncChunks is how many snapshot records are appended between
// syncs of the shape log while the snapshot is taken.
const snapshotSyncChunks = 16

// table is what the catalog says about a shape's table.
type table struct {
	oid     uint32
	columns []Column // every column, in table order
	pk      []string // the primary key, or every column when there is none
	noPK    bool
	// replident is pg_class.relreplident: d(efault), f(ull), n(othing), i(ndex).
	replident string
	// sig is the table's identity and column names and types: a shape is
	// invalid once it changes.
	sig string
}

// connect opens a connection with the fixed output settings the
// replication connection uses, so that values look the same in the
// snapshot and in the log.
func connect(ctx context.Context, url, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = app
	for k, v := range txn.OutputSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// describe looks the table up; an unknown table or one without a primary
// key is an InvalidError.
func describe(ctx context.Context, conn *pgx.Conn, d Definition) (*table, error) {
	var t table
	var kind string
	err := conn.QueryRow(ctx, `SELECT c.oid, c.relkind::text, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, d.Schema, d.Table).Scan(&t.oid, &kind, &t.replident)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &InvalidError{Field: "table", Problem: fmt.Sprintf("table %s does not exist", d)}
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", d, err)
	}
	if kind != "r" {
		return nil, &InvalidError{Field: "table", Problem: fmt.Sprintf("%s is not an ordinary table", d)}
	}
	rows, err := conn.Query(ctx, `
		SELECT a.attname, a.attnotnull, a.attndims, t.typcategory::text, t.typname, coalesce(e.typname, ''), a.atttypmod,
			a.atttypid, format_type(a.atttypid, a.atttypmod), a.attgenerated <> ''
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, t.oid)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", d, err)
	}
	for rows.Next() {
		var c Column
		var dims int32
		var cat, typ, elem string
		if err := rows.Scan(&c.Name, &c.NotNull, &dims, &cat, &typ, &elem, &c.Typmod, &c.TypeOID, &c.SQLType, &c.Generated); err != nil {
			rows.Close()
			return nil, err
		}
		c.Type = typ
		if cat == "A" {
			c.Type, c.Dims = elem, max(int(dims), 1)
		}
		t.columns = append(t.columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("columns of %s: %w", d, err)
	}
	rows, err = conn.Query(ctx, `
		SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, t.oid)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", d, err)
	}
	t.pk, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", d, err)
	}
	if len(t.pk) == 0 {
		// Like Electric: every column is the row's key.
		t.noPK = true
		for _, c := range t.columns {
			if !c.Generated { // not in logical replication's rows
				t.pk = append(t.pk, c.Name)
			}
		}
	}
	t.sig = signature(t.oid, d, t.columns)
	for i, k := range t.pk {
		if t.noPK {
			break
		}
		for j := range t.columns {
			if t.columns[j].Name == k {
				p := i
				t.columns[j].PKIndex = &p
			}
		}
	}
	return &t, nil
}

// signature sums up what a shape depends on in its table's definition.
func signature(oid uint32, d Definition, cols []Column) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", oid, d.TableSQL())
	for _, c := range cols {
		fmt.Fprintf(&b, " %s:%s", quoteIdent(c.Name), c.SQLType)
	}
	return b.String()
}

// publish adds the table to the publication when it is not in it yet.
func publish(ctx context.Context, conn *pgx.Conn, pub string, d Definition) error {
	var all, present bool
	err := conn.QueryRow(ctx, `SELECT p.puballtables, EXISTS (SELECT 1 FROM pg_publication_tables t
		WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3)
		FROM pg_publication p WHERE p.pubname = $1`, pub, d.Schema, d.Table).Scan(&all, &present)
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if all || present {
		return nil
	}
	if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+quoteIdent(pub)+" ADD TABLE "+d.TableSQL()); err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == pgerrcode.DuplicateObject { // added meanwhile
			return nil
		}
		return fmt.Errorf("add %s to publication %s (the role needs to own the table): %w", d, pub, err)
	}
	return nil
}

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
