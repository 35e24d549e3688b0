package e2e_test

// Every pod answers (issue 9, part 3): a standby worker forwards shape
// requests to the active worker of its stream, whose URL its broker shows
// it (Standby.holder.worker_url), and passes the answers back unchanged:
// initial fetches, long-polls, server-sent events, 409 must-refetch, 400,
// DELETE. A request that was already forwarded once is answered 503 (with
// Baton-Not-Active, for the forwarding worker to try elsewhere), not
// forwarded again. When the standby gains the lease, what it forwarded
// ends with the old lease and new requests are served locally.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// proxiedTotal sums baton_worker_proxied_requests_total over its codes.
func proxiedTotal(t *testing.T, base string) (total int, byCode map[string]int) {
	t.Helper()
	byCode = map[string]int{}
	for _, line := range strings.Split(scrape(t, base), "\n") {
		rest, ok := strings.CutPrefix(line, "baton_worker_proxied_requests_total{")
		if !ok {
			continue
		}
		labels, v, _ := strings.Cut(rest, "} ")
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("metric line %q", line)
		}
		code, _, _ := strings.Cut(strings.TrimPrefix(labels, `code="`), `"`)
		byCode[code] += int(n)
		total += int(n)
	}
	return total, byCode
}

// messageSet is the messages of a shape response, canonical JSON, sorted.
func messageSet(t *testing.T, body string) string {
	t.Helper()
	var lines []string
	for _, m := range messages(t, body) {
		if m.IsUpToDate() {
			continue // carries global_last_seen_lsn, which moves with other writes
		}
		j, _ := json.Marshal(m)
		lines = append(lines, string(j))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestStandbyForwards(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 20) g")
	a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), Advertise: true})
	if err := a.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: t.TempDir(), Advertise: true})
	if err := b.Worker().AwaitStatus("waiting", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	baseA, baseB := a.URL(), b.URL()

	// The standby learns the active worker's URL from its broker, then
	// forwards; until then it holds requests.
	if err := harness.Await(15*time.Second, "the standby forwarding a shape request", func() (bool, error) {
		code, _, _ := get(t, baseB, url.Values{"table": {"items"}, "offset": {"-1"}})
		return code == 200, nil
	}); err != nil {
		t.Fatalf("%v\n--- standby log ---\n%s", err, b.Worker().Output())
	}
	if s, _, _ := b.Worker().Health(); s != "waiting" {
		t.Fatalf("the forwarding standby's health says %q; want waiting (DESIGN §4)", s)
	}

	t.Run("initial fetch", func(t *testing.T) {
		q := url.Values{"table": {"items"}, "offset": {"-1"}}
		viaA := protoGet(t, baseA, q, nil)
		viaB := protoGet(t, baseB, q, nil)
		if viaA.Status != 200 || viaB.Status != 200 {
			t.Fatalf("active %d, standby %d; want 200 both", viaA.Status, viaB.Status)
		}
		for _, h := range []string{"electric-handle", "electric-offset", "electric-schema", "Content-Type", "Cache-Control", "ETag"} {
			if viaA.Header.Get(h) != viaB.Header.Get(h) {
				t.Errorf("%s: active %q, standby %q", h, viaA.Header.Get(h), viaB.Header.Get(h))
			}
		}
		if ma, mb := messageSet(t, viaA.Text()), messageSet(t, viaB.Text()); ma != mb || ma == "" {
			t.Errorf("messages differ:\nactive:\n%s\nstandby:\n%s", ma, mb)
		}
		// The official client through the standby ends with the table.
		rows := clientOnce(t, baseB, "items")
		if len(rows) != 20 || !sameRows(rows, clientOnce(t, baseA, "items")) {
			t.Fatalf("client through the standby: %d rows:\n%s", len(rows), dumpRows(rows))
		}
		if n, by := proxiedTotal(t, baseB); n < 3 || by["200"] < 3 {
			t.Errorf("standby counted %v forwarded requests; want at least 3 with 200", by)
		}
		if n, _ := proxiedTotal(t, baseA); n != 0 {
			t.Errorf("the active worker counted %d forwarded requests; want 0", n)
		}
	})

	t.Run("long-poll", func(t *testing.T) {
		handle, offset := protoSync(t, baseB, "items")
		poll := protoGetAsync(baseB, url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}, "live": {"true"}, "cursor": {"1"}}, nil)
		execSQL(t, pg, "INSERT INTO items VALUES (101, 'after the poll started', 1)")
		r := protoAwait(t, poll).r
		if r.Status != 200 || r.Header.Get("electric-handle") != handle {
			t.Fatalf("long-poll through the standby: %d %v %.300s", r.Status, r.Header, r.Text())
		}
		if !strings.Contains(r.Text(), `"after the poll started"`) || !protoUpToDateHeader(r.Header) {
			t.Fatalf("long-poll through the standby: %v %.500s; want the insert and up-to-date", r.Header, r.Text())
		}
	})

	t.Run("SSE", func(t *testing.T) {
		// Raw: the stream's first event arrives while the active worker
		// keeps the response open (nothing waits in the standby's buffers),
		// and a change committed then follows on the same response.
		handle, offset := protoSync(t, baseB, "items")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q := url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}, "live": {"true"}, "live_sse": {"true"}, "cursor": {"1"}}
		execSQL(t, pg, "INSERT INTO items VALUES (102, 'before the stream', 2)")
		sse, err := harness.OpenSSE(ctx, baseB, q)
		if err != nil {
			t.Fatal(err)
		}
		defer sse.Close()
		if sse.Status != 200 || !strings.HasPrefix(sse.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("SSE through the standby: %d %v", sse.Status, sse.Header)
		}
		awaitEvent := func(what string, match func(harness.Message) bool) {
			t.Helper()
			for {
				select {
				case m, ok := <-sse.Events():
					if !ok {
						t.Fatalf("SSE stream ended before %s (%v)", what, sse.Err())
					}
					if match(m) {
						return
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("no %s on the SSE stream through the standby within 15 s", what)
				}
			}
		}
		awaitEvent("insert of row 102", func(m harness.Message) bool { return m.Value["note"] == "before the stream" })
		awaitEvent("up-to-date", harness.Message.IsUpToDate)
		execSQL(t, pg, "UPDATE items SET note = 'during the stream' WHERE id = 3")
		awaitEvent("update of row 3", func(m harness.Message) bool { return m.Value["note"] == "during the stream" })

		// The official client, live over SSE through the standby.
		s := startProtoScript(t, baseB, "items", "sse")
		s.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
		execSQL(t, pg, "INSERT INTO items VALUES (103, 'followed', 3)", "DELETE FROM items WHERE id = 4")
		s.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
		s.checkMessages(t)
		reqs, _ := s.snapshot()
		for _, r := range reqs {
			if r.Status != 200 && r.Status != 304 {
				t.Errorf("client request %s through the standby: %d %q", r.URL, r.Status, r.Error)
			}
			if r.SSE && !strings.HasPrefix(r.ContentType, "text/event-stream") {
				t.Errorf("SSE request %s answered %q", r.URL, r.ContentType)
			}
		}
	})

	t.Run("409 and 400 passed through", func(t *testing.T) {
		handle, offset := protoSync(t, baseA, "items")
		r := protoGet(t, baseB, url.Values{"table": {"items"}, "handle": {"stale-handle"}, "offset": {offset}}, nil)
		if r.Status != 409 || r.Header.Get("electric-handle") != handle || !strings.Contains(r.Text(), "must-refetch") {
			t.Fatalf("stale handle through the standby: %d %v %s; want 409 must-refetch with handle %s", r.Status, r.Header, r.Text(), handle)
		}
		r = protoGet(t, baseB, url.Values{"table": {"nope"}, "offset": {"-1"}}, nil)
		if r.Status != 400 || !strings.Contains(r.Text(), `"table"`) {
			t.Fatalf("unknown table through the standby: %d %s; want 400 naming table", r.Status, r.Text())
		}
	})

	t.Run("DELETE", func(t *testing.T) {
		handle, offset := protoSync(t, baseA, "items")
		r, err := protoFetch(http.MethodDelete, baseB+"/v1/shape?"+url.Values{"table": {"items"}, "handle": {handle}}.Encode(), nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 202 {
			t.Fatalf("DELETE through the standby: %d %s", r.Status, r.Text())
		}
		r = protoGet(t, baseA, url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}}, nil)
		if r.Status != 409 || r.Header.Get("electric-handle") == handle {
			t.Fatalf("after DELETE through the standby, the old handle at the active worker: %d %v; want 409 with a new handle", r.Status, r.Header)
		}
	})

	t.Run("no loop", func(t *testing.T) {
		before, _ := proxiedTotal(t, baseB)
		r := protoGet(t, baseB, url.Values{"table": {"items"}, "offset": {"-1"}}, map[string]string{"Baton-Forwarded-By": "worker@elsewhere"})
		var msg struct{ Message string }
		if r.Status != 503 || r.Header.Get("Retry-After") == "" || json.Unmarshal([]byte(r.Text()), &msg) != nil || !strings.Contains(msg.Message, "already forwarded") {
			t.Fatalf("forwarded request to the standby: %d %v %s; want 503 with Retry-After saying it was already forwarded", r.Status, r.Header, r.Text())
		}
		if after, _ := proxiedTotal(t, baseB); after != before {
			t.Fatalf("the standby forwarded a request that carried Baton-Forwarded-By (%d -> %d)", before, after)
		}
		// The active worker serves such a request itself.
		if r := protoGet(t, baseA, url.Values{"table": {"items"}, "offset": {"-1"}}, map[string]string{"Baton-Forwarded-By": "worker@b"}); r.Status != 200 {
			t.Fatalf("forwarded request to the active worker: %d %s", r.Status, r.Text())
		}
	})

	// Last, as it ends pod a: the standby becomes active while a stream it
	// forwarded is open. That stream ends with the old lease; the next
	// requests are served by the new active worker itself.
	t.Run("standby takes over", func(t *testing.T) {
		handle, offset := protoSync(t, baseB, "items")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q := url.Values{"table": {"items"}, "handle": {handle}, "offset": {offset}, "live": {"true"}, "live_sse": {"true"}, "cursor": {"1"}}
		sse, err := harness.OpenSSE(ctx, baseB, q)
		if err != nil {
			t.Fatal(err)
		}
		defer sse.Close()
		if sse.Status != 200 {
			t.Fatalf("SSE through the standby: %d", sse.Status)
		}
		ended := make(chan error, 1)
		go func() {
			for range sse.Events() {
			}
			ended <- sse.Err()
		}()
		// Kubernetes' order: the worker first, then its broker.
		if err := a.Worker().Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := b.Worker().AwaitStatus("active", 15*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ended:
			if errors.Is(err, harness.ErrBadEvent) {
				t.Fatalf("the stream forwarded to the old active worker: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the stream forwarded to the old active worker did not end within 15 s of the handoff")
		}
		_ = a.Broker().Signal(syscall.SIGTERM)
		before, _ := proxiedTotal(t, baseB)
		r := protoGet(t, baseB, url.Values{"table": {"items"}, "offset": {"-1"}}, nil)
		if r.Status != 200 {
			t.Fatalf("the new active worker: %d %s", r.Status, r.Text())
		}
		if after, _ := proxiedTotal(t, baseB); after != before {
			t.Fatalf("the new active worker forwarded a request (%d -> %d); want it served locally", before, after)
		}
		if rows, want := clientOnce(t, baseB, "items"), protoTable(t, pg, "items"); len(rows) != len(want) {
			t.Fatalf("the new active worker serves %d rows; want %d", len(rows), len(want))
		}
		_, by := proxiedTotal(t, baseB)
		t.Logf("forwarded by the standby, by status code: %v", by)
	})
}
