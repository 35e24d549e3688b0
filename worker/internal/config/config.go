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
	// Secret must be carried by every shape request (secret=...); empty
	// only with Insecure.
	Secret string
	// Insecure serves shapes to anyone, without a secret.
	Insecure bool
	// AllowShapeDeletion lets DELETE /v1/shape remove shapes.
	AllowShapeDeletion bool
	// ShapeChunkBytes is Electric's chunk size threshold: a chunk of a
	// shape log, which a response never crosses, ends after the message
	// that brings it to this size; a shape keeps the value it was made
	// with.
	ShapeChunkBytes int64
	// CacheMaxAge and CacheStaleAge are the max-age and
	// stale-while-revalidate of a shape response that is not live and not
	// the initial one (whole seconds).
	CacheMaxAge, CacheStaleAge time.Duration
}

// Bounds of ShapeChunkBytes.
const (
	minChunkBytes = 1
	maxChunkBytes = 1 << 30
)

// Default returns the defaults of DESIGN §4 (no database URL).
func Default() Config {
	return Config{
		StreamID:   stream.DefaultID,
		BrokerAddr: "127.0.0.1:7070",
		HTTPListen: ":3000",
		StorageDir: "./data",
		LogFormat:  "text",

		ShapeIdleTimeout: 24 * time.Hour,
		// Electric's defaults.
		ShapeChunkBytes: 10 << 20,
		CacheMaxAge:     60 * time.Second,
		CacheStaleAge:   300 * time.Second,
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
	b.String(&c.Secret, "BATON_SECRET", "secret every shape request must carry as its secret query parameter (as Electric's client sends it); required unless BATON_INSECURE=true")
	b.Switch(&c.Insecure, "BATON_INSECURE", "serve shapes to anyone, without BATON_SECRET (development only)")
	b.Switch(&c.AllowShapeDeletion, "BATON_ALLOW_SHAPE_DELETION", "let DELETE /v1/shape remove shapes (else 405)")
	b.Bytes(&c.ShapeChunkBytes, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD", "size in bytes at which a chunk of a shape log ends, after the message that reaches it; a shape keeps the value it was made with (10485760, 10MiB)")
	b.Duration(&c.CacheMaxAge, "BATON_CACHE_MAX_AGE", "Cache-Control max-age of shape responses that are neither live nor initial", "60s, 0s")
	b.Duration(&c.CacheStaleAge, "BATON_CACHE_STALE_AGE", "Cache-Control stale-while-revalidate of those responses", "300s, 0s")
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
	if c.ShapeChunkBytes < minChunkBytes || c.ShapeChunkBytes > maxChunkBytes {
		return &Error{Setting: "BATON_SHAPE_CHUNK_BYTES_THRESHOLD", Problem: fmt.Sprintf("must be from %d to %d bytes, got %d", minChunkBytes, maxChunkBytes, c.ShapeChunkBytes)}
	}
	for _, a := range []struct {
		env string
		d   time.Duration
	}{{"BATON_CACHE_MAX_AGE", c.CacheMaxAge}, {"BATON_CACHE_STALE_AGE", c.CacheStaleAge}} {
		if a.d < 0 || a.d%time.Second != 0 {
			return &Error{Setting: a.env, Problem: fmt.Sprintf("must be whole seconds, not negative (Cache-Control counts seconds), got %s", a.d)}
		}
	}
	if c.ShapeIdleTimeout < 0 {
		return &Error{Setting: "BATON_SHAPE_IDLE_TIMEOUT", Problem: fmt.Sprintf("must not be negative (0 disables expiry), got %s", c.ShapeIdleTimeout)}
	}
	return nil
}

// Access checks that serving shapes is protected as configured: a
// BATON_SECRET, or BATON_INSECURE=true, and not both. The worker checks it
// before serving; commands that serve nothing (check) do not need it.
func (c Config) Access() error {
	switch {
	case c.Secret == "" && !c.Insecure:
		return &Error{Setting: "BATON_SECRET", Problem: "required: the secret every shape request must carry (secret=...); or set BATON_INSECURE=true to serve shapes to anyone (development only)"}
	case c.Secret != "" && c.Insecure:
		return &Error{Setting: "BATON_INSECURE", Problem: "must not be true while BATON_SECRET is set: choose one"}
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
