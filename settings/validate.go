package settings

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// DatabaseURL checks that s is a postgres:// or postgresql:// URL, or a
// libpq key=value string, that pgx can parse.
func DatabaseURL(s string) error {
	if s == "" {
		return errors.New("required, e.g. postgres://user:password@host:5432/dbname")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("not a valid URL: %s", strings.TrimPrefix(err.Error(), "parse "))
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return fmt.Errorf("scheme must be postgres:// or postgresql://, got %s://", u.Scheme)
		}
	} else if !strings.Contains(s, "=") {
		return errors.New("must be a postgres:// URL or a key=value connection string")
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		return fmt.Errorf("cannot be parsed: %w", err)
	}
	return nil
}

// Addr checks a host:port address with a valid port; needHost also
// requires the host (an address to dial rather than to listen on).
func Addr(addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. :7070 or 127.0.0.1:7070)", addr)
	}
	if needHost && host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return fmt.Errorf("%q has an invalid port %q", addr, port)
	}
	return nil
}

// LogFormat checks BATON_LOG_FORMAT: text or json.
func LogFormat(format string) error {
	if format != "text" && format != "json" {
		return fmt.Errorf("must be text or json, got %q", format)
	}
	return nil
}
