package where_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

func TestParseOrderBy(t *testing.T) {
	for _, tc := range []struct{ in, sql, err string }{
		{in: "id", sql: "id"},
		{in: `"Title" desc nulls last, id`, sql: `"Title" DESC NULLS LAST, id`},
		{in: "lower(name) asc", sql: "pg_catalog.lower(name) ASC"},
		{in: "id;drop table x", err: `unescaped ";" causing statement split`},
		{in: "id limit 3", err: "malformed query ending with SQL clauses"},
		{in: "now()", err: "not deterministic"},
		{in: "$1", err: "parameters are not allowed"},
		{in: "id x y", err: "At location 3: syntax error"},
		{in: "id using <", err: "USING"},
		{in: "", err: "order by is empty"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			o, err := where.ParseOrderBy(tc.in)
			if tc.err != "" {
				var we *where.Error
				if err == nil || !errors.As(err, &we) || we.Field != "order_by" || !strings.Contains(we.Message, tc.err) {
					t.Fatalf("ParseOrderBy(%q) = %v, want an order_by error with %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || o.SQL() != tc.sql {
				t.Fatalf("ParseOrderBy(%q) = %v, %v; want %q", tc.in, o, err, tc.sql)
			}
		})
	}
}
