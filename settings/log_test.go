package settings_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/grpclog"

	"github.com/batonhq/baton/settings"
)

// TestLogger: every line carries the stream, and the epoch while one is
// set (once, even when the line or the logger names one); durations are Go
// durations in JSON as in text.
func TestLogger(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var epoch settings.Epoch
			log := settings.NewLogger(format, &buf, "s1", &epoch)
			log.Info("standing by", "waited", 1500*time.Millisecond, slog.Group("startup", slog.Duration("total", 2*time.Millisecond)))
			epoch.Set(7)
			log.Info("leased")
			log.Info("granted", "epoch", 8)
			log.With("epoch", 9).Info("with")
			epoch.Set(0)
			log.Debug("hidden")
			log.Warn("released")
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			want := []struct {
				msg, epochs string // epochs: the epoch values the line names
			}{{"standing by", ""}, {"leased", "7"}, {"granted", "8"}, {"with", "9"}, {"released", ""}}
			if len(lines) != len(want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
			}
			for i, line := range lines {
				var epochs []string
				var stream, waited, total string
				if format == "json" {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
					stream, _ = m["stream"].(string)
					if e, ok := m["epoch"]; ok {
						epochs = append(epochs, strings.TrimSuffix(strings.TrimSuffix(jsonText(e), ".0"), "\n"))
					}
					waited, _ = m["waited"].(string)
					if g, ok := m["startup"].(map[string]any); ok {
						total, _ = g["total"].(string)
					}
				} else {
					for _, f := range strings.Fields(line) {
						k, v, _ := strings.Cut(f, "=")
						switch k {
						case "stream":
							stream = v
						case "epoch":
							epochs = append(epochs, v)
						case "waited":
							waited = v
						case "startup.total":
							total = v
						}
					}
				}
				if stream != "s1" || strings.Join(epochs, ",") != want[i].epochs || !strings.Contains(line, want[i].msg) {
					t.Errorf("line %q: stream %q, epochs %v; want s1, [%s]", line, stream, epochs, want[i].epochs)
				}
				if i == 0 && (waited != "1.5s" || total != "2ms") {
					t.Errorf("durations written %q and %q, want 1.5s and 2ms: %s", waited, total, line)
				}
			}
		})
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestRouteGRPCLog: grpc-go's errors reach the process's logger as
// errors; its informational lines only at debug level.
func TestRouteGRPCLog(t *testing.T) {
	var buf bytes.Buffer
	settings.RouteGRPCLog(settings.NewLogger("json", &buf, "s1", &settings.Epoch{}))
	grpclog.Info("[core] channel state changed")
	grpclog.Warning("[transport] closing: EOF")
	grpclog.Errorf("[core] failed to %s", "serve")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %q (want exactly one line)", err, buf.String())
	}
	if m["level"] != "ERROR" || m["msg"] != "[core] failed to serve" || m["component"] != "grpc" || m["stream"] != "s1" {
		t.Fatalf("grpc error logged as %v", m)
	}
}
