package txn_test

import (
	"testing"

	"github.com/batonhq/baton/worker/internal/txn"
)

func TestLSNText(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		lsn  txn.LSN
	}{
		{"zero", "0/0", 0},
		{"low half", "0/16B3748", 0x16B3748},
		{"both halves", "16/B374D848", 0x16_B374D848},
		{"largest", "FFFFFFFF/FFFFFFFF", 1<<64 - 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.lsn.String(); got != c.text {
				t.Errorf("LSN(%#x).String() = %q, want %q", uint64(c.lsn), got, c.text)
			}
			got, err := txn.ParseLSN(c.text)
			if err != nil || got != c.lsn {
				t.Errorf("ParseLSN(%q) = %#x, %v; want %#x", c.text, uint64(got), err, uint64(c.lsn))
			}
		})
	}
	for _, bad := range []string{"", "0", "/0", "0/", "g/0", "0/1/2", "100000000/0", "-1/0"} {
		if got, err := txn.ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) = %#x, want an error", bad, uint64(got))
		}
	}
}
