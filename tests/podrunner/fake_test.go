package podrunner_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/batonhq/baton/tests/podrunner"
)

// The tests' images, "fake-broker" and "fake-worker": this test binary run
// again with FAKE_IMAGE=1 (their image ENV); they differ in the address
// they listen on by default (LISTEN_GRPC=:9000, LISTEN_HTTP=:8080). What it does is set by its environment:
//
//	NAME             names it in the events file
//	EVENTS           a file it appends "<NAME> <event> <unix ns>" lines to:
//	                 start, serving, sigterm, exit; and "env K=V" for DUMP
//	DUMP             variables to write to the events file
//	LISTEN_GRPC      grpc.health.v1: "" and "liveness" SERVING after
//	                 SERVE_AFTER, "readiness" SERVING unless <EVENTS>.<NAME>.unready exists
//	LISTEN_HTTP      GET /healthz: 200, or 500 while <EVENTS>.<NAME>.sick
//	                 exists; GET /hello: HOSTNAME; GET /hang: no answer
//	SERVE_AFTER      a duration
//	TERM_DELAY       after SIGTERM, wait this long before exiting; "never"
//	                 ignores SIGTERM. Then the HTTP server stops gracefully:
//	                 it answers the requests it got (up to a second)
func TestMain(m *testing.M) {
	if os.Getenv("FAKE_IMAGE") == "1" {
		os.Exit(fakeMain())
	}
	goleak.VerifyTestMain(m)
}

func images() map[string]podrunner.Image {
	return map[string]podrunner.Image{
		"fake-broker": {
			Entrypoint: []string{os.Args[0]},
			Env:        map[string]string{"FAKE_IMAGE": "1"},
			Addresses:  map[string]string{"LISTEN_GRPC": ":9000"},
		},
		"fake-worker": {
			Entrypoint: []string{os.Args[0]},
			Env:        map[string]string{"FAKE_IMAGE": "1"},
			Addresses:  map[string]string{"LISTEN_HTTP": ":8080"},
		},
	}
}

func fakeMain() int {
	name, events := os.Getenv("NAME"), os.Getenv("EVENTS")
	var mu sync.Mutex
	note := func(format string, args ...any) {
		if events == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(events, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "%s %s %d\n", name, fmt.Sprintf(format, args...), time.Now().UnixNano())
	}
	note("start")
	defer note("exit")
	for _, k := range strings.Fields(os.Getenv("DUMP")) {
		note("env %s=%s", k, os.Getenv(k))
	}
	flag := func(suffix string) bool {
		_, err := os.Stat(events + "." + name + "." + suffix)
		return err == nil
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	serveAfter, _ := time.ParseDuration(os.Getenv("SERVE_AFTER"))
	if addr := os.Getenv("LISTEN_GRPC"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		hs.SetServingStatus("liveness", healthpb.HealthCheckResponse_NOT_SERVING)
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, readinessFromFlag{hs, func() bool { return !flag("unready") }})
		go s.Serve(ln)
		go func() {
			time.Sleep(serveAfter)
			hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			hs.SetServingStatus("liveness", healthpb.HealthCheckResponse_SERVING)
			note("serving")
		}()
	}
	var httpSrv *http.Server
	if addr := os.Getenv("LISTEN_HTTP"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			if flag("sick") {
				http.Error(w, "sick", http.StatusInternalServerError)
			}
		})
		mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, os.Getenv("HOSTNAME")) })
		mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		httpSrv = &http.Server{Handler: mux}
		go httpSrv.Serve(ln)
	}
	<-term
	note("sigterm")
	switch d := os.Getenv("TERM_DELAY"); d {
	case "never":
		select {}
	case "":
	default:
		delay, _ := time.ParseDuration(d)
		time.Sleep(delay)
	}
	if httpSrv != nil {
		// As a well-behaved server stops: what the Service sent before
		// the pod was terminating is accepted and answered (/hang is
		// left unanswered after a second).
		time.Sleep(100 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(ctx)
		cancel()
	}
	return 0
}

// readinessFromFlag answers "readiness" from a flag, the rest from the
// health server.
type readinessFromFlag struct {
	*health.Server
	ready func() bool
}

func (r readinessFromFlag) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "readiness" {
		if r.ready() {
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return r.Server.Check(ctx, req)
}
