package shapes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

// What a shape's definition needs of its table, read from the catalog when
// the shape is made (and again to check that a stored shape still fits):
// the columns and key, the replica identity, the where clause bound to the
// column types.

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

// describe looks the table up; an unknown table or one without a primary
// key is an InvalidError. Its three catalog queries go in one round trip.
func describe(ctx context.Context, conn *pgx.Conn, d Definition) (*table, error) {
	var t table
	var kind string
	const rel = `(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)`
	b := &pgx.Batch{}
	b.Queue(`SELECT c.oid, c.relkind::text, c.relreplident::text FROM pg_class c WHERE c.oid = `+rel, d.Schema, d.Table)
	b.Queue(`
		SELECT a.attname, a.attnotnull, a.attndims, t.typcategory::text, t.typname, coalesce(e.typname, ''), a.atttypmod,
			a.atttypid, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
			t.typtype <> 'd' AND NOT EXISTS (SELECT FROM pg_cast k WHERE k.castsource = a.atttypid
				AND k.casttarget = 'text'::regtype AND k.castmethod <> 'i')
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
		WHERE a.attrelid = `+rel+` AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, d.Schema, d.Table)
	b.Queue(`
		SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = `+rel+` AND i.indisprimary ORDER BY k.ord`, d.Schema, d.Table)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	err := br.QueryRow().Scan(&t.oid, &kind, &t.replident)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &InvalidError{Field: "table", Problem: fmt.Sprintf("table %s does not exist", d)}
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", d, err)
	}
	if kind != "r" {
		return nil, &InvalidError{Field: "table", Problem: fmt.Sprintf("%s is not an ordinary table", d)}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", d, err)
	}
	for rows.Next() {
		var c Column
		var dims int32
		var cat, typ, elem string
		if err := rows.Scan(&c.Name, &c.NotNull, &dims, &cat, &typ, &elem, &c.Typmod, &c.TypeOID, &c.SQLType, &c.Generated, &c.PlainText); err != nil {
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
	rows, err = br.Query()
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", d, err)
	}
	t.pk, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", d, err)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("look up table %s: %w", d, err)
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

// whereTable is what the where package needs to know of t.
func whereTable(d Definition, cols []Column) where.Table {
	wt := where.Table{Schema: d.Schema, Name: d.Table}
	for _, c := range cols {
		wt.Columns = append(wt.Columns, where.Column{Name: c.Name, TypeOID: c.TypeOID, Type: c.SQLType})
	}
	return wt
}

// prepareWhere type-checks d's where clause against the table and binds its
// params; nil when d has none. Problems of the request are InvalidErrors.
func prepareWhere(ctx context.Context, conn *pgx.Conn, d Definition, cols []Column) (*where.Predicate, error) {
	if d.Where == "" {
		return nil, nil
	}
	c, err := where.Parse(d.Where)
	if err == nil {
		for _, name := range c.Columns() {
			if slices.ContainsFunc(cols, func(c Column) bool { return c.Name == name && c.Generated }) {
				return nil, &InvalidError{Field: "where", Problem: fmt.Sprintf("%s is a generated column, which logical replication does not carry", quoteIdent(name))}
			}
		}
		var p *where.Predicate
		if p, err = where.Prepare(ctx, conn, whereTable(d, cols), c, d.Params); err == nil {
			return p, nil
		}
	}
	var we *where.Error
	if errors.As(err, &we) {
		return nil, &InvalidError{Field: we.Field, Problem: we.Message}
	}
	return nil, fmt.Errorf("where clause of %s: %w", d, err)
}

// selectColumns checks d's columns against t: they exist and hold the
// primary key (every column when the table has none). It returns the
// served columns in table order, with their position in the key.
func selectColumns(d Definition, t *table) ([]Column, error) {
	if d.Columns == nil {
		// Generated columns are left out: logical replication does not
		// carry them, so changes could not keep them current.
		return slices.DeleteFunc(slices.Clone(t.columns), func(c Column) bool { return c.Generated }), nil
	}
	for _, name := range d.Columns {
		i := slices.IndexFunc(t.columns, func(c Column) bool { return c.Name == name })
		if i < 0 {
			return nil, &InvalidError{Field: "columns", Problem: fmt.Sprintf("unknown column %s in table %s", quoteIdent(name), d)}
		}
		if t.columns[i].Generated {
			return nil, &InvalidError{Field: "columns", Problem: fmt.Sprintf("%s is a generated column, which logical replication does not carry", quoteIdent(name))}
		}
	}
	for _, k := range t.pk {
		if _, ok := slices.BinarySearch(d.Columns, k); !ok {
			if t.noPK {
				return nil, &InvalidError{Field: "columns", Problem: fmt.Sprintf("table %s has no primary key, so every column is part of a row's key: columns must list them all (missing %s)", d, quoteIdent(k))}
			}
			return nil, &InvalidError{Field: "columns", Problem: fmt.Sprintf("must include the primary key column %s", quoteIdent(k))}
		}
	}
	var out []Column
	for _, c := range t.columns {
		if _, ok := slices.BinarySearch(d.Columns, c.Name); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// needsFullIdentity reports whether d's changes can only be told with the
// whole old row: to decide whether it left the where clause's rows, for
// replica=full's old values, and for tables whose key is every column.
// A table whose replica identity is NOTHING (updates and deletes would
// fail once it is published) or an index other than what Baton keys rows
// by (deletes would not carry the primary key) needs it too. Every shape
// sets it (fullIdentity); for the others it only makes updates smaller
// (the changed columns instead of the whole row), so they are not
// invalidated when it is taken away (Meta.FullIdentity).
func needsFullIdentity(d Definition, t *table) bool {
	return d.Where != "" || d.Replica == "full" || t.noPK || t.replident == "n" || t.replident == "i"
}

// fullIdentity sets REPLICA IDENTITY FULL on the table, as Electric does
// on every table it serves, so that updates and deletes carry the whole
// old row: an update is then told with the changed columns only, and a
// where clause is decided on the old row as on the new. The ALTER waits
// at most a few seconds for its lock, so that it never queues the table's
// users behind a long transaction; a table it cannot alter (locked, or
// not owned by the worker's role) is a 400 that says how to set it by
// hand, after which no ALTER is needed.
func fullIdentity(ctx context.Context, conn *pgx.Conn, d Definition, t *table) error {
	if t.replident == "f" {
		return nil
	}
	_, err := conn.Exec(ctx, "SET lock_timeout = '5s'; ALTER TABLE "+d.TableSQL()+" REPLICA IDENTITY FULL; SET lock_timeout = 0")
	if err == nil {
		t.replident = "f"
		return nil
	}
	_, _ = conn.Exec(context.WithoutCancel(ctx), "SET lock_timeout = 0")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.InsufficientPrivilege || pgErr.Code == pgerrcode.LockNotAvailable) {
		why := "the worker's role must own the table"
		if pgErr.Code == pgerrcode.LockNotAvailable {
			why = "the table stayed locked by other transactions"
		}
		return &InvalidError{Field: "table", Problem: fmt.Sprintf(
			"shapes need REPLICA IDENTITY FULL on their table (as Electric sets it: updates carry the changed columns, where clauses see the old row) and setting it on %s failed: %s (%s); run ALTER TABLE %s REPLICA IDENTITY FULL",
			d, pgErr.Message, why, d.TableSQL())}
	}
	return fmt.Errorf("set replica identity full on %s: %w", d, err)
}
