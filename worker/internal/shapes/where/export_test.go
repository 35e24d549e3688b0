package where

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SlowPath is p evaluated by PostgreSQL even if Go could.
func SlowPath(p *Predicate) *Predicate {
	q := *p
	q.plan = nil
	return &q
}

// NewEvaluatorConns is NewEvaluator holding up to conns connections.
func NewEvaluatorConns(dial func(ctx context.Context) (*pgx.Conn, error), conns int) *Evaluator {
	return newEvaluator(dial, conns)
}
