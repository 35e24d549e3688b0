package server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// rawStream opens a Lease stream on a plain gRPC connection, for tests of
// the wire contract that the Go lease client would never break.
func (b *broker) rawStream(t *testing.T) batonv1.LeaseService_LeaseClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	st, err := batonv1.NewLeaseServiceClient(b.conn(t)).Lease(ctx)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return st
}

func helloMsg(h *batonv1.Hello) *batonv1.WorkerMessage {
	return &batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Hello{Hello: h}}
}

// TestHelloChecks: the broker serves workers of protocol versions 1 (no
// version in Hello) and 2; version 2 must name itself and its stream; any
// other version is refused with FAILED_PRECONDITION naming the supported
// ones (lease.proto B1).
func TestHelloChecks(t *testing.T) {
	tests := []struct {
		name  string
		hello *batonv1.Hello
		code  codes.Code // codes.OK: served (Standby arrives)
		says  string     // in the refusal's message
	}{
		{"version 1 without version or ids", &batonv1.Hello{}, codes.OK, ""},
		{"version 1 explicit, empty stream", &batonv1.Hello{ProtocolVersion: 1, WorkerId: "w"}, codes.OK, ""},
		{"version 2", &batonv1.Hello{ProtocolVersion: 2, WorkerId: "w", StreamId: testStream}, codes.OK, ""},
		{"version 2 empty worker_id", &batonv1.Hello{ProtocolVersion: 2, StreamId: testStream}, codes.InvalidArgument, "worker_id is empty"},
		{"version 2 empty stream_id", &batonv1.Hello{ProtocolVersion: 2, WorkerId: "w"}, codes.InvalidArgument, "stream_id is empty"},
		{"version 2 another stream", &batonv1.Hello{ProtocolVersion: 2, WorkerId: "w", StreamId: "payments"}, codes.InvalidArgument, `serves stream "orders", not "payments"`},
		{"version 3", &batonv1.Hello{ProtocolVersion: 3, WorkerId: "w", StreamId: testStream}, codes.FailedPrecondition, "protocol version 3 is not supported by this broker; supported protocol versions: 1, 2"},
		{"version 1000", &batonv1.Hello{ProtocolVersion: 1000, WorkerId: "w", StreamId: testStream}, codes.FailedPrecondition, "supported protocol versions: 1, 2"},
	}
	b := startBroker(t, waitFor)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := b.rawStream(t)
			if err := st.Send(helloMsg(tt.hello)); err != nil {
				t.Fatalf("Send hello: %v", err)
			}
			m, err := st.Recv()
			if tt.code == codes.OK {
				if err != nil || m.GetStandby() == nil || m.GetStandby().GetProtocolVersion() != 2 {
					t.Fatalf("after hello: %v, %v; want standby saying protocol version 2", m, err)
				}
				_ = st.CloseSend()
				for err == nil {
					_, err = st.Recv()
				}
			} else {
				if err == nil {
					t.Fatalf("after hello: %v; want the stream refused with %v", m, tt.code)
				}
				if code := status.Code(err); code != tt.code || !strings.Contains(status.Convert(err).Message(), tt.says) {
					t.Fatalf("refused with %v, want %v saying %q", err, tt.code, tt.says)
				}
			}
			await(t, "the worker to detach", func() bool { return b.hub.Attached() == 0 })
		})
	}
}

// withUnknown returns m with field number 9 (which no version of the
// protocol defines) appended to its unknown fields: what a newer peer's
// message kind or field looks like to this one.
func withUnknown(t *testing.T, m *batonv1.WorkerMessage) *batonv1.WorkerMessage {
	t.Helper()
	var b []byte
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("from a newer worker"))
	m.ProtoReflect().SetUnknown(append(m.ProtoReflect().GetUnknown(), b...))
	return m
}

// TestUnknownMessageKindIgnored: a message of a kind the broker does not know
// (an unknown oneof case) does not end the stream; the worker is still
// granted and its known messages still count (lease.proto B6).
func TestUnknownMessageKindIgnored(t *testing.T) {
	b := startBroker(t, waitFor)
	st := b.rawStream(t)
	if err := st.Send(helloMsg(&batonv1.Hello{ProtocolVersion: 2, WorkerId: "w", StreamId: testStream})); err != nil {
		t.Fatalf("Send hello: %v", err)
	}
	if m, err := st.Recv(); err != nil || m.GetStandby() == nil {
		t.Fatalf("after hello: %v, %v; want standby", m, err)
	}
	// A kind of its own: no known case set, only the unknown field.
	if err := st.Send(withUnknown(t, &batonv1.WorkerMessage{})); err != nil {
		t.Fatalf("Send unknown kind: %v", err)
	}
	w := b.candidate(t)
	if !b.hub.Grant(w, 7) {
		t.Fatal("hub.Grant = false")
	}
	m, err := st.Recv()
	if err != nil || m.GetGranted().GetEpoch() != 7 || m.GetGranted().GetProtocolVersion() != 2 {
		t.Fatalf("after the unknown message: %v, %v; want granted epoch 7, protocol version 2", m, err)
	}
	// A known kind carrying an unknown field is handled as the known kind.
	p := withUnknown(t, &batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Progress{Progress: &batonv1.Progress{Epoch: 7, DurableLsn: 42}}})
	if err := st.Send(p); err != nil {
		t.Fatalf("Send progress: %v", err)
	}
	await(t, "the progress to reach the hub", func() bool { return b.hub.DurableLSN() == 42 })
	if err := st.Send(withUnknown(t, &batonv1.WorkerMessage{})); err != nil {
		t.Fatalf("Send unknown kind: %v", err)
	}
	rel := &batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Released{Released: &batonv1.Released{Epoch: 7, DurableLsn: 43}}}
	if err := st.Send(rel); err != nil {
		t.Fatalf("Send released: %v", err)
	}
	await(t, "the release to reach the hub", func() bool { _, ok := b.hub.Current(); return !ok })
	_ = st.CloseSend()
	for err == nil {
		_, err = st.Recv()
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v, want a clean end", err)
	}
}

// pinger is a raw HTTP/2 client connection to the broker that sends
// keepalive pings itself (gRPC-Go's client will not ping more often than
// every 10 s; other languages' clients will).
type pinger struct {
	fr     *http2.Framer
	goaway chan *http2.GoAwayFrame
	acks   chan struct{}
	// settled receives the acknowledgements of our SETTINGS frames.
	settled chan struct{}
	// write sends a ping (not an acknowledgement).
	write func(data [8]byte) error
	// settings sends an empty SETTINGS frame: its acknowledgement comes
	// after anything the broker queued before it (a GOAWAY closes first).
	settings func() error
}

func (b *broker) pinger(t *testing.T) *pinger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, err := b.ln.DialContext(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatalf("preface: %v", err)
	}
	p := &pinger{fr: http2.NewFramer(conn, conn), goaway: make(chan *http2.GoAwayFrame, 1), acks: make(chan struct{}, 64), settled: make(chan struct{}, 64)}
	if err := p.fr.WriteSettings(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	var wmu sync.Mutex // the reader acknowledges the server's frames too
	go func() {
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					p.settled <- struct{}{}
				} else {
					wmu.Lock()
					_ = p.fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.PingFrame:
				if f.IsAck() {
					p.acks <- struct{}{}
				} else {
					wmu.Lock()
					_ = p.fr.WritePing(true, f.Data)
					wmu.Unlock()
				}
			case *http2.GoAwayFrame:
				p.goaway <- f
				return
			}
		}
	}()
	p.settings = func() error {
		wmu.Lock()
		defer wmu.Unlock()
		return p.fr.WriteSettings()
	}
	p.write = func(data [8]byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return p.fr.WritePing(false, data)
	}
	return p
}

// TestKeepaliveLimit: a worker may send keepalive pings once a second
// (lease.proto W12) without losing its connection; one that pings every
// 100 ms is told GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as a grpc-js
// client with a keepalive under 500 ms was.
func TestKeepaliveLimit(t *testing.T) {
	tests := []struct {
		name   string
		every  time.Duration
		pings  int
		goaway bool
	}{
		{"every second: the documented limit", time.Second, 4, false},
		{"every 100 ms", 100 * time.Millisecond, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBroker(t, waitFor)
			p := b.pinger(t)
			var acked int
			for i := range tt.pings {
				if i > 0 {
					// Timer-paced on purpose: the interval is what is tested.
					time.Sleep(tt.every)
				}
				if err := p.write([8]byte{byte(i)}); err != nil {
					break // the broker closed the connection
				}
			}
			deadline := time.After(waitFor)
			for acked < tt.pings {
				select {
				case <-p.acks:
					acked++
					continue
				case g := <-p.goaway:
					if !tt.goaway {
						t.Fatalf("GOAWAY %v %q after %d acknowledged pings, every %v", g.ErrCode, g.DebugData(), acked, tt.every)
					}
					if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
						t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.ErrCode, g.DebugData())
					}
					return
				case <-deadline:
					t.Fatalf("%d of %d pings acknowledged, no GOAWAY", acked, tt.pings)
				}
			}
			// The broker acknowledges a ping before it counts it against the
			// policy: a round trip after the last ack shows any GOAWAY first.
			_ = p.settings() // fails if the broker already closed the connection
			select {
			case <-p.settled:
			case g := <-p.goaway:
				if !tt.goaway {
					t.Fatalf("GOAWAY %v %q after the last ping, every %v", g.ErrCode, g.DebugData(), tt.every)
				}
				return
			case <-deadline:
				t.Fatal("neither an acknowledgement of SETTINGS nor GOAWAY")
			}
			if tt.goaway {
				t.Fatalf("all %d pings every %v acknowledged, want GOAWAY too_many_pings", tt.pings, tt.every)
			}
		})
	}
}
