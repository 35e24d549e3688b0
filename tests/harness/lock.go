package harness

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/proto/stream"
)

// LockHolders reads pg_locks for the stream's advisory lock: the backend
// pids holding it (granted) and how many sessions wait for it.
func LockHolders(ctx context.Context, conn *pgx.Conn, streamID string) (held []int32, waiting int, err error) {
	rows, err := conn.Query(ctx, `SELECT pid, granted FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2`,
		stream.LockNamespace, int64(stream.LockObjID(streamID)))
	if err != nil {
		return nil, 0, fmt.Errorf("query pg_locks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int32
		var granted bool
		if err := rows.Scan(&pid, &granted); err != nil {
			return nil, 0, fmt.Errorf("scan pg_locks: %w", err)
		}
		if granted {
			held = append(held, pid)
		} else {
			waiting++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("pg_locks: %w", err)
	}
	return held, waiting, nil
}
