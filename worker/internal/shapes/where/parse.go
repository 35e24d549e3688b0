package where

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/proto"
)

// Clause is a parsed and validated where clause. It is immutable and safe
// for concurrent use.
type Clause struct {
	expr    *pg_query.Node // validated, functions and types qualified with pg_catalog
	sql     string         // canonical text, deparsed from expr
	params  []paramPos     // the $n tokens of sql
	nparams int
	columns []string
}

// paramPos is the place of one $n token in the canonical text.
type paramPos struct{ start, end, num int }

// selectPrefix prints an expression alone (deparse); wherePrefix makes a
// client's clause the WHERE of a statement, as Electric parses it.
const (
	selectPrefix = "SELECT "
	wherePrefix  = "SELECT 1 WHERE "
)

// maxClauseLen bounds the text handed to the parser.
const maxClauseLen = 64 << 10

// Parse parses a where clause as the WHERE of "SELECT 1 WHERE <clause>",
// as Electric does, and checks it against the allowlist of supported
// constructs. Parameters must be numbered $1..$n without gaps. Problems
// are returned as *Error naming the offending construct; their messages
// read like Electric's: "At location N: <problem>", N counting from 0. For
// a syntax error N is PostgreSQL's position in the whole statement (so
// "1 x 1" gives `At location 17: syntax error at or near "x"`, exactly
// Electric's answer); for a construct that is refused, N is its position
// in the clause.
func Parse(expr string) (*Clause, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, whereErrorf("where clause is empty")
	}
	if len(expr) > maxClauseLen {
		return nil, whereErrorf("where clause is longer than %d bytes", maxClauseLen)
	}
	if strings.ContainsRune(expr, 0) {
		return nil, whereErrorf("where clause contains a NUL character")
	}
	tree, err := pg_query.Parse(wherePrefix + expr)
	if err != nil {
		return nil, syntaxError(err)
	}
	root, err := whereClause(tree)
	if err != nil {
		return nil, err
	}
	v := validator{params: map[int]bool{}, columns: map[string]bool{}, at: -1}
	if err := v.node(root); err != nil {
		return nil, err
	}
	n := 0
	for p := range v.params {
		n = max(n, p)
	}
	for i := 1; i <= n; i++ {
		if !v.params[i] {
			return nil, whereErrorf("parameter $%d is not used: parameters must be numbered $1 to $%d without gaps", i, n)
		}
	}
	sql, err := deparse(root, tree.Version)
	if err != nil {
		return nil, err
	}
	pos, err := scanParams(sql)
	if err != nil {
		return nil, err
	}
	cols := make([]string, 0, len(v.columns))
	for c := range v.columns {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	return &Clause{expr: root, sql: sql, params: pos, nparams: n, columns: cols}, nil
}

// SQL is the canonical text of the clause (deparsed from the validated
// tree), with parameters $1..$n.
func (c *Clause) SQL() string { return c.sql }

// Columns are the names of the columns the clause refers to, sorted.
func (c *Clause) Columns() []string { return slices.Clone(c.columns) }

// NumParams is the number of parameters the clause takes.
func (c *Clause) NumParams() int { return c.nparams }

// SQLShifted is SQL with every $k renumbered $(k+off), for a statement
// whose parameters $1..$off are another clause's.
func (c *Clause) SQLShifted(off int) string { return c.sqlShifted(off) }

// sqlShifted is SQL with every $k renumbered $(k+off).
func (c *Clause) sqlShifted(off int) string {
	if off == 0 || len(c.params) == 0 {
		return c.sql
	}
	return c.sqlParams(func(k int) string { return "$" + strconv.Itoa(k+off) })
}

// sqlParams is SQL with every $k replaced by f(k).
func (c *Clause) sqlParams(f func(k int) string) string {
	var b strings.Builder
	b.Grow(len(c.sql) + 4*len(c.params))
	last := 0
	for _, p := range c.params {
		b.WriteString(c.sql[last:p.start])
		b.WriteString(f(p.num))
		last = p.end
	}
	b.WriteString(c.sql[last:])
	return b.String()
}

// syntaxError is Electric's report of a syntax error: PostgreSQL's
// message at the error's position in "SELECT 1 WHERE <clause>", counted
// from 0 (Electric's parser binding turns PostgreSQL's 1-based cursor
// position into that).
func syntaxError(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return whereErrorf("At location %d: %s", max(pe.Cursorpos-1, 0), pe.Message)
	}
	return whereErrorf("%v", err)
}

// whereClause is the WHERE of the parse of "SELECT 1 WHERE <clause>",
// which must be that statement alone: a second statement or a clause
// after the WHERE (ORDER BY, LIMIT, GROUP BY, UNION, FOR UPDATE...) is
// refused with Electric's messages.
func whereClause(tree *pg_query.ParseResult) (*pg_query.Node, error) {
	if len(tree.Stmts) != 1 {
		return nil, whereErrorf(`unescaped ";" causing statement split`)
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || sel.WhereClause == nil {
		return nil, whereErrorf("malformed query ending with SQL clauses")
	}
	rest := proto.Clone(sel).(*pg_query.SelectStmt)
	rest.TargetList, rest.WhereClause = nil, nil
	bare := &pg_query.SelectStmt{
		LimitOption: pg_query.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg_query.SetOperation_SETOP_NONE,
	}
	if len(sel.TargetList) != 1 || !proto.Equal(rest, bare) {
		return nil, whereErrorf("malformed query ending with SQL clauses")
	}
	return sel.WhereClause, nil
}

// deparse prints an expression by deparsing "SELECT <expr>".
func deparse(expr *pg_query.Node, version int32) (string, error) {
	tree := &pg_query.ParseResult{Version: version, Stmts: []*pg_query.RawStmt{{Stmt: &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: &pg_query.SelectStmt{
		TargetList:  []*pg_query.Node{{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{Val: expr}}}},
		LimitOption: pg_query.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg_query.SetOperation_SETOP_NONE,
	}}}}}}
	out, err := pg_query.Deparse(tree)
	if err != nil {
		return "", whereErrorf("cannot print the where clause: %v", err)
	}
	if !strings.HasPrefix(out, selectPrefix) {
		return "", fmt.Errorf("deparse: unexpected output %q", out)
	}
	return out[len(selectPrefix):], nil
}

// scanParams finds the $n tokens of a canonical text with PostgreSQL's
// scanner (so a "$1" inside a string literal is not one).
func scanParams(sql string) ([]paramPos, error) {
	res, err := pg_query.Scan(sql)
	if err != nil {
		return nil, fmt.Errorf("scan canonical clause: %w", err)
	}
	var out []paramPos
	for _, t := range res.Tokens {
		if t.Token != pg_query.Token_PARAM {
			continue
		}
		s, e := int(t.Start), int(t.End)
		n, err := strconv.Atoi(sql[s+1 : e])
		if err != nil {
			return nil, fmt.Errorf("scan canonical clause: parameter %q", sql[s:e])
		}
		out = append(out, paramPos{start: s, end: e, num: n})
	}
	return out, nil
}
