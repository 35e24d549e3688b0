package txn

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes that AppendJSONString copies as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return t
}()

const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// needsEscape reports whether any of the eight bytes of w is not
// jsonSafe: below 0x20, not ASCII, or one of " \\ < > &. Each test is the
// classic "has a zero byte" trick on w, or on w XOR the byte repeated;
// it has no false negatives, and false positives only send the caller to
// its byte-at-a-time loop.
func needsEscape(w uint64) bool {
	hasZero := func(v uint64) uint64 { return (v - lows) &^ v & highs }
	return (w&highs)|((w-lows*0x20)&^w&highs)|hasZero(w^(lows*'"'))|hasZero(w^(lows*'\\'))|
		hasZero(w^(lows*'<'))|hasZero(w^(lows*'>'))|hasZero(w^(lows*'&')) != 0
}

// AppendJSONString appends s as a JSON string, escaped as encoding/json
// does with HTML escaping on.
func AppendJSONString[S []byte | string](dst []byte, s S) []byte {
	dst = append(dst, '"')
	dst = AppendJSONStringBody(dst, s)
	return append(dst, '"')
}

// AppendJSONStringBody appends s escaped as AppendJSONString does, without
// the quotes. The escaping maps each rune (each byte of an invalid
// sequence) on its own, and an ASCII byte always ends a sequence, so the
// body of a concatenation split at ASCII bytes is the concatenation of the
// bodies: callers escape the parts that are the same for every row once.
func AppendJSONStringBody[S []byte | string](dst []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while none needs a look: most values are
		// plain ASCII (numbers, timestamps, identifiers).
		if i+8 <= len(s) && !needsEscape(uint64(s[i])|uint64(s[i+1])<<8|uint64(s[i+2])<<16|uint64(s[i+3])<<24|
			uint64(s[i+4])<<32|uint64(s[i+5])<<40|uint64(s[i+6])<<48|uint64(s[i+7])<<56) {
			i += 8
			continue
		}
		// Otherwise at least the next eight bytes one by one (a rune may
		// take the loop past end).
		for end := min(i+8, len(s)); i < end; {
			b := s[i]
			if b < utf8.RuneSelf {
				if jsonSafe[b] {
					i++
					continue
				}
				dst = append(dst, s[start:i]...)
				switch b {
				case '\\', '"':
					dst = append(dst, '\\', b)
				case '\b':
					dst = append(dst, '\\', 'b')
				case '\f':
					dst = append(dst, '\\', 'f')
				case '\n':
					dst = append(dst, '\\', 'n')
				case '\r':
					dst = append(dst, '\\', 'r')
				case '\t':
					dst = append(dst, '\\', 't')
				default:
					dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
				}
				i++
				start = i
				continue
			}
			n := min(len(s)-i, utf8.UTFMax)
			c, size := utf8.DecodeRuneInString(string(s[i : i+n]))
			if c == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				i += size
				start = i
				continue
			}
			if c == '\u2028' || c == '\u2029' {
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
				i += size
				start = i
				continue
			}
			i += size
		}
	}
	return append(dst, s[start:]...)
}

// Encode is the storage payload of t: byte for byte json.Marshal(t)
// (checked by encode_test.go), appended without reflection.
func (t *Transaction) Encode() ([]byte, error) {
	return t.AppendJSON(make([]byte, 0, 256))
}

// AppendJSON appends json.Marshal(t) to dst.
func (t *Transaction) AppendJSON(dst []byte) ([]byte, error) {
	ts, err := t.CommitTime.MarshalJSON()
	if err != nil {
		return nil, err
	}
	dst = append(dst, `{"xid":`...)
	dst = strconv.AppendUint(dst, uint64(t.XID), 10)
	dst = append(dst, `,"commit_lsn":`...)
	dst = strconv.AppendUint(dst, t.CommitLSN, 10)
	dst = append(dst, `,"end_lsn":`...)
	dst = strconv.AppendUint(dst, t.EndLSN, 10)
	dst = append(dst, `,"commit_time":`...)
	dst = append(dst, ts...)
	if t.Origin != "" {
		dst = append(dst, `,"origin":`...)
		dst = AppendJSONString(dst, t.Origin)
	}
	dst = append(dst, `,"changes":`...)
	if t.Changes == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range t.Changes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = t.Changes[i].appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

func appendStrings(dst []byte, name string, ss []string) []byte {
	if len(ss) == 0 {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, s)
	}
	return append(dst, ']')
}

func appendValues(dst []byte, name string, vs []*string) []byte {
	if len(vs) == 0 {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, '[')
	for i, v := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		if v == nil {
			dst = append(dst, "null"...)
		} else {
			dst = AppendJSONString(dst, *v)
		}
	}
	return append(dst, ']')
}

func (c *Change) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"op":`...)
	dst = AppendJSONString(dst, c.Op)
	if c.Schema != "" {
		dst = append(dst, `,"schema":`...)
		dst = AppendJSONString(dst, c.Schema)
	}
	if c.Table != "" {
		dst = append(dst, `,"table":`...)
		dst = AppendJSONString(dst, c.Table)
	}
	dst = appendStrings(dst, `,"columns":`, c.Columns)
	dst = appendStrings(dst, `,"key":`, c.Key)
	dst = appendValues(dst, `,"new":`, c.New)
	dst = appendValues(dst, `,"old":`, c.Old)
	if c.OldFull {
		dst = append(dst, `,"old_full":true`...)
	}
	dst = appendStrings(dst, `,"unchanged":`, c.Unchanged)
	dst = appendStrings(dst, `,"tables":`, c.Tables)
	if c.Cascade {
		dst = append(dst, `,"cascade":true`...)
	}
	if c.Prefix != "" {
		dst = append(dst, `,"prefix":`...)
		dst = AppendJSONString(dst, c.Prefix)
	}
	if len(c.Content) > 0 {
		dst = append(dst, `,"content":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, c.Content)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}
