package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// baseline measures the floor of a lock handoff in PostgreSQL itself: two
// plain sessions take turns holding pg_advisory_lock(1, 1) while the other
// is blocked in it. Like the broker's lock session they use the simple
// protocol (one round trip per statement).
type baseline struct {
	holder, waiter *pgx.Conn
	monitor        *pgx.Conn
}

const baselineTimeout = 10 * time.Second

func newBaseline(ctx context.Context, dbURL string) (*baseline, error) {
	b := &baseline{}
	cctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	for _, c := range []**pgx.Conn{&b.holder, &b.waiter, &b.monitor} {
		cfg, err := pgx.ParseConfig(dbURL)
		if err != nil {
			b.close()
			return nil, err
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		if *c, err = pgx.ConnectConfig(cctx, cfg); err != nil {
			b.close()
			return nil, fmt.Errorf("baseline session: %w", err)
		}
	}
	if _, err := b.holder.Exec(cctx, "SELECT pg_advisory_lock(1, 1)"); err != nil {
		b.close()
		return nil, fmt.Errorf("baseline: first lock: %w", err)
	}
	return b, nil
}

// round blocks the waiter in pg_advisory_lock(1, 1), unlocks in the holder
// and returns the time from calling pg_advisory_unlock to the waiter's lock
// call returning. Then the two swap roles.
func (b *baseline) round(ctx context.Context) (time.Duration, error) {
	type result struct {
		at  time.Time
		err error
	}
	wctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	got := make(chan result, 1)
	go func() {
		_, err := b.waiter.Exec(wctx, "SELECT pg_advisory_lock(1, 1)")
		got <- result{time.Now(), err}
	}()
	// Unlock only once the waiter is really blocked on the lock.
	err := await(ctx, baselineTimeout, "the baseline waiter to block in pg_advisory_lock(1, 1)", func() (bool, error) {
		select {
		case r := <-got:
			return false, fmt.Errorf("lock call returned while held: %v", r.err)
		default:
		}
		var waiting int
		err := b.monitor.QueryRow(wctx, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = 1 AND objid = 1 AND objsubid = 2 AND NOT granted`).Scan(&waiting)
		return waiting == 1, err
	})
	if err != nil {
		cancel()
		<-got
		return 0, err
	}
	start := time.Now()
	var ok bool
	if err := b.holder.QueryRow(wctx, "SELECT pg_advisory_unlock(1, 1)").Scan(&ok); err != nil || !ok {
		cancel()
		<-got
		return 0, fmt.Errorf("baseline unlock: %v (unlocked: %v)", err, ok)
	}
	var r result
	select {
	case r = <-got:
	case <-wctx.Done():
		<-got
		return 0, fmt.Errorf("baseline waiter not granted within %s of the unlock", baselineTimeout)
	}
	if r.err != nil {
		return 0, fmt.Errorf("baseline lock: %w", r.err)
	}
	b.holder, b.waiter = b.waiter, b.holder
	return r.at.Sub(start), nil
}

func (b *baseline) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range []*pgx.Conn{b.holder, b.waiter, b.monitor} {
		if c != nil {
			_ = c.Close(ctx)
		}
	}
}
