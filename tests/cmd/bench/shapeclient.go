package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// shapeClient follows one shape the way ElectricSQL's TypeScript client
// does: offset=-1 without a handle first, then handle and offset from the
// previous response; once a response said up-to-date, live=true with the
// cursor from the previous response (a long-poll).
type shapeClient struct {
	base  string // http://host:port
	table string
	http  *http.Client

	handle, offset, cursor string
	upToDate               bool // the last response ended up to date: the next request is live

	// def holds the rest of the shape's definition (where, params[n]),
	// sent with every request; nil for the whole table.
	def url.Values

	// onSend, when set, is called right before each request is sent.
	onSend func()
}

func newShapeClient(base, table string) *shapeClient {
	return &shapeClient{base: base, table: table, offset: "-1",
		http: &http.Client{Timeout: requestTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}}
}

// shapeResponse is one 200 response.
type shapeResponse struct {
	url      string
	sent     time.Time // request sent
	headers  time.Time // response headers read
	at       time.Time // body read
	upToDate bool
	offset   string
	body     []byte
}

// statusError is a response other than 200.
type statusError struct {
	method string // GET unless set
	url    string
	status int
	header http.Header
	body   string
}

func (e *statusError) Error() string {
	var hs []string
	for _, k := range []string{"Electric-Handle", "Electric-Offset", "Retry-After"} {
		if v := e.header.Get(k); v != "" {
			hs = append(hs, k+": "+v)
		}
	}
	m := e.method
	if m == "" {
		m = "GET"
	}
	return fmt.Sprintf("%s %s: %d [%s] %s", m, e.url, e.status, strings.Join(hs, ", "), strings.TrimSpace(truncate(e.body, 300)))
}

// unavailable reports whether err means the worker is not serving yet:
// connection refused (not listening) or 503 (no lease, or not streaming).
func unavailable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.status == http.StatusServiceUnavailable
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// query is the next request's query string.
func (c *shapeClient) query() url.Values {
	q := url.Values{"table": {c.table}, "offset": {c.offset}}
	for k, v := range c.def {
		q[k] = v
	}
	if c.handle != "" {
		q.Set("handle", c.handle)
	}
	if c.upToDate {
		q.Set("live", "true")
		if c.cursor != "" {
			q.Set("cursor", c.cursor)
		}
	}
	return q
}

// next makes the next request and moves the client on. A non-200 answer is
// a *statusError and leaves the client where it was.
func (c *shapeClient) next(ctx context.Context) (*shapeResponse, error) {
	u := c.base + "/v1/shape?" + c.query().Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if c.onSend != nil {
		c.onSend()
	}
	r := &shapeResponse{url: u, sent: time.Now()}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r.headers = time.Now()
	// Read the whole body, as a client must before it can use it.
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		return nil, fmt.Errorf("GET %s: reading the body: %w", u, err)
	}
	r.at = time.Now()
	r.body = buf.Bytes()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{url: u, status: resp.StatusCode, header: resp.Header, body: string(r.body)}
	}
	h, off := resp.Header.Get("electric-handle"), resp.Header.Get("electric-offset")
	if h == "" || off == "" {
		return nil, fmt.Errorf("GET %s: 200 without electric-handle or electric-offset (headers %v)", u, resp.Header)
	}
	if c.handle != "" && h != c.handle {
		return nil, fmt.Errorf("GET %s: 200 with another handle %q (the request's was %q)", u, h, c.handle)
	}
	_, r.upToDate = resp.Header["Electric-Up-To-Date"]
	r.offset = off
	c.handle, c.offset = h, off
	if cur := resp.Header.Get("electric-cursor"); cur != "" {
		c.cursor = cur
	}
	c.upToDate = r.upToDate
	return r, nil
}

// offsetTX is the transaction part (a commit LSN, 0 for the snapshot) of
// the client's offset.
func (c *shapeClient) offsetTX() (uint64, error) {
	return offsetTX(c.offset)
}

func offsetTX(off string) (uint64, error) {
	tx, _, ok := strings.Cut(off, "_")
	if !ok {
		return 0, fmt.Errorf("bad electric-offset %q", off)
	}
	return strconv.ParseUint(tx, 10, 64)
}

// message is a message of a shape response, with only what the benchmarks
// look at.
type message struct {
	Value struct {
		ID *string `json:"id"`
	} `json:"value"`
	Headers struct {
		Operation string `json:"operation"`
		Control   string `json:"control"`
	} `json:"headers"`
}

// insertedIDs returns the ids of the insert messages of a body.
func insertedIDs(body []byte) ([]int64, error) {
	var msgs []message
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("body is not a JSON array of messages: %w (%s)", err, truncate(string(body), 200))
	}
	var ids []int64
	for _, m := range msgs {
		if m.Headers.Operation != "insert" {
			continue
		}
		if m.Value.ID == nil {
			return nil, fmt.Errorf("insert message without an id value (%s)", truncate(string(body), 200))
		}
		id, err := strconv.ParseInt(*m.Value.ID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("insert message with id %q", *m.Value.ID)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// catchUp reads from the shape until it is up to date, and returns every
// response.
func (c *shapeClient) catchUp(ctx context.Context) ([]*shapeResponse, error) {
	var out []*shapeResponse
	for {
		r, err := c.next(ctx)
		if err != nil {
			return out, err
		}
		out = append(out, r)
		if r.upToDate {
			return out, nil
		}
	}
}

// deleteShape removes the client's shape (DELETE /v1/shape).
func (c *shapeClient) deleteShape(ctx context.Context) error {
	u := c.base + "/v1/shape?" + url.Values{"table": {c.table}, "handle": {c.handle}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return &statusError{method: "DELETE", url: u, status: resp.StatusCode, header: resp.Header, body: string(b)}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
