package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/batonhq/baton/worker/internal/shapes"
)

// sseWindow is how long one server-sent-events response stays open.
const sseWindow = 60 * time.Second

// serveSSE answers live_sse=true as Electric does: one event per message,
// an up-to-date event whenever caught up, new changes as they are routed,
// until the window ends.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request, reg *shapes.Registry, p params, sh *shapes.Shape, plan *shapes.Plan) {
	fl, ok := w.(http.Flusher)
	if !ok {
		errorJSON(w, http.StatusInternalServerError, errorBody{Message: "streaming unsupported"})
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "public, max-age="+itoa(int(sseWindow/time.Second)-1))
	h.Set("electric-cursor", nextCursor(s.LongPoll, p.cursor))
	h.Set("electric-handle", sh.Handle())
	h.Set("electric-offset", plan.Last.String())
	h.Set("Content-Type", "text/event-stream")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The stream ends with the lease too: the client reconnects and
	// reaches the active worker.
	leased, stop := s.whileLeased(r)
	defer stop()
	ctx, cancel := context.WithTimeout(leased, sseWindow)
	defer cancel()
	for {
		err := sh.Bodies(plan, func(body []byte) error {
			var msgs []json.RawMessage
			if err := json.Unmarshal(append(append([]byte{'['}, body...), ']'), &msgs); err != nil {
				return err
			}
			for _, m := range msgs {
				if _, err := w.Write(append(append([]byte("data: "), m...), '\n', '\n')); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return // the client reconnects from its last up-to-date
		}
		if plan.UpToDate {
			if _, err := w.Write([]byte("data: " + upToDate(plan.GlobalLSN) + "\n\n")); err != nil {
				return
			}
		}
		fl.Flush()
		from := plan.Last
		if plan.UpToDate {
			if newer, err := sh.Wait(ctx, from); err != nil || !newer {
				return
			}
		}
		if plan, err = sh.Plan(from, s.ChunkBytes); err != nil {
			return
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
