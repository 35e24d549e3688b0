// Command badworker is the conformance kit's test fixture: a minimal worker
// (its own lease client, written from lease.proto alone, in lease.go;
// pglogrepl for the stream; it stores only its position) that keeps every
// obligation of a worker, unless BATON_BAD names one it breaks:
//
//	early      opens a replication connection before it is granted
//	noepoch    names its replication connection without the epoch
//	ignorettl  goes on consuming for 3 s after its lease expired
//	revoke     sends Released before it acknowledged and closed its stream
//	locklost   goes on consuming for 3 s after Revoked(lock_lost)
//	ackahead   acknowledges every 200 ms but reports its position every 5 s
//	volatile   keeps its position in memory only (lost by SIGKILL)
//	pings      pings the broker every 100 ms on a second HTTP/2 connection
//	nostopping on SIGTERM, releases without RELEASE_REASON_STOPPING
//	lossy      delivers only two transactions in three (and acknowledges all)
//	dupe       delivers again what a predecessor delivered but did not
//	           acknowledge
//
// and those of its lease client (lease.go): hello, strict, anyrevoke.
//
// It reads the environment contract of the kit: DATABASE_URL,
// REPLICATION_STREAM_ID, BATON_BROKER_ADDR, BATON_STORAGE_DIR and
// BATON_DELIVERY_FILE. It publishes the kit's table and appends each insert
// to the delivery file (shared by the pods) as a JSON line, fsynced before
// its transaction's end is acknowledged; a worker that starts skips the
// transactions whose commit LSN the file already has (written by a
// predecessor that died before acknowledging them), so each is delivered
// once.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/net/http2"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "badworker:", err)
		os.Exit(1)
	}
}

type worker struct {
	url, streamID, dir, bad string
	deliveryFile            string
	// durable is the position stored (for volatile: kept in memory).
	durable uint64
}

func run(ctx context.Context) error {
	w := &worker{url: os.Getenv("DATABASE_URL"), streamID: os.Getenv("REPLICATION_STREAM_ID"), dir: os.Getenv("BATON_STORAGE_DIR"), bad: os.Getenv("BATON_BAD"), deliveryFile: os.Getenv("BATON_DELIVERY_FILE")}
	addr := os.Getenv("BATON_BROKER_ADDR")
	if w.bad != "volatile" {
		b, err := os.ReadFile(filepath.Join(w.dir, "position"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if len(b) > 0 {
			if w.durable, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
				return fmt.Errorf("position file: %w", err)
			}
		}
	}
	if w.bad == "pings" {
		go pingFlood(ctx, addr)
	}
	if w.bad == "early" {
		c, err := w.connect(ctx, 0)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
	}
	c, err := newLeaseClient(addr, w.streamID, w.bad)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		l, err := c.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		consumeErr := w.consume(ctx, l)
		if consumeErr != nil {
			fmt.Fprintln(os.Stderr, "badworker: consume:", consumeErr)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if ctx.Err() != nil {
			reason := batonv1.ReleaseReason_RELEASE_REASON_STOPPING
			if w.bad == "nostopping" {
				reason = batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED
			}
			_ = l.Release(rctx, w.durable, reason)
			cancel()
			return nil
		}
		_ = l.Release(rctx, w.durable, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED)
		cancel()
	}
}

func (w *worker) connect(ctx context.Context, epoch uint64) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(w.url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = fmt.Sprintf("baton-worker:%s:%d", w.streamID, epoch)
	if w.bad == "noepoch" {
		cfg.RuntimeParams["application_name"] = "badworker"
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// setup creates the publication (empty) and the slot when missing.
func (w *worker) setup(ctx context.Context, l *grant) error {
	conn, err := pgx.Connect(ctx, w.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var pub, slot bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1),
		EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $2)`, l.Publication, l.Slot).Scan(&pub, &slot); err != nil {
		return err
	}
	if !pub {
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{l.Publication}.Sanitize()+" FOR TABLE "+table); err != nil {
			return err
		}
	}
	if !slot {
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", l.Slot); err != nil {
			return err
		}
	}
	return nil
}

// consume streams until the lease ends (or later, as BATON_BAD says), then
// stores, acknowledges and closes.
func (w *worker) consume(ctx context.Context, l *grant) error {
	if err := w.setup(l.Ctx(), l); err != nil {
		return err
	}
	repl, err := w.connect(l.Ctx(), l.Epoch)
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())
	for {
		err = pglogrepl.StartReplication(l.Ctx(), repl, l.Slot, 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names '" + l.Publication + "'"},
		})
		if err == nil {
			break
		}
		// The slot may still be active for a predecessor a moment.
		select {
		case <-l.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The end of consuming: SIGTERM, or the lease's end (later when
	// misbehaving).
	end, cancelEnd := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelEnd()
	defer context.AfterFunc(ctx, cancelEnd)()
	go func() {
		select {
		case <-l.Done():
		case <-end.Done():
			return
		}
		r, revoked := revokedReason(l.Err())
		if (w.bad == "ignorettl" && errors.Is(l.Err(), errExpired)) ||
			(w.bad == "locklost" && revoked && r == batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST) {
			time.Sleep(3 * time.Second)
		}
		cancelEnd()
	}()
	received := w.durable
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Time{}
	w.store(received)
	_ = l.Progress(w.durable)
	lag := received
	d, err := w.newDelivery()
	if err != nil {
		return err
	}
	// flush makes the transactions received durable in the delivery file,
	// then their end the position to store and acknowledge.
	flush := func() error {
		if err := d.flush(); err != nil {
			return err
		}
		received = max(received, d.safe)
		return nil
	}
	for end.Err() == nil {
		rctx, cancel := context.WithTimeout(end, 100*time.Millisecond)
		msg, err := repl.ReceiveMessage(rctx)
		cancel()
		if err != nil && !pgconn.Timeout(err) && end.Err() == nil {
			return err
		}
		if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) > 0 {
			switch cd.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
				if err == nil {
					d.keepalive(uint64(k.ServerWALEnd))
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(cd.Data[1:])
				if err != nil {
					return err
				}
				if err := d.handle(x.WALData); err != nil {
					return err
				}
			}
		}
		select {
		case <-tick.C:
		default:
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		pos := received
		if w.bad == "dupe" {
			// Acknowledge a tick behind what is in the file, so that a
			// SIGKILL leaves delivered transactions to be streamed again.
			pos, lag = lag, received
		}
		w.store(pos)
		if w.bad != "ackahead" || time.Since(lastReport) > 5*time.Second {
			_ = l.Progress(w.durable)
			lastReport = time.Now()
		}
		if err := ack(ctx, repl, w.durable); err != nil {
			return err
		}
	}
	if l.Err() != nil && ctx.Err() == nil && !isShutdown(l.Err()) {
		return nil // nothing more is acknowledged after the lease is lost
	}
	if w.bad == "revoke" {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = l.Release(rctx, w.durable, batonv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED)
		cancel()
		time.Sleep(time.Second)
	}
	if err := flush(); err != nil {
		return err
	}
	w.store(received)
	_ = l.Progress(w.durable)
	if err := ack(ctx, repl, w.durable); err != nil {
		return err
	}
	// Let the walsender read the acknowledgement before it ends, then
	// close and wait for the walsender to be gone: Released comes after.
	time.Sleep(300 * time.Millisecond)
	repl.Close(context.WithoutCancel(ctx))
	return w.awaitWalsenderGone(context.WithoutCancel(ctx), l.Epoch)
}

func (w *worker) awaitWalsenderGone(ctx context.Context, epoch uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, w.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	app := fmt.Sprintf("baton-worker:%s:%d", w.streamID, epoch)
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1", app).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isShutdown: the lease was revoked for the broker's shutdown (drain,
// then release).
func isShutdown(err error) bool {
	r, ok := revokedReason(err)
	return ok && r == batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN
}

func ack(ctx context.Context, repl *pgconn.PgConn, lsn uint64) error {
	return pglogrepl.SendStandbyStatusUpdate(context.WithoutCancel(ctx), repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(lsn), WALFlushPosition: pglogrepl.LSN(lsn), WALApplyPosition: pglogrepl.LSN(lsn),
	})
}

// store makes lsn the durable position (a file, fsynced and renamed; in
// memory only for volatile).
func (w *worker) store(lsn uint64) {
	if lsn <= w.durable {
		return
	}
	if w.bad != "volatile" {
		tmp := filepath.Join(w.dir, "position.tmp")
		f, err := os.Create(tmp)
		if err != nil {
			fmt.Fprintln(os.Stderr, "badworker:", err)
			return
		}
		_, err = fmt.Fprintf(f, "%d\n", lsn)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, filepath.Join(w.dir, "position"))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "badworker:", err)
			return
		}
	}
	w.durable = lsn
}

// pingFlood pings addr over HTTP/2 every 100 ms until ctx ends.
func pingFlood(ctx context.Context, addr string) {
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		_, _ = c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings()
		go func() {
			for {
				if _, err := fr.ReadFrame(); err != nil {
					return
				}
			}
		}()
		for ctx.Err() == nil {
			if err := fr.WritePing(false, [8]byte{1}); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
}
