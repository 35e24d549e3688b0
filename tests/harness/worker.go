package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// WorkerOptions start a worker process.
type WorkerOptions struct {
	Bin         string
	DatabaseURL string
	BrokerAddr  string
	StorageDir  string
	StreamID    string
	Settings    map[string]string
	// HTTPAddr, when set, is the host:port of the HTTP API instead of a
	// free port (a container restarted in its pod keeps it).
	HTTPAddr string
	Name     string
	Tee      *os.File
	// Advertise sets BATON_ADVERTISE_URL to the worker's own HTTP address
	// (http://127.0.0.1:<port>), as a pod advertises http://$(POD_IP):3000.
	Advertise bool
}

// Worker is a running worker process.
type Worker struct {
	*Process
	// HTTPAddr is where a client on this machine reaches the HTTP API.
	HTTPAddr string
}

// StartWorker starts a worker with its HTTP API on a free port.
func StartWorker(o WorkerOptions) (*Worker, error) {
	addr := o.HTTPAddr
	if addr == "" {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	env := []string{
		"DATABASE_URL=" + o.DatabaseURL,
		"BATON_BROKER_ADDR=" + o.BrokerAddr,
		"BATON_HTTP_LISTEN=" + addr,
		"BATON_STORAGE_DIR=" + o.StorageDir,
	}
	if o.StreamID != "" {
		env = append(env, "REPLICATION_STREAM_ID="+o.StreamID)
	}
	if o.Advertise {
		env = append(env, "BATON_ADVERTISE_URL=http://"+LocalAddr(addr))
	}
	for k, v := range o.Settings {
		env = append(env, k+"="+v)
	}
	env = append(env, devSettings(o.Settings)...)
	name := o.Name
	if name == "" {
		name = "worker@" + addr
	}
	p, err := StartProcess(name, []string{o.Bin}, env, o.Tee)
	if err != nil {
		return nil, err
	}
	return &Worker{Process: p, HTTPAddr: LocalAddr(addr)}, nil
}

// devSettings are the settings a worker started with settings (over this
// process's environment) gets from StartWorker, as Electric's
// integration-testing mode has them: BATON_INSECURE=true unless
// BATON_SECRET or BATON_INSECURE is set (a worker serves shapes only with
// one of them), and BATON_ALLOW_SHAPE_DELETION=true unless it is set.
func devSettings(settings map[string]string) []string {
	set := func(k string) bool {
		_, ok := settings[k]
		return ok || os.Getenv(k) != ""
	}
	var env []string
	if !set("BATON_SECRET") && !set("BATON_INSECURE") {
		env = append(env, "BATON_INSECURE=true")
	}
	if !set("BATON_ALLOW_SHAPE_DELETION") {
		env = append(env, "BATON_ALLOW_SHAPE_DELETION=true")
	}
	return env
}

// Health returns the worker's /v1/health status and HTTP code, asked
// within 2 s.
func (w *Worker) Health() (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return Health(ctx, "http://"+w.HTTPAddr)
}

// Health asks GET <base>/v1/health and returns the status its body names
// and the HTTP code; code is 0 when no answer came (err says why), and
// err is set with the code when the body is not a health answer.
func Health(ctx context.Context, base string) (status string, code int, err error) {
	r, err := Fetch(ctx, http.MethodGet, base+"/v1/health", nil)
	if err != nil {
		return "", 0, err
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return "", r.Status, fmt.Errorf("decode health: %w", err)
	}
	return body.Status, r.Status, nil
}

// AwaitStatus waits until /v1/health says status; it fails if the worker
// exits first.
func (w *Worker) AwaitStatus(status string, timeout time.Duration) error {
	return w.awaitStatus(context.Background(), status, timeout, 10*time.Millisecond)
}

func (w *Worker) awaitStatus(ctx context.Context, status string, timeout, every time.Duration) error {
	var last string
	err := AwaitContext(ctx, timeout, every, fmt.Sprintf("%s health %q", w.Name, status), func() (bool, error) {
		select {
		case <-w.Done():
			return false, fmt.Errorf("%s exited", w.Name)
		default:
		}
		s, _, err := w.Health()
		last = s
		return err == nil && s == status, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last %q)", err, last)
	}
	return nil
}

// Metric returns the value of the first sample of the metric name in the
// worker's /metrics (ok false when it has none).
func (w *Worker) Metric(name string) (v float64, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := Fetch(ctx, http.MethodGet, "http://"+w.HTTPAddr+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, found := strings.CutPrefix(line, name)
		if !found || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %s: %w", name, err)
		}
		return v, true, nil
	}
	return 0, false, sc.Err()
}
