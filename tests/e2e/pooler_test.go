package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// The broker refuses to hold the lock through a connection pooler (a real
// PgBouncer): a session-level advisory lock is only safe on a direct
// session. It exits 2 with one line naming DATABASE_URL.
func TestBrokerRefusesPooler(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	sessionParams := []string{"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
		"tcp_user_timeout", "idle_session_timeout", "idle_in_transaction_session_timeout",
		"statement_timeout", "lock_timeout", "extra_float_digits"}
	tests := []struct {
		name   string
		mode   string
		ignore []string
	}{
		{"transaction pooling", "transaction", nil},
		{"transaction pooling ignoring the session settings", "transaction", sessionParams},
		{"session pooling ignoring the session settings", "session", sessionParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pb, err := harness.StartPgBouncer(pg.Port(), tt.mode, tt.ignore)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pb.Close)
			b := startBroker(t, harness.BrokerOptions{DatabaseURL: pb.URL(), Name: "broker"})
			code, err := b.Wait(15 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out := strings.TrimSpace(b.Output())
			last := out[strings.LastIndex(out, "\n")+1:]
			if code != 2 || !strings.Contains(last, "DATABASE_URL") || !strings.Contains(last, "not a direct PostgreSQL session") {
				t.Fatalf("exit %d, last line %q; want exit 2 naming DATABASE_URL and the reason", code, last)
			}
			t.Logf("%s", last)
			held, _ := lockHolders(t, connect(t, pg), "default")
			if len(held) != 0 {
				t.Fatalf("the lock is held by %v through the pooler", held)
			}
		})
	}
}
