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

func TestBuildKey(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		d    Definition
		pk   []*string
		want string
	}{
		{Definition{Schema: "hello", Table: "world"}, []*string{s("b"), s("d")}, `"hello"."world"/"b"/"d"`},
		{Definition{Schema: "hello", Table: "world"}, []*string{s("test/test"), s("test")}, `"hello"."world"/"test//test"/"test"`},
		{Definition{Schema: "hello", Table: "world"}, []*string{s("1"), nil, s("")}, `"hello"."world"/"1"/_/""`},
		{Definition{Schema: `a"."b`, Table: "c"}, []*string{s("")}, `"a".."b"."c"/""`},
		{Definition{Schema: "a", Table: `b"/"`}, []*string{s("")}, `"a"."b"//""/""`},
	} {
		if got := buildKey(c.d, c.pk); got != c.want {
			t.Errorf("buildKey(%v) = %s; want %s", c.d, got, c.want)
		}
	}
}

func TestOffsets(t *testing.T) {
	for _, in := range []string{"-1", "0_0", "0_12", "22893048_3", "0_inf"} {
		o, err := ParseOffset(in)
		if err != nil || o.String() != in {
			t.Errorf("ParseOffset(%q) = %v, %v", in, o, err)
		}
	}
	for _, in := range []string{"", "abc", "1_2_3", "10", "1_-2", "-2", "1_2 "} {
		if _, err := ParseOffset(in); err == nil {
			t.Errorf("ParseOffset(%q) accepted", in)
		}
	}
	snap := func(op uint64) Offset { return Offset{TX: 0, Op: op} }
	tx := func(l, op uint64) Offset { return Offset{TX: l, Op: op} }
	for _, c := range []struct {
		rec, from Offset
		want      bool
	}{
		{snap(0), BeforeAll, true},
		{snap(1), snap(0), true},
		{snap(0), snap(0), false},
		{tx(100, 3), snap(5), true},
		{snap(1), Offset{TX: 0, Op: opInf}, false},
		{tx(100, 3), tx(100, 0), false}, // a client that has seen any op of tx 100 has seen it all
		{tx(100, 3), tx(99, 7), true},
		{snap(3), tx(100, 0), false},
	} {
		if got := c.rec.after(c.from); got != c.want {
			t.Errorf("%v.after(%v) = %v; want %v", c.rec, c.from, got, c.want)
		}
	}
}

func TestVisible(t *testing.T) {
	m := Meta{Xmin: 100, Xmax: 110, Xip: []uint64{103, 107}}
	for xid, want := range map[uint32]bool{99: true, 100: true, 103: false, 105: true, 107: false, 110: false, 200: false} {
		if got := m.visible(xid, 0); got != want {
			t.Errorf("visible(%d) = %v; want %v", xid, got, want)
		}
	}
	// Across a 32-bit wraparound: snapshot in epoch 1, xids near the edge.
	e1 := uint64(1) << 32
	m = Meta{Xmin: e1 + 5, Xmax: e1 + 10}
	if !m.visible(0xFFFFFFF0, 0) { // epoch 0, long committed
		t.Error("xid before the wraparound should be visible")
	}
	if m.visible(12, 0) {
		t.Error("xid after xmax should not be visible")
	}
	if widen(3, e1+0xFFFFFFF0) != 2*e1+3 {
		t.Errorf("widen(3) = %d", widen(3, e1+0xFFFFFFF0))
	}
}
