package where

import (
	"math"
	"math/big"
)

// numeric is a canonical numeric value: finite (r), ±Infinity or NaN
// (which PostgreSQL sorts above every other value).
type numeric struct {
	r   *big.Rat
	inf int // +1 for Infinity and NaN, -1 for -Infinity
}

func parseNumeric(s string) (numeric, bool) {
	switch s {
	case "NaN", "Infinity":
		return numeric{inf: 1}, true
	case "-Infinity":
		return numeric{inf: -1}, true
	}
	r, ok := new(big.Rat).SetString(s)
	return numeric{r: r}, ok
}

// integer is the value as int64 when it is an integer in range.
func (n numeric) integer() (int64, bool) {
	if n.inf != 0 || !n.r.IsInt() || !n.r.Num().IsInt64() {
		return 0, false
	}
	return n.r.Num().Int64(), true
}

var (
	bigMin = big.NewInt(math.MinInt64)
	bigMax = big.NewInt(math.MaxInt64)
	bigOne = big.NewInt(1)
)

// lower is the least int64 v with v > n (strict) or v >= n; false if there
// is none.
func (n numeric) lower(strict bool) (int64, bool) {
	if n.inf != 0 {
		return math.MinInt64, n.inf < 0
	}
	b := new(big.Int).Div(n.r.Num(), n.r.Denom()) // Euclidean: floor, as Denom > 0
	if strict || !n.r.IsInt() {
		b.Add(b, bigOne) // floor(n)+1 = ceil(n) for a fraction, n+1 for an integer
	}
	if b.Cmp(bigMax) > 0 {
		return 0, false
	}
	if b.Cmp(bigMin) < 0 {
		return math.MinInt64, true
	}
	return b.Int64(), true
}

// upper is the greatest int64 v with v < n (strict) or v <= n; false if
// there is none.
func (n numeric) upper(strict bool) (int64, bool) {
	if n.inf != 0 {
		return math.MaxInt64, n.inf > 0
	}
	b := new(big.Int).Div(n.r.Num(), n.r.Denom())
	if strict && n.r.IsInt() {
		b.Sub(b, bigOne)
	}
	if b.Cmp(bigMin) < 0 {
		return 0, false
	}
	if b.Cmp(bigMax) > 0 {
		return math.MaxInt64, true
	}
	return b.Int64(), true
}
