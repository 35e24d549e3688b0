package where

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SlowPath is p evaluated by PostgreSQL even if Go could.
func SlowPath(p *Predicate) *Predicate {
	q := *p
	q.plan, q.pre = nil, nil
	return &q
}

// PreFiltered reports whether p has a pre-filter a Set finds it through.
func PreFiltered(p *Predicate) bool { return p.plan == nil && p.pre != nil && p.pre.indexed() }

// NoPreFilter is p without its pre-filter.
func NoPreFilter(p *Predicate) *Predicate {
	q := *p
	q.pre = nil
	return &q
}

// NewEvaluatorConns is NewEvaluator holding up to conns connections.
func NewEvaluatorConns(dial func(ctx context.Context) (*pgx.Conn, error), conns int) *Evaluator {
	return newEvaluator(dial, conns)
}
