package e2e_test

// The shape API from the tests' side: requests and the shape client are the
// harness's (harness.Get, harness.ShapeClient); these wrap them for a test,
// failing it when no answer comes.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// get sends GET /v1/shape?q to base (bounded by 30 s) and returns the
// answer's status, headers and body.
func get(t *testing.T, base string, q url.Values) (int, http.Header, string) {
	t.Helper()
	r := getWith(t, base, q, nil)
	return r.Status, r.Header, r.Text()
}

// getWith is get with request headers, returning the whole answer.
func getWith(t *testing.T, base string, q url.Values, header map[string]string) *harness.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := harness.Get(ctx, base, q, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// scrape returns the Prometheus text of base/metrics.
func scrape(t *testing.T, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := harness.Fetch(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Text()
}

// messages decodes a body of the shape API.
func messages(t *testing.T, body string) []harness.Message {
	t.Helper()
	msgs, err := harness.Messages([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// request makes c's next request, live or not (bounded by 60 s), and
// fails the test unless it is answered 200.
func request(t *testing.T, c *harness.ShapeClient, live bool) *harness.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	r, err := c.Request(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// catchUp reads shape from offset -1 until an answer is up to date (at
// most 100 answers) and returns the client there and the change messages
// it read.
func catchUp(t *testing.T, base string, shape url.Values) (*harness.ShapeClient, []harness.Message) {
	t.Helper()
	c := harness.NewShapeClient(base, shape)
	var changes []harness.Message
	for range 100 {
		r := request(t, c, false)
		for _, m := range messages(t, r.Text()) {
			if m.Op() != "" {
				changes = append(changes, m)
			}
		}
		if r.UpToDate() {
			return c, changes
		}
	}
	t.Fatalf("%s not up to date after 100 requests", shape.Encode())
	return nil, nil
}

// changesUntil follows c live and returns the change messages it reads
// once last returns true for one of them.
func changesUntil(t *testing.T, c *harness.ShapeClient, last func(harness.Message) bool) []harness.Message {
	t.Helper()
	var out []harness.Message
	err := harness.AwaitEvery(30*time.Second, 0, "the sentinel change of "+c.Shape.Encode(), func() (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		r, err := c.Request(ctx, true)
		if err != nil {
			return false, fmt.Errorf("live request: %w", err)
		}
		done := false
		for _, m := range messages(t, r.Text()) {
			if m.Op() == "" {
				continue
			}
			out = append(out, m)
			done = done || last(m)
		}
		return done, nil
	})
	if err != nil {
		t.Fatalf("%v; changes so far:\n%s", err, messageLines(out))
	}
	return out
}

// deleteShape sends DELETE /v1/shape?q to base and returns the status.
func deleteShape(t *testing.T, base string, q url.Values) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := harness.Fetch(ctx, http.MethodDelete, base+"/v1/shape?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Status
}

// rowClient follows one shape as a client does and applies its messages
// to the rows it holds by key.
type rowClient struct {
	*harness.ShapeClient
	rows harness.Rows
	msgs []harness.Message // the change messages applied, in order
}

func newRowClient(base string, shape url.Values) *rowClient {
	return &rowClient{ShapeClient: harness.NewShapeClient(base, shape), rows: harness.Rows{}}
}

// step makes one request (live or not) and applies its answer; it returns
// the answer's status.
func (c *rowClient) step(t *testing.T, live bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := c.Request(ctx, live)
	var se *harness.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range messages(t, r.Text()) {
		if c.rows.Apply(m) {
			c.msgs = append(c.msgs, m)
		}
	}
	return r.Status
}

// upToDate reads until a further request (which does not move the
// client) answers up to date at the client's offset.
func (c *rowClient) upToDate(t *testing.T) {
	t.Helper()
	for range 50 {
		if code := c.step(t, false); code != 200 {
			t.Fatalf("%v: %d", c.Shape, code)
		}
		if c.Offset != "-1" && c.Handle != "" {
			code, h, _ := get(t, c.Base, c.Query(false))
			if code == 200 && len(h.Values("electric-up-to-date")) > 0 && h.Get("electric-offset") == c.Offset {
				return
			}
		}
	}
	t.Fatalf("%v: not up to date", c.Shape)
}

// awaitMessages follows live until n change messages arrived in all.
func (c *rowClient) awaitMessages(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(c.msgs) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v: %d messages after 20s, want %d", c.Shape, len(c.msgs), n)
		}
		if code := c.step(t, true); code != 200 {
			t.Fatalf("%v: live request answered %d after %d messages", c.Shape, code, len(c.msgs))
		}
	}
}
