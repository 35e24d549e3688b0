package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// Subset snapshots through the official client (tests/ts/subset.mjs):
// fetchSnapshot in GET and POST form with where, params, order by, limit
// and offset gives PostgreSQL's rows; bad subsets are 400 naming the
// field under errors.subset; a Shape in log=changes_only mode from
// offset=now that loads two subsets with requestSnapshot while updates
// commit in parallel ends with every row of both subsets at PostgreSQL's
// value, having applied each row's changes once and in order (no gap, no
// repeat); after its shape is deleted (409), the Shape loads the subsets
// again and the same holds.
func TestSubsetSnapshots(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg, "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)",
		"INSERT INTO items SELECT i, i % 4, 0 FROM generate_series(1, 200) i")
	a := newActivePod(t, pg, "a", t.TempDir())
	base := a.URL()
	c := startSubsetClient(t, base, "items")

	// fetchSnapshot, GET and POST, both log modes.
	for _, f := range []struct {
		log, method string
		subset      map[string]any
		sql         string
	}{
		{"full", "GET", map[string]any{"where": "grp = $1", "params": map[string]string{"1": "2"}, "orderBy": "id DESC", "limit": 5},
			"SELECT id FROM items WHERE grp = 2 ORDER BY id DESC LIMIT 5"},
		{"changes_only", "POST", map[string]any{"where": "grp = $1 AND id > $2", "params": map[string]string{"1": "3", "2": "100"}, "orderBy": "id", "limit": 4, "offset": 2},
			"SELECT id FROM items WHERE grp = 3 AND id > 100 ORDER BY id LIMIT 4 OFFSET 2"},
		{"changes_only", "GET", map[string]any{"where": "id <= 3"}, "SELECT id FROM items WHERE id <= 3"},
	} {
		cmd := map[string]any{"op": "fetch", "log": f.log, "method": f.method}
		for k, v := range f.subset {
			cmd[k] = v
		}
		var got struct {
			Metadata struct {
				Xmin, Xmax  json.Number
				XipList     []json.Number `json:"xip_list"`
				DatabaseLSN string        `json:"database_lsn"`
				Mark        *int64        `json:"snapshot_mark"`
			}
			Data []struct {
				Key     string
				Value   map[string]any
				Headers map[string]any
			}
		}
		c.do(t, cmd, &got)
		var ids []int
		for _, d := range got.Data {
			id, _ := strconv.Atoi(fmt.Sprint(d.Value["id"]))
			ids = append(ids, id)
			if d.Headers["operation"] != "insert" || d.Headers["snapshot_mark"] == nil {
				t.Errorf("%s %s: row headers %v; want an insert with snapshot_mark", f.method, f.log, d.Headers)
			}
		}
		want := queryInts(t, pg, f.sql)
		if !strings.Contains(f.sql, "ORDER BY") {
			slices.Sort(ids)
		}
		if !slices.Equal(ids, want) || got.Metadata.Mark == nil || got.Metadata.DatabaseLSN == "" || got.Metadata.Xmax == "" {
			t.Errorf("fetchSnapshot %s log=%s %v: ids %v metadata %+v; want ids %v and the snapshot's metadata", f.method, f.log, f.subset, ids, got.Metadata, want)
		}
	}

	// Bad subsets: 400 naming the field under errors.subset.
	for _, b := range []struct {
		name, field, contains string
		q                     url.Values
	}{
		{"limit without order by", "order_by", "order_by is required", url.Values{"subset__limit": {"3"}}},
		{"bad limit", "limit", "greater than 0", url.Values{"subset__limit": {"0"}, "subset__order_by": {"id"}}},
		{"syntax", "where", "At location 22: syntax error", url.Values{"subset__where": {"id = x y"}}},
		{"unknown column", "where", "nope", url.Values{"subset__where": {"nope = 1"}}},
		{"order by", "order_by", "not deterministic", url.Values{"subset__order_by": {"random()"}}},
		{"bad param", "params", "params[1]", url.Values{"subset__where": {"id = $1"}, "subset__params": {`{"1":"x"}`}}},
		{"unknown", "foo", "not a subset parameter", url.Values{"subset__foo": {"1"}}},
	} {
		b.q.Set("table", "items")
		b.q.Set("offset", "-1")
		r := fetch(t, http.MethodGet, base+"/v1/shape?"+b.q.Encode(), "")
		var e struct {
			Errors map[string]map[string][]string
		}
		_ = json.Unmarshal(r.Body, &e)
		if msgs := e.Errors["subset"][b.field]; r.Status != 400 || len(msgs) != 1 || !strings.Contains(msgs[0], b.contains) {
			t.Errorf("%s: %d %s; want 400 with errors.subset.%s saying %q", b.name, r.Status, r.Body, b.field, b.contains)
		}
	}
	if r := fetch(t, http.MethodPost, base+"/v1/shape?table=items&offset=-1", `{"where":"id = $1","params":{"1":5}}`); r.Status != 200 ||
		r.Header.Get("electric-snapshot") != "true" || !strings.Contains(r.Text(), `"id":"5"`) {
		t.Errorf("POST with a numeric param: %d %v %s; want the row of id 5", r.Status, r.Header, r.Body)
	}

	// requestSnapshot merged with the live log while updates commit.
	subsets := []map[string]any{
		{"op": "snapshot", "where": "grp = $1", "params": map[string]string{"1": "1"}},
		{"op": "snapshot", "method": "POST", "where": "grp = 3 AND id > $1", "params": map[string]string{"1": "20"}, "orderBy": "id", "limit": 30},
	}
	sqls := []string{"SELECT id FROM items WHERE grp = 1", "SELECT id FROM items WHERE grp = 3 AND id > 20 ORDER BY id LIMIT 30"}
	stop := updateInParallel(t, pg, 200)
	var handle struct{ Handle string }
	for _, s := range subsets {
		c.do(t, s, &handle)
	}
	stop()
	c.check(t, pg, sqls, "after requestSnapshot")

	// The shape rotated: the Shape starts over and loads the subsets again.
	if code := deleteShape(t, base, url.Values{"handle": {handle.Handle}}); code != 202 {
		t.Fatalf("DELETE of the shape: %d; want 202", code)
	}
	stop = updateInParallel(t, pg, 200)
	stop()
	if h := c.check(t, pg, sqls, "after the shape was deleted"); h == handle.Handle {
		t.Errorf("the client still follows the deleted shape %s; want a new handle (409)", h)
	}

	// fetchSnapshot at the deleted shape's handle: 409, then asked again
	// at the new one.
	var again struct {
		Data   []struct{ Value map[string]any }
		Handle string
	}
	c.do(t, map[string]any{"op": "fetch", "log": "changes_only", "atHandle": handle.Handle, "atOffset": "1_0", "where": "id = $1", "params": map[string]string{"1": "7"}}, &again)
	if len(again.Data) != 1 || fmt.Sprint(again.Data[0].Value["id"]) != "7" || again.Handle == handle.Handle {
		t.Errorf("fetchSnapshot at a deleted shape's handle: %+v; want row 7 from the new shape", again)
	}
}

// subsetClient is a running tests/ts/subset.mjs.
type subsetClient struct {
	cmd    *exec.Cmd
	in     *json.Encoder
	out    *bufio.Scanner
	stderr strings.Builder
	mu     sync.Mutex
}

func startSubsetClient(t *testing.T, base, table string) *subsetClient {
	t.Helper()
	needClient(t)
	c := &subsetClient{cmd: exec.Command("node", "subset.mjs", base, table)}
	c.cmd.Dir = tsDir
	c.cmd.Stderr = &syncWriter{w: &c.stderr, mu: &c.mu}
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.in, c.out = json.NewEncoder(stdin), bufio.NewScanner(out)
	c.out.Buffer(make([]byte, 1<<20), 64<<20)
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		if t.Failed() {
			c.mu.Lock()
			t.Logf("--- subset.mjs stderr ---\n%s", c.stderr.String())
			c.mu.Unlock()
		}
	})
	return c
}

// do sends one command and decodes its answer into v; an answer with an
// error fails the test. The client bounds each command (await) or ends
// with an error; the test's deadline bounds the rest.
func (c *subsetClient) do(t *testing.T, cmd map[string]any, v any) {
	t.Helper()
	if err := c.in.Encode(cmd); err != nil {
		t.Fatal(err)
	}
	if !c.out.Scan() {
		t.Fatalf("subset.mjs exited during %v: %v", cmd, c.out.Err())
	}
	var e struct{ Error *string }
	if json.Unmarshal(c.out.Bytes(), &e); e.Error != nil {
		t.Fatalf("subset.mjs %v: %s", cmd, c.out.Bytes())
	}
	if err := json.Unmarshal(c.out.Bytes(), v); err != nil {
		t.Fatalf("subset.mjs %v: %q: %v", cmd, c.out.Bytes(), err)
	}
}

// check waits until the client's rows are exactly those of the subsets
// (sqls select their ids) at PostgreSQL's values, and checks that each
// row's values came one after the other: every update adds 1 to v, so a
// lost change is a gap and a change applied twice a repeat. It returns
// the handle the client follows.
func (c *subsetClient) check(t *testing.T, pg *pgtest.Cluster, sqls []string, when string) string {
	t.Helper()
	conn := connect(t, pg)
	want := map[string]int{}
	for _, q := range sqls {
		ids := queryInts(t, pg, q)
		for _, id := range ids {
			var v int
			if err := conn.QueryRow(context.Background(), "SELECT v FROM items WHERE id = $1", id).Scan(&v); err != nil {
				t.Fatal(err)
			}
			want[strconv.Itoa(id)] = v
		}
	}
	var got struct {
		OK     bool
		Rows   map[string]int
		Seq    map[string][]int
		Handle string
	}
	c.do(t, map[string]any{"op": "await", "values": want, "ms": 30000}, &got)
	if !got.OK {
		t.Fatalf("%s: the client holds %v; want %v", when, got.Rows, want)
	}
	for id, s := range got.Seq {
		for i := 1; i < len(s); i++ {
			if s[i] != s[i-1]+1 {
				t.Errorf("%s: row %s got v %v; want each change once, in order", when, id, s)
				break
			}
		}
	}
	return got.Handle
}

// updateInParallel starts two writers adding 1 to v of random rows, one
// row per transaction, until the returned stop is called, which waits for
// n updates to be committed (30 s at most) and for the writers to end.
func updateInParallel(t *testing.T, pg *pgtest.Cluster, n int64) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int64
	reached := make(chan struct{})
	var reachedOnce sync.Once
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		conn := connect(t, pg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := conn.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id = $1", 1+rand.IntN(200)); err != nil {
					if ctx.Err() == nil {
						t.Errorf("update: %v", err)
					}
					return
				}
				if done.Add(1) >= n {
					reachedOnce.Do(func() { close(reached) })
				}
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			select {
			case <-reached:
			case <-time.After(30 * time.Second):
				t.Errorf("only %d of %d updates committed in 30 s", done.Load(), n)
			}
			cancel()
			wg.Wait()
		})
	}
}

// queryInts runs q, which selects one int column.
func queryInts(t *testing.T, pg *pgtest.Cluster, q string) []int {
	t.Helper()
	rows, err := connect(t, pg).Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fetch sends one request (body as JSON when not empty).
func fetch(t *testing.T, method, u, body string) *harness.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return &harness.Response{Method: method, URL: u, Status: resp.StatusCode, Header: resp.Header, Body: []byte(b.String())}
}
