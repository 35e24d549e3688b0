package harness

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// shapeRequestTimeout bounds one request of a ShapeClient, body included
// (a new shape's snapshot of a million rows included).
const shapeRequestTimeout = 2 * time.Minute

// ShapeClient follows one shape the way ElectricSQL's TypeScript client
// does: offset=-1 without a handle first, then the handle and offset of
// the previous answer; once an answer said up to date, live=true with the
// cursor of the previous answer (a long-poll). It keeps its own
// connections. It is not safe for concurrent use.
type ShapeClient struct {
	// Base is the worker's URL (http://host:port); it may be changed
	// between requests, e.g. to the next worker.
	Base string
	// Shape is the shape's definition, sent with every request: table and,
	// when set, where, params[n], columns, replica, log.
	Shape url.Values
	HTTP  *http.Client

	// Handle, Offset and Cursor are where the client is: what its next
	// request sends.
	Handle, Offset, Cursor string
	// UpToDate says the last answer ended up to date: Next's next request
	// is live.
	UpToDate bool

	// OnSend, when set, is called right before each request is sent.
	OnSend func()
}

// NewShapeClient is a client of shape at base, at offset -1.
func NewShapeClient(base string, shape url.Values) *ShapeClient {
	return &ShapeClient{Base: base, Shape: shape, Offset: "-1", HTTP: newHTTPClient(shapeRequestTimeout)}
}

// Query is the query of the client's next request, live or not.
func (c *ShapeClient) Query(live bool) url.Values {
	q := url.Values{}
	for k, v := range c.Shape {
		q[k] = v
	}
	q.Set("offset", c.Offset)
	if c.Handle != "" {
		q.Set("handle", c.Handle)
	}
	if live {
		q.Set("live", "true")
		if c.Cursor != "" {
			q.Set("cursor", c.Cursor)
		}
	}
	return q
}

// Next makes the client's next request, live once up to date, and moves
// the client on; see Request.
func (c *ShapeClient) Next(ctx context.Context) (*Response, error) {
	return c.Request(ctx, c.UpToDate)
}

// Request makes a request from where the client is, live or not, and moves
// the client on to the answer's handle, offset and cursor. An answer other
// than 200 is a *StatusError and leaves the client where it was; so is a
// 200 without a handle and offset, or with another handle than the
// client's.
func (c *ShapeClient) Request(ctx context.Context, live bool) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/v1/shape?"+c.Query(live).Encode(), nil)
	if err != nil {
		return nil, err
	}
	r, err := do(c.HTTP, req, c.OnSend)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, &StatusError{r}
	}
	h, off := r.Handle(), r.Offset()
	if h == "" || off == "" {
		return nil, fmt.Errorf("GET %s: 200 without electric-handle or electric-offset (headers %v)", r.URL, r.Header)
	}
	if c.Handle != "" && h != c.Handle {
		return nil, fmt.Errorf("GET %s: 200 with another handle %q (the request's was %q)", r.URL, h, c.Handle)
	}
	c.Handle, c.Offset = h, off
	if cur := r.Header.Get("electric-cursor"); cur != "" {
		c.Cursor = cur
	}
	c.UpToDate = r.UpToDate()
	return r, nil
}

// CatchUp reads from the shape until an answer is up to date and returns
// every answer.
func (c *ShapeClient) CatchUp(ctx context.Context) ([]*Response, error) {
	var out []*Response
	for {
		r, err := c.Request(ctx, false)
		if err != nil {
			return out, err
		}
		out = append(out, r)
		if r.UpToDate() {
			return out, nil
		}
	}
}

// Delete removes the client's shape (DELETE /v1/shape with its
// definition and handle).
func (c *ShapeClient) Delete(ctx context.Context) error {
	q := url.Values{}
	for k, v := range c.Shape {
		q[k] = v
	}
	if c.Handle != "" {
		q.Set("handle", c.Handle)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.Base+"/v1/shape?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	r, err := do(c.HTTP, req, nil)
	if err != nil {
		return err
	}
	switch r.Status {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		return nil
	}
	return &StatusError{r}
}
