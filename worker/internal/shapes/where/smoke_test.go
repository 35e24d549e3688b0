package where_test

import (
	"context"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes/where"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	exec(t, `CREATE TABLE smoke (id int8 PRIMARY KEY, name text, n numeric)`)
	conn := connect(t)
	tb := table(t, conn, "public", "smoke")
	ev := where.NewEvaluator(dial)
	t.Cleanup(func() { ev.Close() })
	set := where.NewSet(tb, ev)
	for i, w := range []struct {
		expr   string
		params []string
	}{
		{"id = $1", []string{"2"}},
		{"id >= $1 AND id < $2", []string{"1", "3"}},
		{"lower(name) = 'b'", nil},
		{"n / 0 > 1 OR id = 3", nil},
	} {
		c, err := where.Parse(w.expr)
		if err != nil {
			t.Fatal(err)
		}
		p, err := where.Prepare(ctx, conn, tb, c, w.params)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s fast=%v", p.SQL(), p.Fast())
		set.Add(i, p)
	}
	s := func(v string) *string { return &v }
	got, err := set.Match(ctx, []string{"id", "name", "n"}, [][]*string{
		{s("1"), s("a"), nil}, {s("2"), s("B"), s("1")}, {s("3"), nil, nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(got)
}
