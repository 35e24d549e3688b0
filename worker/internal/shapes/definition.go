package shapes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Definition says what a shape holds: the rows of a table that match a
// where clause, some or all of its columns, and how changes are told.
type Definition struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
	// Where is the canonical text of the where clause (as deparsed from
	// its syntax tree, never the client's text); "" is every row.
	Where string `json:"where,omitempty"`
	// Params are the values of $1, $2, ... in Where.
	Params []string `json:"params,omitempty"`
	// Columns are the selected columns, sorted; nil is every column.
	Columns []string `json:"columns,omitempty"`
	// Replica is "full" when updates carry the whole row and old_value,
	// and deletes the whole row; "" is Electric's default.
	Replica string `json:"replica,omitempty"`
	// ChangesOnly is log=changes_only: no initial snapshot rows.
	ChangesOnly bool `json:"changes_only,omitempty"`
}

// Key identifies the definition: the same definition from any client is
// the same shape. A whole-table definition's key is its table's.
func (d Definition) Key() string {
	k := d.TableSQL()
	if d.Where != "" {
		k += " WHERE " + d.Where
		for i, p := range d.Params {
			k += " $" + strconv.Itoa(i+1) + "=" + strconv.Quote(p)
		}
	}
	if d.Columns != nil {
		cols := make([]string, len(d.Columns))
		for i, c := range d.Columns {
			cols[i] = quoteIdent(c)
		}
		k += " COLUMNS " + strings.Join(cols, ",")
	}
	if d.Replica != "" {
		k += " REPLICA " + d.Replica
	}
	if d.ChangesOnly {
		k += " LOG changes_only"
	}
	return k
}

// TableSQL is the schema-qualified, quoted table name.
func (d Definition) TableSQL() string { return quoteIdent(d.Schema) + "." + quoteIdent(d.Table) }

// String is the schema-qualified, quoted table name.
func (d Definition) String() string { return d.TableSQL() }

// ParseColumns parses the columns parameter: identifiers separated by
// commas, unquoted ones folded to lower case, quoted ones kept. The result
// is sorted and without repeats.
func ParseColumns(s string) ([]string, error) {
	var out []string
	rest := s
	for {
		col, r, err := parseIdent(rest, ',')
		if err != nil {
			return nil, errors.New(strings.Replace(err.Error(), "table name", "column list", 1))
		}
		if !slices.Contains(out, col) {
			out = append(out, col)
		}
		if r == "" {
			break
		}
		rest = r[1:]
		if rest == "" {
			return nil, errors.New("invalid column list: empty identifier")
		}
	}
	slices.Sort(out)
	return out, nil
}

// id is a short stable digest of the definition, used in handles.
func (d Definition) id() string {
	h := sha256.Sum256([]byte(d.Key()))
	return hex.EncodeToString(h[:6])
}

// ParseTable parses the table parameter: an optionally schema-qualified
// name whose parts are unquoted identifiers (folded to lower case, as
// PostgreSQL does) or double-quoted ones ("" is a quote). The schema
// defaults to public.
func ParseTable(s string) (Definition, error) {
	if s == "" {
		return Definition{}, errors.New("can't be blank")
	}
	var parts []string
	rest := s
	for {
		part, r, err := parseIdent(rest, '.')
		if err != nil {
			return Definition{}, err
		}
		parts = append(parts, part)
		if r == "" {
			break
		}
		if r[0] != '.' {
			return Definition{}, errors.New("invalid table name: unexpected character after identifier")
		}
		rest = r[1:]
	}
	switch len(parts) {
	case 1:
		return Definition{Schema: "public", Table: parts[0]}, nil
	case 2:
		return Definition{Schema: parts[0], Table: parts[1]}, nil
	}
	return Definition{}, errors.New("invalid table name: at most schema.table")
}

// parseIdent reads one identifier from s, up to sep or the end.
func parseIdent(s string, sep byte) (ident, rest string, err error) {
	if s == "" {
		return "", "", errors.New("invalid table name: empty identifier")
	}
	if s[0] == '"' {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] != '"' {
				b.WriteByte(s[i])
				continue
			}
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			if b.Len() == 0 {
				return "", "", errors.New("invalid table name: zero-length quoted identifier")
			}
			if r := s[i+1:]; r != "" && r[0] != sep {
				return "", "", errors.New("invalid table name: unexpected character after identifier")
			}
			return b.String(), s[i+1:], nil
		}
		return "", "", errors.New("invalid table name: unterminated quoted identifier")
	}
	i := 0
	for i < len(s) && s[i] != sep {
		c := s[i]
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80 ||
			(i > 0 && ((c >= '0' && c <= '9') || c == '$'))
		if !ok {
			return "", "", errors.New("invalid table name: unquoted identifiers hold letters, digits, _ and $")
		}
		i++
	}
	if i == 0 {
		return "", "", errors.New("invalid table name: empty identifier")
	}
	return strings.ToLower(s[:i]), s[i:], nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// InvalidError is bad input about a shape: HTTP 400 naming the field.
type InvalidError struct {
	Field   string
	Problem string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Problem }
