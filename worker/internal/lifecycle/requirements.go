package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/worker/internal/health"
	"github.com/batonhq/baton/worker/internal/replication"
	"github.com/batonhq/baton/worker/lease"
)

// recheckEvery is how often an unmet requirement is checked again while
// the lease is held.
const recheckEvery = 5 * time.Second

// CheckTimeout bounds `worker check` and each check of the requirements
// under the lease.
const CheckTimeout = 10 * time.Second

// awaitRequirements is called when replication under l failed (ctx is the
// lease's, leaseContext): it checks whether PostgreSQL misses one of the
// worker's requirements (so the failure costs nothing on the way to
// streaming). If none is missing (or
// the check itself failed) it returns false at once and the failure is
// reported as usual. Otherwise the worker keeps the lease, reports waiting,
// answers shape requests 503 naming the requirement, logs one ERROR line
// (again only when the problem changes) and checks again every
// recheckEvery; it returns true once the requirement is met, or ctx is
// done.
func (w *worker) awaitRequirements(ctx context.Context, l *lease.Lease) bool {
	defer w.unmet.set("")
	last := ""
	for {
		_, err := replication.CheckDatabase(ctx, w.cfg.DatabaseURL, l.Slot, l.Publication, CheckTimeout)
		var re *replication.RequirementError
		if !errors.As(err, &re) {
			if last != "" {
				w.log.Info("PostgreSQL meets the requirements now; replicating", "epoch", l.Epoch)
			}
			return last != ""
		}
		if re.Problem != last {
			w.log.Error("PostgreSQL does not meet a requirement; not replicating until it does", "setting", re.Setting, "problem", re.Problem, "epoch", l.Epoch)
			last = re.Problem
		}
		w.tracker.Set(health.Waiting, nil)
		w.unmet.set(re.Problem)
		t := time.NewTimer(recheckEvery)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return true
		}
	}
}

// unmetRequirement is the requirement of PostgreSQL that keeps the worker
// from replicating under the lease it holds ("" when none). Safe for
// concurrent use.
type unmetRequirement struct {
	mu      sync.Mutex
	problem string
}

func (u *unmetRequirement) set(p string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.problem = p
}

func (u *unmetRequirement) get() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.problem
}

// guard answers shape requests 503 with Retry-After and a message naming
// the unmet requirement while there is one (the worker holds the lease but
// cannot replicate, so the usual "does not hold the lease" would mislead);
// everything else goes to next.
func (u *unmetRequirement) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := u.get()
		if p == "" || !strings.HasPrefix(r.URL.Path, "/v1/shape") || r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "retry-after")
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"message": "This worker holds the stream's lease but cannot replicate: PostgreSQL does not meet a requirement: " + p,
		})
	})
}
