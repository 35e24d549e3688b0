package where

import (
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// orderByPrefix makes a client's order by the ORDER BY of a statement.
const orderByPrefix = "SELECT 1 ORDER BY "

// OrderBy is a parsed and validated ORDER BY list (of a subset snapshot).
// It is immutable and safe for concurrent use.
type OrderBy struct {
	sql     string
	columns []string
}

// SQL is the canonical text of the list (deparsed from the validated tree).
func (o *OrderBy) SQL() string { return o.sql }

// Columns are the names of the columns the list refers to, sorted.
func (o *OrderBy) Columns() []string { return append([]string(nil), o.columns...) }

// ParseOrderBy parses an ORDER BY list as the ORDER BY of "SELECT 1 ORDER
// BY <list>" with PostgreSQL's parser. Each item is an expression of the
// constructs a where clause allows (see Parse), without parameters, with
// ASC or DESC and NULLS FIRST or LAST; USING is refused. Problems are
// *Error with Field "order_by", reading like Parse's ("At location N:
// ...", N counting from 0 in the list).
func ParseOrderBy(list string) (*OrderBy, error) {
	bad := func(format string, args ...any) error {
		return &Error{Field: "order_by", Message: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(list) == "" {
		return nil, bad("order by is empty")
	}
	if len(list) > maxClauseLen {
		return nil, bad("order by is longer than %d bytes", maxClauseLen)
	}
	if strings.ContainsRune(list, 0) {
		return nil, bad("order by contains a NUL character")
	}
	tree, err := pg_query.Parse(orderByPrefix + list)
	if err != nil {
		we := syntaxError(err).(*Error)
		return nil, &Error{Field: "order_by", Message: shiftLocation(we.Message, len(orderByPrefix))}
	}
	if len(tree.Stmts) != 1 {
		return nil, bad(`unescaped ";" causing statement split`)
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || len(sel.SortClause) == 0 {
		return nil, bad("malformed order by")
	}
	rest := proto.Clone(sel).(*pg_query.SelectStmt)
	rest.TargetList, rest.SortClause = nil, nil
	bare := &pg_query.SelectStmt{
		LimitOption: pg_query.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg_query.SetOperation_SETOP_NONE,
	}
	if len(sel.TargetList) != 1 || !proto.Equal(rest, bare) {
		return nil, bad("malformed query ending with SQL clauses")
	}
	v := validator{params: map[int]bool{}, columns: map[string]bool{}, at: -1, field: "order_by", prefix: orderByPrefix}
	for _, item := range sel.SortClause {
		sb := item.GetSortBy()
		if sb == nil {
			return nil, bad("malformed order by")
		}
		v.at = sb.Location
		if len(sb.UseOp) > 0 {
			return nil, v.errorf("ORDER BY ... USING is not supported")
		}
		if err := v.node(sb.Node); err != nil {
			return nil, err
		}
	}
	if len(v.params) > 0 {
		return nil, bad("parameters are not allowed in order by")
	}
	out, err := pg_query.Deparse(&pg_query.ParseResult{Version: tree.Version, Stmts: []*pg_query.RawStmt{{Stmt: &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: sel}}}}})
	if err != nil {
		return nil, bad("cannot print the order by: %v", err)
	}
	if !strings.HasPrefix(out, orderByPrefix) {
		return nil, fmt.Errorf("deparse: unexpected output %q", out)
	}
	cols := make([]string, 0, len(v.columns))
	for c := range v.columns {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	return &OrderBy{sql: out[len(orderByPrefix):], columns: cols}, nil
}

// shiftLocation moves the "At location N" of a syntax error's message
// (a position in the whole statement) by -d.
func shiftLocation(msg string, d int) string {
	var n int
	var rest string
	if k, _ := fmt.Sscanf(msg, "At location %d:", &n); k != 1 {
		return msg
	}
	if i := strings.Index(msg, ":"); i >= 0 {
		rest = msg[i:]
	}
	return fmt.Sprintf("At location %d%s", max(n-d, 0), rest)
}
