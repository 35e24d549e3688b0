package where

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Column is a column of a table as PostgreSQL describes it.
type Column struct {
	Name    string
	TypeOID uint32
	Type    string // format_type(atttypid, atttypmod)
}

// Table is the table a where clause filters.
type Table struct {
	Schema, Name string
	Columns      []Column
}

func (t Table) ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

func (t Table) ordinal(name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// Predicate is a clause type-checked against a table, with its parameters
// bound. It is immutable and safe for concurrent use.
type Predicate struct {
	table     Table
	clause    *Clause
	params    []string
	paramOIDs []uint32
	json      map[string]bool // referenced columns whose values are JSON text
	plan      *fastPlan       // nil: PostgreSQL evaluates
	pre       *fastPlan       // without plan: the plan of the fast conjuncts, a pre-filter (nil if none)
	// arrayOIDs are, with a pre-filter, the array types of the parameters'
	// types (nil when one has none or is an array): predicates of the same
	// clause then share a CASE branch of a pair query (prefilter.go).
	arrayOIDs []uint32
	family    string // with arrayOIDs: the clause and its parameter types
}

// SQL is the canonical text of the clause, with parameters $1..$n.
func (p *Predicate) SQL() string { return p.clause.sql }

// Params are the parameter values, $1 first.
func (p *Predicate) Params() []string { return append([]string(nil), p.params...) }

// Fast reports whether the predicate is evaluated in Go rather than by
// PostgreSQL.
func (p *Predicate) Fast() bool { return p.plan != nil }

const oidBool = 16

// Prepare type-checks a clause against table t on conn, requires it to be
// boolean, binds params (the text of $1, $2...) and plans its evaluation.
// Problems with the clause or the parameters are *Error; anything else
// (such as a broken connection) is an ordinary error. conn must carry the
// worker's output settings; Prepare uses it for a few queries and leaves it
// idle. Safe to call concurrently on different connections.
func Prepare(ctx context.Context, conn *pgx.Conn, t Table, c *Clause, params []string) (*Predicate, error) {
	if len(params) != c.nparams {
		return nil, &Error{Field: "params", Message: fmt.Sprintf("the where clause uses %d parameters but %d were given", c.nparams, len(params))}
	}
	for i, v := range params {
		if strings.ContainsRune(v, 0) {
			return nil, &Error{Field: "params", Message: fmt.Sprintf("params[%d] contains a NUL character", i+1)}
		}
	}
	for _, name := range c.columns {
		if t.ordinal(name) < 0 {
			return nil, whereErrorf("column %q does not exist in table %s", name, t.ident())
		}
	}
	pc := conn.PgConn()
	// Parameters take the types PostgreSQL gives them in a WHERE clause (a
	// bare $1 is boolean there, text in a select list). If the clause is no
	// WHERE clause, the probe below says why.
	var oids []uint32
	if d, err := pc.Prepare(ctx, "", "SELECT FROM "+t.ident()+" WHERE ("+c.sql+")", nil); err == nil {
		oids = d.ParamOIDs
	}
	probe := "SELECT (" + c.sql + ") FROM " + t.ident() + " WHERE false"
	desc, err := pc.Prepare(ctx, "", probe, oids)
	if err != nil {
		return nil, pgError("where", err)
	}
	if len(desc.Fields) != 1 {
		return nil, fmt.Errorf("type check: %d result columns", len(desc.Fields))
	}
	if oid := desc.Fields[0].DataTypeOID; oid != oidBool {
		var name string
		if err := conn.QueryRow(ctx, "SELECT pg_catalog.format_type($1, NULL)", oid).Scan(&name); err != nil {
			return nil, fmt.Errorf("type name: %w", err)
		}
		return nil, whereErrorf("where clause must be a boolean expression, got %s", name)
	}
	if err := bind(ctx, pc, probe, params, desc.ParamOIDs); err != nil {
		return nil, err
	}
	for i, oid := range desc.ParamOIDs {
		if i < len(params) && timeTypes[oid] && relativeTime(params[i]) {
			return nil, &Error{Field: "params", Message: fmt.Sprintf("params[%d]: %q is relative to the current time, so the where clause would not be deterministic; use a fixed value", i+1, params[i])}
		}
	}
	cols, err := describe(ctx, conn, t)
	if err != nil {
		return nil, err
	}
	p := &Predicate{table: t, clause: c, params: params, paramOIDs: desc.ParamOIDs, json: map[string]bool{}}
	for _, name := range c.columns {
		if ci := cols[name]; ci.baseOID == oidJSON || ci.baseOID == oidJSONB {
			p.json[name] = true
		}
	}
	p.plan, p.pre, err = planFast(ctx, pc, t, c, params, desc.ParamOIDs, cols)
	if err != nil {
		return nil, err
	}
	if p.pre != nil && len(params) > 0 {
		if p.arrayOIDs, err = arrayTypes(ctx, pc, desc.ParamOIDs); err != nil {
			return nil, err
		}
		if p.arrayOIDs != nil {
			p.family = fmt.Sprint(c.sql, "\x00", desc.ParamOIDs)
		}
	}
	return p, nil
}

// arrayTypes are the array types of the given types; nil if one of them
// has none or is an array itself.
func arrayTypes(ctx context.Context, pc *pgconn.PgConn, oids []uint32) ([]uint32, error) {
	arg := make([]string, len(oids))
	for i, o := range oids {
		arg[i] = strconv.FormatUint(uint64(o), 10)
	}
	res := pc.ExecParams(ctx, `SELECT t.typarray, t.typcategory = 'A' FROM pg_catalog.unnest($1::pg_catalog.oid[]) WITH ORDINALITY AS u(o, n)
		JOIN pg_catalog.pg_type t ON t.oid = u.o ORDER BY u.n`, [][]byte{[]byte("{" + strings.Join(arg, ",") + "}")}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("array types: %w", res.Err)
	}
	if len(res.Rows) != len(oids) {
		return nil, nil
	}
	out := make([]uint32, len(oids))
	for i, r := range res.Rows {
		a, err := strconv.ParseUint(string(r[0]), 10, 32)
		if err != nil || a == 0 || string(r[1]) == "t" {
			return nil, nil
		}
		out[i] = uint32(a)
	}
	return out, nil
}

// bind executes the probe with the parameters; a value its type refuses is
// reported with its index.
func bind(ctx context.Context, pc *pgconn.PgConn, probe string, params []string, oids []uint32) error {
	err := pc.ExecParams(ctx, probe, textValues(params), oids, nil, nil).Read().Err
	if err == nil {
		return nil
	}
	if _, ok := clientError(err); !ok {
		return fmt.Errorf("bind parameters: %w", err)
	}
	for i, v := range params {
		err1 := pc.ExecParams(ctx, "SELECT $1", [][]byte{[]byte(v)}, oids[i:i+1], nil, nil).Read().Err
		if pe, ok := clientError(err1); ok {
			return &Error{Field: "params", Message: fmt.Sprintf("params[%d]: %s", i+1, pe.Message)}
		} else if err1 != nil {
			return fmt.Errorf("bind parameter %d: %w", i+1, err1)
		}
	}
	return pgError("where", err)
}

// pgError turns an error of PostgreSQL's about the client's input into an
// *Error; other errors are wrapped.
func pgError(field string, err error) error {
	pe, ok := clientError(err)
	if !ok {
		return fmt.Errorf("type check: %w", err)
	}
	msg := strings.ReplaceAll(pe.Message, "pg_catalog.", "") // the qualification is ours, not the client's
	if pe.Hint != "" {
		msg += " (" + strings.TrimSuffix(pe.Hint, ".") + ")"
	}
	return &Error{Field: field, Message: msg}
}

func textValues(vs []string) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = []byte(v)
	}
	return out
}

// colInfo is what planning needs to know about a column beyond its type.
type colInfo struct {
	typeOID       uint32 // atttypid
	baseOID       uint32 // the type under any domains
	deterministic bool   // its collation compares equal iff bytes are equal
	byteOrder     bool   // its collation orders by bytes (C, POSIX)
}

const (
	oidJSON  = 114
	oidJSONB = 3802
)

const describeSQL = `SELECT a.attname, a.atttypid,
	(WITH RECURSIVE d(oid, base) AS (
		SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid
		UNION ALL SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t JOIN d ON t.oid = d.base)
	 SELECT d.oid FROM d WHERE d.base = 0),
	coalesce(co.collprovider::text, ''), coalesce(co.collcollate, ''), coalesce(co.collisdeterministic, true),
	db.datlocprovider::text, db.datcollate
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
CROSS JOIN (SELECT datlocprovider, datcollate FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) db
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`

// describe reads the types and collations of t's columns.
func describe(ctx context.Context, conn *pgx.Conn, t Table) (map[string]colInfo, error) {
	rows, err := conn.Query(ctx, describeSQL, t.ident())
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", t.ident(), err)
	}
	out := map[string]colInfo{}
	for rows.Next() {
		var (
			name, prov, coll, dbProv, dbColl string
			ci                               colInfo
		)
		if err := rows.Scan(&name, &ci.typeOID, &ci.baseOID, &prov, &coll, &ci.deterministic, &dbProv, &dbColl); err != nil {
			return nil, fmt.Errorf("describe %s: %w", t.ident(), err)
		}
		if prov == "d" { // the database's default collation
			prov, coll = dbProv, dbColl
		}
		ci.byteOrder = prov == "c" && (coll == "C" || coll == "POSIX")
		out[name] = ci
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("describe %s: %w", t.ident(), err)
	}
	if len(out) == 0 {
		return nil, errors.New("describe " + t.ident() + ": no columns")
	}
	return out, nil
}

// timeTypes are the OIDs of date, time, timetz, timestamp and timestamptz.
var timeTypes = map[uint32]bool{1082: true, 1083: true, 1266: true, 1114: true, 1184: true}
