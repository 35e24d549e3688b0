package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// chunkBytes is the chunk threshold of the chunk tests: a few dozen rows.
const chunkBytes = "2048"

// chunkPod starts an active pod whose worker has chunks of chunkBytes and
// the extra settings.
func chunkPod(t *testing.T, pg *pgtest.Cluster, settings map[string]string) *harness.Pod {
	t.Helper()
	s := map[string]string{"BATON_SHAPE_CHUNK_BYTES_THRESHOLD": chunkBytes}
	for k, v := range settings {
		s[k] = v
	}
	p := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: t.TempDir(), WorkerSettings: s})
	if err := p.Worker().AwaitStatus("active", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// insertRows inserts rows from..to of items, one transaction each, and
// waits until c (up to date) has read the last one.
func insertRows(t *testing.T, pg *pgtest.Cluster, c *harness.ShapeClient, from, to int) {
	t.Helper()
	var stmts []string
	for i := from; i <= to; i++ {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO items VALUES (%d, 'row %d of the chunk tests', %d)", i, i, i))
	}
	execSQL(t, pg, stmts...)
	last := fmt.Sprintf(`/"%d"`, to)
	changesUntil(t, c, func(m harness.Message) bool { return strings.HasSuffix(m.Key, last) })
}

// catchUpFrom reads shape at base from handle and offset until up to
// date, without live requests, and returns every response.
func catchUpFrom(t *testing.T, base string, shape url.Values, handle, offset string) []*harness.Response {
	t.Helper()
	c := harness.NewShapeClient(base, shape)
	c.Handle, c.Offset = handle, offset
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rs, err := c.CatchUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestShapeChunkURLsImmutable: responses end at chunk boundaries of the
// log, not at a size counted from the request's offset, so clients that
// start at different offsets meet on the same URLs after one response
// (what lets a cache serve them); and a URL whose response ended at a
// boundary answers the same body and etag after later writes (304 to its
// etag), while the last, open chunk's URL then serves the whole chunk.
func TestShapeChunkURLsImmutable(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 20) g")
	base := chunkPod(t, pg, nil).URL()
	shape := url.Values{"table": {"items"}}
	c, _ := catchUp(t, base, shape)
	start := c.Offset
	insertRows(t, pg, c, 21, 100)

	a := catchUpFrom(t, base, shape, c.Handle, start)
	if len(a) < 4 {
		t.Fatalf("80 rows in chunks of %s bytes came in %d responses, want more", chunkBytes, len(a))
	}
	// B starts after the first transaction of A's first response: inside
	// A's first chunk.
	first := messages(t, a[0].Text())[0]
	lsn, _ := first.Headers["lsn"].(string)
	if lsn == "" {
		t.Fatalf("first change without an lsn: %s", first)
	}
	b := catchUpFrom(t, base, shape, c.Handle, lsn+"_0")
	if len(b) != len(a) {
		t.Fatalf("from %s_0: %d responses, from %s: %d; want the same chunks", lsn, len(b), start, len(a))
	}
	for i := range a {
		if b[i].Offset() != a[i].Offset() {
			t.Fatalf("response %d ends at %s from %s_0 and at %s from %s: chunks not at fixed boundaries", i, b[i].Offset(), lsn, a[i].Offset(), start)
		}
	}

	insertRows(t, pg, c, 101, 130)
	ctx := t.Context()
	for i, r := range a[:len(a)-1] {
		again, err := harness.Fetch(ctx, "GET", r.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.Status != 200 || again.Header.Get("ETag") != r.Header.Get("ETag") || !bytes.Equal(again.Body, r.Body) {
			t.Fatalf("response %d (%s) changed after later writes: %d etag %s (was %s), body\n%s\nwas\n%s",
				i, r.URL, again.Status, again.Header.Get("ETag"), r.Header.Get("ETag"), again.Body, r.Body)
		}
		if again.UpToDate() {
			t.Fatalf("response %d (%s) ends at a chunk boundary but says up-to-date", i, r.URL)
		}
		cond, err := harness.Fetch(ctx, "GET", r.URL, map[string]string{"If-None-Match": r.Header.Get("ETag")})
		if err != nil {
			t.Fatal(err)
		}
		if cond.Status != 304 {
			t.Fatalf("response %d (%s) with If-None-Match its etag: %d, want 304", i, r.URL, cond.Status)
		}
	}
	tail := a[len(a)-1]
	again, err := harness.Fetch(ctx, "GET", tail.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	was, now := changeKeys(t, tail), changeKeys(t, again)
	if again.Offset() == tail.Offset() || len(now) <= len(was) || strings.Join(now[:len(was)], ",") != strings.Join(was, ",") {
		t.Fatalf("the open chunk's URL after later writes: ends at %s (was %s), changes %v (were %v); want the whole chunk", again.Offset(), tail.Offset(), now, was)
	}
}

// changeKeys are the keys of the changes of r, in order.
func changeKeys(t *testing.T, r *harness.Response) []string {
	t.Helper()
	var out []string
	for _, m := range messages(t, r.Text()) {
		if m.Op() != "" {
			out = append(out, m.Key)
		}
	}
	return out
}

// TestShapeLargeTransactionChunked: one transaction many times the chunk
// threshold reaches the official client over several responses that end
// inside it (Electric splits it so too), with rows equal to the table's;
// a client reading it gets up-to-date only with its last change.
func TestShapeLargeTransactionChunked(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 20) g")
	base := chunkPod(t, pg, nil).URL()
	client := startProtoScript(t, base, "items")
	client.awaitRows(t, protoTable(t, pg, "items"), 30*time.Second)
	c, _ := catchUp(t, base, url.Values{"table": {"items"}})
	execSQL(t, pg, "INSERT INTO items SELECT g, repeat('x', 100) || g, g FROM generate_series(21, 420) g")
	client.awaitRows(t, protoTable(t, pg, "items"), 60*time.Second)
	client.checkMessages(t)

	reqs, _ := client.snapshot()
	inside := map[string]int{} // requests from an offset inside a transaction, by its LSN
	for _, r := range reqs {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		if tx, op, ok := strings.Cut(u.Query().Get("offset"), "_"); ok && tx != "0" && op != "0" && op != "inf" {
			inside[tx]++
		}
	}
	most := 0
	for _, n := range inside {
		most = max(most, n)
	}
	// 400 rows of ~250 bytes in chunks of 2 KiB: dozens of parts.
	if most < 10 {
		t.Fatalf("the client read the 400-row transaction from %d offsets inside it (%v); want it split over many responses", most, inside)
	}

	// The same, request by request: up-to-date with the last change only.
	changes, parts := 0, 0
	for changes < 400 {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		r, err := c.Request(ctx, c.UpToDate)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		n := len(changeKeys(t, r))
		changes += n
		if n > 0 {
			parts++
		}
		upToDate := r.UpToDate()
		for _, m := range messages(t, r.Text()) {
			upToDate = upToDate || m.IsUpToDate()
		}
		if upToDate && changes < 400 {
			t.Fatalf("response %d of the transaction (%s) is up to date after %d of its 400 changes", parts, r.URL, changes)
		}
	}
	if changes != 400 || parts < 10 {
		t.Fatalf("the transaction came as %d changes in %d responses; want 400 in many", changes, parts)
	}
}

// startNginx starts nginx caching upstream (host:port), stopped when the
// test ends.
func startNginx(t *testing.T, upstream string) *harness.Nginx {
	t.Helper()
	ngx, err := harness.StartNginx(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- nginx ---\n%s", ngx.Output())
		}
		ngx.Close()
	})
	return ngx
}

// cacheStatus is nginx's $upstream_cache_status of a response through it.
func cacheStatus(r *harness.Response) string { return r.Header.Get("X-Cache-Status") }

// TestShapeThroughNginxCache: an nginx cache (Debian's package) in front
// of a worker, caching by the worker's Cache-Control and revalidating by
// etag. Clients that start at different offsets are served the same chunk
// URLs, from the cache after the first one; a chunk is served fresh (HIT),
// stale while nginx revalidates it (STALE), and revalidated with a 304
// (REVALIDATED), always with the same body; the official client reading
// through the cache, also after later writes (its offset=-1 response then
// cached from before them), ends with the table's rows.
func TestShapeThroughNginxCache(t *testing.T) {
	needClient(t)
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, note text, n int)",
		"INSERT INTO items SELECT g, 'row ' || g, g FROM generate_series(1, 30) g")
	pod := chunkPod(t, pg, map[string]string{"BATON_CACHE_MAX_AGE": "2s", "BATON_CACHE_STALE_AGE": "60s"})
	shape := url.Values{"table": {"items"}}
	c, _ := catchUp(t, pod.URL(), shape)
	start := c.Offset
	insertRows(t, pg, c, 31, 100)

	ngx := startNginx(t, strings.TrimPrefix(pod.URL(), "http://"))
	bg, fg := ngx.URL("bg"), ngx.URL("fg")

	a := catchUpFrom(t, bg, shape, c.Handle, start)
	if len(a) < 4 {
		t.Fatalf("70 rows in chunks of %s bytes came in %d responses, want more", chunkBytes, len(a))
	}
	for i, r := range a {
		if s := cacheStatus(r); s != "MISS" {
			t.Fatalf("response %d (%s), first through the cache: %q, want MISS", i, r.URL, s)
		}
	}
	// B starts inside A's first chunk: its first response is its own, the
	// others are A's, from the cache.
	lsn, _ := messages(t, a[0].Text())[0].Headers["lsn"].(string)
	b := catchUpFrom(t, bg, shape, c.Handle, lsn+"_0")
	if len(b) != len(a) {
		t.Fatalf("from %s_0: %d responses, from %s: %d; want the same chunks", lsn, len(b), start, len(a))
	}
	for i, r := range b[1:] {
		if s := cacheStatus(r); s != "HIT" && s != "STALE" && s != "UPDATING" {
			t.Fatalf("response %d from %s_0 (%s): %q; want it from the cache, as it was for the client from %s", i+1, lsn, r.URL, s, start)
		}
		if !bytes.Equal(r.Body, a[i+1].Body) {
			t.Fatalf("response %d from the cache differs from the worker's", i+1)
		}
	}

	// One chunk's URL, fresh, stale, revalidated.
	chunk := a[1]
	fetch := func(base string) *harness.Response {
		t.Helper()
		r, err := harness.Fetch(t.Context(), "GET", base+strings.TrimPrefix(chunk.URL, bg), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 200 || !bytes.Equal(r.Body, chunk.Body) || r.Header.Get("ETag") != chunk.Header.Get("ETag") {
			t.Fatalf("%s: %d %s (%s), want the chunk's body and etag %s", r.URL, r.Status, r.Header.Get("ETag"), cacheStatus(r), chunk.Header.Get("ETag"))
		}
		return r
	}
	awaitStatus := func(base, want string) {
		t.Helper()
		var seen []string
		if err := harness.AwaitEvery(20*time.Second, 100*time.Millisecond, "a "+want+" through "+base, func() (bool, error) {
			s := cacheStatus(fetch(base))
			seen = append(seen, s)
			return s == want, nil
		}); err != nil {
			t.Fatalf("%v; statuses %v", err, seen)
		}
	}
	awaitStatus(bg, "HIT")
	awaitStatus(bg, "STALE") // max-age 2 s passes, stale-while-revalidate 60 s
	awaitStatus(fg, "HIT")
	awaitStatus(fg, "REVALIDATED") // max-age passes: If-None-Match, 304

	// The official client through the cache, live, and from offset -1
	// again after later writes.
	client := startProtoScript(t, bg, "items")
	client.awaitRows(t, protoTable(t, pg, "items"), 60*time.Second)
	execSQL(t, pg, "UPDATE items SET note = 'updated' WHERE id % 7 = 0", "DELETE FROM items WHERE id % 11 = 0",
		"INSERT INTO items SELECT g, 'later ' || g, g FROM generate_series(101, 160) g")
	client.awaitRows(t, protoTable(t, pg, "items"), 60*time.Second)
	client.checkMessages(t)
	later := startProtoScript(t, bg, "items")
	later.awaitRows(t, protoTable(t, pg, "items"), 60*time.Second)
	later.checkMessages(t)
}
