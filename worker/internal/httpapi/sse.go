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

// DefaultSSEKeepAlive is Electric's keepalive_interval: how long an SSE
// response may stay silent before a comment keeps it open through proxies.
const DefaultSSEKeepAlive = 21 * time.Second

// serveSSE answers live_sse=true as Electric does: one event per message
// and an up-to-date event once caught up, then new changes as they are
// routed, each batch ending with an up-to-date, until the window ends. A
// client that is caught up when it connects gets nothing but ": keep-alive"
// comments (every SSEKeepAlive of silence) until there is a change: no
// up-to-date without new changes.
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
	// unsent: messages were sent since the last up-to-date (a plan that
	// ends at a chunk boundary is followed by one more).
	unsent := false
	for {
		unsent = unsent || !plan.Empty()
		err := sh.Bodies(ctx, plan, func(body []byte) error {
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
		if plan.UpToDate && unsent {
			if _, err := w.Write([]byte("data: " + upToDate(plan.GlobalLSN) + "\n\n")); err != nil {
				return
			}
			unsent = false
		}
		fl.Flush()
		from := plan.Last
		if plan.UpToDate && !s.awaitChanges(ctx, w, fl, sh, from) {
			return
		}
		if plan, err = sh.Plan(from); err != nil {
			return
		}
	}
}

// awaitChanges waits until sh has records after from, writing a
// keep-alive comment after each SSEKeepAlive without one. It returns false
// when ctx ends first, the shape is gone or the client is.
func (s *Server) awaitChanges(ctx context.Context, w http.ResponseWriter, fl http.Flusher, sh *shapes.Shape, from shapes.Offset) bool {
	for {
		wait, cancel := context.WithTimeout(ctx, s.SSEKeepAlive)
		newer, err := sh.Wait(wait, from)
		cancel()
		switch {
		case err != nil || ctx.Err() != nil:
			return false
		case newer:
			return true
		}
		if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
			return false
		}
		fl.Flush()
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
