// Package health tracks the worker's state and serves GET /v1/health
// (DESIGN §4): {"status":"waiting"} 202 before the lease,
// {"status":"starting"} 202 while setting up replication, {"status":"active"}
// 200 while replicating under a valid lease. Safe for concurrent use.
package health

import (
	"encoding/json"
	"net/http"
	"sync"
)

// State is the worker's state.
type State int32

// States.
const (
	Waiting State = iota
	Starting
	Active
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Active:
		return "active"
	}
	return "waiting"
}

// Tracker holds the current state. Starting and Active are tied to a lease:
// once the lease's done channel is closed the worker reports Waiting, even
// before the replication loop has noticed, so health never claims a lease
// the worker no longer holds.
type Tracker struct {
	mu    sync.Mutex
	s     State
	lease Lease
}

// Lease is what the state depends on: Valid checks the lease's deadline on
// the monotonic clock, so a worker resumed after a freeze reports Waiting at
// once, even before its expiry timer has run.
type Lease interface{ Valid() bool }

// Set changes the state; l is the lease that Starting or Active depend on
// (nil for Waiting).
func (t *Tracker) Set(s State, l Lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s, t.lease = s, l
}

// Get returns the state.
func (t *Tracker) Get() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.s != Waiting && (t.lease == nil || !t.lease.Valid()) {
		return Waiting
	}
	return t.s
}

// ServeHTTP answers GET /v1/health.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s := t.Get()
	code := http.StatusAccepted
	if s == Active {
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": s.String()})
}
