package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A 500 tells the client nothing of the error but a request id; the log
// has the error under that id.
func TestInternalErrorHidesTheError(t *testing.T) {
	var logs bytes.Buffer
	s := New(slog.New(slog.NewJSONHandler(&logs, nil)))
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/v1/shape?table=items&offset=-1&secret=hunter3", nil)
	const inside = `connect to 10.1.2.3:5432 as "baton" (password hunter2): connection refused`
	s.internalError(w, r, "shape request failed", errors.New(inside))

	var body struct {
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusInternalServerError {
		t.Fatalf("%d %q: %v; want 500 with a JSON body", w.Code, w.Body, err)
	}
	for _, leak := range []string{"10.1.2.3", "hunter2", "refused", "hunter3"} {
		if strings.Contains(w.Body.String(), leak) {
			t.Errorf("the 500 body %q gives %q away", w.Body, leak)
		}
	}
	id := w.Header().Get("X-Request-Id")
	if len(id) != 20 || body.RequestID != id || !strings.Contains(body.Message, id) || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v, body %+v; want the same request id in X-Request-Id, request_id and the message, not cached", w.Header(), body)
	}
	var logged struct {
		Msg       string `json:"msg"`
		Err       string `json:"err"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(logs.Bytes(), &logged); err != nil || logged.Err != inside || logged.RequestID != id {
		t.Errorf("logged %q; want the error under request_id %s", logs.String(), id)
	}
	if strings.Contains(logs.String(), "hunter3") || !strings.Contains(logs.String(), "secret=REDACTED") {
		t.Errorf("logged %q; want the query's secret redacted", logs.String())
	}
}
