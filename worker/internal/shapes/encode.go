package shapes

import (
	"slices"
	"strconv"
	"strings"

	"github.com/batonhq/baton/worker/internal/txn"
)

// The functions here append change messages as JSON, byte for byte what
// json.Marshal of a message gives (map keys sorted, HTML characters,
// U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD), without reflection
// or per-row allocations. encode_test.go checks them against json.Marshal.

// keyEscape doubles / and . in a relation name of a row key.
func keyEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "/", "//"), ".", "..")
}

// keyPrefix is the relation part of the row keys of d (see buildKey).
func keyPrefix(d Definition) string {
	return `"` + keyEscape(d.Schema) + `"."` + keyEscape(d.Table) + `"`
}

// appendKeyPK appends the primary key part of a row key: /"v" per value
// with / doubled, /_ for NULL.
func appendKeyPK[S []byte | string](dst []byte, v S, null bool) []byte {
	if null {
		return append(dst, '/', '_')
	}
	dst = append(dst, '/', '"')
	start := 0
	for i := 0; i < len(v); i++ {
		if v[i] == '/' {
			dst = append(dst, v[start:i+1]...)
			dst = append(dst, '/')
			start = i + 1
		}
	}
	dst = append(dst, v[start:]...)
	return append(dst, '"')
}

// appendHeaders appends the headers object as json.Marshal does.
func appendHeaders(dst []byte, h *headers) []byte {
	dst = append(dst, `{"operation":`...)
	dst = txn.AppendJSONString(dst, h.Operation)
	dst = append(dst, `,"relation":`...)
	if h.Relation == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i, r := range h.Relation {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = txn.AppendJSONString(dst, r)
		}
		dst = append(dst, ']')
	}
	if len(h.TXIDs) > 0 {
		dst = append(dst, `,"txids":[`...)
		for i, x := range h.TXIDs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, x, 10)
		}
		dst = append(dst, ']')
	}
	if h.LSN != "" {
		dst = append(dst, `,"lsn":`...)
		dst = txn.AppendJSONString(dst, h.LSN)
	}
	if h.OpPosition != nil {
		dst = append(dst, `,"op_position":`...)
		dst = strconv.AppendUint(dst, *h.OpPosition, 10)
	}
	if h.Last {
		dst = append(dst, `,"last":true`...)
	}
	if h.KeyChangeTo != "" {
		dst = append(dst, `,"key_change_to":`...)
		dst = txn.AppendJSONString(dst, h.KeyChangeTo)
	}
	if h.KeyChangeFrom != "" {
		dst = append(dst, `,"key_change_from":`...)
		dst = txn.AppendJSONString(dst, h.KeyChangeFrom)
	}
	return append(dst, '}')
}

// rowEncoder appends the insert messages of a snapshot: the parts that are
// the same for every row are escaped once.
type rowEncoder struct {
	keyHead []byte   // `{"key":"` and the key prefix, escaped
	pkPos   []int    // column position of each primary key column
	order   []int    // column positions in the order of their names
	names   []string // `"name":` for each entry of order, escaped; the first without a comma
	suffix  []byte   // `},"headers":{...}}`
	key     []byte   // scratch
}

func newRowEncoder(d Definition, columns []Column, pkPos []int) *rowEncoder {
	e := &rowEncoder{pkPos: pkPos}
	e.keyHead = append(e.keyHead, `{"key":"`...)
	e.keyHead = txn.AppendJSONStringBody(e.keyHead, keyPrefix(d))
	e.order = make([]int, len(columns))
	for i := range e.order {
		e.order[i] = i
	}
	slices.SortStableFunc(e.order, func(a, b int) int { return strings.Compare(columns[a].Name, columns[b].Name) })
	// A map keeps one value per name; json.Marshal of the old map held the
	// last column of a repeated name (not possible for a table).
	for i, p := range e.order {
		var b []byte
		if i > 0 {
			b = append(b, ',')
		}
		b = txn.AppendJSONString(b, columns[p].Name)
		b = append(b, ':')
		e.names = append(e.names, string(b))
	}
	e.suffix = append(e.suffix, `,"headers":`...)
	e.suffix = appendHeaders(e.suffix, &headers{Operation: "insert", Relation: []string{d.Schema, d.Table}})
	e.suffix = append(e.suffix, '}')
	return e
}

// appendRow appends the insert message of a row of text values (nil is
// NULL).
func (e *rowEncoder) appendRow(dst []byte, raw [][]byte) []byte {
	e.key = e.key[:0]
	for _, p := range e.pkPos {
		e.key = appendKeyPK(e.key, raw[p], raw[p] == nil)
	}
	// The prefix ends in '"' and the part appended ASCII: escaping the
	// parts apart is escaping the whole (txn.AppendJSONStringBody).
	dst = append(dst, e.keyHead...)
	dst = txn.AppendJSONStringBody(dst, e.key)
	dst = append(dst, `","value":{`...)
	for i, p := range e.order {
		dst = append(dst, e.names[i]...)
		if v := raw[p]; v == nil {
			dst = append(dst, "null"...)
		} else {
			dst = txn.AppendJSONString(dst, v)
		}
	}
	dst = append(dst, '}')
	return append(dst, e.suffix...)
}
