package shapes

import "testing"

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
