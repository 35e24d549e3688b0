package where

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// operators allowed in expressions (A_Expr names).
var operators = set(
	"=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||",
	"~~", "!~~", "~~*", "!~~*", "~", "~*", "!~", "!~*",
	"@>", "<@", "&&", "->", "->>", "#>", "#>>",
)

// functions allowed in calls: immutable, or deterministic under the
// worker's fixed session settings (TimeZone UTC, DateStyle ISO...).
var functions = set(
	// text
	"lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length", "bit_length",
	"btrim", "ltrim", "rtrim", "substr", "substring", "left", "right", "lpad", "rpad", "repeat", "reverse",
	"replace", "split_part", "strpos", "position", "starts_with", "concat", "concat_ws", "overlay",
	"md5", "ascii", "chr", "to_hex", "regexp_replace", "regexp_like", "translate", "normalize",
	// numbers
	"abs", "sign", "round", "floor", "ceil", "ceiling", "trunc", "mod", "div", "power", "sqrt", "cbrt", "exp", "ln", "log", "log10",
	// arrays
	"array_length", "cardinality", "array_position", "array_lower", "array_upper", "array_ndims", "array_to_string",
	// dates and times
	"extract", "date_part", "date_trunc", "timezone", "make_date", "make_timestamp",
	// json
	"jsonb_typeof", "json_typeof", "jsonb_array_length", "json_array_length", "jsonb_extract_path_text", "json_extract_path_text",
	// conditionals
	"coalesce", "nullif", "greatest", "least",
)

// volatile are the functions refused with "it is not deterministic".
var volatile = set(
	"now", "random", "random_normal", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
	"timeofday", "current_timestamp", "current_date", "current_time", "localtime", "localtimestamp",
	"gen_random_uuid", "uuid_generate_v1", "uuid_generate_v4", "nextval", "currval", "lastval", "setseed",
	"txid_current", "pg_current_xact_id", "current_setting",
)

// types allowed as cast targets (and their arrays), by internal name.
var types = set(
	"bool", "int2", "int4", "int8", "numeric", "float4", "float8",
	"text", "varchar", "bpchar", "uuid", "date", "time", "timetz", "timestamp", "timestamptz", "interval",
	"json", "jsonb", "bytea", "inet", "cidr", "macaddr", "bit", "varbit",
)

// typeAliases are the SQL spellings the parser leaves unqualified.
var typeAliases = map[string]string{
	"boolean": "bool", "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8",
	"decimal": "numeric", "real": "float4",
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// validator walks an expression tree, refuses what is not allowlisted,
// qualifies function and type names with pg_catalog and collects the
// parameters and columns used.
type validator struct {
	params  map[int]bool
	columns map[string]bool
	depth   int
	// at is the location of the node being validated in the statement
	// "SELECT 1 WHERE <clause>"; -1 when unknown.
	at int32
	// field and prefix, when set, are those of another clause than a
	// where clause (an order by: "order_by", orderByPrefix).
	field, prefix string
}

// errorf is a problem with the node being validated, at its location in
// the clause (Electric's "At location N: ...", N counting from 0).
func (v *validator) errorf(format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	field, prefix := "where", wherePrefix
	if v.field != "" {
		field, prefix = v.field, v.prefix
	}
	if v.at >= 0 {
		msg = fmt.Sprintf("At location %d: %s", max(int(v.at)-len(prefix), 0), msg)
	}
	return &Error{Field: field, Message: msg}
}

// location is where a parse node starts in the parsed text (its location
// field), or -1 when it has none.
func location(n *pg_query.Node) int32 {
	m := n.ProtoReflect()
	f := m.WhichOneof(m.Descriptor().Oneofs().ByName("node"))
	if f == nil || f.Message() == nil {
		return -1
	}
	inner := m.Get(f).Message()
	lf := inner.Descriptor().Fields().ByName("location")
	if lf == nil {
		return -1
	}
	return int32(inner.Get(lf).Int())
}

const maxDepth = 200

func (v *validator) nodes(ns []*pg_query.Node) error {
	for _, n := range ns {
		if err := v.node(n); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) node(n *pg_query.Node) error {
	if n == nil {
		return nil
	}
	v.depth++
	at := v.at
	if l := location(n); l >= 0 {
		v.at = l
	}
	defer func() { v.depth--; v.at = at }()
	if v.depth > maxDepth {
		return v.errorf("where clause is nested too deeply")
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		if sv := x.AConst.GetSval(); sv != nil && relativeTime(sv.Sval) {
			return v.errorf("%q is relative to the current time, so the where clause would not be deterministic; use a fixed value", sv.Sval)
		}
		return nil
	case *pg_query.Node_ParamRef:
		if x.ParamRef.Number < 1 {
			return v.errorf("parameter $%d is not valid: parameters are numbered from $1", x.ParamRef.Number)
		}
		v.params[int(x.ParamRef.Number)] = true
		return nil
	case *pg_query.Node_ColumnRef:
		return v.column(x.ColumnRef)
	case *pg_query.Node_BoolExpr:
		return v.nodes(x.BoolExpr.Args)
	case *pg_query.Node_AExpr:
		return v.aexpr(x.AExpr)
	case *pg_query.Node_NullTest:
		return v.node(x.NullTest.Arg)
	case *pg_query.Node_BooleanTest:
		return v.node(x.BooleanTest.Arg)
	case *pg_query.Node_TypeCast:
		if err := v.typeName(x.TypeCast.TypeName); err != nil {
			return err
		}
		return v.node(x.TypeCast.Arg)
	case *pg_query.Node_CollateClause:
		return v.node(x.CollateClause.Arg)
	case *pg_query.Node_AArrayExpr:
		return v.nodes(x.AArrayExpr.Elements)
	case *pg_query.Node_RowExpr:
		return v.nodes(x.RowExpr.Args)
	case *pg_query.Node_CoalesceExpr:
		return v.nodes(x.CoalesceExpr.Args)
	case *pg_query.Node_MinMaxExpr:
		return v.nodes(x.MinMaxExpr.Args)
	case *pg_query.Node_CaseExpr:
		if err := v.node(x.CaseExpr.Arg); err != nil {
			return err
		}
		for _, w := range x.CaseExpr.Args {
			cw := w.GetCaseWhen()
			if cw == nil {
				return v.errorf("unsupported CASE branch")
			}
			if err := v.node(cw.Expr); err != nil {
				return err
			}
			if err := v.node(cw.Result); err != nil {
				return err
			}
		}
		return v.node(x.CaseExpr.Defresult)
	case *pg_query.Node_AIndirection:
		for _, ind := range x.AIndirection.Indirection {
			ai := ind.GetAIndices()
			if ai == nil {
				return v.errorf("field selection and * are not supported (only array subscripts)")
			}
			if err := v.node(ai.Lidx); err != nil {
				return err
			}
			if err := v.node(ai.Uidx); err != nil {
				return err
			}
		}
		return v.node(x.AIndirection.Arg)
	case *pg_query.Node_FuncCall:
		return v.funcCall(x.FuncCall)
	case *pg_query.Node_SubLink:
		return v.errorf("subqueries are not supported")
	case *pg_query.Node_SqlvalueFunction:
		name := strings.ToLower(strings.TrimPrefix(x.SqlvalueFunction.Op.String(), "SVFOP_"))
		if strings.HasSuffix(name, "_n") { // CURRENT_TIME(3) and the like
			name = strings.TrimSuffix(name, "_n")
		}
		if strings.Contains(name, "user") || name == "current_role" || name == "current_catalog" || name == "current_schema" {
			return v.errorf("%s is not supported", name)
		}
		return v.errorf("%s is not supported: it is not deterministic", name)
	}
	return v.errorf("%s is not supported", nodeName(n))
}

// nodeName names a parse node for an error message.
func nodeName(n *pg_query.Node) string {
	name := fmt.Sprintf("%T", n.Node)
	name = strings.TrimPrefix(name, "*pg_query.Node_")
	return "expression of kind " + name
}

func (v *validator) column(c *pg_query.ColumnRef) error {
	var parts []string
	for _, f := range c.Fields {
		if f.GetAStar() != nil {
			return v.errorf("* is not supported in a where clause")
		}
		parts = append(parts, f.GetString_().GetSval())
	}
	if len(parts) != 1 {
		return v.errorf("column reference %q must be a plain column name without table or schema", strings.Join(parts, "."))
	}
	v.columns[parts[0]] = true
	return nil
}

func (v *validator) aexpr(e *pg_query.A_Expr) error {
	op, err := v.operatorName(e.Name)
	if err != nil {
		return err
	}
	switch e.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP, pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_OP_ALL,
		pg_query.A_Expr_Kind_AEXPR_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NULLIF,
		pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE:
		if !operators[op] {
			return v.errorf("operator %s is not supported", op)
		}
	case pg_query.A_Expr_Kind_AEXPR_IN:
		if op != "=" && op != "<>" {
			return v.errorf("operator %s is not supported in IN", op)
		}
	case pg_query.A_Expr_Kind_AEXPR_BETWEEN, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN,
		pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
	case pg_query.A_Expr_Kind_AEXPR_SIMILAR:
		return v.errorf("SIMILAR TO is not supported")
	default:
		return v.errorf("operator %s (%s) is not supported", op, e.Kind)
	}
	if err := v.node(e.Lexpr); err != nil {
		return err
	}
	if l := e.Rexpr.GetList(); l != nil { // IN (...), BETWEEN a AND b
		return v.nodes(l.Items)
	}
	return v.node(e.Rexpr)
}

// operatorName is the operator of an A_Expr, optionally written
// OPERATOR(pg_catalog.op).
func (v *validator) operatorName(name []*pg_query.Node) (string, error) {
	op, ok := operatorName(name)
	if !ok {
		return "", v.errorf("operator %s is not supported", op)
	}
	return op, nil
}

// operatorName is the operator of an A_Expr (its name parts joined by "."
// when it is not one), ok when it is a plain or pg_catalog operator.
func operatorName(name []*pg_query.Node) (string, bool) {
	var parts []string
	for _, n := range name {
		parts = append(parts, n.GetString_().GetSval())
	}
	switch {
	case len(parts) == 1:
		return parts[0], true
	case len(parts) == 2 && parts[0] == "pg_catalog":
		return parts[1], true
	}
	return strings.Join(parts, "."), false
}

func (v *validator) funcCall(f *pg_query.FuncCall) error {
	var parts []string
	for _, n := range f.Funcname {
		parts = append(parts, n.GetString_().GetSval())
	}
	name := strings.Join(parts, ".")
	if len(parts) == 2 && parts[0] == "pg_catalog" {
		name = parts[1]
	} else if len(parts) != 1 {
		return v.errorf("function %s() is not supported", name)
	}
	if volatile[name] {
		return v.errorf("%s() is not supported: it is not deterministic", name)
	}
	if !functions[name] {
		return v.errorf("function %s() is not supported", name)
	}
	switch {
	case f.AggStar || f.AggDistinct || len(f.AggOrder) > 0 || f.AggFilter != nil || f.AggWithinGroup:
		return v.errorf("aggregate syntax in %s() is not supported", name)
	case f.Over != nil:
		return v.errorf("window functions (%s() OVER) are not supported", name)
	case f.FuncVariadic:
		return v.errorf("VARIADIC in %s() is not supported", name)
	}
	for _, a := range f.Args {
		if a.GetNamedArgExpr() != nil {
			return v.errorf("named arguments in %s() are not supported", name)
		}
	}
	// Resolve in pg_catalog whatever the search_path.
	f.Funcname = []*pg_query.Node{pg_query.MakeStrNode("pg_catalog"), pg_query.MakeStrNode(name)}
	return v.nodes(f.Args)
}

func (v *validator) typeName(t *pg_query.TypeName) error {
	if t == nil {
		return v.errorf("cast without a type")
	}
	var parts []string
	for _, n := range t.Names {
		parts = append(parts, n.GetString_().GetSval())
	}
	name := strings.Join(parts, ".")
	base := name
	if len(parts) == 2 && parts[0] == "pg_catalog" {
		base = parts[1]
	} else if len(parts) != 1 {
		return v.errorf("cast to type %s is not supported", name)
	}
	if a, ok := typeAliases[base]; ok {
		base = a
	}
	if !types[base] || t.Setof || t.PctType {
		return v.errorf("cast to type %s is not supported", name)
	}
	for _, m := range t.Typmods {
		if c := m.GetAConst(); c == nil || c.GetIval() == nil {
			return v.errorf("type modifier of %s is not supported", name)
		}
	}
	t.Names = []*pg_query.Node{pg_query.MakeStrNode("pg_catalog"), pg_query.MakeStrNode(base)}
	return nil
}

// relativeTime reports whether s is one of PostgreSQL's date/time inputs
// that depend on when they are read ('now', 'today 10:00', ...). Such a
// value would mean something else in the snapshot than for a later change.
// A text comparison with such a word is refused too: rare, and said so.
func relativeTime(s string) bool {
	f := strings.Fields(strings.ToLower(s))
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "now", "today", "tomorrow", "yesterday":
		return true
	}
	return false
}
