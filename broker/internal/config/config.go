// Package config parses and validates the broker's settings. Every setting is
// an environment variable and a flag of the same meaning (DESIGN §4); flags
// win over the environment. Parse returns a *Error (exit code 2 in main) that
// names the offending setting.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton/proto/settings"
	"github.com/batonhq/baton/proto/stream"
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
type Error struct {
	Setting string
	Problem string
}

func (e *Error) Error() string { return e.Setting + ": " + e.Problem }

// IsConfigError reports whether err is (or wraps) a configuration error, or
// the flag package's help request.
func IsConfigError(err error) bool {
	var ce *Error
	return errors.As(err, &ce) || errors.Is(err, flag.ErrHelp)
}

type setting struct {
	env, flag, usage string
	dur              *time.Duration
	str              *string
}

func (c *Config) settings() []setting {
	return []setting{
		{env: "DATABASE_URL", flag: "database-url", str: &c.DatabaseURL, usage: "PostgreSQL connection URL (required)"},
		{env: "REPLICATION_STREAM_ID", flag: "replication-stream-id", str: &c.StreamID, usage: "stream id: slot baton_slot_<id>, publication baton_pub_<id>, lock key"},
		{env: "BATON_BROKER_LISTEN", flag: "baton-broker-listen", str: &c.Listen, usage: "gRPC listen address (lease service and grpc.health.v1)"},
		{env: "BATON_METRICS_LISTEN", flag: "baton-metrics-listen", str: &c.MetricsListen, usage: "HTTP listen address of /metrics"},
		{env: "BATON_LOCK_SESSION_TIMEOUT", flag: "baton-lock-session-timeout", dur: &c.LockSessionTimeout, usage: "bound on detecting a dead or frozen holder"},
		{env: "BATON_HEARTBEAT_INTERVAL", flag: "baton-heartbeat-interval", dur: &c.HeartbeatInterval, usage: "lock-session heartbeat period"},
		{env: "BATON_LEASE_TTL", flag: "baton-lease-ttl", dur: &c.LeaseTTL, usage: "validity of a grant or renewal"},
		{env: "BATON_WORKER_ABSENCE_TIMEOUT", flag: "baton-worker-absence-timeout", dur: &c.WorkerAbsenceTimeout, usage: "holding the lock with no worker this long releases it"},
		{env: "BATON_DRAIN_TIMEOUT", flag: "baton-drain-timeout", dur: &c.DrainTimeout, usage: "on SIGTERM, how long to wait for the worker to release"},
		{env: "BATON_LOG_FORMAT", flag: "baton-log-format", str: &c.LogFormat, usage: "log format: text or json"},
	}
}

// Parse reads the environment through getenv, then the flags in args (without
// the program name), and validates the result. Output of -help goes to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	// flagErr keeps a setter's *Error: the flag package flattens it to text.
	var flagErr *Error
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	// Errors are reported once, by the caller, as one line naming the
	// setting; only -help prints the usage.
	fs.SetOutput(io.Discard)
	for _, s := range c.settings() {
		raw := getenv(s.env)
		usage := fmt.Sprintf("%s (env %s)", s.usage, s.env)
		if s.str != nil {
			if raw != "" {
				*s.str = raw
			}
			fs.StringVar(s.str, s.flag, *s.str, usage)
			continue
		}
		if raw != "" {
			d, err := time.ParseDuration(raw)
			if err != nil {
				return c, &Error{Setting: s.env, Problem: fmt.Sprintf("%q is not a duration (e.g. 10s, 500ms)", raw)}
			}
			*s.dur = d
		}
		fs.Func(s.flag, usage+fmt.Sprintf(" (default %s)", *s.dur), durationSetter(s.env, s.dur, &flagErr))
	}
	if err := fs.Parse(args); err != nil {
		if flagErr != nil {
			return c, flagErr
		}
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.PrintDefaults()
			return c, err
		}
		return c, &Error{Setting: "flags", Problem: err.Error()}
	}
	if fs.NArg() > 0 {
		return c, &Error{Setting: "flags", Problem: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return c, c.Validate()
}

func durationSetter(env string, d *time.Duration, first **Error) func(string) error {
	return func(s string) error {
		v, err := time.ParseDuration(s)
		if err != nil {
			e := &Error{Setting: env, Problem: fmt.Sprintf("%q is not a duration (e.g. 10s, 500ms)", s)}
			if *first == nil {
				*first = e
			}
			return e
		}
		*d = v
		return nil
	}
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

// StatusConfig is the configuration of `broker status`.
type StatusConfig struct {
	DatabaseURL string
	StreamID    string
	JSON        bool
}

// ParseStatus reads the settings of `broker status` (DATABASE_URL,
// REPLICATION_STREAM_ID, and -json).
func ParseStatus(args []string, getenv func(string) string, out io.Writer) (StatusConfig, error) {
	c := StatusConfig{DatabaseURL: getenv("DATABASE_URL"), StreamID: getenv("REPLICATION_STREAM_ID")}
	if c.StreamID == "" {
		c.StreamID = stream.DefaultID
	}
	fs := flag.NewFlagSet("broker status", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL connection URL (env DATABASE_URL)")
	fs.StringVar(&c.StreamID, "replication-stream-id", c.StreamID, "stream id (env REPLICATION_STREAM_ID)")
	fs.BoolVar(&c.JSON, "json", false, "print JSON instead of text")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &Error{Setting: "flags", Problem: err.Error()}
	}
	if err := settings.DatabaseURL(c.DatabaseURL); err != nil {
		return c, &Error{Setting: "DATABASE_URL", Problem: err.Error()}
	}
	if err := stream.Validate(c.StreamID); err != nil {
		return c, &Error{Setting: "REPLICATION_STREAM_ID", Problem: err.Error()}
	}
	return c, nil
}
