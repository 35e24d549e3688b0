package shapes

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Offset is a position in a shape log, as Electric's LogOffset: TX is 0 for
// the snapshot and a commit LSN for a transaction; Op orders messages
// within it. BeforeAll ("-1") is before everything.
type Offset struct {
	TX uint64
	Op uint64
	// BeforeAll marks offset -1.
	BeforeAll bool
}

// opInf is Electric's "inf" op offset.
const opInf = math.MaxUint64

// BeforeAll is offset -1.
var BeforeAll = Offset{BeforeAll: true}

// Less orders offsets.
func (o Offset) Less(p Offset) bool {
	if o.BeforeAll || p.BeforeAll {
		return o.BeforeAll && !p.BeforeAll
	}
	return o.TX < p.TX || (o.TX == p.TX && o.Op < p.Op)
}

func (o Offset) String() string {
	if o.BeforeAll {
		return "-1"
	}
	if o.Op == opInf {
		return strconv.FormatUint(o.TX, 10) + "_inf"
	}
	return strconv.FormatUint(o.TX, 10) + "_" + strconv.FormatUint(o.Op, 10)
}

// ParseOffset parses "-1" or "<tx>_<op>" (op may be "inf"). "now" is
// handled by the caller.
func ParseOffset(s string) (Offset, error) {
	if s == "-1" {
		return BeforeAll, nil
	}
	tx, op, ok := strings.Cut(s, "_")
	if !ok {
		return Offset{}, errors.New("has invalid format")
	}
	t, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return Offset{}, errors.New("has invalid format")
	}
	if op == "inf" {
		return Offset{TX: t, Op: opInf}, nil
	}
	o, err := strconv.ParseUint(op, 10, 64)
	if err != nil {
		return Offset{}, errors.New("has invalid format")
	}
	return Offset{TX: t, Op: o}, nil
}

// after reports whether a record (or the part of one) ending at offset o
// comes after a client's offset from. A client that has seen op k of
// transaction L has seen ops 0..k of it: a transaction is one record per
// shape, cut into parts only at chunk boundaries inside it (chunk.go), so
// a part ending at op j of L is after "<L>_<k>" when j > k. "<L>_0" means
// the whole of L, as before chunks could cut a transaction: it is what
// the client derives from global_last_seen_lsn, and no part ends at op 0
// unless it is a whole one-message transaction. Snapshot chunks (TX 0) are
// ordered by op.
func (o Offset) after(from Offset) bool {
	if from.BeforeAll {
		return true
	}
	if o.TX == 0 {
		return from.TX == 0 && o.Op > from.Op
	}
	if o.TX != from.TX {
		return o.TX > from.TX
	}
	return from.Op != 0 && o.Op > from.Op
}
