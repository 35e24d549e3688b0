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

const selectPrefix = "SELECT "

// maxClauseLen bounds the text handed to the parser.
const maxClauseLen = 64 << 10

// Parse parses a where clause and checks it against the allowlist of
// supported constructs. Parameters must be numbered $1..$n without gaps.
// Problems are returned as *Error naming the offending construct.
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
	tree, err := pg_query.Parse(selectPrefix + expr)
	if err != nil {
		return nil, syntaxError(err)
	}
	sel, err := singleTarget(tree)
	if err != nil {
		return nil, err
	}
	root := sel.TargetList[0].GetResTarget().Val
	v := validator{params: map[int]bool{}, columns: map[string]bool{}}
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

// sqlShifted is SQL with every $k renumbered $(k+off).
func (c *Clause) sqlShifted(off int) string {
	if off == 0 || len(c.params) == 0 {
		return c.sql
	}
	var b strings.Builder
	b.Grow(len(c.sql) + 4*len(c.params))
	last := 0
	for _, p := range c.params {
		b.WriteString(c.sql[last:p.start])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(p.num + off))
		last = p.end
	}
	b.WriteString(c.sql[last:])
	return b.String()
}

func syntaxError(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Cursorpos > len(selectPrefix) {
			msg = fmt.Sprintf("%s (at character %d)", msg, pe.Cursorpos-len(selectPrefix))
		}
		return whereErrorf("%s", msg)
	}
	return whereErrorf("%v", err)
}

// singleTarget requires the parse of "SELECT <expr>" to be exactly one
// SELECT with one unnamed target and nothing else: no second statement, no
// FROM, WHERE, ORDER BY, UNION, DISTINCT...
func singleTarget(tree *pg_query.ParseResult) (*pg_query.SelectStmt, error) {
	if len(tree.Stmts) != 1 {
		return nil, whereErrorf("where clause must be a single expression, not %d statements", len(tree.Stmts))
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil {
		return nil, whereErrorf("where clause must be a single expression")
	}
	if sel.Op != pg_query.SetOperation_SETOP_NONE {
		return nil, whereErrorf("where clause must be a single expression (found UNION, INTERSECT or EXCEPT)")
	}
	if len(sel.TargetList) == 0 {
		return nil, whereErrorf("where clause is empty")
	}
	if len(sel.TargetList) > 1 {
		return nil, whereErrorf("where clause must be a single expression, not a list")
	}
	rt := sel.TargetList[0].GetResTarget()
	bare := &pg_query.SelectStmt{
		TargetList:  sel.TargetList,
		LimitOption: pg_query.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg_query.SetOperation_SETOP_NONE,
	}
	if rt == nil || rt.Name != "" || len(rt.Indirection) > 0 || rt.Val == nil || !proto.Equal(sel, bare) {
		return nil, whereErrorf("where clause must be a single expression (found more than an expression: FROM, ORDER BY, UNION, an alias or similar)")
	}
	return sel, nil
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
