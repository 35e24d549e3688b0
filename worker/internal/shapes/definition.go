package shapes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// Definition says what a shape holds. Only whole tables for now; where and
// columns will join it, and with them Key.
type Definition struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
}

// Key identifies the definition: the same definition from any client is
// the same shape.
func (d Definition) Key() string { return quoteIdent(d.Schema) + "." + quoteIdent(d.Table) }

// String is the schema-qualified, quoted table name.
func (d Definition) String() string { return d.Key() }

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
		part, r, err := parseIdent(rest)
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

func parseIdent(s string) (ident, rest string, err error) {
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
			return b.String(), s[i+1:], nil
		}
		return "", "", errors.New("invalid table name: unterminated quoted identifier")
	}
	i := 0
	for i < len(s) && s[i] != '.' {
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
