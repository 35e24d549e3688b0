package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// Keepalive limits of the broker's gRPC server (broker/internal/server):
// the proxy enforces the same, so that a worker pinging more often than
// the broker allows is told so (GOAWAY too_many_pings) by the proxy as it
// would be by the broker.
var (
	enforcement = keepalive.EnforcementPolicy{MinTime: 500 * time.Millisecond, PermitWithoutStream: true}
	serverPings = keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 2 * time.Second}
)

// Event is one message the proxy forwarded (or a stream's end).
type Event struct {
	At     time.Time
	Stream int // the proxy's number of the Lease stream, from 1
	// FromWorker is true for a WorkerMessage, false for a BrokerMessage.
	FromWorker bool
	Worker     *batonv1.WorkerMessage
	Broker     *batonv1.BrokerMessage
	// End is set on the event that records the stream's end.
	End error
}

// proxy serves LeaseService to the worker under test and forwards every
// stream to the real broker, recording each message with the time it
// passed. Before forwarding a Released it calls onReleased, which observes
// PostgreSQL at the moment the worker says it has stopped.
type proxy struct {
	name     string
	upstream string
	lis      net.Listener
	srv      *grpc.Server
	conn     *grpc.ClientConn
	client   batonv1.LeaseServiceClient

	onReleased func(*batonv1.Released)
	// log, when set, receives a line per message.
	log io.Writer

	mu      sync.Mutex
	events  []Event
	streams int
	goaways []string // debug data of the GOAWAY frames sent to workers
	injects map[int]chan *batonv1.BrokerMessage
	wake    chan struct{}
}

// startProxy listens on a free port of 127.0.0.1 and forwards to the broker
// at upstream.
func startProxy(name, upstream string) (*proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		lis.Close()
		return nil, err
	}
	p := &proxy{name: name, upstream: upstream, conn: conn, client: batonv1.NewLeaseServiceClient(conn), wake: make(chan struct{})}
	p.lis = &frameListener{Listener: lis, p: p}
	p.srv = grpc.NewServer(grpc.KeepaliveEnforcementPolicy(enforcement), grpc.KeepaliveParams(serverPings))
	batonv1.RegisterLeaseServiceServer(p.srv, leaseServer{p: p})
	go func() { _ = p.srv.Serve(p.lis) }()
	return p, nil
}

// Addr is where the worker under test finds its "broker".
func (p *proxy) Addr() string { return p.lis.Addr().String() }

func (p *proxy) close() {
	p.srv.Stop()
	p.conn.Close()
}

func (p *proxy) record(e Event) {
	if p.log != nil {
		what := "end: " + fmt.Sprint(e.End)
		switch {
		case e.Worker != nil:
			what = "worker: " + prototext.Format(e.Worker)
		case e.Broker != nil:
			what = "broker: " + prototext.Format(e.Broker)
		}
		fmt.Fprintf(p.log, "%s: stream %d %s\n", p.name, e.Stream, strings.Join(strings.Fields(what), " "))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, e)
	close(p.wake)
	p.wake = make(chan struct{})
}

// Events returns a copy of what passed so far.
func (p *proxy) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// Goaways returns the debug data of the GOAWAY frames sent to workers.
func (p *proxy) Goaways() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.goaways...)
}

// await waits until found (over the events, from index from) returns an
// index >= 0, and returns that event; it gives up after timeout.
func (p *proxy) await(ctx context.Context, from int, timeout time.Duration, what string, found func(Event) bool) (Event, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		evs, wake := p.events, p.wake
		p.mu.Unlock()
		for i := from; i < len(evs); i++ {
			if found(evs[i]) {
				return evs[i], i, nil
			}
		}
		select {
		case <-wake:
		case <-deadline.C:
			return Event{}, -1, fmt.Errorf("%s: no %s within %s", p.name, what, timeout)
		case <-ctx.Done():
			return Event{}, -1, fmt.Errorf("%s: waiting for %s: %w", p.name, what, ctx.Err())
		}
	}
}

// awaitGranted waits for a Granted forwarded at index >= from.
func (p *proxy) awaitGranted(ctx context.Context, from int, timeout time.Duration) (Event, int, error) {
	return p.await(ctx, from, timeout, "Granted", func(e Event) bool { return e.Broker.GetGranted() != nil })
}

type leaseServer struct {
	batonv1.UnimplementedLeaseServiceServer
	p *proxy
}

// Lease forwards one worker stream to the broker, message by message, and
// sends the worker what the kit injects.
func (s leaseServer) Lease(down batonv1.LeaseService_LeaseServer) error {
	p := s.p
	inject := make(chan *batonv1.BrokerMessage, 4)
	p.mu.Lock()
	p.streams++
	n := p.streams
	if p.injects == nil {
		p.injects = map[int]chan *batonv1.BrokerMessage{}
	}
	p.injects[n] = inject
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.injects, n)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	up, err := p.client.Lease(ctx)
	if err != nil {
		p.record(Event{At: time.Now(), Stream: n, End: err})
		return err
	}
	upErr := make(chan error, 1)
	go func() {
		for {
			m, err := down.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = up.CloseSend()
				}
				upErr <- err
				return
			}
			if r := m.GetReleased(); r != nil && p.onReleased != nil {
				p.onReleased(r)
			}
			p.record(Event{At: time.Now(), Stream: n, FromWorker: true, Worker: proto.Clone(m).(*batonv1.WorkerMessage)})
			if err := up.Send(m); err != nil {
				upErr <- err
				return
			}
		}
	}()
	type recv struct {
		m   *batonv1.BrokerMessage
		err error
	}
	fromBroker := make(chan recv)
	go func() {
		for {
			m, err := up.Recv()
			select {
			case fromBroker <- recv{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var m *batonv1.BrokerMessage
		select {
		case r := <-fromBroker:
			if r.err != nil {
				p.record(Event{At: time.Now(), Stream: n, End: r.err})
				if errors.Is(r.err, io.EOF) {
					return nil
				}
				return r.err
			}
			m = r.m
		case m = <-inject:
		case err := <-upErr:
			if !errors.Is(err, io.EOF) {
				p.record(Event{At: time.Now(), Stream: n, End: err})
				return err
			}
			// The worker half-closed: go on forwarding the broker's
			// messages until it ends the stream.
			upErr = nil
			continue
		}
		p.record(Event{At: time.Now(), Stream: n, Broker: proto.Clone(m).(*batonv1.BrokerMessage)})
		if err := down.Send(m); err != nil {
			p.record(Event{At: time.Now(), Stream: n, End: err})
			return err
		}
	}
}

// inject sends m to the worker on the proxy's stream n.
func (p *proxy) inject(n int, m *batonv1.BrokerMessage) error {
	p.mu.Lock()
	ch := p.injects[n]
	p.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("%s: stream %d has ended", p.name, n)
	}
	ch <- m
	return nil
}

// frameListener reads the HTTP/2 frames the proxy's server writes to each
// worker, to see a GOAWAY for too many pings.
type frameListener struct {
	net.Listener
	p *proxy
}

func (l *frameListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go l.p.readFrames(pr)
	return &frameConn{Conn: c, w: pw}, nil
}

// frameConn copies what is written to the connection into w.
type frameConn struct {
	net.Conn
	w    *io.PipeWriter
	once sync.Once
}

func (c *frameConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		_, _ = c.w.Write(b[:n])
	}
	return n, err
}

func (c *frameConn) Close() error {
	c.once.Do(func() { c.w.Close() })
	return c.Conn.Close()
}

// readFrames parses the server side of one connection (a server sends no
// preface) and records GOAWAY frames; it drains r to its end.
func (p *proxy) readFrames(r *io.PipeReader) {
	defer func() { _, _ = io.Copy(io.Discard, r) }()
	fr := http2.NewFramer(io.Discard, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			p.mu.Lock()
			p.goaways = append(p.goaways, fmt.Sprintf("%s %q", g.ErrCode, g.DebugData()))
			p.mu.Unlock()
		}
	}
}
