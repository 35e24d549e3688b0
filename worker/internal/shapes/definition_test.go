package shapes

import "testing"

func TestParseTable(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Definition
		bad  bool
	}{
		{in: "items", want: Definition{Schema: "public", Table: "items"}},
		{in: "Items", want: Definition{Schema: "public", Table: "items"}},
		{in: `"Items"`, want: Definition{Schema: "public", Table: "Items"}},
		{in: `app.items`, want: Definition{Schema: "app", Table: "items"}},
		{in: `"my ""app"""."a.b"`, want: Definition{Schema: `my "app"`, Table: "a.b"}},
		{in: "", bad: true},
		{in: `"open`, bad: true},
		{in: "a.b.c", bad: true},
		{in: "a b", bad: true},
		{in: `""`, bad: true},
		{in: "1abc", bad: true},
	} {
		got, err := ParseTable(c.in)
		if (err != nil) != c.bad || (!c.bad && got.Key() != c.want.Key()) {
			t.Errorf("ParseTable(%q) = %v, %v; want %v (bad %v)", c.in, got, err, c.want, c.bad)
		}
	}
}
