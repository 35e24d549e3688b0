package harness_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// fakeShapeAPI answers a shape of one row: offset -1 with the row (not up
// to date), then up to date; live requests get one update of the row and
// a new cursor. It records every query.
type fakeShapeAPI struct {
	mu      sync.Mutex
	queries []url.Values
}

func (f *fakeShapeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, q)
	n := len(f.queries)
	f.mu.Unlock()
	if q.Get("handle") == "stale" {
		w.Header().Set("electric-handle", "h1")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `[{"headers":{"control":"must-refetch"}}]`)
		return
	}
	w.Header().Set("electric-handle", "h1")
	switch {
	case q.Get("offset") == "-1":
		w.Header().Set("electric-offset", "0_0")
		fmt.Fprint(w, `[{"key":"k1","value":{"id":"1","note":"a"},"headers":{"operation":"insert"}}]`)
	case q.Get("live") == "true" && r.Header.Get("Accept") == "text/event-stream":
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("electric-offset", q.Get("offset"))
		fmt.Fprint(w, ": keep-alive\n\ndata: {\"key\":\"k1\",\"value\":{\"id\":\"1\"},\"headers\":{\"operation\":\"delete\"}}\n\n")
		fmt.Fprint(w, "data: {\"headers\":{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"9\"}}\n\n")
	case q.Get("live") == "true":
		w.Header().Set("electric-offset", "5_2")
		w.Header().Set("electric-cursor", fmt.Sprint(n))
		w.Header().Set("electric-up-to-date", "")
		fmt.Fprint(w, `[{"key":"k1","value":{"note":"b"},"headers":{"operation":"update"}},{"headers":{"control":"up-to-date"}}]`)
	default:
		w.Header().Set("electric-offset", "0_inf")
		w.Header().Set("electric-up-to-date", "")
		fmt.Fprint(w, `[{"headers":{"control":"up-to-date"}}]`)
	}
}

func TestShapeClientFollows(t *testing.T) {
	api := &fakeShapeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx := context.Background()
	c := harness.NewShapeClient(srv.URL, url.Values{"table": {"items"}, "where": {"id > 0"}})
	sent := 0
	c.OnSend = func() { sent++ }
	rows := harness.Rows{}
	apply := func(r *harness.Response) {
		t.Helper()
		msgs, err := r.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			rows.Apply(m)
		}
	}
	rs, err := c.CatchUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || c.Handle != "h1" || c.Offset != "0_inf" || !c.UpToDate {
		t.Fatalf("after CatchUp: %d answers, handle %q offset %q up to date %v", len(rs), c.Handle, c.Offset, c.UpToDate)
	}
	for _, r := range rs {
		apply(r)
	}
	for range 2 {
		r, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		apply(r)
	}
	if !reflect.DeepEqual(rows, harness.Rows{"k1": {"id": "1", "note": "b"}}) {
		t.Fatalf("rows %v", rows)
	}
	want := []url.Values{
		{"table": {"items"}, "where": {"id > 0"}, "offset": {"-1"}},
		{"table": {"items"}, "where": {"id > 0"}, "offset": {"0_0"}, "handle": {"h1"}},
		{"table": {"items"}, "where": {"id > 0"}, "offset": {"0_inf"}, "handle": {"h1"}, "live": {"true"}},
		{"table": {"items"}, "where": {"id > 0"}, "offset": {"5_2"}, "handle": {"h1"}, "live": {"true"}, "cursor": {"3"}},
	}
	if !reflect.DeepEqual(api.queries, want) || sent != 4 {
		t.Fatalf("queries (%d sent):\n%v\nwant\n%v", sent, api.queries, want)
	}

	// A stale handle: a *StatusError, and the client stays where it was.
	c.Handle = "stale"
	_, err = c.Next(ctx)
	if se, ok := err.(*harness.StatusError); !ok || se.Status != http.StatusConflict || c.Offset != "5_2" {
		t.Fatalf("stale handle: %v (offset %q)", err, c.Offset)
	}
	if harness.Unavailable(err) {
		t.Fatal("a 409 is not unavailable")
	}
}

func TestOpenSSE(t *testing.T) {
	srv := httptest.NewServer(&fakeShapeAPI{})
	defer srv.Close()
	s, err := harness.OpenSSE(context.Background(), srv.URL, url.Values{"table": {"items"}, "handle": {"h1"}, "offset": {"3_1"}, "live": {"true"}, "live_sse": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Status != 200 || s.Header.Get("electric-offset") != "3_1" {
		t.Fatalf("SSE answer %d %v", s.Status, s.Header)
	}
	var got []string
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case m, ok := <-s.Events():
			if !ok {
				done = true
				break
			}
			got = append(got, m.Op()+m.Control())
		case <-timeout:
			t.Fatalf("stream not ended; events %v", got)
		}
	}
	if s.Err() != nil || !reflect.DeepEqual(got, []string{"delete", "up-to-date"}) {
		t.Fatalf("events %v, err %v", got, s.Err())
	}
}

func TestParseOffset(t *testing.T) {
	for _, c := range []struct {
		in   string
		want harness.Offset
		ok   bool
	}{
		{"0_0", harness.Offset{}, true},
		{"123_4", harness.Offset{TX: 123, Op: 4}, true},
		{"7_inf", harness.Offset{TX: 7, Op: ^uint64(0)}, true},
		{"-1", harness.Offset{}, false},
		{"now", harness.Offset{}, false},
		{"1_x", harness.Offset{}, false},
	} {
		got, err := harness.ParseOffset(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseOffset(%q) = %v, %v", c.in, got, err)
		}
	}
	if !(harness.Offset{TX: 1, Op: 9}).Less(harness.Offset{TX: 2}) || (harness.Offset{TX: 2}).Less(harness.Offset{TX: 2}) {
		t.Error("Less")
	}
}
