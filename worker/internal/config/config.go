// Package config parses and validates the worker's settings: every setting
// is an environment variable and a flag of the same meaning (DESIGN §4);
// flags win. Errors are *Error values naming the setting (exit code 2).
package config

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/settings"
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
type Error = settings.Error

// IsConfigError reports whether err is a configuration error or a help
// request.
func IsConfigError(err error) bool { return settings.IsError(err) }

// Parse reads the environment through getenv, then flags from args.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	b := settings.NewBinder("worker", getenv)
	b.String(&c.DatabaseURL, "DATABASE_URL", "PostgreSQL connection URL (required)")
	b.String(&c.StreamID, "REPLICATION_STREAM_ID", "stream id: slot baton_slot_<id>, publication baton_pub_<id>")
	b.String(&c.BrokerAddr, "BATON_BROKER_ADDR", "address of the broker's gRPC lease service")
	b.String(&c.HTTPListen, "BATON_HTTP_LISTEN", "HTTP listen address: shape API, /v1/health, /metrics")
	b.String(&c.StorageDir, "BATON_STORAGE_DIR", "folder of the embedded shape storage")
	b.String(&c.LogFormat, "BATON_LOG_FORMAT", "log format: text or json")
	b.String(&c.AdvertiseURL, "BATON_ADVERTISE_URL", "base URL at which the stream's other pods reach this worker's HTTP API, e.g. http://10.1.2.3:3000 (empty: not advertised)")
	b.Duration(&c.ShapeIdleTimeout, "BATON_SHAPE_IDLE_TIMEOUT", "a shape no request used for this long is removed; 0 disables expiry",
		"24h, 30m, 0 to disable", "shape-idle-timeout")
	if err := b.Parse(args, out); err != nil {
		return c, err
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
