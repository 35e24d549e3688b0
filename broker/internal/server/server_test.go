package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	wlease "github.com/batonhq/baton/worker/lease"

	"github.com/batonhq/baton/broker/internal/lease"
	"github.com/batonhq/baton/broker/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testStream = "orders"

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

// broker is an in-process broker edge: a Hub served over bufconn.
type broker struct {
	hub *lease.Hub
	srv *server.Server
	ln  *bufconn.Listener
}

func startBroker(t *testing.T, ttl time.Duration) *broker {
	t.Helper()
	b := &broker{
		hub: lease.NewHub(testStream, "baton-broker:orders:test", ttl),
		ln:  bufconn.Listen(1 << 20),
	}
	b.srv = server.New(testStream, b.hub, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- b.srv.Serve(b.ln) }()
	t.Cleanup(func() {
		// As cmd/broker does after the leader loop: drop the workers, stop.
		b.hub.Close()
		b.srv.Stop(2 * time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return b
}

func (b *broker) dialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return b.ln.DialContext(ctx)
	})
}

func (b *broker) client(t *testing.T, opts wlease.Options) *wlease.Client {
	t.Helper()
	opts.DialOptions = append(opts.DialOptions, b.dialer())
	if opts.StreamID == "" {
		opts.StreamID = testStream
	}
	c, err := wlease.New("passthrough:///bufnet", opts)
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// conn is a raw gRPC connection to the broker, for protocol-level tests.
func (b *broker) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///bufnet", b.dialer(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// await polls cond until it holds, failing the test after waitFor.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// candidate waits for an attached worker and returns it.
func (b *broker) candidate(t *testing.T) *lease.Worker {
	t.Helper()
	var w *lease.Worker
	await(t, "a worker to attach", func() bool { w, _ = b.hub.Candidate(); return w != nil })
	return w
}

type acquired struct {
	l   *wlease.Lease
	err error
}

// acquire starts Acquire in the background.
func acquire(t *testing.T, c *wlease.Client) <-chan acquired {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	ch := make(chan acquired, 1)
	go func() {
		l, err := c.Acquire(ctx)
		ch <- acquired{l, err}
	}()
	return ch
}

func (b *broker) grant(t *testing.T, c *wlease.Client, epoch uint64) *wlease.Lease {
	t.Helper()
	ch := acquire(t, c)
	w := b.candidate(t)
	if !b.hub.Grant(w, epoch) {
		t.Fatal("hub.Grant = false")
	}
	a := <-ch
	if a.err != nil {
		t.Fatalf("Acquire: %v", a.err)
	}
	return a.l
}

func ended(t *testing.T, l *wlease.Lease) error {
	t.Helper()
	select {
	case <-l.Done():
		return l.Err()
	case <-time.After(waitFor):
		t.Fatal("lease did not end")
		return nil
	}
}

func TestAcquire(t *testing.T) {
	const ttl = 3 * time.Second
	b := startBroker(t, ttl)
	standbys := make(chan *batonv1.Standby, 16)
	c := b.client(t, wlease.Options{WorkerID: "worker@test", StreamID: testStream, OnStandby: func(s *batonv1.Standby) {
		select {
		case standbys <- s:
		default:
		}
	}})
	ch := acquire(t, c)
	w := b.candidate(t)
	if w.ID != "worker@test" {
		t.Fatalf("worker id = %q", w.ID)
	}
	select {
	case s := <-standbys:
		if s.GetReason() != batonv1.StandbyReason_STANDBY_REASON_CONNECTING {
			t.Fatalf("first standby = %v", s)
		}
	case <-time.After(waitFor):
		t.Fatal("no standby before the grant")
	}
	select {
	case a := <-ch:
		t.Fatalf("Acquire returned before a grant: %v, %v", a.l, a.err)
	default:
	}
	sent := time.Now()
	b.hub.Grant(w, 42)
	a := <-ch
	if a.err != nil {
		t.Fatalf("Acquire: %v", a.err)
	}
	l := a.l
	if l.Epoch != 42 || l.TTL != ttl || l.StreamID != testStream || l.Slot != "baton_slot_orders" ||
		l.Publication != "baton_pub_orders" || l.Holder != "baton-broker:orders:test" {
		t.Fatalf("lease = %+v", l)
	}
	if l.Err() != nil {
		t.Fatalf("fresh lease Err = %v", l.Err())
	}
	if l.Deadline().Before(sent.Add(ttl)) {
		t.Fatalf("deadline %v is before grant + TTL", l.Deadline().Sub(sent))
	}
}

func TestRenewalsKeepLeaseAlive(t *testing.T) {
	const ttl = 400 * time.Millisecond
	b := startBroker(t, ttl)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 1)

	tick := time.NewTicker(ttl / 8)
	defer tick.Stop()
	stop := time.Now().Add(3 * ttl)
	for time.Now().Before(stop) {
		<-tick.C
		b.hub.RenewFrom(1, time.Now())
		if err := l.Err(); err != nil {
			t.Fatalf("lease ended while renewed: %v", err)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatalf("lease ended while renewed: %v", err)
	}
}

func TestLeaseExpiresWithoutRenewals(t *testing.T) {
	const ttl = 300 * time.Millisecond
	b := startBroker(t, ttl)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 1)
	// One renewal, then silence: the lease must run for a TTL from it.
	last := time.Now()
	b.hub.RenewFrom(1, time.Now())

	err := ended(t, l)
	if !errors.Is(err, wlease.ErrExpired) {
		t.Fatalf("lease ended with %v, want ErrExpired", err)
	}
	if !errors.Is(context.Cause(l.Ctx()), wlease.ErrExpired) {
		t.Fatalf("context cause = %v", context.Cause(l.Ctx()))
	}
	// The worker must not stop before the TTL from the last renewal has passed
	// on its clock (the renewal arrived after `last`).
	const tolerance = 5 * time.Millisecond
	if lived := l.EndedAt().Sub(last); lived < ttl-tolerance {
		t.Fatalf("lease ended %v after the last renewal, before the TTL %v", lived, ttl)
	}
	// The broker still thinks it granted; a renewal after expiry does not
	// revive the lease.
	b.hub.RenewFrom(1, time.Now())
	if l.Err() == nil {
		t.Fatal("expired lease revived")
	}
}

func TestRevoke(t *testing.T) {
	tests := []struct {
		name   string
		reason batonv1.RevokeReason
		// current: the grant stays current on the hub until Released.
		current bool
	}{
		{"shutdown", batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, true},
		{"lock lost", batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, false},
		{"replaced", batonv1.RevokeReason_REVOKE_REASON_REPLACED, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBroker(t, 5*time.Second)
			c := b.client(t, wlease.Options{WorkerID: "w"})
			l := b.grant(t, c, 3)
			b.hub.Revoke(tt.reason, time.Second, "test says "+tt.name)

			err := ended(t, l)
			var re *wlease.RevokedError
			if !errors.As(err, &re) {
				t.Fatalf("lease ended with %v (%T), want *RevokedError", err, err)
			}
			if re.Reason != tt.reason || re.Message != "test says "+tt.name {
				t.Fatalf("RevokedError = %+v", re)
			}
			if r, ok := wlease.Revoked(err); !ok || r != tt.reason {
				t.Fatalf("Revoked(err) = %v, %v", r, ok)
			}
			if _, ok := b.hub.Current(); ok != tt.current {
				t.Fatalf("hub grant current = %v, want %v", ok, tt.current)
			}

			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if err := l.Release(ctx, 99); err != nil {
				t.Fatalf("Release: %v", err)
			}
			await(t, "the hub to see the release", func() bool { _, ok := b.hub.Current(); return !ok })
			// Release does not overwrite why the lease ended.
			if _, ok := wlease.Revoked(l.Err()); !ok {
				t.Fatalf("after Release, Err = %v", l.Err())
			}
		})
	}
}

func TestReleaseReachesHub(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 8)
	if err := l.Progress(1234); err != nil {
		t.Fatalf("Progress: %v", err)
	}
	await(t, "progress to reach the hub", func() bool { return b.hub.DurableLSN() == 1234 })

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := l.Release(ctx, 2000); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if !errors.Is(l.Err(), wlease.ErrReleased) {
		t.Fatalf("released lease Err = %v", l.Err())
	}
	await(t, "the hub grant to end", func() bool { _, ok := b.hub.Current(); return !ok })
	if got := b.hub.DurableLSN(); got != 2000 {
		t.Fatalf("DurableLSN after Release(2000) = %d: the release's durable position is recorded", got)
	}
	if !b.hub.NotBefore().IsZero() {
		t.Fatal("a clean release delays the next grant")
	}

	// The stream stays open: the next grant, with a higher epoch, reaches the
	// same client.
	l2 := b.grant(t, c, 9)
	if l2.Epoch != 9 || l2.Err() != nil {
		t.Fatalf("second lease = %+v, %v", l2, l2.Err())
	}
}

func TestHubCloseEndsLease(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 1)
	b.hub.Close()
	if err := ended(t, l); !errors.Is(err, wlease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
}

func TestClientCloseDetaches(t *testing.T) {
	const ttl = 5 * time.Second
	b := startBroker(t, ttl)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 1)
	g, _ := b.hub.Current()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ended(t, l); !errors.Is(err, wlease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
	await(t, "the worker to detach", func() bool { return b.hub.Attached() == 0 })
	if _, ok := b.hub.Current(); ok {
		t.Fatal("grant current after its stream closed")
	}
	if b.hub.NotBefore().Before(g.LastRenewal.Add(ttl)) {
		t.Fatal("a closed, unreleased grant does not delay the next grant by its TTL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Acquire(ctx); !errors.Is(err, wlease.ErrClosed) {
		t.Fatalf("Acquire after Close = %v, want ErrClosed", err)
	}
}

func TestSecondWorkerStandby(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	first := b.client(t, wlease.Options{WorkerID: "first"})
	b.grant(t, first, 1)

	reasons := make(chan batonv1.StandbyReason, 16)
	second := b.client(t, wlease.Options{WorkerID: "second", OnStandby: func(s *batonv1.Standby) {
		select {
		case reasons <- s.GetReason():
		default:
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := second.Acquire(ctx)
		done <- err
	}()
	select {
	case r := <-reasons:
		if r != batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER {
			t.Fatalf("second worker told %v, want OTHER_WORKER", r)
		}
	case <-time.After(waitFor):
		t.Fatal("second worker got no standby")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel = %v, want context.Canceled", err)
	}
}

func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		msgs []*batonv1.WorkerMessage
	}{
		{"first message progress", []*batonv1.WorkerMessage{
			{Msg: &batonv1.WorkerMessage_Progress{Progress: &batonv1.Progress{Epoch: 1}}},
		}},
		{"first message released", []*batonv1.WorkerMessage{
			{Msg: &batonv1.WorkerMessage_Released{Released: &batonv1.Released{Epoch: 1}}},
		}},
		{"empty first message", []*batonv1.WorkerMessage{{}}},
		{"hello for another stream", []*batonv1.WorkerMessage{
			{Msg: &batonv1.WorkerMessage_Hello{Hello: &batonv1.Hello{WorkerId: "w", StreamId: "payments"}}},
		}},
		{"hello twice", []*batonv1.WorkerMessage{
			{Msg: &batonv1.WorkerMessage_Hello{Hello: &batonv1.Hello{WorkerId: "w"}}},
			{Msg: &batonv1.WorkerMessage_Hello{Hello: &batonv1.Hello{WorkerId: "w"}}},
		}},
	}
	b := startBroker(t, 5*time.Second)
	cc := b.conn(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			st, err := batonv1.NewLeaseServiceClient(cc).Lease(ctx)
			if err != nil {
				t.Fatalf("Lease: %v", err)
			}
			for _, m := range tt.msgs {
				if err := st.Send(m); err != nil && !errors.Is(err, io.EOF) {
					t.Fatalf("Send: %v", err)
				}
			}
			for {
				_, err = st.Recv()
				if err != nil {
					break
				}
			}
			if code := status.Code(err); code != codes.InvalidArgument {
				t.Fatalf("stream ended with %v (code %v), want InvalidArgument", err, code)
			}
			await(t, "the worker to detach", func() bool { return b.hub.Attached() == 0 })
		})
	}
}

// TestAcquireRefused: a broker that refuses the worker's Hello (another
// stream) refuses every retry; Acquire should say so instead of retrying
// until its context ends (DESIGN I6, "clear refusal").
func TestAcquireRefused(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	c := b.client(t, wlease.Options{WorkerID: "w", StreamID: "payments"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := c.Acquire(ctx)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Acquire = %v, want an error carrying InvalidArgument", err)
	}
}

func TestHealth(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	hc := healthpb.NewHealthClient(b.conn(t))
	tests := []struct {
		service string
		want    healthpb.HealthCheckResponse_ServingStatus
	}{
		{"", healthpb.HealthCheckResponse_SERVING},
		{"liveness", healthpb.HealthCheckResponse_SERVING},
		{"readiness", healthpb.HealthCheckResponse_NOT_SERVING},
		{"leader", healthpb.HealthCheckResponse_NOT_SERVING},
	}
	for _, tt := range tests {
		t.Run("service="+tt.service, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if r.GetStatus() != tt.want {
				t.Fatalf("Check(%q) = %v, want %v", tt.service, r.GetStatus(), tt.want)
			}
		})
	}
	b.srv.Health.SetServingStatus("readiness", healthpb.HealthCheckResponse_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("readiness after set = %v, %v", r.GetStatus(), err)
	}
}

// TestStopDuringStream: Stop must not hang on an attached worker the hub did
// not drop, and must end its lease.
func TestStopDuringStream(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	c := b.client(t, wlease.Options{WorkerID: "w"})
	l := b.grant(t, c, 1)
	done := make(chan struct{})
	go func() {
		b.srv.Stop(200 * time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Stop hung")
	}
	if err := ended(t, l); !errors.Is(err, wlease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
}

// ReleaseStopping reaches the hub with its reason, so the leader loop
// unlocks at once; Release does not.
func TestReleaseStoppingReachesHub(t *testing.T) {
	tests := []struct {
		name     string
		stopping bool
	}{
		{"release", false},
		{"release stopping", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBroker(t, 5*time.Second)
			c := b.client(t, wlease.Options{WorkerID: "w"})
			l := b.grant(t, c, 8)
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			release := l.Release
			if tt.stopping {
				release = l.ReleaseStopping
			}
			if err := release(ctx, 100); err != nil {
				t.Fatalf("release: %v", err)
			}
			if !errors.Is(l.Err(), wlease.ErrReleased) {
				t.Fatalf("released lease Err = %v", l.Err())
			}
			await(t, "the hub grant to end", func() bool { _, ok := b.hub.Current(); return !ok })
			e, ok := b.hub.Stopped()
			if ok != tt.stopping || (ok && e != 8) {
				t.Fatalf("hub Stopped = %d, %v; want %v for epoch 8", e, ok, tt.stopping)
			}
			if !b.hub.NotBefore().IsZero() {
				t.Fatal("a clean release delays the next grant")
			}
		})
	}
}

// Hello.advertise_url reaches the hub, and a second worker of the same
// broker is told OTHER_WORKER with the grantee's worker id and URL.
func TestAdvertiseURLInStandby(t *testing.T) {
	b := startBroker(t, 5*time.Second)
	first := b.client(t, wlease.Options{WorkerID: "first", AdvertiseURL: "http://10.0.0.1:3000"})
	b.grant(t, first, 1)
	g, _ := b.hub.Current()
	if g.Worker.URL != "http://10.0.0.1:3000" {
		t.Fatalf("hub worker URL = %q", g.Worker.URL)
	}
	holders := make(chan *batonv1.Holder, 16)
	second := b.client(t, wlease.Options{WorkerID: "second", OnStandby: func(s *batonv1.Standby) {
		if s.GetReason() == batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER {
			select {
			case holders <- s.GetHolder():
			default:
			}
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := second.Acquire(ctx)
		done <- err
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case hd := <-holders:
		if hd.GetWorker() != "first" || hd.GetWorkerUrl() != "http://10.0.0.1:3000" || hd.GetEpoch() != 1 {
			t.Fatalf("OTHER_WORKER holder = %v", hd)
		}
	case <-time.After(waitFor):
		t.Fatal("second worker was not told OTHER_WORKER")
	}
}
