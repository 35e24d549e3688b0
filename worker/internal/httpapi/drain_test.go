package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/httpapi"
)

// rawConn is a client connection that sends requests by hand, so the test
// knows which connection each goes on.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(t *testing.T, path string) {
	t.Helper()
	if _, err := io.WriteString(rc.c, "GET "+path+" HTTP/1.1\r\nHost: worker\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
}

func (rc *rawConn) read(t *testing.T) (*http.Response, string) {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection.
func (rc *rawConn) closed(t *testing.T) bool {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := rc.br.ReadByte()
	return err == io.EOF
}

// Once draining, every response closes its connection — one already being
// served (a long-poll, or a stream that asked for keep-alive) and one of a
// request sent on a connection that was idle when the drain began — and
// is answered in full: nothing is dropped, and Shutdown then finds no
// connection left.
func TestDrainClosesAfterAnswer(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /poll", func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Connection", "keep-alive") // as server-sent events do
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "poll")
	})
	mux.HandleFunc("GET /now", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "now") })
	d := httpapi.NewDrain(mux)
	srv := httptest.NewServer(d)
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	polling, idle := dial(t, addr), dial(t, addr)
	polling.send(t, "/poll")
	idle.send(t, "/now")
	if resp, body := idle.read(t); resp.StatusCode != 200 || body != "now" || resp.Close {
		t.Fatalf("before the drain: %d %q close=%v; want 200 now, kept alive", resp.StatusCode, body, resp.Close)
	}

	d.Start()
	if !d.Draining() {
		t.Fatal("Draining() = false after Start")
	}
	idle.send(t, "/now")
	if resp, body := idle.read(t); resp.StatusCode != 200 || body != "now" || !resp.Close {
		t.Fatalf("on a kept-alive connection during the drain: %d %q close=%v; want 200 now with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if !idle.closed(t) {
		t.Error("the connection stayed open after a response with Connection: close")
	}
	close(release)
	if resp, body := polling.read(t); resp.StatusCode != 200 || body != "poll" || !resp.Close {
		t.Fatalf("the poll in flight when the drain began: %d %q close=%v; want 200 poll with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if !polling.closed(t) {
		t.Error("the poll's connection stayed open")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after the drain: %v", err)
	}
}
