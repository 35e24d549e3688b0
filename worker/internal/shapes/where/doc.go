// Package where parses, validates, type-checks and evaluates the `where`
// clauses of shapes: PostgreSQL boolean expressions over the columns of one
// table, with positional parameters $1…$n whose values are given as text.
//
// The life of a clause:
//
//   - Parse checks the syntax with PostgreSQL's own parser (pg_query) and
//     walks the tree against an allowlist of constructs (comparisons,
//     AND/OR/NOT, IS [NOT] NULL, IS [NOT] DISTINCT FROM, IN, BETWEEN,
//     LIKE/ILIKE, regular expressions, arithmetic, casts, ANY/ALL, array
//     operators, CASE/COALESCE/NULLIF/GREATEST/LEAST and a list of immutable
//     functions). Subqueries, non-deterministic functions such as now() and
//     anything else outside the list are refused. The canonical text of the
//     clause is the deparsed tree: the client's string is never sent to
//     PostgreSQL.
//   - Prepare type-checks the clause against the table on a real connection,
//     requires a boolean result, binds the parameters once and works out
//     whether the clause can be evaluated in Go exactly (see below).
//   - A Set holds the predicates of many shapes over one table and matches
//     row images (the text values logical replication delivers) against all
//     of them at once.
//
// Evaluation gives exactly PostgreSQL's answer because PostgreSQL evaluates:
// the rows of a batch are turned back into values of the table's row type
// with json_populate_recordset, so every column has its declared type and
// collation, and many predicates are evaluated in one query. The only
// exceptions are fast paths where Go is exact by construction: conjunctions
// of `column <op> constant` on integer columns (against integer or numeric
// constants), on text and varchar columns with a deterministic collation
// (equality and IN; ordering only under the C/POSIX collation), on uuid and
// bool columns, and IS [NOT] NULL. Constants are canonicalised by PostgreSQL
// in the type PostgreSQL resolved for them. Fast-path equalities are found
// through a hash index and integer ranges through an interval index, so a
// row costs about the same whether the table has one shape or ten thousand.
//
// The queries of one Match (every chunk of predicates against every batch
// of rows) run at once on up to DefaultConns connections of the
// Evaluator. They only read, each on its own connection with its own
// prepared statements, and each answers for its own (chunk, batch) pair,
// so running them at once, in any order, or again on a new connection
// after one broke gives the answer of running them one by one on one
// connection: the results are merged per row and sorted.
//
// A predicate is true, false or NULL on a row; only true matches. A
// predicate that raises an error on a row (division by zero, say) does not
// match that row and the error is reported to the Set's error callback.
//
// Errors of the client's making (a bad clause, bad parameters) are *Error
// values; everything else (a broken connection) is an ordinary error.
package where
