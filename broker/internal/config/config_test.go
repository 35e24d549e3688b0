package config_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/broker/internal/config"
)

const testURL = "postgres://baton@127.0.0.1:5432/baton"

// env returns a getenv over m, with DATABASE_URL set unless m says otherwise.
func env(m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		if k == "DATABASE_URL" {
			return testURL
		}
		return ""
	}
}

func TestParseDefaults(t *testing.T) {
	got, err := config.Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := config.Config{
		DatabaseURL:          testURL,
		StreamID:             "default",
		Listen:               ":7070",
		MetricsListen:        ":7071",
		LockSessionTimeout:   10 * time.Second,
		HeartbeatInterval:    2 * time.Second,
		LeaseTTL:             6 * time.Second,
		WorkerAbsenceTimeout: 30 * time.Second,
		DrainTimeout:         20 * time.Second,
		LogFormat:            "text",
	}
	if got != want {
		t.Fatalf("Parse defaults:\n got %+v\nwant %+v", got, want)
	}
	def := config.Default()
	def.DatabaseURL = testURL
	if def != want {
		t.Fatalf("Default() = %+v, want %+v", def, want)
	}
}

func TestParseSources(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(config.Config) bool
	}{
		{
			name:  "env sets a duration",
			env:   map[string]string{"BATON_LEASE_TTL": "5s"},
			check: func(c config.Config) bool { return c.LeaseTTL == 5*time.Second },
		},
		{
			name:  "flag sets a duration",
			args:  []string{"--baton-lease-ttl=4s"},
			check: func(c config.Config) bool { return c.LeaseTTL == 4*time.Second },
		},
		{
			name:  "flag wins over env (duration)",
			env:   map[string]string{"BATON_LEASE_TTL": "5s"},
			args:  []string{"-baton-lease-ttl", "4s"},
			check: func(c config.Config) bool { return c.LeaseTTL == 4*time.Second },
		},
		{
			name:  "flag wins over env (string)",
			env:   map[string]string{"REPLICATION_STREAM_ID": "from_env"},
			args:  []string{"--replication-stream-id=from_flag"},
			check: func(c config.Config) bool { return c.StreamID == "from_flag" },
		},
		{
			name:  "env string kept without flag",
			env:   map[string]string{"REPLICATION_STREAM_ID": "orders_2", "BATON_LOG_FORMAT": "json"},
			check: func(c config.Config) bool { return c.StreamID == "orders_2" && c.LogFormat == "json" },
		},
		{
			name:  "flag database url without env",
			env:   map[string]string{"DATABASE_URL": ""},
			args:  []string{"--database-url", "host=db user=baton"},
			check: func(c config.Config) bool { return c.DatabaseURL == "host=db user=baton" },
		},
		{
			name: "every setting by flag",
			args: []string{
				"--baton-broker-listen=127.0.0.1:9000", "--baton-metrics-listen=:9001",
				"--baton-lock-session-timeout=20s", "--baton-heartbeat-interval=3s",
				"--baton-lease-ttl=15s", "--baton-worker-absence-timeout=1m",
				"--baton-drain-timeout=5s", "--baton-log-format=json",
			},
			check: func(c config.Config) bool {
				return c.Listen == "127.0.0.1:9000" && c.MetricsListen == ":9001" &&
					c.LockSessionTimeout == 20*time.Second && c.HeartbeatInterval == 3*time.Second &&
					c.LeaseTTL == 15*time.Second && c.WorkerAbsenceTimeout == time.Minute &&
					c.DrainTimeout == 5*time.Second && c.LogFormat == "json"
			},
		},
		{
			name:  "lease ttl just below session timeout minus heartbeat",
			env:   map[string]string{"BATON_LEASE_TTL": "7999ms"},
			check: func(c config.Config) bool { return c.LeaseTTL == 7999*time.Millisecond },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.check(c) {
				t.Fatalf("Parse = %+v: check failed", c)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		setting string
	}{
		{"database url missing", map[string]string{"DATABASE_URL": ""}, nil, "DATABASE_URL"},
		{"database url scheme", map[string]string{"DATABASE_URL": "mysql://db/x"}, nil, "DATABASE_URL"},
		{"database url neither url nor dsn", map[string]string{"DATABASE_URL": "just-a-host"}, nil, "DATABASE_URL"},
		{"database url bad port", map[string]string{"DATABASE_URL": "postgres://db:port/x"}, nil, "DATABASE_URL"},
		{"database url by flag", nil, []string{"--database-url=mysql://db/x"}, "DATABASE_URL"},
		{"stream id upper case", map[string]string{"REPLICATION_STREAM_ID": "Orders"}, nil, "REPLICATION_STREAM_ID"},
		{"stream id dash", map[string]string{"REPLICATION_STREAM_ID": "a-b"}, nil, "REPLICATION_STREAM_ID"},
		{"stream id too long", map[string]string{"REPLICATION_STREAM_ID": strings.Repeat("a", 41)}, nil, "REPLICATION_STREAM_ID"},
		{"stream id empty by flag", nil, []string{"--replication-stream-id="}, "REPLICATION_STREAM_ID"},
		{"broker listen no port", map[string]string{"BATON_BROKER_LISTEN": "7070"}, nil, "BATON_BROKER_LISTEN"},
		{"broker listen empty port", map[string]string{"BATON_BROKER_LISTEN": "127.0.0.1:"}, nil, "BATON_BROKER_LISTEN"},
		{"broker listen port range", map[string]string{"BATON_BROKER_LISTEN": ":70000"}, nil, "BATON_BROKER_LISTEN"},
		{"metrics listen", map[string]string{"BATON_METRICS_LISTEN": "metrics"}, nil, "BATON_METRICS_LISTEN"},
		{"metrics listen by flag", nil, []string{"--baton-metrics-listen=:x1"}, "BATON_METRICS_LISTEN"},
		{"session timeout not a duration", map[string]string{"BATON_LOCK_SESSION_TIMEOUT": "ten"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"session timeout no unit", map[string]string{"BATON_LOCK_SESSION_TIMEOUT": "10"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"session timeout zero", map[string]string{"BATON_LOCK_SESSION_TIMEOUT": "0s"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"session timeout below a second", map[string]string{"BATON_LOCK_SESSION_TIMEOUT": "900ms", "BATON_HEARTBEAT_INTERVAL": "100ms", "BATON_LEASE_TTL": "300ms"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"heartbeat negative", map[string]string{"BATON_HEARTBEAT_INTERVAL": "-1s"}, nil, "BATON_HEARTBEAT_INTERVAL"},
		{"heartbeat not a duration", map[string]string{"BATON_HEARTBEAT_INTERVAL": "2 s"}, nil, "BATON_HEARTBEAT_INTERVAL"},
		{"heartbeat equals session timeout", map[string]string{"BATON_HEARTBEAT_INTERVAL": "10s"}, nil, "BATON_HEARTBEAT_INTERVAL"},
		{"heartbeat above session timeout by flag", nil, []string{"--baton-heartbeat-interval=11s"}, "BATON_HEARTBEAT_INTERVAL"},
		{"lease ttl zero", map[string]string{"BATON_LEASE_TTL": "0"}, nil, "BATON_LEASE_TTL"},
		{"lease ttl not a duration", map[string]string{"BATON_LEASE_TTL": "6"}, nil, "BATON_LEASE_TTL"},
		{"lease ttl equals session timeout minus heartbeat", map[string]string{"BATON_LEASE_TTL": "8s"}, nil, "BATON_LEASE_TTL"},
		{"lease ttl above session timeout", map[string]string{"BATON_LEASE_TTL": "12s"}, nil, "BATON_LEASE_TTL"},
		{"lease ttl vs flag session timeout", map[string]string{"BATON_LEASE_TTL": "5s"}, []string{"--baton-lock-session-timeout=6s"}, "BATON_LEASE_TTL"},
		{"lease ttl vs heartbeat", map[string]string{"BATON_LEASE_TTL": "7s", "BATON_HEARTBEAT_INTERVAL": "4s"}, nil, "BATON_LEASE_TTL"},
		{"absence timeout zero", map[string]string{"BATON_WORKER_ABSENCE_TIMEOUT": "0s"}, nil, "BATON_WORKER_ABSENCE_TIMEOUT"},
		{"absence timeout not a duration", map[string]string{"BATON_WORKER_ABSENCE_TIMEOUT": "soon"}, nil, "BATON_WORKER_ABSENCE_TIMEOUT"},
		{"drain timeout negative", map[string]string{"BATON_DRAIN_TIMEOUT": "-5s"}, nil, "BATON_DRAIN_TIMEOUT"},
		{"drain timeout not a duration", map[string]string{"BATON_DRAIN_TIMEOUT": "20"}, nil, "BATON_DRAIN_TIMEOUT"},
		{"log format", map[string]string{"BATON_LOG_FORMAT": "xml"}, nil, "BATON_LOG_FORMAT"},
		{"log format by flag", nil, []string{"--baton-log-format=JSON"}, "BATON_LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse(tt.args, env(tt.env), io.Discard)
			assertConfigError(t, err, tt.setting)
		})
	}
}

// TestParseInvalidFlagValue: a flag whose value does not parse should name
// its variable like the same value given through the environment does.
func TestParseInvalidFlagValue(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		setting string
	}{
		{"lease ttl", []string{"--baton-lease-ttl=soon"}, "BATON_LEASE_TTL"},
		{"session timeout", []string{"--baton-lock-session-timeout=10"}, "BATON_LOCK_SESSION_TIMEOUT"},
		{"drain timeout", []string{"--baton-drain-timeout", "x"}, "BATON_DRAIN_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse(tt.args, env(nil), io.Discard)
			assertConfigError(t, err, tt.setting)
		})
	}
}

func TestParseFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"--no-such-flag"}},
		{"positional argument", []string{"extra"}},
		{"flag without value", []string{"--baton-lease-ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse(tt.args, env(nil), io.Discard)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse(%q) = %v, want *config.Error", tt.args, err)
			}
			if ce.Problem == "" {
				t.Fatalf("Parse(%q): empty Problem", tt.args)
			}
			if !config.IsConfigError(err) {
				t.Fatalf("IsConfigError(%v) = false", err)
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	for _, arg := range []string{"-help", "--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			// Help wins even over invalid settings in the environment.
			_, err := config.Parse([]string{arg}, env(map[string]string{"DATABASE_URL": ""}), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Parse(%s) = %v, want flag.ErrHelp", arg, err)
			}
			if !config.IsConfigError(err) {
				t.Fatalf("IsConfigError(flag.ErrHelp) = false")
			}
			for _, want := range []string{"baton-lease-ttl", "BATON_LEASE_TTL", "DATABASE_URL"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("help output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestIsConfigError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("boom"), false},
		{"config error", &config.Error{Setting: "BATON_LEASE_TTL", Problem: "x"}, true},
		{"wrapped config error", wrap(&config.Error{Setting: "X", Problem: "y"}), true},
		{"help", flag.ErrHelp, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := config.IsConfigError(tt.err); got != tt.want {
				t.Fatalf("IsConfigError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	e := &config.Error{Setting: "BATON_LEASE_TTL", Problem: "must be positive"}
	if got := e.Error(); got != "BATON_LEASE_TTL: must be positive" {
		t.Fatalf("Error() = %q", got)
	}
}

func assertConfigError(t *testing.T, err error, setting string) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v (%T), want *config.Error for %s", err, err, setting)
	}
	if ce.Setting != setting {
		t.Fatalf("Setting = %q (%v), want %q", ce.Setting, err, setting)
	}
	if ce.Problem == "" {
		t.Fatalf("empty Problem for %s", setting)
	}
	if !strings.HasPrefix(err.Error(), setting+": ") {
		t.Fatalf("Error() = %q, want it to start with %q", err.Error(), setting+": ")
	}
	if !config.IsConfigError(err) {
		t.Fatalf("IsConfigError(%v) = false", err)
	}
}

type wrapped struct{ err error }

func (w wrapped) Error() string { return "context: " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func wrap(err error) error { return wrapped{err} }
