package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/broker/internal/config"
	"github.com/batonhq/baton/broker/internal/lock"
	"github.com/batonhq/baton/proto/stream"
)

// runStatus prints, from PostgreSQL, who holds the stream. It returns
// errNotHeld when no session holds the stream's advisory lock.
func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.ParseStatus(args, getenv, stderr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := lock.ReadStatus(cctx, conn, cfg.StreamID)
	if err != nil {
		return err
	}
	if cfg.JSON {
		if err := writeStatusJSON(stdout, st); err != nil {
			return err
		}
	} else {
		writeStatusText(stdout, st)
	}
	if !st.Held {
		return errNotHeld
	}
	return nil
}

func writeStatusText(w io.Writer, st lock.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ago := func(t time.Time) string {
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339Nano), st.Now.Sub(t).Round(time.Millisecond))
	}
	held := "no"
	if st.Held {
		held = fmt.Sprintf("yes, by backend pid %d", st.HeldByPID)
	}
	fmt.Fprintf(tw, "stream\t%s\n", st.StreamID)
	fmt.Fprintf(tw, "lock\tpg_advisory_lock(%d, %d)  (pg_locks: classid %d, objid %d, objsubid 2)\n",
		stream.LockNamespace, stream.LockKey(st.StreamID), stream.LockNamespace, stream.LockObjID(st.StreamID))
	fmt.Fprintf(tw, "held\t%s\n", held)
	if !st.Recorded {
		fmt.Fprintf(tw, "holder\t- (no broker has held this stream here)\n")
		tw.Flush()
		return
	}
	alive := "gone"
	if st.Alive {
		alive = "alive"
	}
	fmt.Fprintf(tw, "holder\t%s\n", st.Holder)
	fmt.Fprintf(tw, "epoch\t%d\n", st.Epoch)
	fmt.Fprintf(tw, "backend pid\t%d (%s)\n", st.BackendPID, alive)
	if st.Worker != "" {
		fmt.Fprintf(tw, "worker\t%s\n", st.Worker)
	}
	if st.WorkerURL != "" {
		fmt.Fprintf(tw, "worker url\t%s\n", st.WorkerURL)
	}
	if st.DurableLSN != 0 {
		fmt.Fprintf(tw, "durable lsn\t%s (reported by the worker)\n", lock.FormatLSN(st.DurableLSN))
	}
	fmt.Fprintf(tw, "acquired at\t%s\n", ago(st.AcquiredAt))
	if st.GrantedAt != nil {
		fmt.Fprintf(tw, "granted at\t%s\n", ago(*st.GrantedAt))
	}
	fmt.Fprintf(tw, "last heartbeat\t%s\n", ago(st.LastHeartbeat))
	if st.ReleasedAt != nil {
		cause := ""
		if st.ReleaseCause != "" {
			cause = ", " + st.ReleaseCause
		}
		fmt.Fprintf(tw, "released at\t%s%s\n", ago(*st.ReleasedAt), cause)
	}
	tw.Flush()
}

func writeStatusJSON(w io.Writer, st lock.Status) error {
	out := map[string]any{
		"stream":       st.StreamID,
		"held":         st.Held,
		"held_by_pid":  st.HeldByPID,
		"recorded":     st.Recorded,
		"lock_classid": stream.LockNamespace,
		"lock_objid":   stream.LockObjID(st.StreamID),
	}
	if st.Recorded {
		out["holder"] = st.Holder
		out["epoch"] = st.Epoch
		out["backend_pid"] = st.BackendPID
		out["backend_alive"] = st.Alive
		out["worker"] = st.Worker
		out["worker_url"] = st.WorkerURL
		out["durable_lsn"] = nil
		if st.DurableLSN != 0 {
			out["durable_lsn"] = lock.FormatLSN(st.DurableLSN)
		}
		out["acquired_at"] = st.AcquiredAt
		out["granted_at"] = st.GrantedAt
		out["last_heartbeat"] = st.LastHeartbeat
		out["released_at"] = st.ReleasedAt
		out["release_cause"] = st.ReleaseCause
		out["now"] = st.Now
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
