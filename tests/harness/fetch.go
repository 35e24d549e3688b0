package harness

import (
	"bytes"
	"context"
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

// Response is one answer of the shape API, read in full, with the times a
// benchmark measures from.
type Response struct {
	Method string
	URL    string
	Status int
	Header http.Header
	Body   []byte

	SentAt   time.Time // the request was sent
	HeaderAt time.Time // the status line and headers were read
	BodyAt   time.Time // the whole body was read
}

// Handle is the electric-handle header.
func (r *Response) Handle() string { return r.Header.Get("electric-handle") }

// Offset is the electric-offset header.
func (r *Response) Offset() string { return r.Header.Get("electric-offset") }

// UpToDate reports whether the electric-up-to-date header is present.
func (r *Response) UpToDate() bool { return len(r.Header.Values("electric-up-to-date")) > 0 }

// Text is the body as a string.
func (r *Response) Text() string { return string(r.Body) }

// Messages decodes the body, a JSON array of messages.
func (r *Response) Messages() ([]Message, error) { return Messages(r.Body) }

// StatusError is an answer other than the one a request expected.
type StatusError struct{ *Response }

func (e *StatusError) Error() string {
	var hs []string
	for _, k := range []string{"Electric-Handle", "Electric-Offset", "Retry-After"} {
		if v := e.Header.Get(k); v != "" {
			hs = append(hs, k+": "+v)
		}
	}
	return fmt.Sprintf("%s %s: %d [%s] %s", e.Method, e.URL, e.Status, strings.Join(hs, ", "),
		strings.TrimSpace(truncate(string(e.Body), 300)))
}

// Unavailable reports whether err means the worker does not serve yet:
// the connection was refused (nothing listens) or the answer was 503 (no
// lease, or not streaming).
func Unavailable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusServiceUnavailable
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// newHTTPClient is a client with its own connections, as one browser tab
// of a shape client has.
func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
}

// fetchClient serves Fetch; requests are bounded by their context.
var fetchClient = newHTTPClient(0)

// Fetch sends one request and reads the whole answer, whatever its status;
// an error means no complete answer arrived. ctx bounds the request, body
// included, and may carry an httptrace.ClientTrace. Safe for concurrent
// use.
func Fetch(ctx context.Context, method, rawURL string, header map[string]string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(fetchClient, req, nil)
}

// Get is Fetch of GET <base>/v1/shape?<q>.
func Get(ctx context.Context, base string, q url.Values, header map[string]string) (*Response, error) {
	return Fetch(ctx, http.MethodGet, base+"/v1/shape?"+q.Encode(), header)
}

// do sends req with c and reads the whole answer; onSend, when set, runs
// right before the request is sent.
func do(c *http.Client, req *http.Request, onSend func()) (*Response, error) {
	if onSend != nil {
		onSend()
	}
	r := &Response{Method: req.Method, URL: req.URL.String(), SentAt: time.Now()}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	r.HeaderAt = time.Now()
	r.Status, r.Header = resp.StatusCode, resp.Header
	// Read the whole body, as a client must before it can use it.
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		return nil, fmt.Errorf("%s %s: reading the body: %w", r.Method, r.URL, err)
	}
	r.BodyAt = time.Now()
	r.Body = buf.Bytes()
	return r, nil
}

// Offset is a position in a shape log, electric-offset's <tx>_<op>: the
// transaction (a commit LSN, 0 for the snapshot) and the operation in it.
type Offset struct{ TX, Op uint64 }

// ParseOffset parses an electric-offset; op "inf" (the end of a
// transaction) is the largest op.
func ParseOffset(s string) (Offset, error) {
	tx, op, ok := strings.Cut(s, "_")
	if !ok {
		return Offset{}, fmt.Errorf("electric-offset %q is not <tx>_<op>", s)
	}
	a, err := strconv.ParseUint(tx, 10, 64)
	if err != nil {
		return Offset{}, fmt.Errorf("electric-offset %q is not <tx>_<op>", s)
	}
	if op == "inf" {
		return Offset{a, ^uint64(0)}, nil
	}
	b, err := strconv.ParseUint(op, 10, 64)
	if err != nil {
		return Offset{}, fmt.Errorf("electric-offset %q is not <tx>_<op>", s)
	}
	return Offset{a, b}, nil
}

// Less reports whether o comes before p in the log.
func (o Offset) Less(p Offset) bool { return o.TX < p.TX || o.TX == p.TX && o.Op < p.Op }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
