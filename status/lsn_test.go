package status_test

import (
	"testing"

	"github.com/batonhq/baton/status"
)

func TestLSNText(t *testing.T) {
	for _, tt := range []struct {
		lsn  uint64
		text string
	}{
		{0, "0/0"},
		{0x16B3748, "0/16B3748"},
		{0x1_0000000A, "1/A"},
		{0xFFFFFFFF_FFFFFFFF, "FFFFFFFF/FFFFFFFF"},
	} {
		if got := status.FormatLSN(tt.lsn); got != tt.text {
			t.Errorf("FormatLSN(%d) = %q, want %q", tt.lsn, got, tt.text)
		}
		if got, err := status.ParseLSN(tt.text); err != nil || got != tt.lsn {
			t.Errorf("ParseLSN(%q) = %d, %v; want %d", tt.text, got, err, tt.lsn)
		}
	}
	for _, bad := range []string{"", "16B3748", "0/", "x/1", "1/100000000", "0/-1"} {
		if _, err := status.ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) succeeded", bad)
		}
	}
}
