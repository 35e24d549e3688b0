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
// by (deletes would not carry the primary key) needs it too.
func needsFullIdentity(d Definition, t *table) bool {
	return d.Where != "" || d.Replica == "full" || t.noPK || t.replident == "n" || t.replident == "i"
}

// fullIdentity sets REPLICA IDENTITY FULL on the table, as Electric does,
// so that updates and deletes carry the whole old row. The ALTER waits at
// most a few seconds for its lock, so that it never queues the table's
// users behind a long transaction.
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
			"this shape needs REPLICA IDENTITY FULL on %s (where clause, replica=full or no primary key) and setting it failed: %s (%s); run ALTER TABLE %s REPLICA IDENTITY FULL",
			d, pgErr.Message, why, d.TableSQL())}
	}
	return fmt.Errorf("set replica identity full on %s: %w", d, err)
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
