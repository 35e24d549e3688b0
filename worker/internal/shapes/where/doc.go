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
// A clause whose top-level conjuncts are not all fast (id = $1 AND name ~
// 'x') gets a pre-filter: the fast plan of the conjuncts that are. When it
// pins a column or bounds an integer one, the predicate is found through
// the indexes by it, and PostgreSQL evaluates the whole clause (not the
// rest of it) on the rows the pre-filter is true on: one query for many
// (row, predicate) pairs, each row made a row of the table's type as
// above and a CASE picking its predicate's clause. Predicates of one
// clause share a branch: each parameter is bound as an array of their
// values, of the array type of the parameter's type, so every value is
// read by the input function that reads it when bound alone, and a pair
// picks its predicate's element. That is PostgreSQL's answer: where a fast conjunct is false
// or NULL, the conjunction is false or NULL (AND with false is false,
// with NULL NULL or false), so the clause cannot match, and it is not
// asked. PostgreSQL might have raised an error on such a row (were the
// slow part evaluated first, as it may be); a row a predicate raises on
// does not match either, so the matches are the same, but that error is
// not reported to OnError. A pre-filter that pins nothing (IS NULL, <>, a
// bool column alone) is not used: the clause goes to PostgreSQL with every
// row, as a clause without fast conjuncts does.
//
// The queries of one Match (every chunk of predicates against every batch
// of rows, and the groups of pairs) run at once on up to DefaultConns
// connections of the Evaluator. They only read, each on one connection
// with that connection's prepared statements, and each answers for its
// own rows and predicates, so running them at once, in any order, or
// again on a new connection after one broke gives the answer of running
// them one by one on one connection: the results are merged per row and
// sorted. A query that raises an error is split (a chunk into its
// predicates, then rows; pairs into halves) down to the predicate and row
// that raise it.
//
// A predicate is true, false or NULL on a row; only true matches. A
// predicate that raises an error on a row (division by zero, say) does not
// match that row and the error is reported to the Set's error callback.
//
// Errors of the client's making (a bad clause, bad parameters) are *Error
// values; everything else (a broken connection) is an ordinary error.
package where
