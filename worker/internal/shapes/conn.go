package shapes

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/worker/internal/txn"
)

// connect opens a connection with the fixed output settings the
// replication connection uses, so that values look the same in the
// snapshot and in the log.
func connect(ctx context.Context, url, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = app
	for k, v := range txn.OutputSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// dial opens a connection of the registry's for role ("shapes" or
// "where"): application_name baton-worker-<role>:<stream>:<epoch>, and the
// output settings of connect.
func (r *Registry) dial(ctx context.Context, role string) (*pgx.Conn, error) {
	return connect(ctx, r.o.DatabaseURL, "baton-worker-"+role+":"+r.o.StreamID+":"+strconv.FormatUint(r.o.Epoch, 10))
}
