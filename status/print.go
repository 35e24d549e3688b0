package status

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/batonhq/baton/proto/stream"
)

// WhyWaiting says why the sessions waiting for the stream's lock (the
// standby brokers, and so their workers) wait, or that none does.
func (s Stream) WhyWaiting() string {
	h := s.Holding
	switch {
	case len(s.Waiting) == 0 && s.Held:
		return "no standby broker is waiting for the lock"
	case len(s.Waiting) == 0:
		return "nobody holds or waits for the lock"
	case !s.Held:
		return "the lock is free: a waiting broker takes it within moments"
	case h == nil || h.BackendPID != s.Lock.PID:
		return fmt.Sprintf("the lock is held by backend pid %d (%s), which is not the holder the state table names: a broker between taking the lock and claiming the stream, or a session that is not a Baton broker",
			s.Lock.PID, orDash(s.Lock.App))
	}
	why := fmt.Sprintf("the lock is held by %s (epoch %d, for %s); it lets go when its worker or broker stops, when no worker is attached for BATON_WORKER_ABSENCE_TIMEOUT, or when PostgreSQL ends its session (no heartbeat for BATON_LOCK_SESSION_TIMEOUT)",
		h.Holder, h.Epoch, ago(s.Now, h.AcquiredAt))
	if age := s.Now.Sub(h.LastHeartbeat); age > 30*time.Second {
		why += fmt.Sprintf("; its last heartbeat was %s ago: its broker is frozen, partitioned away or failing", age.Round(time.Second))
	}
	return why
}

// WriteText writes the status for a person.
func (s Stream) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	at := func(t time.Time) string {
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339Nano), ago(s.Now, t))
	}
	row("stream", "%s", s.ID)
	if s.Held {
		row("lock", "held by backend pid %d (%s)", s.Lock.PID, orDash(s.Lock.App))
	} else {
		row("lock", "not held")
	}
	if h := s.Holding; h == nil {
		row("holder", "- (no broker has held this stream here)")
	} else {
		alive := "gone"
		if h.Alive {
			alive = "alive"
		}
		row("holder", "%s (backend pid %d, %s)", h.Holder, h.BackendPID, alive)
		row("epoch", "%d", h.Epoch)
		row("since", "%s", at(h.AcquiredAt))
		if h.GrantedAt != nil {
			row("granted at", "%s", at(*h.GrantedAt))
		}
		row("last heartbeat", "%s", at(h.LastHeartbeat))
		if h.ReleasedAt != nil {
			row("released at", "%s%s", at(*h.ReleasedAt), prefixed(", ", h.ReleaseCause))
		}
		if h.Worker != "" {
			row("worker", "%s", h.Worker)
		}
		if h.WorkerURL != "" {
			row("worker url", "%s", h.WorkerURL)
		}
		if h.DurableLSN != 0 {
			row("durable lsn", "%s (reported by the worker)", FormatLSN(h.DurableLSN))
		}
	}
	row("server wal", "%s", FormatLSN(s.WAL))
	if sl := s.Slot; sl == nil {
		row("slot", "%s: missing (the worker creates it when it first holds the lease)", stream.SlotName(s.ID))
	} else {
		consumer := "inactive"
		if sl.Active {
			consumer = fmt.Sprintf("active, consumed by backend pid %d (%s)", sl.ActivePID, orDash(sl.Consumer))
		}
		row("slot", "%s: %s", sl.Name, consumer)
		status := orDash(sl.WALStatus)
		if sl.SafeWALSize != nil {
			status += fmt.Sprintf(" (%s more WAL before it is in danger)", bytes(*sl.SafeWALSize))
		}
		row("slot wal status", "%s", status)
		row("lag", "%s behind the server's WAL (confirmed flush %s)", bytes(sl.Lag), FormatLSN(sl.ConfirmedLSN))
		if ws := sl.Walsender; ws != nil {
			line := fmt.Sprintf("%s, sent %s, flushed %s", ws.State, FormatLSN(ws.SentLSN), FormatLSN(ws.FlushLSN))
			if ws.FlushLag != nil {
				line += fmt.Sprintf(", flush lag %s", ws.FlushLag.Round(time.Microsecond))
			}
			if ws.ReplyTime != nil {
				line += fmt.Sprintf(", last reply %s ago", ago(s.Now, *ws.ReplyTime))
			}
			row("walsender", "%s", line)
		}
		row("retained wal", "%s (restart lsn %s)", bytes(sl.Retained), FormatLSN(sl.RestartLSN))
	}
	if len(s.Waiting) == 0 {
		row("standbys", "none waiting for the lock")
	}
	for i, w := range s.Waiting {
		k := ""
		if i == 0 {
			k = "standbys"
		}
		since := ""
		if w.WaitStart != nil {
			since = ", waiting for " + ago(s.Now, *w.WaitStart).String()
		}
		row(k, "%s (backend pid %d%s)", orDash(w.App), w.PID, since)
	}
	row("why standbys wait", "%s", s.WhyWaiting())
	for i, ss := range s.Sessions {
		k := ""
		if i == 0 {
			k = "sessions"
		}
		row(k, "%s (backend pid %d, %s)", ss.App, ss.PID, orDash(ss.State))
	}
	row("lock key", "pg_advisory_lock(%d, %d) (pg_locks: classid %d, objid %d, objsubid 2)",
		stream.LockNamespace, stream.LockKey(s.ID), stream.LockNamespace, stream.LockObjID(s.ID))
	return tw.Flush()
}

// WriteJSON writes the status as one JSON object. Positions are pg_lsn
// text, sizes bytes, times RFC 3339; absent things are null.
func (s Stream) WriteJSON(w io.Writer) error {
	out := map[string]any{
		"stream":            s.ID,
		"now":               s.Now,
		"current_wal_lsn":   FormatLSN(s.WAL),
		"held":              s.Held,
		"held_by_pid":       s.Lock.PID,
		"lock_classid":      stream.LockNamespace,
		"lock_objid":        stream.LockObjID(s.ID),
		"recorded":          s.Holding != nil,
		"why_standby_waits": s.WhyWaiting(),
		"waiting":           sessionsJSON(s.Waiting),
		"sessions":          sessionsJSON(s.Sessions),
		"slot":              nil,
	}
	if h := s.Holding; h != nil {
		out["holder"] = h.Holder
		out["epoch"] = h.Epoch
		out["backend_pid"] = h.BackendPID
		out["backend_alive"] = h.Alive
		out["worker"] = h.Worker
		out["worker_url"] = h.WorkerURL
		out["durable_lsn"] = lsnOrNil(h.DurableLSN)
		out["since"] = h.AcquiredAt
		out["acquired_at"] = h.AcquiredAt
		out["granted_at"] = h.GrantedAt
		out["last_heartbeat"] = h.LastHeartbeat
		out["released_at"] = h.ReleasedAt
		out["release_cause"] = h.ReleaseCause
	}
	if sl := s.Slot; sl != nil {
		slot := map[string]any{
			"name":                sl.Name,
			"plugin":              sl.Plugin,
			"active":              sl.Active,
			"active_pid":          sl.ActivePID,
			"consumer":            sl.Consumer,
			"wal_status":          sl.WALStatus,
			"safe_wal_size_bytes": sl.SafeWALSize,
			"restart_lsn":         lsnOrNil(sl.RestartLSN),
			"confirmed_flush_lsn": lsnOrNil(sl.ConfirmedLSN),
			"retained_wal_bytes":  sl.Retained,
			"lag_bytes":           sl.Lag,
			"walsender":           nil,
		}
		if e, ok := sl.ConsumerEpoch(s.ID); ok {
			slot["consumer_epoch"] = e
		}
		if ws := sl.Walsender; ws != nil {
			var lag *float64
			if ws.FlushLag != nil {
				v := ws.FlushLag.Seconds()
				lag = &v
			}
			slot["walsender"] = map[string]any{
				"state": ws.State, "sent_lsn": lsnOrNil(ws.SentLSN), "flush_lsn": lsnOrNil(ws.FlushLSN),
				"flush_lag_seconds": lag, "reply_time": ws.ReplyTime,
			}
		}
		out["slot"] = slot
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func sessionsJSON(ss []Session) []map[string]any {
	out := []map[string]any{}
	for _, s := range ss {
		out = append(out, map[string]any{"pid": s.PID, "application_name": s.App, "role": s.Role, "state": s.State,
			"backend_start": s.BackendStart, "wait_start": s.WaitStart})
	}
	return out
}

func lsnOrNil(lsn uint64) any {
	if lsn == 0 {
		return nil
	}
	return FormatLSN(lsn)
}

// ago is the time from t to now, rounded for reading.
func ago(now, t time.Time) time.Duration {
	d := now.Sub(t)
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// bytes writes a size for reading.
func bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for ; (f >= unit*unit || f <= -unit*unit) && i < 4; i++ {
		f /= unit
	}
	return fmt.Sprintf("%.1f %s (%d bytes)", f/unit, []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[i], n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
