package settings

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"google.golang.org/grpc/grpclog"
)

// Log attribute keys every line may carry.
const (
	KeyStream = "stream"
	KeyEpoch  = "epoch"
)

// Epoch is the epoch a process's log lines carry while it holds the
// stream (a broker's claim or grant, a worker's lease); 0 while it does
// not. It is safe for concurrent use.
type Epoch struct{ v atomic.Uint64 }

// Set makes every line logged from now on carry epoch (0: none).
func (e *Epoch) Set(epoch uint64) { e.v.Store(epoch) }

// Get is the epoch lines carry now (0: none).
func (e *Epoch) Get() uint64 { return e.v.Load() }

// NewLogger is the process's logger: slog's text or JSON handler on w,
// at level Info. Every line carries the stream and, while epoch is set,
// the epoch (unless the line names an epoch itself); durations are
// written as Go durations ("1.5s") in both formats.
func NewLogger(format string, w io.Writer, stream string, epoch *Epoch) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	h = h.WithAttrs([]slog.Attr{slog.String(KeyStream, stream)})
	return slog.New(&epochHandler{h: h, epoch: epoch})
}

// epochHandler adds the epoch to every record while one is set.
type epochHandler struct {
	h     slog.Handler
	epoch *Epoch
	// named: the logger already carries an epoch attribute (With).
	named bool
}

func (e *epochHandler) Enabled(ctx context.Context, l slog.Level) bool { return e.h.Enabled(ctx, l) }

func (e *epochHandler) Handle(ctx context.Context, r slog.Record) error {
	if epoch := e.epoch.Get(); epoch != 0 && !e.named {
		own := false
		r.Attrs(func(a slog.Attr) bool {
			own = a.Key == KeyEpoch
			return !own
		})
		if !own {
			r = r.Clone()
			r.AddAttrs(slog.Uint64(KeyEpoch, epoch))
		}
	}
	return e.h.Handle(ctx, r)
}

func (e *epochHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	named := e.named
	for _, a := range attrs {
		named = named || a.Key == KeyEpoch
	}
	return &epochHandler{h: e.h.WithAttrs(attrs), epoch: e.epoch, named: named}
}

func (e *epochHandler) WithGroup(name string) slog.Handler {
	return &epochHandler{h: e.h.WithGroup(name), epoch: e.epoch, named: e.named}
}

// RouteGRPCLog sends grpc-go's own logging to log: its errors as errors
// (component "grpc"), its informational and warning lines (connection
// state changes, closed transports: routine for a sidecar pair) at debug
// level. Call it once, before any gRPC use (grpclog.SetLoggerV2).
func RouteGRPCLog(log *slog.Logger) {
	grpclog.SetLoggerV2(grpcLogger{log: log.With("component", "grpc")})
}

// grpcLogger is a grpclog.LoggerV2 writing to slog.
type grpcLogger struct{ log *slog.Logger }

func (g grpcLogger) out(level slog.Level, msg string) {
	g.log.Log(context.Background(), level, msg)
}

func (g grpcLogger) Info(args ...any)   { g.out(slog.LevelDebug, fmt.Sprint(args...)) }
func (g grpcLogger) Infoln(args ...any) { g.out(slog.LevelDebug, sprintln(args...)) }
func (g grpcLogger) Infof(format string, args ...any) {
	g.out(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Warning(args ...any)   { g.out(slog.LevelDebug, fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any) { g.out(slog.LevelDebug, sprintln(args...)) }
func (g grpcLogger) Warningf(format string, args ...any) {
	g.out(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Error(args ...any)   { g.out(slog.LevelError, fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any) { g.out(slog.LevelError, sprintln(args...)) }
func (g grpcLogger) Errorf(format string, args ...any) {
	g.out(slog.LevelError, fmt.Sprintf(format, args...))
}

// Fatal logs and exits, as grpclog's contract requires (grpc-go calls it
// only for programming errors).
func (g grpcLogger) Fatal(args ...any) {
	g.out(slog.LevelError, fmt.Sprint(args...))
	os.Exit(1)
}

func (g grpcLogger) Fatalln(args ...any) {
	g.out(slog.LevelError, sprintln(args...))
	os.Exit(1)
}

func (g grpcLogger) Fatalf(format string, args ...any) {
	g.out(slog.LevelError, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// V reports whether verbosity level l is logged: grpc-go's verbose lines
// are left out.
func (g grpcLogger) V(l int) bool { return l <= 0 }

// sprintln is fmt.Sprintln without the newline.
func sprintln(args ...any) string {
	s := fmt.Sprintln(args...)
	return s[:len(s)-1]
}
