package where

import (
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Error is a problem with the client's where clause or parameters; the HTTP
// API answers it with 400.
type Error struct {
	Field   string // "where" or "params"
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Message) }

func whereErrorf(format string, args ...any) *Error {
	return &Error{Field: "where", Message: fmt.Sprintf(format, args...)}
}

// clientError reports whether a PostgreSQL error was caused by the text of
// the clause or the values of its parameters rather than by the server:
// data exceptions (class 22), syntax errors and access rule violations
// (class 42, except missing privileges) and unsupported features.
func clientError(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return nil, false
	}
	switch {
	case pe.Code == pgerrcode.InsufficientPrivilege: // ours, not the client's
		return pe, false
	case pgerrcode.IsDataException(pe.Code), pgerrcode.IsSyntaxErrororAccessRuleViolation(pe.Code), pe.Code == pgerrcode.FeatureNotSupported:
		return pe, true
	}
	return pe, false
}
