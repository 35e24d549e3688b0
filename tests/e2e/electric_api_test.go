package e2e_test

// Electric's protocol to the letter (issue 10): the secret, DELETE, the
// tables no shape may read, Electric's where-clause errors.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// errorJSON is the body of an error response.
type errorJSON struct {
	Message string              `json:"message"`
	Errors  map[string][]string `json:"errors"`
}

// fetchError makes a request and decodes its JSON error body.
func fetchError(t *testing.T, method, u string) (int, errorJSON) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := harness.Fetch(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	var e errorJSON
	if r.Status >= 400 {
		if err := json.Unmarshal(r.Body, &e); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s: %d %v %q; want a JSON body", method, u, r.Status, r.Header, r.Body)
		}
	}
	return r.Status, e
}

// clientRun runs `node follow.mjs base table once` with the environment
// variables env (BATON_SECRET=... or BATON_SECRET= for none) until it
// prints its rows (returned) or its stderr holds stop (returned as
// stderr, the client killed).
func clientRun(t *testing.T, base, table, stop string, env ...string) (rows []map[string]any, stderr string) {
	t.Helper()
	needClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "follow.mjs", base, table, "once")
	cmd.Dir = tsDir
	cmd.Env = append(os.Environ(), env...)
	var mu sync.Mutex
	var errOut strings.Builder
	seen := make(chan struct{})
	var once sync.Once
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		errOut.Write(b)
		if stop != "" && strings.Contains(errOut.String(), stop) {
			once.Do(func() { close(seen) })
		}
		return len(b), nil
	})
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte, 1)
	go func() {
		var b []byte
		buf := make([]byte, 64<<10)
		for {
			n, err := out.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		done <- b
	}()
	select {
	case <-seen:
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		return nil, errOut.String()
	case b := <-done:
		err := cmd.Wait()
		mu.Lock()
		s := errOut.String()
		mu.Unlock()
		var r shapeRows
		if err != nil || json.Unmarshal(b, &r) != nil {
			t.Fatalf("node follow.mjs %s %s once: %v; stdout %q, stderr:\n%s", base, table, err, b, s)
		}
		return r.Rows, s
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// With BATON_SECRET, every shape request must carry it: the official
// client sends it as the secret parameter and gets the rows, from the
// active worker and through a standby, which forwards it; without it the
// client is told 401 (Electric's JSON message) and a standby forwards
// nothing. Electric's older api_secret is accepted too.
func TestShapeSecret(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a'), (2, 'b')")
	const secret = "the-test's secret&=?"
	settings := map[string]string{"BATON_SECRET": secret}
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), Advertise: true, WorkerSettings: settings})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir(), Advertise: true, WorkerSettings: settings})
	if err := b.Worker().AwaitStatus("waiting", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{{"id": float64(1), "note": "a"}, {"id": float64(2), "note": "b"}}
	for _, p := range []*harness.Pod{a, b} {
		rows, _ := clientRun(t, p.URL(), "items", "", "BATON_SECRET="+secret)
		if !reflect.DeepEqual(rows, want) {
			t.Fatalf("client with the secret via %s: rows %v; want %v", p.Name(), rows, want)
		}
	}
	forwarded, _ := proxiedTotal(t, b.URL())
	if forwarded == 0 {
		t.Fatalf("the standby forwarded nothing; want the client's requests forwarded")
	}
	for _, p := range []*harness.Pod{a, b} {
		if _, stderr := clientRun(t, p.URL(), "items", "shape error: 401", "BATON_SECRET="); !strings.Contains(stderr, "Unauthorized - Invalid API secret") {
			t.Errorf("client without the secret via %s: stderr %q; want the 401's message", p.Name(), stderr)
		}
	}
	for _, c := range []struct {
		name string
		q    url.Values
		code int
	}{
		{"no secret", url.Values{"table": {"items"}, "offset": {"-1"}}, 401},
		{"wrong secret", url.Values{"table": {"items"}, "offset": {"-1"}, "secret": {"guess"}}, 401},
		{"api_secret", url.Values{"table": {"items"}, "offset": {"-1"}, "api_secret": {secret}}, 200},
	} {
		for _, p := range []*harness.Pod{a, b} {
			code, e := fetchError(t, "GET", p.URL()+"/v1/shape?"+c.q.Encode())
			if code != c.code || code == 401 && e.Message != "Unauthorized - Invalid API secret" {
				t.Errorf("%s via %s: %d %+v; want %d", c.name, p.Name(), code, e, c.code)
			}
		}
	}
	if n, _ := proxiedTotal(t, b.URL()); n != forwarded+1 {
		t.Errorf("the standby forwarded %d requests since the client's; want 1 (api_secret), nothing without the secret", n-forwarded)
	}
	for _, p := range []*harness.Pod{a, b} {
		if out := p.Worker().Output(); strings.Contains(out, "BATON_INSECURE") {
			t.Errorf("worker %s with a secret warns about BATON_INSECURE:\n%s", p.Name(), out)
		}
	}
}

// DELETE /v1/shape?handle=H without a table removes that shape, as
// Electric's server does; a handle that is not the definition's is 400,
// an unknown one 404. Without BATON_ALLOW_SHAPE_DELETION a DELETE is 405.
// Shapes of Baton's own schema and of the system catalogs are 400,
// naming the parameter. Where errors are Electric's. A worker started without a secret says so once
// (BATON_INSECURE=true, as the harness starts it).
func TestShapeDeleteAndRefusals(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
	a := newActivePod(t, pg, "a", t.TempDir())
	base := a.URL()
	if n := strings.Count(a.Worker().Output(), "BATON_INSECURE=true"); n != 1 || !strings.Contains(a.Worker().Output(), "level=WARN") {
		t.Errorf("worker without a secret warned %d times about BATON_INSECURE=true; want one WARN:\n%s", n, a.Worker().Output())
	}

	shape := url.Values{"table": {"items"}}
	c := newRowClient(base, shape)
	c.upToDate(t)
	handle, offset := c.Handle, c.Offset
	if code, e := fetchError(t, "DELETE", base+"/v1/shape?"+url.Values{"table": {"items"}, "handle": {"not-" + handle}}.Encode()); code != 400 || !strings.Contains(e.Message, "do not match") {
		t.Errorf("DELETE with another handle than the definition's: %d %+v; want 400", code, e)
	}
	if code := deleteShape(t, base, url.Values{"handle": {handle}}); code != 202 {
		t.Fatalf("DELETE ?handle=%s: %d; want 202", handle, code)
	}
	r := getWith(t, base, url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}}, nil)
	if r.Status != 409 || r.Handle() == handle {
		t.Errorf("GET of the deleted shape: %d, handle %q; want 409 with a new handle", r.Status, r.Handle())
	}
	if code, e := fetchError(t, "DELETE", base+"/v1/shape?handle="+url.QueryEscape(handle)); code != 404 || e.Message != "No existing shape found" {
		t.Errorf("DELETE of a deleted handle: %d %+v; want 404", code, e)
	}

	for _, c := range []struct {
		name, field, contains string
		q                     url.Values
	}{
		{"baton's schema", "table", `schema "baton"`, url.Values{"table": {"baton.streams"}}},
		{"pg_catalog", "table", "system catalog", url.Values{"table": {"pg_catalog.pg_class"}}},
		{"pg_catalog quoted", "table", "system catalog", url.Values{"table": {`"pg_catalog"."pg_class"`}}},
		{"information_schema", "table", "system catalog", url.Values{"table": {"information_schema.tables"}}},
		{"pg_toast", "table", "system catalog", url.Values{"table": {"pg_toast.pg_toast_1255"}}},
		{"where syntax", "where", `At location 17: syntax error at or near "x"`, url.Values{"table": {"items"}, "where": {"1 x 1"}}},
	} {
		c.q.Set("offset", "-1")
		code, e := fetchError(t, "GET", base+"/v1/shape?"+c.q.Encode())
		if code != 400 || len(e.Errors[c.field]) != 1 || !strings.Contains(e.Errors[c.field][0], c.contains) {
			t.Errorf("%s: %d %+v; want 400 with errors.%s saying %q", c.name, code, e, c.field, c.contains)
		}
	}

	b := newPod(t, pg, harness.PodOptions{Name: "b", StreamID: "other", StorageDir: t.TempDir(),
		WorkerSettings: map[string]string{"BATON_ALLOW_SHAPE_DELETION": "false", "BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "4KiB",
			"BATON_CACHE_MAX_AGE": "7s", "BATON_CACHE_STALE_AGE": "11s"}})
	if err := b.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	kept := newRowClient(b.URL(), shape)
	kept.upToDate(t)
	checkChunksAndCaching(t, pg, kept)
	for _, q := range []url.Values{{"table": {"items"}}, {"handle": {kept.Handle}}} {
		if code, e := fetchError(t, http.MethodDelete, b.URL()+"/v1/shape?"+q.Encode()); code != 405 || !strings.Contains(e.Message, "DELETE not allowed") {
			t.Errorf("DELETE %s without BATON_ALLOW_SHAPE_DELETION: %d %+v; want 405", q.Encode(), code, e)
		}
	}
	if r := getWith(t, b.URL(), url.Values{"table": {"items"}, "handle": {kept.Handle}, "offset": {kept.Offset}}, nil); r.Status != 200 {
		t.Errorf("GET after a refused DELETE: %d; want 200 (the shape kept)", r.Status)
	}
}

// checkChunksAndCaching commits 40 rows of about 300 bytes, one per
// transaction, and has c, whose worker has BATON_SHAPE_CHUNK_BYTES_THRESHOLD
// 4KiB and BATON_CACHE_MAX_AGE 7s, BATON_CACHE_STALE_AGE 11s, catch up once
// they are all in the shape: no response is much over 4 KiB (the default,
// 10 MiB, would answer them in one), and each says Electric's
// Cache-Control with those ages.
func checkChunksAndCaching(t *testing.T, pg *pgtest.Cluster, c *rowClient) {
	t.Helper()
	var stmts []string
	for i := 100; i < 140; i++ {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO items VALUES (%d, repeat('x', 300))", i))
	}
	execSQL(t, pg, stmts...)
	// A second client sees the last row: the shape holds all 40.
	seen := newRowClient(c.Base, c.Shape)
	seen.Handle, seen.Offset = c.Handle, c.Offset
	seen.awaitMessages(t, 40)
	responses, want := 0, len(c.msgs)+40
	for len(c.msgs) < want {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		r, err := c.Request(ctx, false)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		responses++
		if len(r.Body) > 4096+400 {
			t.Errorf("response %d: %d bytes; want about 4 KiB at most", responses, len(r.Body))
		}
		if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=7, stale-while-revalidate=11" {
			t.Errorf("response %d: Cache-Control %q; want public, max-age=7, stale-while-revalidate=11", responses, cc)
		}
		for _, m := range messages(t, r.Text()) {
			if c.rows.Apply(m) {
				c.msgs = append(c.msgs, m)
			}
		}
		if responses > 40 {
			t.Fatalf("%d responses and %d messages", responses, len(c.msgs))
		}
	}
	if responses < 3 {
		t.Errorf("40 rows of 300 bytes in %d responses; want 4 KiB ones", responses)
	}
}

// Over server-sent events a client that is caught up when it connects gets
// no up-to-date until there is a change, as from Electric: only
// ": keep-alive" comments (Electric's every 21 s of silence); then the
// change and an up-to-date. The official client following over SSE meanwhile
// gets the change too.
func TestShapeSSEWaitsForChanges(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text, n int)", "INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	client := startProtoScript(t, base, "items", "sse")
	client.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)

	c := newRowClient(base, url.Values{"table": {"items"}})
	c.upToDate(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	q := c.Query(true)
	q.Set("live_sse", "true")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/shape?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE request: %d %v", resp.StatusCode, resp.Header)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the SSE stream ended waiting for %s", what)
			}
			return l
		case <-time.After(40 * time.Second):
			t.Fatalf("no %s on the SSE stream within 40 s", what)
		}
		return ""
	}
	opened := time.Now()
	if l := next("keep-alive comment"); l != ": keep-alive" {
		t.Fatalf("a caught-up client got %q after %s; want only a keep-alive comment until a change", l, time.Since(opened).Round(time.Millisecond))
	}
	t.Logf("first keep-alive after %s", time.Since(opened).Round(time.Millisecond))
	execSQL(t, pg, "INSERT INTO items VALUES (3, 'c', 3)")
	var got []harness.Message
	for len(got) < 2 {
		l := next("the change and an up-to-date")
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok {
			continue // another keep-alive
		}
		var m harness.Message
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("event %q: %v", l, err)
		}
		got = append(got, m)
	}
	if got[0].Headers["operation"] != "insert" || !got[1].IsUpToDate() {
		t.Fatalf("events after the insert: %+v; want the insert, then an up-to-date", got)
	}
	client.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
	client.checkMessages(t)
}
