// Package config parses and validates the worker's settings: every setting
// is an environment variable and a flag of the same meaning (DESIGN §4);
// flags win. Errors are *Error values naming the setting (exit code 2).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/batonhq/baton/proto/settings"
	"github.com/batonhq/baton/proto/stream"
)

// Config is the worker's validated configuration.
type Config struct {
	DatabaseURL string
	StreamID    string
	BrokerAddr  string
	HTTPListen  string
	StorageDir  string
	LogFormat   string
	// ShapeIdleTimeout: a shape no request used for this long is removed;
	// 0 disables expiry.
	ShapeIdleTimeout time.Duration
	// AdvertiseURL is the base URL at which the other pods of the stream
	// reach this worker's HTTP API (sent to the broker in Hello; standby
	// workers forward shape requests to it while this worker is active);
	// empty: not advertised.
	AdvertiseURL string
}

// Default returns the defaults of DESIGN §4 (no database URL).
func Default() Config {
	return Config{
		StreamID:   stream.DefaultID,
		BrokerAddr: "127.0.0.1:7070",
		HTTPListen: ":3000",
		StorageDir: "./data",
		LogFormat:  "text",

		ShapeIdleTimeout: 24 * time.Hour,
	}
}

// Error is a configuration error naming the setting.
type Error struct {
	Setting string
	Problem string
}

func (e *Error) Error() string { return e.Setting + ": " + e.Problem }

// IsConfigError reports whether err is a configuration error or a help
// request.
func IsConfigError(err error) bool {
	var ce *Error
	return errors.As(err, &ce) || errors.Is(err, flag.ErrHelp)
}

// Parse reads the environment through getenv, then flags from args.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	// Errors are reported once, by the caller, as one line naming the
	// setting; only -help prints the usage.
	fs.SetOutput(io.Discard)
	for _, s := range []struct {
		env, flag, usage string
		v                *string
	}{
		{"DATABASE_URL", "database-url", "PostgreSQL connection URL (required)", &c.DatabaseURL},
		{"REPLICATION_STREAM_ID", "replication-stream-id", "stream id: slot baton_slot_<id>, publication baton_pub_<id>", &c.StreamID},
		{"BATON_BROKER_ADDR", "baton-broker-addr", "address of the broker's gRPC lease service", &c.BrokerAddr},
		{"BATON_HTTP_LISTEN", "baton-http-listen", "HTTP listen address: shape API, /v1/health, /metrics", &c.HTTPListen},
		{"BATON_STORAGE_DIR", "baton-storage-dir", "folder of the embedded shape storage", &c.StorageDir},
		{"BATON_LOG_FORMAT", "baton-log-format", "log format: text or json", &c.LogFormat},
		{"BATON_ADVERTISE_URL", "baton-advertise-url", "base URL at which the stream's other pods reach this worker's HTTP API, e.g. http://10.1.2.3:3000 (empty: not advertised)", &c.AdvertiseURL},
	} {
		if v := getenv(s.env); v != "" {
			*s.v = v
		}
		fs.StringVar(s.v, s.flag, *s.v, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	// flagErr keeps a setter's *Error: the flag package flattens it to text.
	var flagErr *Error
	if err := durationSetting(fs, &c.ShapeIdleTimeout, getenv, &flagErr, "BATON_SHAPE_IDLE_TIMEOUT",
		"a shape no request used for this long is removed; 0 disables expiry",
		"baton-shape-idle-timeout", "shape-idle-timeout"); err != nil {
		return c, err
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

// Validate checks every setting.
func (c Config) Validate() error {
	if err := settings.DatabaseURL(c.DatabaseURL); err != nil {
		return &Error{Setting: "DATABASE_URL", Problem: err.Error()}
	}
	if err := stream.Validate(c.StreamID); err != nil {
		return &Error{Setting: "REPLICATION_STREAM_ID", Problem: err.Error()}
	}
	if err := settings.Addr(c.BrokerAddr, true); err != nil {
		return &Error{Setting: "BATON_BROKER_ADDR", Problem: err.Error()}
	}
	if err := settings.Addr(c.HTTPListen, false); err != nil {
		return &Error{Setting: "BATON_HTTP_LISTEN", Problem: err.Error()}
	}
	if strings.TrimSpace(c.StorageDir) == "" {
		return &Error{Setting: "BATON_STORAGE_DIR", Problem: "must not be empty"}
	}
	if err := settings.LogFormat(c.LogFormat); err != nil {
		return &Error{Setting: "BATON_LOG_FORMAT", Problem: err.Error()}
	}
	if err := advertiseURL(c.AdvertiseURL); err != nil {
		return &Error{Setting: "BATON_ADVERTISE_URL", Problem: err.Error()}
	}
	if c.ShapeIdleTimeout < 0 {
		return &Error{Setting: "BATON_SHAPE_IDLE_TIMEOUT", Problem: fmt.Sprintf("must not be negative (0 disables expiry), got %s", c.ShapeIdleTimeout)}
	}
	return nil
}

// advertiseURL checks BATON_ADVERTISE_URL: empty, or an absolute http(s)
// URL with a host name or IP address and no query or fragment.
func advertiseURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" && u.User == nil &&
		u.RawQuery == "" && u.Fragment == "" && !u.ForceQuery {
		if strings.ContainsFunc(u.Hostname(), func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(".-_:", r))
		}) {
			if strings.Contains(s, "$(") {
				return fmt.Errorf("host %q is not a host name or IP address (Kubernetes expands $(VAR) only when VAR is declared before it in env)", u.Hostname())
			}
			return fmt.Errorf("host %q is not a host name or IP address", u.Hostname())
		}
		return nil
	}
	return fmt.Errorf("must be an absolute http:// or https:// URL with a host and no query, e.g. http://10.1.2.3:3000, got %q", s)
}

// durationSetting reads the duration *d from env, then registers its flags
// (the first is the documented one; the others are aliases).
func durationSetting(fs *flag.FlagSet, d *time.Duration, getenv func(string) string, first **Error, env, usage string, flags ...string) error {
	parse := func(s string) error {
		v, err := time.ParseDuration(s)
		if err != nil {
			e := &Error{Setting: env, Problem: fmt.Sprintf("%q is not a duration (e.g. 24h, 30m, 0 to disable)", s)}
			if *first == nil {
				*first = e
			}
			return e
		}
		*d = v
		return nil
	}
	if raw := getenv(env); raw != "" {
		if err := parse(raw); err != nil {
			return err
		}
	}
	for i, f := range flags {
		u := fmt.Sprintf("%s (env %s, default %s)", usage, env, *d)
		if i > 0 {
			u = "same as -" + flags[0]
		}
		fs.Func(f, u, parse)
	}
	return nil
}
