package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawConsumer is the smallest pgoutput client: it streams a logical slot
// over the replication protocol and reports, for each committed
// transaction, the values of the first column of its inserts and when its
// commit message arrived. It is the live-latency baseline: how soon any
// logical replication client can see a commit, next to the worker reading
// the same WAL.
type rawConsumer struct {
	conn   *pgconn.PgConn
	cancel context.CancelFunc
	done   chan error
}

// arrival is a row seen by a consumer.
type arrival struct {
	id int64
	at time.Time
}

func startRawConsumer(ctx context.Context, dbURL, slot, pub string, out chan<- arrival) (*rawConsumer, error) {
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "bench-raw-consumer"
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("raw consumer: connect: %w", err)
	}
	q := fmt.Sprintf(`START_REPLICATION SLOT "%s" LOGICAL 0/0 (proto_version '1', publication_names '"%s"')`, slot, pub)
	conn.Frontend().Send(&pgproto3.Query{String: q})
	if err := conn.Frontend().Flush(); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("raw consumer: %w", err)
	}
	for {
		msg, err := conn.ReceiveMessage(cctx)
		if err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("raw consumer: START_REPLICATION: %w", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			conn.Close(context.Background())
			return nil, fmt.Errorf("raw consumer: START_REPLICATION: %w", pgconn.ErrorResponseToPgError(e))
		}
		if _, ok := msg.(*pgproto3.CopyBothResponse); ok {
			break
		}
	}
	lctx, stop := context.WithCancel(ctx)
	c := &rawConsumer{conn: conn, cancel: stop, done: make(chan error, 1)}
	go func() { c.done <- c.loop(lctx, out) }()
	return c, nil
}

func (c *rawConsumer) loop(ctx context.Context, out chan<- arrival) error {
	var pending []int64
	var last uint64
	for {
		msg, err := c.conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				return pgconn.ErrorResponseToPgError(e)
			}
			continue
		}
		d := cd.Data
		switch {
		case len(d) >= 18 && d[0] == 'k': // keepalive: walEnd, time, reply requested
			if d[17] == 1 {
				if err := c.status(last); err != nil {
					return err
				}
			}
		case len(d) > 25 && d[0] == 'w': // XLogData: start, end, time, message
			last = max(last, binary.BigEndian.Uint64(d[1:9]))
			m := d[25:]
			switch m[0] {
			case 'I':
				id, err := firstColumn(m)
				if err != nil {
					return err
				}
				pending = append(pending, id)
			case 'C':
				now := time.Now()
				for _, id := range pending {
					select {
					case out <- arrival{id, now}:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				pending = pending[:0]
			}
		}
	}
}

// firstColumn parses the first column of an Insert message (proto 1):
// 'I', relation oid, 'N', column count, then per column 'n' | 'u' | 't'
// with a length and the text value.
func firstColumn(m []byte) (int64, error) {
	if len(m) < 1+4+1+2+1 || m[5] != 'N' {
		return 0, errors.New("raw consumer: short or unexpected insert message")
	}
	col := m[8:]
	if col[0] != 't' || len(col) < 5 {
		return 0, fmt.Errorf("raw consumer: first column of kind %q", col[0])
	}
	n := int(binary.BigEndian.Uint32(col[1:5]))
	if len(col) < 5+n {
		return 0, errors.New("raw consumer: short insert message")
	}
	return strconv.ParseInt(string(col[5:5+n]), 10, 64)
}

// status sends a standby status update (nothing is kept: the slot is
// dropped after the benchmark).
func (c *rawConsumer) status(lsn uint64) error {
	b := make([]byte, 1+8+8+8+8+1)
	b[0] = 'r'
	binary.BigEndian.PutUint64(b[1:], lsn)
	binary.BigEndian.PutUint64(b[9:], lsn)
	binary.BigEndian.PutUint64(b[17:], lsn)
	binary.BigEndian.PutUint64(b[25:], uint64(time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
	c.conn.Frontend().Send(&pgproto3.CopyData{Data: b})
	return c.conn.Frontend().Flush()
}

// close stops the loop and closes the connection.
func (c *rawConsumer) close() {
	c.cancel()
	<-c.done // ReceiveMessage returns once its context is cancelled
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.conn.Close(ctx)
}
