package shapes

import (
	"slices"
	"testing"
)

func TestCopyRows(t *testing.T) {
	// COPY ... TO STDOUT (text) as PostgreSQL writes it, and the values
	// the extended protocol's text results give.
	out := "1\tplain\t\\N\n" +
		"2\ttab\\there\tnew\\nline\n" +
		"3\tback\\\\slash\tcr\\r ff\\f bs\\b vt\\v\n" +
		"4\toctal \\101\\0021\thex \\x41\\x4a!\n" +
		"5\t\t\\\\N\n"
	want := [][]*string{
		{p("1"), p("plain"), nil},
		{p("2"), p("tab\there"), p("new\nline")},
		{p("3"), p(`back\slash`), p("cr\r ff\f bs\b vt\v")},
		{p("4"), p("octal A\x021"), p("hex AJ!")},
		{p("5"), p(""), p(`\N`)},
	}
	for _, split := range []struct {
		name string
		at   []int // Write boundaries
	}{
		{"one write", nil},
		{"rows", func() []int {
			var at []int
			for i := 1; i < len(out); i++ {
				if out[i-1] == '\n' {
					at = append(at, i)
				}
			}
			return at
		}()},
		{"inside escapes", []int{6, 18, 19, 45, 46, 80}},
		{"every byte", func() []int {
			var at []int
			for i := 1; i < len(out); i++ {
				at = append(at, i)
			}
			return at
		}()},
	} {
		t.Run(split.name, func(t *testing.T) {
			var got [][]*string
			c := newCopyRows(3, func(raw [][]byte) error {
				row := make([]*string, len(raw))
				for i, v := range raw {
					if v != nil {
						row[i] = p(string(v))
					}
				}
				got = append(got, row)
				return nil
			})
			from := 0
			for _, to := range append(split.at, len(out)) {
				if _, err := c.Write([]byte(out[from:to])); err != nil {
					t.Fatal(err)
				}
				from = to
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, func(a, b []*string) bool {
				return slices.EqualFunc(a, b, func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) })
			}) {
				t.Fatalf("rows %v, want %v", show(got), show(want))
			}
		})
	}
	for _, bad := range []string{"1\t2\n", "1\t2\t3\t4\n", "1\t2\t3\\\n"} {
		c := newCopyRows(3, func([][]byte) error { return nil })
		if _, err := c.Write([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	c := newCopyRows(3, func([][]byte) error { return nil })
	if _, err := c.Write([]byte("1\t2")); err != nil || c.Close() == nil {
		t.Errorf("a row cut short: no error from Close")
	}
}

func p(s string) *string { return &s }

func show(rows [][]*string) [][]string {
	var out [][]string
	for _, r := range rows {
		var o []string
		for _, v := range r {
			if v == nil {
				o = append(o, "NULL")
			} else {
				o = append(o, *v)
			}
		}
		out = append(out, o)
	}
	return out
}
