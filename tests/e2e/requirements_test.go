package e2e_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// awaitShape503 waits until GET /v1/shape answers 503 with a message
// containing want, and checks that /v1/health says waiting meanwhile.
func awaitShape503(t *testing.T, w *harness.Worker, want string) {
	t.Helper()
	var last string
	err := harness.Await(30*time.Second, "503 naming "+want, func() (bool, error) {
		r, err := harness.Get(t.Context(), "http://"+w.HTTPAddr, url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
		if err != nil {
			return false, nil
		}
		var body struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(r.Body, &body)
		last = body.Message
		return r.Status == http.StatusServiceUnavailable && strings.Contains(body.Message, want) &&
			r.Header.Get("Retry-After") != "", nil
	})
	if err != nil {
		t.Fatalf("%v (last message %q)", err, last)
	}
	if s, code, err := w.Health(); err != nil || s != "waiting" || code != http.StatusAccepted {
		t.Fatalf("health while a requirement is unmet: %q %d %v, want waiting 202", s, code, err)
	}
}

func errorLines(out, containing string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, containing) {
			n++
		}
	}
	return n
}

// TestWorkerWalLevelReplica: against a server with wal_level=replica the
// worker holding the lease logs one ERROR line naming wal_level (not one
// per retry), reports waiting and answers shape requests 503 naming it.
func TestWorkerWalLevelReplica(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	w := newPod(t, pg, harness.PodOptions{StorageDir: t.TempDir()}).Worker()
	awaitShape503(t, w, "set wal_level = logical")
	// The check is repeated every 5 s; over a repetition the ERROR line
	// must not be repeated (before, every retry logged one): absence is
	// observed over a window, there is no event to await.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if n := errorLines(w.Output(), "level=ERROR"); n != 1 {
			t.Fatalf("%d ERROR lines, want exactly one:\n%s", n, w.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := errorLines(w.Output(), "wal_level"); n != 1 {
		t.Fatalf("the ERROR line does not name wal_level:\n%s", w.Output())
	}
}

// TestWorkerRoleWithoutReplication: a worker whose role (the broker's too,
// with CREATE on the database) lacks REPLICATION says so in one ERROR line and a 503, and replicates as soon as the role
// is given the attribute, without a restart.
func TestWorkerRoleWithoutReplication(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(t.Context(), `CREATE ROLE app LOGIN; GRANT CREATE ON DATABASE postgres TO app`); err != nil {
		t.Fatal(err)
	}
	w := newPod(t, pg, harness.PodOptions{DatabaseURL: roleURL(t, pg, "app"), StorageDir: t.TempDir()}).Worker()
	awaitShape503(t, w, `ALTER ROLE "app" REPLICATION`)
	if _, err := conn.Exec(t.Context(), `ALTER ROLE app REPLICATION`); err != nil {
		t.Fatal(err)
	}
	if err := w.AwaitStatus("active", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := errorLines(w.Output(), "level=ERROR"); n != 1 || errorLines(w.Output(), "REPLICATION") != 1 {
		t.Fatalf("want exactly one ERROR line, naming REPLICATION:\n%s", w.Output())
	}
}

// roleURL is pg's URL for another role.
func roleURL(t *testing.T, pg *pgtest.Cluster, role string) string {
	t.Helper()
	u, err := url.Parse(pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}
