package shapes

import (
	"bytes"
	"fmt"
)

// copyRows splits the output of COPY ... TO STDOUT (text format) into rows
// of column values, as the extended protocol's text results give them: a
// value is nil for NULL (\N), and backslash escapes are undone. PostgreSQL
// sends one row per CopyData message, but Write accepts any split.
type copyRows struct {
	cols  int
	row   func(raw [][]byte) error
	rest  []byte   // an incomplete line from the last Write
	raw   [][]byte // scratch: the values of one row
	plain []byte   // scratch: unescaped values of one row
}

func newCopyRows(cols int, row func(raw [][]byte) error) *copyRows {
	return &copyRows{cols: cols, row: row, raw: make([][]byte, cols)}
}

// Write parses the complete lines of p (with what an earlier Write left).
func (c *copyRows) Write(p []byte) (int, error) {
	n := len(p)
	if len(c.rest) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.rest = append(c.rest, p...)
			return n, nil
		}
		c.rest = append(c.rest, p[:i]...)
		if err := c.line(c.rest); err != nil {
			return 0, err
		}
		c.rest, p = c.rest[:0], p[i+1:]
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.rest = append(c.rest, p...)
			break
		}
		if err := c.line(p[:i]); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

// Close reports a line left incomplete.
func (c *copyRows) Close() error {
	if len(c.rest) > 0 {
		return fmt.Errorf("copy output ends inside a row")
	}
	return nil
}

// line parses one row: values separated by tabs.
func (c *copyRows) line(l []byte) error {
	c.plain = c.plain[:0]
	// Unescaped values are appended to plain, which may grow: they are
	// kept as offsets until the row is complete.
	type span struct{ from, to int }
	var spans [64]span
	var unesc []span
	if c.cols > len(spans) {
		unesc = make([]span, c.cols)
	} else {
		unesc = spans[:c.cols]
	}
	col := 0
	for {
		if col == c.cols {
			return fmt.Errorf("copy row has more than %d columns", c.cols)
		}
		end := bytes.IndexByte(l, '\t')
		v := l
		if end >= 0 {
			v = l[:end]
		}
		unesc[col] = span{-1, -1}
		switch {
		case len(v) == 2 && v[0] == '\\' && v[1] == 'N':
			c.raw[col] = nil
		case bytes.IndexByte(v, '\\') < 0:
			c.raw[col] = v
		default:
			from := len(c.plain)
			var err error
			if c.plain, err = unescapeCopy(c.plain, v); err != nil {
				return err
			}
			unesc[col] = span{from, len(c.plain)}
		}
		col++
		if end < 0 {
			break
		}
		l = l[end+1:]
	}
	if col != c.cols {
		return fmt.Errorf("copy row has %d columns, want %d", col, c.cols)
	}
	for i, s := range unesc {
		if s.from >= 0 {
			c.raw[i] = c.plain[s.from:s.to:s.to]
		}
	}
	return c.row(c.raw)
}

// unescapeCopy appends v with COPY's text-format escapes undone: \b \f \n
// \r \t \v, octal \ooo, hex \xhh, and a backslash before any other
// character stands for that character.
func unescapeCopy(dst, v []byte) ([]byte, error) {
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b != '\\' {
			dst = append(dst, b)
			continue
		}
		i++
		if i == len(v) {
			return nil, fmt.Errorf("copy value ends with a backslash")
		}
		switch e := v[i]; e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'v':
			dst = append(dst, '\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n := 0
			j := i
			for ; j < len(v) && j < i+3 && v[j] >= '0' && v[j] <= '7'; j++ {
				n = n*8 + int(v[j]-'0')
			}
			dst = append(dst, byte(n))
			i = j - 1
		case 'x':
			n, j := 0, i+1
			for ; j < len(v) && j < i+3 && hexDigit(v[j]) >= 0; j++ {
				n = n*16 + hexDigit(v[j])
			}
			if j == i+1 {
				dst = append(dst, 'x')
				continue
			}
			dst = append(dst, byte(n))
			i = j - 1
		default:
			dst = append(dst, e)
		}
	}
	return dst, nil
}

func hexDigit(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	case b >= 'A' && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}
