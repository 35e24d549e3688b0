//go:build !linux

package lock

import "time"

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist; keepalives
// and PostgreSQL's own timeouts still bound the session.
func setUserTimeout(fd uintptr, d time.Duration) error { return nil }
