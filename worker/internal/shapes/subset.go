package shapes

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/txn"
)

// Subset snapshots (Electric's subset__* parameters): the rows of a shape
// that also match a where clause of the request's, ordered and limited,
// read from PostgreSQL in a snapshot of their own rather than from the
// shape log, with that snapshot's visibility so that the client can merge
// them with the log. See "Subset snapshots" in the package doc for why a
// client neither loses nor doubles a change.

// Subset says which rows of a shape a subset snapshot holds.
type Subset struct {
	// Where, with Params ($1..$n of the clause), selects rows of the shape;
	// nil is every row.
	Where  *where.Clause
	Params []string
	// OrderBy orders the rows; nil leaves PostgreSQL's order.
	OrderBy *where.OrderBy
	// Limit (0: none) and Offset bound the rows, after ordering.
	Limit, Offset int64
}

// SubsetSnapshot is the answer to a subset request.
type SubsetSnapshot struct {
	// Xmin, Xmax and Xip are the snapshot's pg_current_snapshot(): a
	// transaction it does not show is one whose changes the client must
	// still apply from the log.
	Xmin, Xmax uint64
	Xip        []uint64
	// DatabaseLSN is pg_current_wal_insert_lsn() read after the snapshot
	// was taken: every transaction the snapshot shows committed below it.
	DatabaseLSN uint64
	// Mark is Electric's snapshot_mark, in the headers of every row.
	Mark int64
	// Start, when not nil, is the shape log's end read before the snapshot
	// was taken: every transaction in the log up to it is one the
	// snapshot shows (see the package doc).
	Start *Offset
	// Rows are the insert messages of the rows, joined by commas.
	Rows []byte
	// N is the number of rows.
	N int
}

// subsetConcurrency bounds the subset snapshots read at once (each holds
// a PostgreSQL connection for its query).
const subsetConcurrency = 4

// QuerySubset reads a subset snapshot of s. With withStart it also reads
// the shape log's end before the snapshot (SubsetSnapshot.Start). It runs
// in a REPEATABLE READ, READ ONLY transaction on a connection of the
// registry's, and stops when ctx ends or the registry is closed (the
// lease ended): a caller passes a context that ends with its lease.
// Problems of the request (a where clause or an order by PostgreSQL
// refuses, bad params) are *InvalidError with Field where, params or
// order_by. Safe for concurrent use.
func (r *Registry) QuerySubset(ctx context.Context, s *Shape, sub Subset, withStart bool) (*SubsetSnapshot, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.life, cancel)()
	select {
	case r.subsetSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.subsetSem }()
	conn, err := r.createConn(ctx)
	if err != nil {
		return nil, err
	}
	snap, err := querySubset(ctx, conn, s, sub, withStart)
	var ie *InvalidError
	if err != nil && !errors.As(err, &ie) {
		// Whatever state the failure left the session in goes with it.
		conn.Close(context.WithoutCancel(ctx))
		if r.life.Err() != nil {
			return nil, ErrGone
		}
		return nil, err
	}
	select {
	case r.conns <- conn:
	default:
		conn.Close(context.WithoutCancel(ctx))
	}
	return snap, err
}

func querySubset(ctx context.Context, conn *pgx.Conn, s *Shape, sub Subset, withStart bool) (*SubsetSnapshot, error) {
	s.mu.RLock()
	m, gone := s.meta, s.gone
	s.mu.RUnlock()
	if gone {
		return nil, ErrGone
	}
	d := m.Definition
	t, err := describe(ctx, conn, d)
	if err != nil {
		var ie *InvalidError
		if errors.As(err, &ie) {
			return nil, ErrGone // the table went: the shape goes with it
		}
		return nil, err
	}
	sql, args, err := subsetSQL(ctx, conn, d, m.Columns, t, sub)
	if err != nil {
		return nil, err
	}
	out := &SubsetSnapshot{Mark: rand.Int64N(1 << 31)}
	if withStart {
		// Read before the snapshot is taken (see the package doc).
		end := s.End()
		out.Start = &end
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin subset snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The statement takes the transaction's snapshot; the insert position
	// is read after it.
	var snapText, lsn string
	if err := tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text").Scan(&snapText, &lsn); err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	at, err := txn.ParseLSN(lsn)
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	out.DatabaseLSN = uint64(at)
	if out.Xmin, out.Xmax, out.Xip, err = parseSnapshot(snapText); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, sql, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return nil, subsetErr(d, err)
	}
	defer rows.Close()
	enc := subsetEncoder(d, m.Columns, m.PK, out.Mark)
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != len(m.Columns) {
			return nil, fmt.Errorf("subset of %s: row has %d columns, want %d", d, len(raw), len(m.Columns))
		}
		if out.N > 0 {
			out.Rows = append(out.Rows, ',')
		}
		out.Rows = enc.appendRow(out.Rows, raw)
		out.N++
	}
	if err := rows.Err(); err != nil {
		return nil, subsetErr(d, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("subset of %s: %w", d, err)
	}
	return out, nil
}

// subsetEncoder encodes a subset snapshot's rows: insert messages as the
// initial snapshot's, whose headers also hold Electric's snapshot_mark.
func subsetEncoder(d Definition, cols []Column, pk []string, mark int64) *rowEncoder {
	pkPos := make([]int, len(pk))
	for i, k := range pk {
		for j, c := range cols {
			if c.Name == k {
				pkPos[i] = j
			}
		}
	}
	enc := newRowEncoder(d, cols, pkPos)
	// The suffix ends with the headers' closing brace and the message's.
	enc.suffix = append(enc.suffix[:len(enc.suffix)-2], `,"snapshot_mark":`...)
	enc.suffix = strconv.AppendInt(enc.suffix, mark, 10)
	enc.suffix = append(enc.suffix, "}}"...)
	return enc
}

// subsetSQL type-checks the subset against the table t of the shape d and
// returns its query: the shape's columns as text, the rows matching both
// where clauses (the shape's params first, then the subset's, renumbered
// after them), ordered and limited.
func subsetSQL(ctx context.Context, conn *pgx.Conn, d Definition, cols []Column, t *table, sub Subset) (string, []any, error) {
	wt := whereTable(d, t.columns)
	var conds []string
	var args []any
	if d.Where != "" {
		conds = append(conds, "("+d.Where+")")
		for _, p := range d.Params {
			args = append(args, p)
		}
	}
	if sub.Where != nil {
		// Type-checked alone, as a shape's where clause is: its params take
		// the types PostgreSQL gives them there.
		if _, err := where.Prepare(ctx, conn, wt, sub.Where, sub.Params); err != nil {
			var we *where.Error
			if errors.As(err, &we) {
				return "", nil, &InvalidError{Field: we.Field, Problem: we.Message}
			}
			return "", nil, fmt.Errorf("subset where clause of %s: %w", d, err)
		}
		conds = append(conds, "("+sub.Where.SQLShifted(len(args))+")")
		for _, p := range sub.Params {
			args = append(args, p)
		}
	}
	if sub.OrderBy != nil {
		for _, name := range sub.OrderBy.Columns() {
			if !slicesContainsColumn(t.columns, name) {
				return "", nil, &InvalidError{Field: "order_by", Problem: fmt.Sprintf("column %q does not exist in table %s", name, d)}
			}
		}
		// Parsed and analysed by PostgreSQL, not run.
		if _, err := conn.PgConn().Prepare(ctx, "", "SELECT FROM "+d.TableSQL()+" ORDER BY "+sub.OrderBy.SQL(), nil); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pgerrcode.IsSyntaxErrororAccessRuleViolation(pe.Code) || pgerrcode.IsDataException(pe.Code)) && pe.Code != pgerrcode.InsufficientPrivilege {
				return "", nil, &InvalidError{Field: "order_by", Problem: strings.ReplaceAll(pe.Message, "pg_catalog.", "")}
			}
			return "", nil, fmt.Errorf("subset order by of %s: %w", d, err)
		}
	}
	// The output columns are named apart from the table's, so that a name
	// in the order by is the table's column, not its text (PostgreSQL
	// takes an output column's name first).
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = quoteIdent(c.Name) + "::text AS baton_subset_" + strconv.Itoa(i)
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + d.TableSQL()
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	if sub.OrderBy != nil {
		q += " ORDER BY " + sub.OrderBy.SQL()
	}
	if sub.Limit > 0 {
		q += " LIMIT " + strconv.FormatInt(sub.Limit, 10)
	}
	if sub.Offset > 0 {
		q += " OFFSET " + strconv.FormatInt(sub.Offset, 10)
	}
	return q, args, nil
}

func slicesContainsColumn(cols []Column, name string) bool {
	for _, c := range cols {
		if c.Name == name {
			return true
		}
	}
	return false
}

// subsetErr is a failed subset query: a where clause or order by that
// fails on a row (division by zero, a bad cast) is the request's problem.
func subsetErr(d Definition, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pgerrcode.IsDataException(pe.Code) {
		return &InvalidError{Field: "where", Problem: "evaluating the subset on the table's rows failed: " + pe.Message}
	}
	return fmt.Errorf("subset of %s: %w", d, err)
}
