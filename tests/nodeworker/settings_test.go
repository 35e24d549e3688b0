package nodeworker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// A bad setting stops the Node worker at once with exit status 2 and one
// line naming the setting, whether it came from the environment or a flag;
// --help prints every setting on stdout and exits 0.
func TestBadSettings(t *testing.T) {
	const url = "postgres://u@127.0.0.1:1/db"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no database", nil, nil, "DATABASE_URL (--database-url): required"},
		{"not a URL", []string{"DATABASE_URL=host=x"}, nil, "DATABASE_URL"},
		{"stream id", []string{"DATABASE_URL=" + url, "REPLICATION_STREAM_ID=Bad-Id"}, nil, "REPLICATION_STREAM_ID"},
		{"stream id flag", []string{"DATABASE_URL=" + url}, []string{"--replication-stream-id", ""}, "REPLICATION_STREAM_ID"},
		{"broker address", []string{"DATABASE_URL=" + url, "BATON_BROKER_ADDR=nowhere"}, nil, "BATON_BROKER_ADDR"},
		{"listen", []string{"DATABASE_URL=" + url}, []string{"--http-listen=3000"}, "BATON_HTTP_LISTEN"},
		{"tables", []string{"DATABASE_URL=" + url, "BATON_TABLES=items;drop"}, nil, "BATON_TABLES"},
		{"log format", []string{"DATABASE_URL=" + url, "BATON_LOG_FORMAT=xml"}, nil, "BATON_LOG_FORMAT"},
		{"wal sender timeout", []string{"DATABASE_URL=" + url, "BATON_WAL_SENDER_TIMEOUT=10"}, nil, "BATON_WAL_SENDER_TIMEOUT"},
		{"unknown flag", []string{"DATABASE_URL=" + url}, []string{"--storage-dir=x"}, "unknown flag --storage-dir"},
		{"output folder", []string{"DATABASE_URL=" + url, "BATON_OUTPUT_FILE=/nonexistent/changes.jsonl"}, nil, "BATON_OUTPUT_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startBare(append([]string{bins["node-worker"]}, tc.args...), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			code, err := p.Wait(30 * time.Second)
			if err != nil {
				p.Kill()
				t.Fatal(err)
			}
			out := strings.TrimSpace(p.Output())
			if code != 2 || strings.Count(out, "\n") != 0 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output %q; want exit 2 and one line naming %q", code, out, tc.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		p, err := startBare([]string{bins["node-worker"], "--help"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		code, err := p.Wait(30 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s", code, err, p.Output())
		}
		for _, s := range []string{"DATABASE_URL", "REPLICATION_STREAM_ID", "BATON_BROKER_ADDR", "BATON_OUTPUT_FILE", "--tables"} {
			if !strings.Contains(p.Output(), s) {
				t.Errorf("--help does not name %s:\n%s", s, p.Output())
			}
		}
	})
}

// startBare starts the worker with env and PATH only: nothing of the test's
// environment (a DATABASE_URL, BATON_*) leaks into a settings case.
func startBare(argv, env []string) (*harness.Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	return harness.StartCommand("node-worker", cmd, nil)
}

// A worker that starts on a file ending in a torn transaction (a crash in
// the middle of an append: a last line without its newline) truncates it,
// keeps the whole transactions before it, resumes after the last of them,
// and appends the next committed transaction right after.
func TestTornTailTruncated(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, pg)
	if _, err := conn.Exec(t.Context(), "CREATE TABLE items (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "changes.jsonl")
	whole := `{"lsn":"0/10","end_lsn":"0/20","xid":1,"commit_time":"2026-01-01T00:00:00.000000Z","epoch":1,"i":0,"n":1,"op":"insert","schema":"public","table":"items","new":{"id":"0","note":"before"}}` + "\n"
	torn := `{"lsn":"0/30","end_lsn":"0/40","xid":2,"commit_time":"2026-01-01T00:00:00.000000Z","epoch":1,"i":0,"n":2,"op":"insert","schema":"public","table":"items","new":{"id":"-1","note":"x"}}` + "\n" +
		`{"lsn":"0/30","end_lsn":"0/40","xid":2,"commit_ti`
	if err := os.WriteFile(out, []byte(whole+torn), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPod(t, pg, "a", out)
	awaitActive(t, 30*time.Second, p)
	if _, err := conn.Exec(t.Context(), "INSERT INTO items VALUES (1, 'after'), (2, 'after')"); err != nil {
		t.Fatal(err)
	}
	var txns []txn
	if err := harness.Await(20*time.Second, "the insert in the file", func() (bool, error) {
		var err error
		txns, err = readOutput(out)
		return len(txns) >= 2, err
	}); err != nil {
		t.Fatal(err)
	}
	if len(txns) != 2 || idsText(txns[0].ids) != "0" || idsText(txns[1].ids) != "1,2" {
		b, _ := os.ReadFile(out)
		t.Fatalf("file after the restart:\n%s", b)
	}
}
