package podrunner

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Service models a ClusterIP Service as kube-proxy serves it: each new
// TCP connection to a service port goes to one of the Ready pods the
// selector matches (round-robin), and stays with it until either side
// closes it; a pod stops getting new connections as soon as it is not
// Ready or is deleted (terminating), while its open connections go on. A
// connection that finds no Ready pod, or whose pod refuses it, is reset.
//
// The Service reads the HTTP/1.1 exchanges it carries, without changing a
// byte, and records the status of every response a client got, the
// requests a pod left unanswered when it closed the connection, and the
// connections it had to reset.
type Service struct {
	cluster *Cluster
	name    string
	spec    corev1.ServiceSpec
	ports   []*servicePort

	mu        sync.Mutex
	next      int
	responses []Response
	failures  []Failure
	conns     map[net.Conn]bool
	exchanges map[*exchange]bool
	wg        sync.WaitGroup
	closed    bool
}

type servicePort struct {
	spec corev1.ServicePort
	ln   net.Listener
}

// servicePortAddr is a service port as the Service variables show it.
type servicePortAddr struct {
	name     string
	declared int
	port     int
}

// Response is one HTTP response relayed to a client.
type Response struct {
	At     time.Time
	Pod    string
	Method string
	URL    string
	Status int
}

// Failure is a request or connection the Service could not carry to a
// pod and back: "reset: no Ready endpoint", "reset: <dial error>", or
// "unanswered: <pod> closed the connection" for each request a pod had
// received and not answered when it closed.
type Failure struct {
	At     time.Time
	Pod    string
	Reason string
	URL    string
}

func (f Failure) String() string {
	return fmt.Sprintf("%s %s %s %s", f.At.Format("15:04:05.000"), f.Pod, f.Reason, f.URL)
}

// ApplyService creates a Service and starts listening on a free port per
// service port. Apply it before the pods that should see its variables
// (FOO_SERVICE_HOST, ...), as on a cluster.
func (c *Cluster) ApplyService(svc *corev1.Service) (*Service, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("service %s: only Services with a selector are modelled", svc.Name)
	}
	s := &Service{cluster: c, name: svc.Name, spec: *svc.Spec.DeepCopy(), conns: map[net.Conn]bool{}, exchanges: map[*exchange]bool{}}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			s.closeListeners()
			return nil, fmt.Errorf("service %s port %s: only TCP is modelled", svc.Name, sp.Name)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(podIP, "0"))
		if err != nil {
			s.closeListeners()
			return nil, err
		}
		s.ports = append(s.ports, &servicePort{spec: sp, ln: ln})
	}
	c.mu.Lock()
	if _, ok := c.services[svc.Name]; ok {
		c.mu.Unlock()
		s.closeListeners()
		return nil, fmt.Errorf("service %s already exists", svc.Name)
	}
	c.services[svc.Name] = s
	c.mu.Unlock()
	for _, sp := range s.ports {
		s.wg.Add(1)
		go s.serve(sp)
	}
	return s, nil
}

func (s *Service) closeListeners() {
	for _, sp := range s.ports {
		sp.ln.Close()
	}
}

// serviceEnv is the variables every Service gives a pod's containers.
func (c *Cluster) serviceEnv() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for name, s := range c.services {
		if s.spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		var ports []servicePortAddr
		for _, sp := range s.ports {
			ports = append(ports, servicePortAddr{name: sp.spec.Name, declared: int(sp.spec.Port), port: sp.ln.Addr().(*net.TCPAddr).Port})
		}
		for k, v := range serviceLinkEnv(name, podIP, ports) {
			out[k] = v
		}
	}
	return out
}

// URL is http://host:port of the service port of that name ("" for the
// only or first port).
func (s *Service) URL(port string) string { return "http://" + s.Addr(port) }

// Addr is host:port of the service port of that name ("" for the first).
func (s *Service) Addr(port string) string {
	for _, sp := range s.ports {
		if port == "" || sp.spec.Name == port {
			return sp.ln.Addr().String()
		}
	}
	return ""
}

// Endpoints are the pods a new connection may go to now: matched by the
// selector, Ready and not terminating, by name.
func (s *Service) Endpoints() []*Pod {
	sel := labels.SelectorFromSet(s.spec.Selector)
	var out []*Pod
	for _, p := range s.cluster.Pods() {
		if sel.Matches(labels.Set(p.Labels())) && p.Ready() && !p.Terminating() {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Responses returns every response relayed so far.
func (s *Service) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.responses...)
}

// Counts returns how many responses were relayed, by status.
func (s *Service) Counts() map[int]int {
	out := map[int]int{}
	for _, r := range s.Responses() {
		out[r.Status]++
	}
	return out
}

// Failures returns every connection reset and unanswered request so far.
func (s *Service) Failures() []Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Failure(nil), s.failures...)
}

// Outstanding is how many requests were carried to a pod and not answered
// yet (long polls included).
func (s *Service) Outstanding() int {
	s.mu.Lock()
	xs := make([]*exchange, 0, len(s.exchanges))
	for x := range s.exchanges {
		xs = append(xs, x)
	}
	s.mu.Unlock()
	n := 0
	for _, x := range xs {
		x.mu.Lock()
		n += len(x.pending)
		x.mu.Unlock()
	}
	return n
}

// Close stops listening, closes every open connection and waits for the
// Service's goroutines.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.closeListeners()
	s.wg.Wait()
	s.cluster.mu.Lock()
	delete(s.cluster.services, s.name)
	s.cluster.mu.Unlock()
}

func (s *Service) serve(sp *servicePort) {
	defer s.wg.Done()
	for {
		conn, err := sp.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(conn) {
			conn.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			s.carry(conn.(*net.TCPConn), sp.spec)
		}()
	}
}

func (s *Service) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Service) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	c.Close()
}

func (s *Service) fail(pod, reason, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, Failure{At: time.Now(), Pod: pod, Reason: reason, URL: url})
}

// pick chooses the pod of a new connection, round-robin over the
// endpoints, and its address for the service port.
func (s *Service) pick(sp corev1.ServicePort) (*Pod, string, error) {
	eps := s.Endpoints()
	if len(eps) == 0 {
		return nil, "", fmt.Errorf("no Ready endpoint")
	}
	s.mu.Lock()
	p := eps[s.next%len(eps)]
	s.next++
	s.mu.Unlock()
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	addr, err := p.Addr(target)
	return p, addr, err
}

// reset closes a client connection with a TCP reset, as a client of a
// Service sees a refused connection.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	c.Close()
}

// exchange tracks one connection's requests and responses.
type exchange struct {
	mu       sync.Mutex
	pending  []*http.Request // received by the pod, not answered yet
	arrived  chan struct{}   // closed and replaced when a request is parsed
	reqsDone bool            // the request stream ended or could not be read
}

// carry relays one client connection to a pod and back.
func (s *Service) carry(client *net.TCPConn, sp corev1.ServicePort) {
	pod, addr, err := s.pick(sp)
	if err != nil {
		s.fail("", "reset: "+err.Error(), "")
		reset(client)
		return
	}
	up, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		s.fail(pod.name, "reset: "+err.Error(), "")
		reset(client)
		return
	}
	upstream := up.(*net.TCPConn)
	if !s.track(upstream) {
		upstream.Close()
		return
	}
	defer s.untrack(upstream)
	x := &exchange{arrived: make(chan struct{})}
	s.mu.Lock()
	s.exchanges[x] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.exchanges, x)
		s.mu.Unlock()
	}()
	clientClosedFirst := make(chan bool, 1)
	requestsDone := make(chan struct{})
	go func() {
		defer close(requestsDone)
		pr, pw := io.Pipe()
		parsed := make(chan struct{})
		go func() {
			defer close(parsed)
			x.readRequests(pr)
		}()
		_, _ = io.Copy(io.MultiWriter(upstream, pw), client)
		select {
		case clientClosedFirst <- true:
		default:
		}
		pw.Close()
		<-parsed
		_ = upstream.CloseWrite()
	}()
	pr, pw := io.Pipe()
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		s.readResponses(pod.name, pr, x)
	}()
	_, _ = io.Copy(io.MultiWriter(client, pw), upstream)
	select {
	case clientClosedFirst <- false:
	default:
	}
	pw.Close()
	<-parsed
	_ = client.CloseWrite()
	if !<-clientClosedFirst {
		x.mu.Lock()
		for _, r := range x.pending {
			s.fail(pod.name, "unanswered: the pod closed the connection", r.URL.String())
		}
		x.mu.Unlock()
	}
	// The client sees the pod's close; once it closes its side too the
	// request copy ends.
	client.Close()
	<-requestsDone
}

// readRequests parses the requests of a connection (draining what it
// cannot parse).
func (x *exchange) readRequests(r io.Reader) {
	defer io.Copy(io.Discard, r)
	defer x.push(nil)
	br := bufio.NewReader(r)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		x.push(req)
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
	}
}

// push adds a parsed request (nil: no more requests).
func (x *exchange) push(req *http.Request) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if req == nil {
		x.reqsDone = true
	} else {
		x.pending = append(x.pending, req)
	}
	close(x.arrived)
	x.arrived = make(chan struct{})
}

// oldest waits for the oldest unanswered request (nil when there will be
// none).
func (x *exchange) oldest() *http.Request {
	for {
		x.mu.Lock()
		if len(x.pending) > 0 {
			r := x.pending[0]
			x.mu.Unlock()
			return r
		}
		if x.reqsDone {
			x.mu.Unlock()
			return nil
		}
		ch := x.arrived
		x.mu.Unlock()
		<-ch
	}
}

// readResponses parses the responses of a connection and records each
// (draining what it cannot parse).
func (s *Service) readResponses(pod string, r io.Reader, x *exchange) {
	defer io.Copy(io.Discard, r)
	br := bufio.NewReader(r)
	for {
		if _, err := br.Peek(1); err != nil {
			return
		}
		req := x.oldest()
		if req == nil {
			return
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.responses = append(s.responses, Response{At: time.Now(), Pod: pod, Method: req.Method, URL: req.URL.String(), Status: resp.StatusCode})
		s.mu.Unlock()
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // an interim response; the final one follows
		}
		_, err = io.Copy(io.Discard, resp.Body)
		x.mu.Lock()
		x.pending = x.pending[1:]
		x.mu.Unlock()
		if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
			return
		}
	}
}

// String describes the service's endpoints, for logs.
func (s *Service) String() string {
	var names []string
	for _, p := range s.Endpoints() {
		names = append(names, p.name)
	}
	return s.name + " → " + strconv.Quote(fmt.Sprint(names))
}
