package where_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

func TestPrepareRefuses(t *testing.T) {
	exec(t, `CREATE TABLE prep (id int4 PRIMARY KEY, name text, at timestamptz)`)
	conn := connect(t)
	tb := table(t, conn, "public", "prep")
	for _, c := range []struct {
		name, expr string
		params     []string
		field, msg string
	}{
		{"unknown column", "nope = 1", nil, "where", `column "nope" does not exist`},
		{"not boolean", "id + 1", nil, "where", "where clause must be a boolean expression, got integer"},
		{"text result", "name", nil, "where", "where clause must be a boolean expression, got text"},
		{"undefined function", "lower(id) = 'x'", nil, "where", "function lower(integer) does not exist"},
		{"undefined operator", "name = 1", nil, "where", "operator does not exist: text = integer"},
		{"bad literal", "id = 'abc'", nil, "where", `invalid input syntax for type integer: "abc"`},
		{"datatype mismatch", "CASE WHEN id = 1 THEN 1 ELSE 'x' END = 1", nil, "where", `invalid input syntax for type integer: "x"`},
		{"constant error", "id = 1 / 0", nil, "where", "division by zero"},
		{"bad param", "id = $1", []string{"abc"}, "params", `params[1]: invalid input syntax for type integer: "abc"`},
		{"second param", "id = $1 OR at > $2", []string{"1", "yesterday-ish"}, "params", `params[2]: invalid input syntax for type timestamp with time zone: "yesterday-ish"`},
		{"param out of range", "id = $1", []string{"99999999999"}, "params", `params[1]: value "99999999999" is out of range for type integer`},
		{"missing param", "id = $1", nil, "params", "uses 1 parameters but 0 were given"},
		{"extra param", "id = 1", []string{"1"}, "params", "uses 0 parameters but 1 were given"},
		{"untyped param", "$1 IS NULL", []string{"x"}, "where", "could not determine data type of parameter $1"},
		{"bare param", "$1", []string{"maybe"}, "params", `params[1]: invalid input syntax for type boolean: "maybe"`},
		{"bare literal", "'true'", nil, "where", "where clause must be a boolean expression, got text"},
		{"relative time param", "at > $1", []string{" Today 10:00"}, "params", `params[1]: " Today 10:00" is relative to the current time`},
		{"unknown collation", `name COLLATE "nope" = 'x'`, nil, "where", `collation "nope" for encoding "UTF8" does not exist`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := where.Parse(c.expr)
			if err != nil {
				t.Fatal(err)
			}
			_, err = where.Prepare(context.Background(), conn, tb, cl, c.params)
			var we *where.Error
			if !errors.As(err, &we) || we.Field != c.field || !strings.Contains(we.Message, c.msg) {
				t.Errorf("Prepare(%q, %q) = %v; want a %s error containing %q", c.expr, c.params, err, c.field, c.msg)
			}
		})
	}
}
