package podrunner

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// userAgent is what the kubelet's probes send.
const userAgent = "kube-probe/1.34"

// probeLoop runs a probe as the kubelet's probe worker does: nothing before
// initialDelaySeconds (counted in whole seconds from the start of the run),
// then one probe each periodSeconds, each bounded by timeoutSeconds; the
// result changes after successThreshold consecutive successes or
// failureThreshold consecutive failures (readiness starts as failure,
// liveness as success, startup as unknown). Each change calls onResult;
// the loop ends when it returns true or ctx ends.
func (ct *Container) probeLoop(ctx context.Context, kind string, pr *corev1.Probe, began time.Time, onResult func(ok bool) bool) {
	period := seconds(pr.PeriodSeconds, 10)
	timeout := seconds(pr.TimeoutSeconds, 1)
	successes, failures := int(orDefault(pr.SuccessThreshold, 1)), int(orDefault(pr.FailureThreshold, 3))
	var current *bool
	switch kind {
	case "readiness":
		current = new(bool)
	case "liveness":
		current = new(bool)
		*current = true
	}
	var last bool
	run := 0
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for {
		if int32(time.Since(began).Seconds()) >= pr.InitialDelaySeconds {
			ok, msg := ct.probeOnce(ctx, pr, timeout)
			if ctx.Err() != nil {
				return
			}
			if !ok {
				ct.pod.cluster.record(ct.object(), "Unhealthy", "%s probe failed: %s", kind, msg)
			}
			if run == 0 || ok != last {
				last, run = ok, 0
			}
			run++
			if (ok && run >= successes) || (!ok && run >= failures) {
				if current == nil || *current != ok {
					current = &ok
					if onResult(ok) {
						return
					}
				}
				if !ok && kind != "readiness" {
					run = 0 // the kubelet holds the result and counts again
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func seconds(v, def int32) time.Duration {
	return time.Duration(orDefault(v, def)) * time.Second
}

func orDefault(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}

// probePort resolves a probe's port (a number or a name of the
// container's ports) to the pod's port on 127.0.0.1.
func (ct *Container) probePort(pr *corev1.Probe) (int, error) {
	switch {
	case pr.GRPC != nil:
		return ct.portOf(intstr.FromInt32(pr.GRPC.Port))
	case pr.HTTPGet != nil:
		return ct.portOf(pr.HTTPGet.Port)
	case pr.TCPSocket != nil:
		return ct.portOf(pr.TCPSocket.Port)
	}
	return 0, fmt.Errorf("no handler the runner supports")
}

// portOf resolves a port of this container: a number, or the name of one
// of its ports.
func (ct *Container) portOf(port intstr.IntOrString) (int, error) {
	n := port.IntValue()
	if port.Type == intstr.String {
		n = 0
		for _, cp := range ct.spec.Ports {
			if cp.Name == port.StrVal {
				n = int(cp.ContainerPort)
			}
		}
		if n == 0 {
			return 0, fmt.Errorf("port %q: no container port of that name", port.StrVal)
		}
	}
	real, ok := ct.pod.ports[n]
	if !ok {
		return 0, fmt.Errorf("port %d: not a port of the pod (declare it as a containerPort)", n)
	}
	return real, nil
}

// probeOnce runs one probe and says why it failed.
func (ct *Container) probeOnce(ctx context.Context, pr *corev1.Probe, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pr.GRPC != nil:
		return ct.grpcCheck(ctx, pr.GRPC)
	case pr.HTTPGet != nil:
		return ct.httpGet(ctx, pr.HTTPGet)
	case pr.TCPSocket != nil:
		return ct.tcpSocket(ctx, pr.TCPSocket)
	}
	return false, "no handler"
}

// grpcCheck is the kubelet's gRPC probe: grpc.health.v1 Check of the
// service, SERVING is success.
func (ct *Container) grpcCheck(ctx context.Context, g *corev1.GRPCAction) (bool, string) {
	port, err := ct.portOf(intstr.FromInt32(g.Port))
	if err != nil {
		return false, err.Error()
	}
	conn, err := grpc.NewClient(net.JoinHostPort(podIP, strconv.Itoa(port)),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent(userAgent))
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return false, err.Error()
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return false, fmt.Sprintf("service %q: %s", service, resp.GetStatus())
	}
	return true, ""
}

// httpGet is the kubelet's HTTP probe: a GET on a new connection,
// 200 ≤ status < 400 is success; redirects are followed on the same host
// only (another host's redirect is a success, as the kubelet counts it).
func (ct *Container) httpGet(ctx context.Context, h *corev1.HTTPGetAction) (bool, string) {
	port, err := ct.portOf(h.Port)
	if err != nil {
		return false, err.Error()
	}
	host := h.Host
	if host == "" {
		host = podIP
	}
	scheme := "http"
	if h.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: h.Path}
	if q, err := url.Parse(h.Path); err == nil {
		u.Path, u.RawQuery = q.Path, q.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	for _, hd := range h.HTTPHeaders {
		req.Header.Set(hd.Name, hd.Value)
	}
	client := http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 || r.URL.Host != u.Host {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return false, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
	}
	return true, ""
}

// tcpSocket is the kubelet's TCP probe: the connection opens.
func (ct *Container) tcpSocket(ctx context.Context, t *corev1.TCPSocketAction) (bool, string) {
	port, err := ct.portOf(t.Port)
	if err != nil {
		return false, err.Error()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(port)))
	if err != nil {
		return false, err.Error()
	}
	conn.Close()
	return true, ""
}
