package httpapi_test

import (
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/storage"
)

// revoked is a lease that has ended (Done closed) while its deadline has
// not passed yet: the moment between a Revoked and serving being switched
// off.
type revoked struct{ done chan struct{} }

func (revoked) Valid() bool             { return true }
func (l revoked) Done() <-chan struct{} { return l.done }

// A request that fails because the lease ended under it is not a 500: it
// waits until this worker stops serving the ended lease's registry, then
// goes where the stream is served (here: forwarded to the active worker).
// Before, the closed registry's error was answered 500 (seen as relayed
// 500s in make faults).
func TestLeaseEndingIsNotAnInternalError(t *testing.T) {
	s, l := holding(t, 0, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-From", "active")
		w.WriteHeader(http.StatusOK)
	})
	s.api.MaxHold = 10e9
	dir := filepath.Join(t.TempDir(), "stream")
	stream, err := storage.Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	reg, err := shapes.Open(shapes.Options{Dir: dir, Epoch: 1, Stream: stream, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	lease := revoked{done: make(chan struct{})}
	s.api.Serve(reg, lease)
	// The lease ends: the registry is closed before serving is switched
	// off, so a new shape's creation fails with storage.ErrClosed.
	close(lease.done)
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	res := get(s.url+"/v1/shape?table=items&offset=-1", nil)
	l.await(t, "shape request held until the ended lease stops being served", 1, res)
	s.api.Serve(nil, nil)
	s.api.SetActive(s.active.URL)
	r := <-res
	if r.err != nil || r.code != http.StatusOK || r.hdr.Get("X-From") != "active" {
		t.Fatalf("got %d %v %q (from %q); want the active worker's 200", r.code, r.err, r.body, r.hdr.Get("X-From"))
	}
}
