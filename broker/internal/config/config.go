// Package config parses and validates the broker's settings. Every setting is
// an environment variable and a flag of the same meaning (DESIGN §4); flags
// win over the environment. Parse returns a *Error (exit code 2 in main) that
// names the offending setting; the binding itself is the settings module's,
// shared with the worker.
package config

import (
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/settings"
)

// Config is the broker's validated configuration.
type Config struct {
	DatabaseURL          string
	StreamID             string
	Listen               string
	MetricsListen        string
	LockSessionTimeout   time.Duration
	HeartbeatInterval    time.Duration
	LeaseTTL             time.Duration
	WorkerAbsenceTimeout time.Duration
	DrainTimeout         time.Duration
	LogFormat            string
}

// Default returns the configuration with every default of DESIGN §4 and no
// database URL.
func Default() Config {
	return Config{
		StreamID:             stream.DefaultID,
		Listen:               ":7070",
		MetricsListen:        ":7071",
		LockSessionTimeout:   10 * time.Second,
		HeartbeatInterval:    2 * time.Second,
		LeaseTTL:             6 * time.Second,
		WorkerAbsenceTimeout: 30 * time.Second,
		DrainTimeout:         20 * time.Second,
		LogFormat:            "text",
	}
}

// Error is a configuration error: it names the setting (environment variable)
// and says what is wrong with it.
type Error = settings.Error

// IsConfigError reports whether err is (or wraps) a configuration error, or
// the flag package's help request.
func IsConfigError(err error) bool { return settings.IsError(err) }

// durationExample shows valid values in the error for a duration that does
// not parse.
const durationExample = "10s, 500ms"

// Parse reads the environment through getenv, then the flags in args (without
// the program name), and validates the result. Output of -help goes to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	b := settings.NewBinder("broker", getenv)
	b.String(&c.DatabaseURL, "DATABASE_URL", "PostgreSQL connection URL (required)")
	b.String(&c.StreamID, "REPLICATION_STREAM_ID", "stream id: slot baton_slot_<id>, publication baton_pub_<id>, lock key")
	b.String(&c.Listen, "BATON_BROKER_LISTEN", "gRPC listen address (lease service and grpc.health.v1)")
	b.String(&c.MetricsListen, "BATON_METRICS_LISTEN", "HTTP listen address of /metrics")
	b.Duration(&c.LockSessionTimeout, "BATON_LOCK_SESSION_TIMEOUT", "bound on detecting a dead or frozen holder", durationExample)
	b.Duration(&c.HeartbeatInterval, "BATON_HEARTBEAT_INTERVAL", "lock-session heartbeat period", durationExample)
	b.Duration(&c.LeaseTTL, "BATON_LEASE_TTL", "validity of a grant or renewal", durationExample)
	b.Duration(&c.WorkerAbsenceTimeout, "BATON_WORKER_ABSENCE_TIMEOUT", "holding the lock with no worker this long releases it", durationExample)
	b.Duration(&c.DrainTimeout, "BATON_DRAIN_TIMEOUT", "on SIGTERM, how long to wait for the worker to release", durationExample)
	b.String(&c.LogFormat, "BATON_LOG_FORMAT", "log format: text or json")
	if err := b.Parse(args, out); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate checks every setting and the relations between them. The first
// problem found is returned as an *Error.
func (c Config) Validate() error {
	if err := settings.DatabaseURL(c.DatabaseURL); err != nil {
		return &Error{Setting: "DATABASE_URL", Problem: err.Error()}
	}
	if err := stream.Validate(c.StreamID); err != nil {
		return &Error{Setting: "REPLICATION_STREAM_ID", Problem: err.Error()}
	}
	for _, l := range []struct{ name, addr string }{
		{"BATON_BROKER_LISTEN", c.Listen},
		{"BATON_METRICS_LISTEN", c.MetricsListen},
	} {
		if err := settings.Addr(l.addr, false); err != nil {
			return &Error{Setting: l.name, Problem: err.Error()}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"BATON_LOCK_SESSION_TIMEOUT", c.LockSessionTimeout},
		{"BATON_HEARTBEAT_INTERVAL", c.HeartbeatInterval},
		{"BATON_LEASE_TTL", c.LeaseTTL},
		{"BATON_WORKER_ABSENCE_TIMEOUT", c.WorkerAbsenceTimeout},
		{"BATON_DRAIN_TIMEOUT", c.DrainTimeout},
	} {
		if d.v <= 0 {
			return &Error{Setting: d.name, Problem: fmt.Sprintf("must be positive, got %s", d.v)}
		}
	}
	if c.LockSessionTimeout < time.Second {
		return &Error{Setting: "BATON_LOCK_SESSION_TIMEOUT", Problem: fmt.Sprintf("must be at least 1s (PostgreSQL's TCP keepalive settings count whole seconds), got %s", c.LockSessionTimeout)}
	}
	if c.HeartbeatInterval >= c.LockSessionTimeout {
		return &Error{Setting: "BATON_HEARTBEAT_INTERVAL", Problem: fmt.Sprintf("must be below BATON_LOCK_SESSION_TIMEOUT (%s), got %s", c.LockSessionTimeout, c.HeartbeatInterval)}
	}
	if limit := c.LockSessionTimeout - c.HeartbeatInterval; c.LeaseTTL >= limit {
		return &Error{Setting: "BATON_LEASE_TTL", Problem: fmt.Sprintf("must be below BATON_LOCK_SESSION_TIMEOUT minus BATON_HEARTBEAT_INTERVAL (%s), got %s", limit, c.LeaseTTL)}
	}
	if err := settings.LogFormat(c.LogFormat); err != nil {
		return &Error{Setting: "BATON_LOG_FORMAT", Problem: err.Error()}
	}
	return nil
}
