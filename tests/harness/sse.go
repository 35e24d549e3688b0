package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// ErrBadEvent is an event whose data is not one JSON message.
var ErrBadEvent = errors.New("SSE data is not one JSON message")

// SSE is an open live request answered with server-sent events
// (live_sse=true): its status and headers, and each event's message as it
// arrives.
type SSE struct {
	URL    string
	Status int
	Header http.Header
	// Body is the start (up to 1000 bytes) of an answer that is not an
	// event stream; no events come then.
	Body []byte

	events chan Message
	err    error // set before events is closed
	body   io.ReadCloser
	stop   chan struct{}
	once   sync.Once
}

// OpenSSE sends GET <base>/v1/shape?<q> asking for an event stream
// (Accept: text/event-stream; q holds live=true and live_sse=true) and
// returns once the status and headers are read. ctx bounds the whole
// stream. Close it when done.
func OpenSSE(ctx context.Context, base string, q url.Values) (*SSE, error) {
	u := base + "/v1/shape?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := fetchClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	s := &SSE{URL: u, Status: resp.StatusCode, Header: resp.Header, events: make(chan Message, 100), body: resp.Body, stop: make(chan struct{})}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		s.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 1000))
		close(s.events)
		return s, nil
	}
	go s.read()
	return s, nil
}

// read turns every data line into a message; blank separators, comments
// (": keep-alive") and event or id fields are skipped.
func (s *SSE) read() {
	defer close(s.events)
	sc := bufio.NewScanner(s.body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var m Message
		if err := json.Unmarshal([]byte(strings.TrimSpace(data)), &m); err != nil {
			s.err = fmt.Errorf("%w (%v): %q", ErrBadEvent, err, data)
			return
		}
		select {
		case s.events <- m:
		case <-s.stop:
			return
		}
	}
	s.err = sc.Err()
}

// Events delivers each event's message; it is closed when the stream ends
// (then Err says why) or is closed.
func (s *SSE) Events() <-chan Message { return s.events }

// Err is why the stream ended: nil at its end, the read error, or an
// ErrBadEvent. Valid once Events is closed.
func (s *SSE) Err() error { return s.err }

// Close ends the request.
func (s *SSE) Close() {
	s.once.Do(func() {
		close(s.stop)
		s.body.Close()
	})
}
