package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/batonhq/baton/worker/internal/httpapi"
)

// TestMetricsInstrument: requests are counted by route, method and code,
// timed by mode, and live ones counted while they are answered.
func TestMetricsInstrument(t *testing.T) {
	m := httpapi.NewMetrics("s", "/v1/shape", "/v1/health")
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/shape", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("live") == "true" {
			entered <- struct{}{}
			<-release
		}
		if r.URL.Query().Get("offset") == "" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		w.Write([]byte("[]"))
	})
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	srv := httptest.NewServer(m.Instrument(mux))
	defer srv.Close()
	get := func(path string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get("/v1/shape?offset=-1&table=t")
	get("/v1/shape?table=t")
	get("/v1/health")
	get("/nowhere")

	done := make(chan struct{})
	go func() {
		defer close(done)
		get("/v1/shape?offset=0_0&handle=h&live=true&live_sse=true")
	}()
	<-entered
	if n := testutil.ToFloat64(m.Live.WithLabelValues(httpapi.ModeSSE)); n != 1 {
		t.Errorf("live_connections{mode=sse} = %v during an SSE request, want 1", n)
	}
	if n := testutil.ToFloat64(m.Live.WithLabelValues(httpapi.ModeLongPoll)); n != 0 {
		t.Errorf("live_connections{mode=long_poll} = %v, want 0", n)
	}
	close(release)
	<-done
	if n := testutil.ToFloat64(m.Live.WithLabelValues(httpapi.ModeSSE)); n != 0 {
		t.Errorf("live_connections{mode=sse} = %v after the SSE request, want 0", n)
	}

	for _, c := range []struct {
		route, method, code string
		want                float64
	}{
		{"/v1/shape", "GET", "200", 2},
		{"/v1/shape", "GET", "400", 1},
		{"/v1/health", "GET", "202", 1},
		{"other", "GET", "404", 1},
	} {
		if got := testutil.ToFloat64(m.Requests.WithLabelValues(c.route, c.method, c.code)); got != c.want {
			t.Errorf("http_requests_total{route=%q,method=%q,code=%q} = %v, want %v", c.route, c.method, c.code, got, c.want)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	if n := testutil.CollectAndCount(m.Duration); n != 4 { // shape request, shape sse, health request, other request
		t.Errorf("%d duration series, want 4", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
