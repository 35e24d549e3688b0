package replication

import (
	"log/slog"
	"time"
)

// Steps times the start of a run from the grant to streaming, step by
// step, for the "replicating" log line (group startup): where a slow
// handoff spends its time. Steps in the order marked; not safe for
// concurrent use (the dial, which runs alongside, is timed by Dialing).
type Steps struct {
	start, last time.Time
	attrs       []any
}

// NewSteps starts timing at start (the grant's arrival).
func NewSteps(start time.Time) *Steps {
	return &Steps{start: start, last: start}
}

// Mark ends the step called name: the time since the previous mark.
func (s *Steps) Mark(name string) {
	if s == nil {
		return
	}
	now := time.Now()
	s.attrs = append(s.attrs, slog.Duration(name, now.Sub(s.last).Round(10*time.Microsecond)))
	s.last = now
}

// group is the log attribute: every step and the total.
func (s *Steps) group(extra ...any) slog.Attr {
	attrs := append(append(append([]any{}, s.attrs...), extra...),
		slog.Duration("total", time.Since(s.start).Round(10*time.Microsecond)))
	return slog.Group("startup", attrs...)
}
