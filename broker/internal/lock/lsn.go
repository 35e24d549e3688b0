package lock

import (
	"fmt"
	"strconv"
	"strings"
)

// FormatLSN writes a WAL position as PostgreSQL's pg_lsn does: the high
// and low 32 bits in upper-case hexadecimal, e.g. 0/16B3748.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// ParseLSN reads a WAL position in pg_lsn's text form.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return h<<32 | l, nil
		}
	}
	return 0, fmt.Errorf("%q is not an LSN (e.g. 0/16B3748)", s)
}
