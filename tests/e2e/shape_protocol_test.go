package e2e_test

// Protocol cases of the shape API (issue 3, "The shape API"), each checked
// against what ElectricSQL's sync service does (lib/electric/shapes/api.ex,
// api/response.ex, plug/cors_header_plug.ex, plug/options_shape_plug.ex)
// and what its TypeScript client (@electric-sql/client 1.5.28) relies on:
// live updates over server-sent events, chunking of large shapes,
// offset=now, and the headers of every kind of response.
//
// The four tests run in parallel with each other (each on its own
// PostgreSQL cluster and broker+worker pair); the longest part is the
// long-poll that sees no change, which the worker holds for its fixed 20 s
// (httpapi.DefaultLongPoll; the worker has no setting to shorten it).

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// protoFetch sends one request and reads the whole response; it may run
// on any goroutine.
func protoFetch(method, u string, hdr map[string]string, timeout time.Duration) (*harness.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return harness.Fetch(ctx, method, u, hdr)
}

// protoDo is protoFetch on the test's goroutine, with protoCheckAny.
func protoDo(t *testing.T, method, u string, hdr map[string]string, timeout time.Duration) *harness.Response {
	t.Helper()
	r, err := protoFetch(method, u, hdr, timeout)
	if err != nil {
		t.Fatal(err)
	}
	protoCheckAny(t, r)
	return r
}

// protoGetAsync starts a GET on another goroutine; its result is checked
// by the test when it arrives.
func protoGetAsync(base string, q url.Values, hdr map[string]string) <-chan protoResult {
	ch := make(chan protoResult, 1)
	go func() {
		start := time.Now()
		r, err := protoFetch(http.MethodGet, base+"/v1/shape?"+q.Encode(), hdr, 60*time.Second)
		ch <- protoResult{r, err, time.Since(start)}
	}()
	return ch
}

type protoResult struct {
	r   *harness.Response
	err error
	dur time.Duration
}

// protoAwait waits for an async GET and checks it like protoDo.
func protoAwait(t *testing.T, ch <-chan protoResult) protoResult {
	t.Helper()
	select {
	case x := <-ch:
		if x.err != nil {
			t.Fatal(x.err)
		}
		protoCheckAny(t, x.r)
		return x
	case <-time.After(70 * time.Second):
		t.Fatal("no response after 70 s")
	}
	return protoResult{}
}

func protoGet(t *testing.T, base string, q url.Values, hdr map[string]string) *harness.Response {
	t.Helper()
	return protoDo(t, http.MethodGet, base+"/v1/shape?"+q.Encode(), hdr, 60*time.Second)
}

// protoCheckAny holds for every response of the shape API: never 204;
// every 2xx has electric-handle and electric-offset.
func protoCheckAny(t *testing.T, r *harness.Response) {
	t.Helper()
	u := r.URL
	if r.Method == http.MethodOptions {
		return // a CORS preflight is no shape response
	}
	if r.Status == http.StatusNoContent {
		t.Errorf("%s: 204; the shape API never answers 204", u)
	}
	if r.Status >= 200 && r.Status < 300 && (r.Handle() == "" || r.Offset() == "") {
		t.Errorf("%s: %d without electric-handle/electric-offset: %v", u, r.Status, r.Header)
	}
}

func protoUpToDateHeader(h http.Header) bool { return len(h.Values("electric-up-to-date")) > 0 }

// protoSync fetches table from offset -1 until up to date and returns the
// handle and offset a client would continue with.
func protoSync(t *testing.T, base, table string) (handle, offset string) {
	t.Helper()
	c, _ := catchUp(t, base, url.Values{"table": {table}})
	return c.Handle, c.Offset
}

// protoTable reads "SELECT id, note, n FROM <table>" as the TypeScript
// client parses it (int4 → number, text → string), keyed by id.
func protoTable(t *testing.T, pg *pgtest.Cluster, table string) map[string]map[string]any {
	t.Helper()
	conn := connect(t, pg)
	rows, err := conn.Query(context.Background(), "SELECT id, note, n FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var id int
		var note *string
		var n *int
		if err := rows.Scan(&id, &note, &n); err != nil {
			t.Fatal(err)
		}
		r := map[string]any{"id": float64(id), "note": nil, "n": nil}
		if note != nil {
			r["note"] = *note
		}
		if n != nil {
			r["n"] = float64(*n)
		}
		out[strconv.Itoa(id)] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// protoScriptRequest is one HTTP request sse.mjs saw its client make.
type protoScriptRequest struct {
	URL         string `json:"url"`
	SSE         bool   `json:"sse"`
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Error       string `json:"error"`
}

// protoScript is a running tests/ts/sse.mjs.
type protoScript struct {
	cmd      *exec.Cmd
	mu       sync.Mutex
	rows     map[string]map[string]any
	prints   int
	requests []protoScriptRequest
	anomaly  []string
	stderr   strings.Builder
	wake     chan struct{}
}

// startProtoScript runs `node sse.mjs base table flags...`.
func startProtoScript(t *testing.T, base, table string, flags ...string) *protoScript {
	t.Helper()
	needClient(t)
	s := &protoScript{wake: make(chan struct{})}
	s.cmd = exec.Command("node", append([]string{"sse.mjs", base, table}, flags...)...)
	s.cmd.Dir = tsDir
	s.cmd.Stderr = &syncWriter{w: &s.stderr, mu: &s.mu}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("--- sse.mjs %v stderr ---\n%s", flags, s.stderr.String())
			s.mu.Unlock()
		}
	})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var line struct {
				Rows    []map[string]any    `json:"rows"`
				Request *protoScriptRequest `json:"request"`
				Anomaly string              `json:"anomaly"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				continue
			}
			s.mu.Lock()
			switch {
			case line.Request != nil:
				s.requests = append(s.requests, *line.Request)
			case line.Anomaly != "":
				s.anomaly = append(s.anomaly, line.Anomaly)
			default:
				s.rows = map[string]map[string]any{}
				for _, r := range line.Rows {
					s.rows[fmt.Sprint(r["id"])] = r
				}
				s.prints++
			}
			close(s.wake)
			s.wake = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	return s
}

// await waits until cond holds for the script's state.
func (s *protoScript) await(t *testing.T, timeout time.Duration, what string, cond func(rows map[string]map[string]any, prints int, reqs []protoScriptRequest) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		ok := cond(s.rows, s.prints, s.requests)
		rows, prints, wake := s.rows, s.prints, s.wake
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("sse.mjs: %s: not after %s (%d prints); rows:\n%s", what, timeout, prints, protoDump(rows))
		}
	}
}

func (s *protoScript) awaitRows(t *testing.T, want map[string]map[string]any, timeout time.Duration) {
	t.Helper()
	s.await(t, timeout, fmt.Sprintf("rows equal to the table (%d rows)", len(want)), func(rows map[string]map[string]any, prints int, _ []protoScriptRequest) bool {
		return prints > 0 && reflect.DeepEqual(rows, want)
	})
}

func (s *protoScript) snapshot() ([]protoScriptRequest, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests), s.stderr.String()
}

// checkMessages fails on any change the client got twice or after a
// change it missed.
func (s *protoScript) checkMessages(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.anomaly) > 0 {
		t.Errorf("the client's change messages do not fit together (%d): %q", len(s.anomaly), s.anomaly[:min(len(s.anomaly), 20)])
	}
}

// protoClientOnce fetches the rows of table once with the TypeScript
// client (sse.mjs once: unlike follow.mjs, it exits only once all of a
// large output is written).
func protoClientOnce(t *testing.T, base, table string) []map[string]any {
	t.Helper()
	needClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "sse.mjs", base, table, "once")
	cmd.Dir = tsDir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node sse.mjs %s once: %v\n%s", table, err, stderr.String())
	}
	for _, line := range strings.Split(string(out), "\n") {
		var r struct {
			Rows []map[string]any `json:"rows"`
		}
		if strings.HasPrefix(line, `{"rows":`) {
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("client output (%d bytes): %v", len(line), err)
			}
			return r.Rows
		}
	}
	t.Fatalf("client printed no rows (%d bytes of output)\n%s", len(out), stderr.String())
	return nil
}

func protoDump(rows map[string]map[string]any) string {
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		j, _ := json.Marshal(rows[k])
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// The official client with live SSE enabled (liveSse: true in 1.5.28; it
// sends live_sse=true and, for older servers, experimental_live_sse=true)
// follows a table through inserts, updates and deletes, in single- and
// multi-row transactions, made while its SSE request is open, and ends
// equal to the table. Its SSE requests are answered with a 200
// text/event-stream, and the stream of change messages has no duplicate
// and no gap. The raw stream is checked too: every event is one JSON
// message; an up-to-date event follows each transaction; and the offset
// the client derives from any SSE up-to-date (`<global_last_seen_lsn>_0`,
// client.ts/shape-stream-state.ts) neither repeats nor skips a change, also
// on a shape that is only its snapshot.
func TestShapeProtocolSSE(t *testing.T) {
	t.Parallel()
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 20) g",
		"CREATE TABLE other (id int PRIMARY KEY)",
		"CREATE TABLE quiet (id int PRIMARY KEY, payload text)",
		"INSERT INTO quiet SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 3000) g")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()

	// First, while nothing is written: a shape that is only its snapshot
	// (~3.4 MB, several snapshot chunks). An up-to-date event on its SSE
	// stream must not move the client's offset back: the client continues
	// from <global_last_seen_lsn>_0 after any SSE up-to-date.
	t.Run("SSE up-to-date on a snapshot-only shape", func(t *testing.T) {
		handle, offset := protoSync(t, base, "quiet")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		q := url.Values{"table": {"quiet"}, "handle": {handle}, "offset": {offset}, "live": {"true"}, "live_sse": {"true"}}
		sse, err := harness.OpenSSE(ctx, base, q)
		if err != nil {
			t.Fatal(err)
		}
		defer sse.Close()
		if sse.Status != 200 {
			t.Fatalf("SSE request: %d", sse.Status)
		}
		if h := sse.Header.Get("electric-offset"); h != offset {
			t.Errorf("SSE response with nothing new has electric-offset %q; want the request's %q (the client adopts it on open)", h, offset)
		}
		// Electric sends nothing (but keep-alive comments) until a change;
		// read what comes within 2 s.
		var utd *harness.Message
		select {
		case m, ok := <-sse.Events():
			if !ok {
				if err := sse.Err(); err != nil {
					t.Fatalf("SSE stream: %v", err)
				}
				break
			}
			if !m.IsUpToDate() {
				t.Fatalf("SSE event %v with nothing written", m)
			}
			utd = &m
		case <-time.After(2 * time.Second):
		}
		cancel()
		if utd == nil {
			return // nothing sent, as Electric
		}
		next := fmt.Sprint(utd.Headers["global_last_seen_lsn"]) + "_0"
		r := protoGet(t, base, url.Values{"table": {"quiet"}, "handle": {handle}, "offset": {next}}, nil)
		if r.Status != 200 {
			t.Fatalf("GET from %s (the client's offset after that up-to-date): %d %.300s", next, r.Status, r.Text())
		}
		if msgs := messages(t, r.Text()); len(msgs) > 1 {
			t.Fatalf("the SSE stream of a snapshot-only shape opens with an up-to-date whose global_last_seen_lsn is %v; the client then continues from %s (was %s), and the next request (e.g. after the 60 s SSE window) serves %d messages (%d bytes) of the snapshot again (worker/internal/httpapi/sse.go writes the up-to-date before any change, with plan.GlobalLSN = 0 while the shape has no log record; Electric sends an up-to-date only after changes, with a real LSN)", utd.Headers["global_last_seen_lsn"], next, offset, len(msgs)-1, len(r.Body))
		}
	})

	t.Run("client follows over SSE", func(t *testing.T) {
		s := startProtoScript(t, base, "items", "sse")
		s.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
		s.await(t, 15*time.Second, "an SSE request answered", func(_ map[string]map[string]any, _ int, reqs []protoScriptRequest) bool {
			for _, r := range reqs {
				if r.SSE && r.Status != 0 {
					return true
				}
			}
			return false
		})
		conn := connect(t, pg)
		ctx := context.Background()
		for round := range 12 {
			b := 100 + round*10
			stmts := []string{
				fmt.Sprintf("INSERT INTO items VALUES (%d, 'new %d', %d)", b, b, b),
				fmt.Sprintf("UPDATE items SET note = 'upd %d', n = n + 1000 WHERE id = %d", round, round+1),
				fmt.Sprintf("BEGIN; INSERT INTO items SELECT g, 'bulk', NULL FROM generate_series(%d, %d) g; DELETE FROM items WHERE id = %d; UPDATE items SET n = NULL WHERE id = %d; COMMIT", b+1, b+5, b+1, b+2),
				fmt.Sprintf("DELETE FROM items WHERE id = %d", 20-round),
				fmt.Sprintf("INSERT INTO other VALUES (%d)", round), // another table's transaction
				fmt.Sprintf("UPDATE items SET id = %d WHERE id = %d", 1000+round, b+3),
			}
			for _, q := range stmts {
				if _, err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			time.Sleep(50 * time.Millisecond) // spread the rounds over the open SSE stream; not a wait for a condition
		}
		// A burst of single-row transactions, as fast as they commit.
		for i := range 300 {
			if _, err := conn.Exec(ctx, "INSERT INTO items VALUES ($1, 'burst', $1)", 2000+i); err != nil {
				t.Fatal(err)
			}
		}
		s.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
		// A quiet moment, then more changes on the same stream.
		time.Sleep(2 * time.Second) // idle time on the open SSE stream; not a wait for a condition
		execSQL(t, pg, "UPDATE items SET note = 'after a pause' WHERE id = 5", "DELETE FROM items WHERE id = 6", "INSERT INTO items VALUES (7777, NULL, 7)")
		s.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)

		s.checkMessages(t)
		reqs, stderr := s.snapshot()
		var sse, sseOK, longPoll int
		for _, r := range reqs {
			u, _ := url.Parse(r.URL)
			live := u != nil && u.Query().Get("live") == "true"
			switch {
			case r.SSE:
				sse++
				if r.Status == 200 && strings.HasPrefix(r.ContentType, "text/event-stream") {
					sseOK++
				} else if r.Status >= 200 && r.Status < 300 {
					t.Errorf("SSE request %s answered %d %q; want 200 text/event-stream", r.URL, r.Status, r.ContentType)
				}
			case live:
				longPoll++
			}
		}
		if sseOK == 0 {
			t.Fatalf("no SSE request was answered with an event stream (requests: %+v)", reqs)
		}
		fellBack := strings.Contains(stderr, "Falling back to long polling")
		t.Logf("%d requests: %d SSE (%d answered with an event stream), %d live long-polls; fell back to long-polling: %v", len(reqs), sse, sseOK, longPoll, fellBack)
		if fellBack || longPoll > 0 {
			// Allowed by issue 3, but the worker serves SSE and Electric
			// keeps an SSE stream open for 60 s: a fallback here means the
			// worker closed its streams early.
			t.Errorf("the client fell back to long-polling (%d live long-polls); stderr:\n%s", longPoll, stderr)
		}
	})

	t.Run("raw SSE stream", func(t *testing.T) {
		handle, offset := protoSync(t, base, "items")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q := url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}, "live": {"true"}, "live_sse": {"true"}, "cursor": {"1"}}
		sse, err := harness.OpenSSE(ctx, base, q)
		if err != nil {
			t.Fatal(err)
		}
		defer sse.Close()
		protoCheckAny(t, &harness.Response{Method: http.MethodGet, URL: sse.URL, Status: sse.Status, Header: sse.Header})
		if sse.Status != 200 || !strings.HasPrefix(sse.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("SSE request: %d %q %s; want 200 text/event-stream", sse.Status, sse.Header.Get("Content-Type"), sse.Body)
		}
		if c := sse.Header.Get("electric-cursor"); c == "" || c == "1" {
			t.Errorf("SSE response cursor %q; want a new one", c)
		}
		// Electric: "public, max-age=#{sse_timeout/1000 - 1}" (60 s by default).
		if cc := sse.Header.Get("Cache-Control"); cc != "public, max-age=59" {
			t.Errorf("SSE cache-control %q; want %q (Electric, sse_timeout 60 s)", cc, "public, max-age=59")
		}
		// next returns the messages up to and including the next
		// up-to-date; leading up-to-dates with nothing before them (a
		// stream may open with one) are skipped.
		next := func() ([]harness.Message, harness.Message) {
			t.Helper()
			var batch []harness.Message
			for {
				select {
				case m, ok := <-sse.Events():
					if !ok {
						t.Fatalf("SSE stream ended (%v); got %v", sse.Err(), batch)
					}
					if !m.IsUpToDate() {
						batch = append(batch, m)
						continue
					}
					if len(batch) > 0 {
						return batch, m
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("no up-to-date event after the changes; got %v", batch)
				}
			}
		}
		lsnOf := func(m harness.Message) uint64 {
			v, _ := strconv.ParseUint(fmt.Sprint(m.Headers["lsn"]), 10, 64)
			return v
		}
		var last string // the offset the client would continue with
		for i, stmts := range [][]string{
			{"BEGIN; INSERT INTO items VALUES (5000, 'sse', 1); UPDATE items SET note = 'sse upd' WHERE id = 2; COMMIT"},
			{"INSERT INTO other VALUES (5000)", "DELETE FROM items WHERE id = 5000"},
		} {
			execSQL(t, pg, stmts...)
			batch, utd := next()
			ops := []string{}
			var maxLSN uint64
			for _, m := range batch {
				ops = append(ops, fmt.Sprint(m.Headers["operation"]))
				maxLSN = max(maxLSN, lsnOf(m))
			}
			want := [][]string{{"insert", "update"}, {"delete"}}[i]
			if !reflect.DeepEqual(ops, want) {
				t.Fatalf("SSE batch %d: operations %v; want %v (%v)", i, ops, want, batch)
			}
			g, err := strconv.ParseUint(fmt.Sprint(utd.Headers["global_last_seen_lsn"]), 10, 64)
			if err != nil || g < maxLSN {
				t.Fatalf("SSE up-to-date %v after changes at lsn %d: the client would continue at %v_0 and get them again", utd.Headers, maxLSN, utd.Headers["global_last_seen_lsn"])
			}
			last = strconv.FormatUint(g, 10) + "_0"
		}
		// The client continues from <global_last_seen_lsn>_0: nothing is
		// served again, and the next change is served once.
		r := protoGet(t, base, url.Values{"table": {"items"}, "handle": {handle}, "offset": {last}}, nil)
		if msgs := messages(t, r.Text()); r.Status != 200 || len(msgs) != 1 || !msgs[0].IsUpToDate() {
			t.Fatalf("GET from the SSE up-to-date offset %s: %d %s; want only up-to-date", last, r.Status, r.Text())
		}
		execSQL(t, pg, "INSERT INTO items VALUES (5001, 'after', 2)")
		r = protoGet(t, base, url.Values{"table": {"items"}, "handle": {handle}, "offset": {last}, "live": {"true"}}, nil)
		msgs := messages(t, r.Text())
		if r.Status != 200 || len(msgs) != 2 || msgs[0].Headers["operation"] != "insert" || fmt.Sprint(msgs[0].Value["id"]) != "5001" {
			t.Fatalf("live GET from the SSE up-to-date offset %s: %d %s; want the insert of 5001 and up-to-date", last, r.Status, r.Text())
		}
	})
}

// protoPayload is row id's payload in the big table: 1 KiB.
func protoPayload(id int) string {
	sum := md5.Sum([]byte(strconv.Itoa(id)))
	return strings.Repeat(hex.EncodeToString(sum[:]), 32)
}

// A shape of ~27 MB is served in chunks of about 10 MiB (Electric's
// default chunk_bytes_threshold): the response to offset=-1 is the first
// chunk, without up-to-date (Electric never marks offset=-1 up to date);
// following electric-offset serves the next chunks; the last one ends with
// up-to-date; every row arrives exactly once. The same holds for a single
// ~27 MB transaction arriving through replication. The TypeScript client
// syncs the whole table.
func TestShapeProtocolChunking(t *testing.T) {
	t.Parallel()
	needClient(t)
	const rows = 24000
	const mib = 1 << 20
	// Electric closes a chunk once it passes 10 MiB, as Baton does. About
	// 10 MiB is anything in [8, 12] MiB.
	const minChunk, maxChunk = 8 * mib, 12 * mib
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)",
		fmt.Sprintf("INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, %d) g", rows))
	base := newActivePod(t, pg, "a", t.TempDir()).URL()

	seen := map[int]int{}
	// collect records the inserts of a response and checks their values.
	collect := func(t *testing.T, msgs []harness.Message) {
		t.Helper()
		for _, m := range msgs {
			if m.IsUpToDate() || m.Headers["control"] != nil {
				continue
			}
			if m.Headers["operation"] != "insert" {
				t.Fatalf("unexpected message %v", m.Headers)
			}
			id, err := strconv.Atoi(fmt.Sprint(m.Value["id"]))
			if err != nil || m.Value["payload"] != protoPayload(id) {
				t.Fatalf("row %v: payload %.40q…; want the table's", m.Value["id"], m.Value["payload"])
			}
			seen[id]++
		}
	}
	checkSeen := func(t *testing.T, last int) {
		t.Helper()
		ids := make([]int, 0, len(seen))
		for id, n := range seen {
			for range n {
				ids = append(ids, id)
			}
		}
		checkExactlyOnce(t, ids, last)
	}
	// follow fetches non-live with c until up to date; it returns the
	// sizes of the responses.
	follow := func(t *testing.T, c *harness.ShapeClient) (sizes []int) {
		t.Helper()
		var prev harness.Offset
		for i := 0; ; i++ {
			if i > 20 {
				t.Fatalf("not up to date after %d chunks", i)
			}
			q := c.Query(false)
			r := request(t, c, false)
			if r.Header.Get("electric-schema") == "" {
				t.Errorf("chunk %d: no electric-schema on a non-live response", i)
			}
			msgs := messages(t, r.Text())
			if len(msgs) == 0 {
				t.Fatalf("chunk %d (%v): empty body", i, q)
			}
			utd := msgs[len(msgs)-1].IsUpToDate()
			if utd != r.UpToDate() {
				t.Fatalf("chunk %d: body ends with up-to-date %v, electric-up-to-date header %v", i, utd, r.UpToDate())
			}
			for _, m := range msgs[:len(msgs)-1] {
				if m.IsUpToDate() {
					t.Fatalf("chunk %d: up-to-date before the end of the body", i)
				}
			}
			collect(t, msgs)
			sizes = append(sizes, len(r.Body))
			off, err := harness.ParseOffset(c.Offset)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 && !prev.Less(off) {
				t.Fatalf("chunk %d: electric-offset %s does not advance", i, c.Offset)
			}
			prev = off
			if utd {
				return sizes
			}
		}
	}

	var handle, offset string
	t.Run("snapshot", func(t *testing.T) {
		c := harness.NewShapeClient(base, url.Values{"table": {"big"}})
		sizes := follow(t, c)
		handle, offset = c.Handle, c.Offset
		t.Logf("response sizes: %v", sizes)
		checkSeen(t, rows)
		// The snapshot's chunks, then (as from Electric) the response from
		// the snapshot's end: up to date.
		if len(sizes) < 4 {
			t.Fatalf("%d responses for ~27 MB; want 3 or more chunks of about 10 MiB, then up-to-date", len(sizes))
		}
		for i, n := range sizes[:len(sizes)-2] {
			if n < minChunk || n > maxChunk {
				t.Errorf("chunk %d is %d bytes; want about 10 MiB", i, n)
			}
		}
		if n := sizes[len(sizes)-2]; n > maxChunk {
			t.Errorf("last chunk is %d bytes; want at most about 10 MiB", n)
		}
	})
	if handle == "" {
		t.FailNow()
	}

	t.Run("large transaction", func(t *testing.T) {
		execSQL(t, pg, fmt.Sprintf("INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(%d, %d) g", rows+1, 2*rows))
		// A live request gets the transaction once it is in the shape.
		q := url.Values{"table": {"big"}, "handle": {handle}, "offset": {offset}, "live": {"true"}}
		var r *harness.Response
		for range 5 {
			if r = protoGet(t, base, q, nil); r.Status != 200 {
				t.Fatalf("live GET: %d %.300s", r.Status, r.Text())
			}
			if len(r.Body) > 1000 {
				break
			}
		}
		first := len(r.Body)
		msgs := messages(t, r.Text())
		collect(t, msgs)
		sizes := []int{first}
		if !msgs[len(msgs)-1].IsUpToDate() {
			c := harness.NewShapeClient(base, url.Values{"table": {"big"}})
			c.Handle, c.Offset = handle, r.Header.Get("electric-offset")
			sizes = append(sizes, follow(t, c)...)
		}
		t.Logf("response sizes: %v", sizes)
		checkSeen(t, 2*rows)
		// As Electric's, a transaction is cut at chunk boundaries inside it.
		if len(sizes) < 3 {
			t.Errorf("a %d-row transaction (~27 MB) came in %d responses %v; want 3 or more chunks of about 10 MiB", rows, len(sizes), sizes)
		}
		for i, n := range sizes[:len(sizes)-1] {
			if n < minChunk || n > maxChunk {
				t.Errorf("response %d of a %d-row transaction is %d bytes; want chunks of about 10 MiB", i, rows, n)
			}
		}
	})

	t.Run("TypeScript client", func(t *testing.T) {
		got := protoClientOnce(t, base, "big")
		var want int
		if err := connect(t, pg).QueryRow(context.Background(), "SELECT count(*) FROM big").Scan(&want); err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, r := range got {
			id := fmt.Sprint(r["id"])
			n, _ := strconv.Atoi(id)
			if ids[id] || r["payload"] != protoPayload(n) {
				t.Fatalf("client row %s doubled or wrong", id)
			}
			ids[id] = true
		}
		if len(got) != want {
			t.Fatalf("client synced %d rows; the table has %d", len(got), want)
		}
	})
}

// offset=now (Electric's api.ex): the handle and the shape's current
// offset, up to date, with no data and nothing but the up-to-date message;
// a handle given with it is ignored; live=true with it is a 400. A live
// request from that offset gets only later changes, and so does the
// TypeScript client started with offset: 'now' (long-polling and SSE).
func TestShapeProtocolOffsetNow(t *testing.T) {
	t.Parallel()
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 3) g")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	handle, off := protoSync(t, base, "items")
	execSQL(t, pg, "INSERT INTO items VALUES (4, 'four', 4)")
	// A live request from before the insert returns once it is in the
	// shape; its offset is then the shape's end.
	r := protoGet(t, base, url.Values{"table": {"items"}, "handle": {handle}, "offset": {off}, "live": {"true"}}, nil)
	if r.Status != 200 || !strings.Contains(r.Text(), `"four"`) {
		t.Fatalf("live GET after the insert of 4: %d %s", r.Status, r.Text())
	}
	end := r.Header.Get("electric-offset")

	var nowResp *harness.Response
	t.Run("response", func(t *testing.T) {
		r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"now"}}, nil)
		nowResp = r
		if r.Status != 200 {
			t.Fatalf("offset=now: %d %s", r.Status, r.Text())
		}
		if r.Header.Get("electric-handle") != handle || r.Header.Get("electric-offset") != end {
			t.Errorf("offset=now: handle %q offset %q; want %q %q (the shape's current end)", r.Header.Get("electric-handle"), r.Header.Get("electric-offset"), handle, end)
		}
		msgs := messages(t, r.Text())
		if len(msgs) != 1 || !msgs[0].IsUpToDate() || !protoUpToDateHeader(r.Header) {
			t.Errorf("offset=now: body %s, electric-up-to-date %v; want only up-to-date", r.Text(), protoUpToDateHeader(r.Header))
		}
		if r.Header.Get("electric-schema") == "" || r.Header.Get("electric-cursor") != "" {
			t.Errorf("offset=now is not live: schema %q, cursor %q", r.Header.Get("electric-schema"), r.Header.Get("electric-cursor"))
		}
		// Not live and not -1: Electric's "public, max-age=#{max_age}, stale-while-revalidate=#{stale_age}".
		if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=60, stale-while-revalidate=300" {
			t.Errorf("offset=now cache-control %q", cc)
		}
		r2 := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"now"}, "handle": {handle}}, nil)
		if r2.Status != 200 || r2.Header.Get("electric-offset") != end || r2.Text() != r.Text() {
			t.Errorf("offset=now with the handle: %d %q %s", r2.Status, r2.Header.Get("electric-offset"), r2.Text())
		}
		r3 := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"now"}, "handle": {handle}, "live": {"true"}}, nil)
		if !strings.Contains(r3.Text(), `"live"`) || r3.Status != 400 {
			t.Errorf("offset=now&live=true: %d %s; want 400 naming live", r3.Status, r3.Text())
		}
	})

	t.Run("global_last_seen_lsn", func(t *testing.T) {
		// Electric's up-to-date carries the LSN the stack has processed,
		// never behind the shape's last change.
		msgs := messages(t, nowResp.Text())
		if len(msgs) == 0 {
			t.Fatal("no message")
		}
		g, err := strconv.ParseUint(fmt.Sprint(msgs[0].Headers["global_last_seen_lsn"]), 10, 64)
		if err != nil {
			t.Fatalf("up-to-date %v: global_last_seen_lsn is not a decimal LSN", msgs[0].Headers)
		}
		tx, err := harness.ParseOffset(end)
		if err != nil {
			t.Fatal(err)
		}
		if g < tx.TX {
			t.Fatalf("offset=now's up-to-date has global_last_seen_lsn %d, behind the shape's last change at %d (%s); Electric sends the last processed LSN (worker/internal/httpapi/shape.go getShape builds the plan without GlobalLSN)", g, tx.TX, end)
		}
	})

	t.Run("stale handle is ignored", func(t *testing.T) {
		// Electric's Params.validate_handle_with_offset drops the handle
		// when the offset is -1 or now.
		r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"now"}, "handle": {"stale-handle"}}, nil)
		if r.Status == 409 {
			t.Fatalf("offset=now with a stale handle gets 409 must-refetch; Electric ignores the handle with offset now (and -1) and answers 200 with the current handle (worker/internal/httpapi/shape.go resolve checks p.handle for every offset)")
		}
		if r.Status != 200 || r.Header.Get("electric-handle") != handle {
			t.Fatalf("offset=now with a stale handle: %d %q %s", r.Status, r.Header.Get("electric-handle"), r.Text())
		}
	})

	t.Run("live from now gets only later changes", func(t *testing.T) {
		done := protoGetAsync(base, url.Values{"table": {"items"}, "handle": {handle}, "offset": {end}, "live": {"true"}}, nil)
		time.Sleep(200 * time.Millisecond) // let the long-poll start waiting; either way it must see only the change below
		execSQL(t, pg, "BEGIN; INSERT INTO items VALUES (5, 'five', 5); UPDATE items SET note = 'one' WHERE id = 1; COMMIT")
		r := protoAwait(t, done).r
		msgs := messages(t, r.Text())
		var got []string
		for _, m := range msgs {
			got = append(got, fmt.Sprintf("%v %v", m.Headers["operation"], m.Value["id"]))
		}
		if r.Status != 200 || !reflect.DeepEqual(got, []string{"insert 5", "update 1", "<nil> <nil>"}) || !msgs[len(msgs)-1].IsUpToDate() {
			t.Fatalf("live GET from offset=now's offset: %d %v %s; want the insert of 5, the update of 1, up-to-date", r.Status, got, r.Text())
		}
	})

	t.Run("TypeScript client with offset now", func(t *testing.T) {
		poll := startProtoScript(t, base, "items", "now")
		sse := startProtoScript(t, base, "items", "now", "sse")
		for _, s := range []*protoScript{poll, sse} {
			s.awaitRows(t, map[string]map[string]any{}, 30*time.Second)
		}
		execSQL(t, pg,
			"INSERT INTO items VALUES (6, 'six', 6)",
			"BEGIN; INSERT INTO items VALUES (7, 'seven', 7); DELETE FROM items WHERE id = 7; COMMIT",
			"INSERT INTO items VALUES (8, 'eight', 8)",
			"DELETE FROM items WHERE id = 8",
		)
		want := map[string]map[string]any{"6": {"id": float64(6), "note": "six", "n": float64(6)}}
		poll.awaitRows(t, want, 30*time.Second)
		sse.awaitRows(t, want, 30*time.Second)
	})
}

// Headers of every kind of response, as Electric sends them: electric-handle
// and electric-offset on every 2xx; electric-schema (types, dims of arrays,
// not_null, pk_index) on non-live ones; electric-cursor, new each time, on
// live ones; electric-up-to-date when the body ends up to date (never for
// offset=-1); cache-control per case (api/response.ex); etag and
// If-None-Match → 304; CORS exposing every electric-* header and
// retry-after, and a working preflight; never 204; a live long-poll with no
// change answers 200 with only up-to-date after the 20 s timeout.
func TestShapeProtocolHeaders(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TYPE mood AS ENUM ('sad', 'ok')",
		`CREATE TABLE items (id int4 PRIMARY KEY, note text NOT NULL, vc varchar(40), num numeric(10,2),
			tags text[], grid int4[][], m mood, big int8)`,
		`INSERT INTO items VALUES (1, 'one', 'v', 1.5, '{a,b}', '{{1,2},{3,4}}', 'ok', 1), (2, 'two', NULL, NULL, NULL, NULL, NULL, NULL)`,
		"CREATE TABLE idle (id int PRIMARY KEY)",
		"INSERT INTO idle VALUES (1)",
		"CREATE TABLE pk2 (a int, b text, PRIMARY KEY (b, a))")
	base := newActivePod(t, pg, "a", t.TempDir()).URL()
	const origin = "http://app.example"
	withOrigin := map[string]string{"Origin": origin}

	// The long-poll without change takes the worker's fixed 20 s: start
	// two (on a table nothing writes to) now, check them at the end.
	idleHandle, idleOffset := protoSync(t, base, "idle")
	idleQ := url.Values{"table": {"idle"}, "handle": {idleHandle}, "offset": {idleOffset}, "live": {"true"}, "cursor": {"7"}}
	idle := []<-chan protoResult{protoGetAsync(base, idleQ, withOrigin), protoGetAsync(base, idleQ, withOrigin)}

	cors := func(t *testing.T, what string, r *harness.Response) {
		t.Helper()
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != origin && got != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin %q", what, got)
		}
		exposed := map[string]bool{}
		for _, v := range r.Header.Values("Access-Control-Expose-Headers") {
			for _, h := range strings.Split(v, ",") {
				exposed[strings.ToLower(strings.TrimSpace(h))] = true
			}
		}
		want := []string{"electric-cursor", "electric-handle", "electric-offset", "electric-schema", "electric-up-to-date", "electric-internal-known-error", "retry-after"}
		for k := range r.Header {
			if k = strings.ToLower(k); strings.HasPrefix(k, "electric-") {
				want = append(want, k)
			}
		}
		for _, h := range want {
			if !exposed[h] {
				t.Errorf("%s: Access-Control-Expose-Headers %q does not expose %s", what, r.Header.Values("Access-Control-Expose-Headers"), h)
			}
		}
	}

	var handle, offset, etag string
	t.Run("offset -1", func(t *testing.T) {
		r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, withOrigin)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Text())
		}
		cors(t, "offset -1", r)
		handle, offset, etag = r.Header.Get("electric-handle"), r.Header.Get("electric-offset"), r.Header.Get("ETag")
		if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746" {
			t.Errorf("cache-control %q", cc)
		}
		if protoUpToDateHeader(r.Header) || strings.Contains(r.Text(), "up-to-date") {
			t.Errorf("offset=-1 up to date (header %v, body %s); Electric never marks offset=-1 up to date", protoUpToDateHeader(r.Header), r.Text())
		}
		if r.Header.Get("electric-cursor") != "" {
			t.Errorf("non-live response with electric-cursor %q", r.Header.Get("electric-cursor"))
		}
		if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
			t.Errorf("etag %q is not a quoted string", etag)
		}
		var schema map[string]map[string]any
		if err := json.Unmarshal([]byte(r.Header.Get("electric-schema")), &schema); err != nil {
			t.Fatalf("electric-schema %q: %v", r.Header.Get("electric-schema"), err)
		}
		want := map[string]map[string]any{
			"id":   {"type": "int4", "not_null": true, "pk_index": float64(0)},
			"note": {"type": "text", "not_null": true},
			"vc":   {"type": "varchar"},
			"num":  {"type": "numeric"},
			"tags": {"type": "text", "dims": float64(1)},
			"grid": {"type": "int4", "dims": float64(2)},
			"m":    {"type": "mood"},
			"big":  {"type": "int8"},
		}
		if len(schema) != len(want) {
			t.Errorf("electric-schema has %d columns; want %d: %s", len(schema), len(want), r.Header.Get("electric-schema"))
		}
		for col, w := range want {
			for k, v := range w {
				if schema[col][k] != v {
					t.Errorf("electric-schema %s.%s = %v; want %v (%s)", col, k, schema[col][k], v, r.Header.Get("electric-schema"))
				}
			}
			if d, ok := schema[col]["dims"]; ok && w["dims"] == nil && d != float64(0) {
				t.Errorf("electric-schema %s has dims %v; it is not an array", col, d)
			}
		}
		t.Run("type modifiers", func(t *testing.T) {
			// Electric.Schema adds max_length (varchar), precision and
			// scale (numeric); the TypeScript client hands them to custom
			// parsers. Issue 3 asks only for types and dimensions.
			if schema["vc"]["max_length"] != float64(40) || schema["num"]["precision"] != float64(10) || schema["num"]["scale"] != float64(2) {
				t.Fatalf("electric-schema type modifiers: vc %v, num %v; want max_length 40, precision 10, scale 2 as Electric", schema["vc"], schema["num"])
			}
		})
		msgs := messages(t, r.Text())
		if len(msgs) != 3 || msgs[0].Key != `"public"."items"/"1"` || msgs[2].Headers["control"] != "snapshot-end" {
			t.Errorf("offset -1 body: %s; want the two rows and snapshot-end", r.Text())
		}
	})
	if handle == "" {
		t.FailNow()
	}

	t.Run("composite key", func(t *testing.T) {
		execSQL(t, pg, "INSERT INTO pk2 VALUES (1, 'x/y')")
		r := protoGet(t, base, url.Values{"table": {"pk2"}, "offset": {"-1"}}, nil)
		var schema map[string]map[string]any
		_ = json.Unmarshal([]byte(r.Header.Get("electric-schema")), &schema)
		if schema["b"]["pk_index"] != float64(0) || schema["a"]["pk_index"] != float64(1) {
			t.Errorf("electric-schema %s; want pk_index b 0, a 1", r.Header.Get("electric-schema"))
		}
		if msgs := messages(t, r.Text()); len(msgs) != 2 || msgs[0].Key != `"public"."pk2"/"x//y"/"1"` {
			t.Errorf("body %s; want the key \"public\".\"pk2\"/\"x//y\"/\"1\"", r.Text())
		}
	})

	t.Run("up to date", func(t *testing.T) {
		r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}}, withOrigin)
		cors(t, "up to date", r)
		msgs := messages(t, r.Text())
		if r.Status != 200 || !protoUpToDateHeader(r.Header) || len(msgs) == 0 || !msgs[len(msgs)-1].IsUpToDate() {
			t.Fatalf("%d up-to-date header %v, body %s", r.Status, protoUpToDateHeader(r.Header), r.Text())
		}
		if r.Header.Get("electric-schema") == "" || r.Header.Get("electric-cursor") != "" {
			t.Errorf("non-live: schema %q, cursor %q", r.Header.Get("electric-schema"), r.Header.Get("electric-cursor"))
		}
		if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=60, stale-while-revalidate=300" {
			t.Errorf("cache-control %q", cc)
		}
		offset = r.Header.Get("electric-offset")
	})

	t.Run("etag", func(t *testing.T) {
		for _, inm := range []string{etag, `"other", ` + etag, strings.Trim(etag, `"`)} {
			r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, map[string]string{"If-None-Match": inm, "Origin": origin})
			if r.Status != http.StatusNotModified || r.Text() != "" {
				t.Errorf("If-None-Match %s: %d %.100s; want 304", inm, r.Status, r.Text())
			}
			if r.Header.Get("electric-handle") != handle || r.Header.Get("ETag") != etag {
				t.Errorf("304 headers %v; Electric sends the response's headers with it", r.Header)
			}
		}
		r := protoGet(t, base, url.Values{"table": {"items"}, "offset": {"-1"}}, map[string]string{"If-None-Match": `"not-it"`})
		if r.Status != 200 {
			t.Errorf("If-None-Match of another etag: %d; want 200", r.Status)
		}
		q := url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}}
		r = protoGet(t, base, q, nil)
		if e := r.Header.Get("ETag"); e == "" || e == etag {
			t.Errorf("etag of offset %s: %q (offset -1: %q); want its own", offset, e, etag)
		} else if r2 := protoGet(t, base, q, map[string]string{"If-None-Match": e}); r2.Status != 304 {
			t.Errorf("If-None-Match on offset %s: %d; want 304", offset, r2.Status)
		}
	})

	t.Run("live", func(t *testing.T) {
		conn := connect(t, pg)
		cursor := ""
		for i := range 3 {
			q := url.Values{"table": {"items"}, "offset": {offset}, "handle": {handle}, "live": {"true"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			done := protoGetAsync(base, q, withOrigin)
			time.Sleep(100 * time.Millisecond) // let the long-poll start waiting; it must see the change either way
			if _, err := conn.Exec(context.Background(), "INSERT INTO items (id, note) VALUES ($1, 'live')", 100+i); err != nil {
				t.Fatal(err)
			}
			r := protoAwait(t, done).r
			cors(t, "live", r)
			msgs := messages(t, r.Text())
			if r.Status != 200 || len(msgs) != 2 || msgs[0].Headers["operation"] != "insert" || !msgs[1].IsUpToDate() || !protoUpToDateHeader(r.Header) {
				t.Fatalf("live %d: %d %s (up-to-date header %v); want the insert and up-to-date", i, r.Status, r.Text(), protoUpToDateHeader(r.Header))
			}
			if r.Header.Get("electric-schema") != "" {
				t.Errorf("live response with electric-schema (Electric sends it only when not live)")
			}
			if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=5, stale-while-revalidate=5" {
				t.Errorf("live cache-control %q", cc)
			}
			next := r.Header.Get("electric-cursor")
			if _, err := strconv.ParseInt(next, 10, 64); err != nil || next == cursor {
				t.Errorf("live %d: electric-cursor %q after cursor %q; want a new one", i, next, cursor)
			}
			cursor, offset = next, r.Header.Get("electric-offset")
		}
	})

	t.Run("errors", func(t *testing.T) {
		r := protoGet(t, base, url.Values{"table": {"nope"}, "offset": {"-1"}}, withOrigin)
		cors(t, "400", r)
		if r.Status != 400 || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Surrogate-Control") != "no-store" {
			t.Errorf("400: %d cache-control %q surrogate-control %q; want no-store", r.Status, r.Header.Get("Cache-Control"), r.Header.Get("Surrogate-Control"))
		}
		r = protoGet(t, base, url.Values{"table": {"items"}, "offset": {offset}, "handle": {"stale"}}, withOrigin)
		cors(t, "409", r)
		if r.Status != 409 || r.Header.Get("Cache-Control") != "public, max-age=60, must-revalidate" || r.Header.Get("electric-handle") != handle {
			t.Errorf("409: %d cache-control %q handle %q", r.Status, r.Header.Get("Cache-Control"), r.Header.Get("electric-handle"))
		}
	})

	t.Run("preflight", func(t *testing.T) {
		r := protoDo(t, http.MethodOptions, base+"/v1/shape?table=items&offset=-1", map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match",
		}, 10*time.Second)
		if r.Status != 200 && r.Status != 204 {
			t.Fatalf("OPTIONS: %d %s", r.Status, r.Text())
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != origin && got != "*" {
			t.Errorf("OPTIONS Access-Control-Allow-Origin %q", got)
		}
		if m := strings.ToUpper(r.Header.Get("Access-Control-Allow-Methods")); !strings.Contains(m, "GET") || !strings.Contains(m, "DELETE") {
			t.Errorf("OPTIONS Access-Control-Allow-Methods %q", m)
		}
		if !strings.Contains(strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "if-none-match") {
			t.Errorf("OPTIONS Access-Control-Allow-Headers %q; want if-none-match allowed", r.Header.Get("Access-Control-Allow-Headers"))
		}
		if r.Header.Get("Access-Control-Max-Age") == "" {
			t.Errorf("OPTIONS without Access-Control-Max-Age (Electric: 86400)")
		}
	})

	t.Run("live long-poll without change", func(t *testing.T) {
		var etags []string
		for _, ch := range idle {
			x := protoAwait(t, ch)
			r := x.r
			cors(t, "idle live", r)
			msgs := messages(t, r.Text())
			if r.Status != 200 || len(msgs) != 1 || !msgs[0].IsUpToDate() || !protoUpToDateHeader(r.Header) {
				t.Errorf("idle long-poll: %d %s; want 200 with only up-to-date", r.Status, r.Text())
			}
			if x.dur < 19*time.Second || x.dur > 30*time.Second {
				t.Errorf("idle long-poll answered after %s; want the 20 s timeout", x.dur)
			}
			if c := r.Header.Get("electric-cursor"); c == "" || c == "7" {
				t.Errorf("idle long-poll cursor %q after cursor 7; want a new one", c)
			}
			if r.Header.Get("electric-offset") != idleOffset || r.Header.Get("electric-handle") != idleHandle {
				t.Errorf("idle long-poll offset %q handle %q; want %q %q", r.Header.Get("electric-offset"), r.Header.Get("electric-handle"), idleOffset, idleHandle)
			}
			if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=5, stale-while-revalidate=5" {
				t.Errorf("idle long-poll cache-control %q", cc)
			}
			etags = append(etags, r.Header.Get("ETag"))
		}
		// Electric adds the time to a no-change response's etag so that a
		// CDN cannot revalidate it.
		if etags[0] == "" || etags[0] == etags[1] {
			t.Errorf("no-change etags %q; want each unique", etags)
		}
	})
}
