package where

import (
	"context"
	"math"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// fastPlan is a predicate Go evaluates exactly: a conjunction of conditions
// on single columns. A condition on a column's value is false on NULL.
type fastPlan struct {
	never bool // a contradiction (id = 5.5): no row matches
	ints  []*intCond
	strs  []*strCond
	nulls []nullCond
}

// intCond: lo <= v <= hi, v in in (when in != nil), v not in not.
type intCond struct {
	col    int // ordinal in Table.Columns
	lo, hi int64
	in     []int64
	not    []int64
}

// strCond compares the canonical text of a value: equality for text and
// varchar under deterministic collations, uuid and bool; byte order for
// text under the C collation.
type strCond struct {
	col                int
	in                 map[string]bool // nil: any
	not                map[string]bool
	lo, hi             *string
	loStrict, hiStrict bool
}

type nullCond struct {
	col    int
	isNull bool
}

func (p *fastPlan) match(r rowRef) bool {
	get := r.get
	if p.never {
		return false
	}
	for _, c := range p.nulls {
		if (get(c.col) == nil) != c.isNull {
			return false
		}
	}
	for _, c := range p.ints {
		s := get(c.col)
		if s == nil {
			return false
		}
		v, err := strconv.ParseInt(*s, 10, 64)
		if err != nil || !c.holds(v) {
			return false
		}
	}
	for _, c := range p.strs {
		s := get(c.col)
		if s == nil || !c.holds(*s) {
			return false
		}
	}
	return true
}

func (c *intCond) holds(v int64) bool {
	if v < c.lo || v > c.hi {
		return false
	}
	if c.in != nil && !containsInt(c.in, v) {
		return false
	}
	return !containsInt(c.not, v)
}

func containsInt(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (c *strCond) holds(v string) bool {
	if c.in != nil && !c.in[v] {
		return false
	}
	if c.not[v] {
		return false
	}
	if c.lo != nil && (v < *c.lo || c.loStrict && v == *c.lo) {
		return false
	}
	if c.hi != nil && (v > *c.hi || c.hiStrict && v == *c.hi) {
		return false
	}
	return true
}

// Type OIDs the fast paths know.
const (
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidVarchar = 1043
	oidNumeric = 1700
	oidUUID    = 2950
)

// nullTestable are base types whose IS NULL is plain (not a row test).
var nullTestable = map[uint32]bool{
	16: true, 17: true, 20: true, 21: true, 23: true, 25: true, 114: true, 700: true, 701: true, 1042: true,
	1043: true, 1082: true, 1083: true, 1114: true, 1184: true, 1186: true, 1700: true, 2950: true, 3802: true,
	1000: true, 1005: true, 1007: true, 1009: true, 1016: true, 1015: true, 2951: true,
}

// constant is a constant operand: its value's text and the type
// PostgreSQL resolves it to in the comparison.
type constant struct {
	oid   uint32
	raw   string
	canon string // the type's output of raw, filled in by canonicalise
}

// term is one `column op constant` comparison found in the clause.
type term struct {
	col    int
	op     string // = <> < <= > >= in notin
	consts []*constant
}

var plainInt = regexp.MustCompile(`^-?[0-9]+$`)

// planFast recognises a clause Go can evaluate exactly: exact is its plan,
// nil if it has none. A clause whose top-level conjuncts are not all
// fast gets the plan of those that are as pre (nil if none is): pre is
// true on every row the clause is true on, so the rows it is false on can
// be left out without asking PostgreSQL (doc.go).
func planFast(ctx context.Context, pc *pgconn.PgConn, t Table, c *Clause, params []string, paramOIDs []uint32, cols map[string]colInfo) (exact, pre *fastPlan, err error) {
	a := analyzer{t: t, params: params, paramOIDs: paramOIDs, cols: cols, plan: &fastPlan{}}
	all := true
	for _, n := range conjuncts(c.expr, nil) {
		nt, nc, nn := len(a.terms), len(a.consts), len(a.plan.nulls)
		if !a.conjunct(n) { // undo what it added before it failed
			a.terms, a.consts, a.plan.nulls = a.terms[:nt], a.consts[:nc], a.plan.nulls[:nn]
			all = false
		}
	}
	if len(a.terms) == 0 && len(a.plan.nulls) == 0 && !all {
		return nil, nil, nil
	}
	if len(a.consts) > 0 {
		ok, err := canonicalise(ctx, pc, a.consts)
		if err != nil || !ok {
			return nil, nil, err
		}
	}
	for _, tm := range a.terms {
		if !a.apply(tm) {
			return nil, nil, nil
		}
	}
	a.plan.normalise()
	if all {
		return a.plan, nil, nil
	}
	return nil, a.plan, nil
}

func conjuncts(n *pg_query.Node, out []*pg_query.Node) []*pg_query.Node {
	if b := n.GetBoolExpr(); b != nil && b.Boolop == pg_query.BoolExprType_AND_EXPR {
		for _, a := range b.Args {
			out = conjuncts(a, out)
		}
		return out
	}
	return append(out, n)
}

type analyzer struct {
	t         Table
	params    []string
	paramOIDs []uint32
	cols      map[string]colInfo
	plan      *fastPlan
	terms     []term
	consts    []*constant
}

// column is the ordinal and info of a plain column reference.
func (a *analyzer) column(n *pg_query.Node) (int, colInfo, bool) {
	cr := n.GetColumnRef()
	if cr == nil || len(cr.Fields) != 1 {
		return 0, colInfo{}, false
	}
	name := cr.Fields[0].GetString_().GetSval()
	ord := a.t.ordinal(name)
	ci, ok := a.cols[name]
	return ord, ci, ord >= 0 && ok
}

// kind is the comparison family of a column type; "" when not fast.
func kind(ci colInfo) string {
	switch ci.typeOID {
	case oidInt2, oidInt4, oidInt8:
		return "int"
	case oidText, oidVarchar:
		if ci.deterministic {
			return "text"
		}
	case oidUUID, oidBool:
		return "eq"
	}
	return ""
}

// constant resolves a constant operand compared with a column of type col.
func (a *analyzer) constant(n *pg_query.Node, col uint32) (*constant, bool) {
	if p := n.GetParamRef(); p != nil {
		i := int(p.Number) - 1
		return &constant{oid: a.paramOIDs[i], raw: a.params[i]}, true
	}
	k := n.GetAConst()
	if k == nil || k.Isnull {
		return nil, false
	}
	switch v := k.Val.(type) {
	case *pg_query.A_Const_Sval:
		return &constant{oid: col, raw: v.Sval.Sval}, true // an unknown literal takes the column's type
	case *pg_query.A_Const_Ival:
		return &constant{oid: oidInt4, raw: strconv.Itoa(int(v.Ival.Ival))}, true
	case *pg_query.A_Const_Fval:
		s := v.Fval.Fval
		if plainInt.MatchString(s) {
			if _, err := strconv.ParseInt(s, 10, 64); err == nil {
				return &constant{oid: oidInt8, raw: s}, true
			}
		}
		return &constant{oid: oidNumeric, raw: s}, true
	case *pg_query.A_Const_Boolval:
		return &constant{oid: oidBool, raw: strconv.FormatBool(v.Boolval.Boolval)}, true
	}
	return nil, false
}

// compatible reports whether comparing a column of this kind with a
// constant of type oid is exact in Go.
func compatible(k string, ci colInfo, oid uint32) bool {
	switch k {
	case "int":
		return oid == oidInt2 || oid == oidInt4 || oid == oidInt8 || oid == oidNumeric
	case "text":
		return oid == oidText || oid == oidVarchar
	case "eq":
		return oid == ci.typeOID
	}
	return false
}

var flipped = map[string]string{"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

func (a *analyzer) conjunct(n *pg_query.Node) bool {
	switch x := n.Node.(type) {
	case *pg_query.Node_NullTest:
		ord, ci, ok := a.column(x.NullTest.Arg)
		if !ok || x.NullTest.Argisrow || !nullTestable[ci.baseOID] {
			return false
		}
		a.plan.nulls = append(a.plan.nulls, nullCond{col: ord, isNull: x.NullTest.Nulltesttype == pg_query.NullTestType_IS_NULL})
		return true
	case *pg_query.Node_ColumnRef: // a bool column on its own
		return a.boolColumn(n, "t")
	case *pg_query.Node_BoolExpr:
		if x.BoolExpr.Boolop == pg_query.BoolExprType_NOT_EXPR && len(x.BoolExpr.Args) == 1 {
			return a.boolColumn(x.BoolExpr.Args[0], "f")
		}
		return false
	case *pg_query.Node_AExpr:
		return a.aexpr(x.AExpr)
	}
	return false
}

func (a *analyzer) boolColumn(n *pg_query.Node, want string) bool {
	ord, ci, ok := a.column(n)
	if !ok || ci.typeOID != oidBool {
		return false
	}
	a.terms = append(a.terms, term{col: ord, op: "=", consts: []*constant{{oid: oidBool, canon: want}}})
	return true
}

func (a *analyzer) aexpr(e *pg_query.A_Expr) bool {
	op, ok := operatorName(e.Name)
	if !ok {
		return false
	}
	var sides []*pg_query.Node
	switch e.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		if flipped[op] == "" {
			return false
		}
		if _, _, ok := a.column(e.Lexpr); !ok {
			e = &pg_query.A_Expr{Lexpr: e.Rexpr, Rexpr: e.Lexpr}
			op = flipped[op]
		}
		sides = []*pg_query.Node{e.Rexpr}
	case pg_query.A_Expr_Kind_AEXPR_IN:
		sides = e.Rexpr.GetList().GetItems()
		op = map[string]string{"=": "in", "<>": "notin"}[op]
	case pg_query.A_Expr_Kind_AEXPR_BETWEEN:
		items := e.Rexpr.GetList().GetItems()
		if len(items) != 2 {
			return false
		}
		return a.term(e.Lexpr, ">=", items[:1]) && a.term(e.Lexpr, "<=", items[1:])
	default:
		return false
	}
	return a.term(e.Lexpr, op, sides)
}

func (a *analyzer) term(colNode *pg_query.Node, op string, operands []*pg_query.Node) bool {
	ord, ci, ok := a.column(colNode)
	k := kind(ci)
	if !ok || k == "" || len(operands) == 0 {
		return false
	}
	if k != "int" && op != "=" && op != "<>" && op != "in" && op != "notin" && !(k == "text" && ci.byteOrder) {
		return false
	}
	tm := term{col: ord, op: op}
	for _, n := range operands {
		c, ok := a.constant(n, ci.typeOID)
		if !ok || !compatible(k, ci, c.oid) {
			return false
		}
		tm.consts = append(tm.consts, c)
		a.consts = append(a.consts, c)
	}
	a.terms = append(a.terms, tm)
	return true
}

// canonicalise has PostgreSQL read every constant in its type and print it
// back; false if one of them does not read (the clause then stays with
// PostgreSQL, which reports the problem in its own way).
func canonicalise(ctx context.Context, pc *pgconn.PgConn, cs []*constant) (bool, error) {
	sql := "SELECT "
	vals := make([][]byte, len(cs))
	oids := make([]uint32, len(cs))
	for i, c := range cs {
		if i > 0 {
			sql += ", "
		}
		sql += "$" + strconv.Itoa(i+1)
		vals[i], oids[i] = []byte(c.raw), c.oid
	}
	res := pc.ExecParams(ctx, sql, vals, oids, nil, nil).Read()
	if res.Err != nil {
		if _, ok := clientError(res.Err); ok {
			return false, nil
		}
		return false, res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != len(cs) {
		return false, nil
	}
	for i, c := range cs {
		if res.Rows[0][i] == nil {
			return false, nil
		}
		c.canon = string(res.Rows[0][i])
	}
	return true, nil
}

// apply adds a canonicalised term to the plan.
func (a *analyzer) apply(tm term) bool {
	if kind(a.cols[a.t.Columns[tm.col].Name]) == "int" {
		return a.plan.applyInt(tm)
	}
	c := a.plan.str(tm.col)
	switch tm.op {
	case "=", "in":
		in := map[string]bool{}
		for _, k := range tm.consts {
			if c.in == nil || c.in[k.canon] {
				in[k.canon] = true
			}
		}
		c.in = in
	case "<>", "notin":
		if c.not == nil {
			c.not = map[string]bool{}
		}
		for _, k := range tm.consts {
			c.not[k.canon] = true
		}
	case "<", "<=":
		v := tm.consts[0].canon
		if c.hi == nil || v < *c.hi || v == *c.hi && tm.op == "<" {
			c.hi, c.hiStrict = &v, tm.op == "<"
		}
	case ">", ">=":
		v := tm.consts[0].canon
		if c.lo == nil || v > *c.lo || v == *c.lo && tm.op == ">" {
			c.lo, c.loStrict = &v, tm.op == ">"
		}
	default:
		return false
	}
	return true
}

func (p *fastPlan) str(col int) *strCond {
	for _, c := range p.strs {
		if c.col == col {
			return c
		}
	}
	c := &strCond{col: col}
	p.strs = append(p.strs, c)
	return c
}

func (p *fastPlan) int(col int) *intCond {
	for _, c := range p.ints {
		if c.col == col {
			return c
		}
	}
	c := &intCond{col: col, lo: math.MinInt64, hi: math.MaxInt64}
	p.ints = append(p.ints, c)
	return c
}

// applyInt adds an integer comparison, reading numeric constants exactly.
func (p *fastPlan) applyInt(tm term) bool {
	c := p.int(tm.col)
	switch tm.op {
	case "=", "in":
		var in []int64
		for _, k := range tm.consts {
			n, ok := parseNumeric(k.canon)
			if !ok {
				return false
			}
			if v, exact := n.integer(); exact && (c.in == nil || containsInt(c.in, v)) {
				in = append(in, v)
			}
		}
		c.in = append([]int64{}, in...)
	case "<>", "notin":
		for _, k := range tm.consts {
			n, ok := parseNumeric(k.canon)
			if !ok {
				return false
			}
			if v, exact := n.integer(); exact {
				c.not = append(c.not, v)
			}
		}
	default:
		n, ok := parseNumeric(tm.consts[0].canon)
		if !ok {
			return false
		}
		switch tm.op {
		case "<", "<=":
			hi, ok := n.upper(tm.op == "<")
			c.hi = min(c.hi, hi)
			p.never = p.never || !ok
		case ">", ">=":
			lo, ok := n.lower(tm.op == ">")
			c.lo = max(c.lo, lo)
			p.never = p.never || !ok
		}
	}
	return true
}

// normalise folds contradictions into never.
func (p *fastPlan) normalise() {
	for _, c := range p.ints {
		if c.in != nil {
			var in []int64
			for _, v := range c.in {
				if c.holds(v) {
					in = append(in, v)
				}
			}
			c.in = append([]int64{}, in...)
			if len(in) == 0 {
				p.never = true
			}
		}
		if c.lo > c.hi {
			p.never = true
		}
	}
	for _, c := range p.strs {
		if c.in != nil && len(c.in) == 0 {
			p.never = true
		}
	}
}
