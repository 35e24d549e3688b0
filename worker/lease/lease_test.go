package lease_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"

	"github.com/batonhq/baton/worker/lease"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// fakeBroker is a scripted LeaseService: every stream it accepts is handed
// to the test, which sends what it likes and reads what the client sent.
type fakeBroker struct {
	batonv1.UnimplementedLeaseServiceServer
	ln      *bufconn.Listener
	streams chan *fakeStream
}

type fakeStream struct {
	hello *batonv1.Hello
	out   chan *batonv1.BrokerMessage
	in    chan *batonv1.WorkerMessage
	end   chan error // the handler returns this
	once  sync.Once
}

func (s *fakeStream) close(err error) { s.once.Do(func() { s.end <- err }) }

func startFake(t *testing.T) *fakeBroker {
	t.Helper()
	f := &fakeBroker{ln: bufconn.Listen(1 << 20), streams: make(chan *fakeStream, 8)}
	srv := grpc.NewServer()
	batonv1.RegisterLeaseServiceServer(srv, f)
	go func() { _ = srv.Serve(f.ln) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeBroker) Lease(stream batonv1.LeaseService_LeaseServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	s := &fakeStream{
		hello: first.GetHello(),
		out:   make(chan *batonv1.BrokerMessage, 16),
		in:    make(chan *batonv1.WorkerMessage, 16),
		end:   make(chan error, 1),
	}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			s.in <- m
		}
	}()
	f.streams <- s
	for {
		select {
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-s.end:
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (f *fakeBroker) client(t *testing.T, opts lease.Options) *lease.Client {
	t.Helper()
	opts.DialOptions = append(opts.DialOptions, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return f.ln.DialContext(ctx)
	}))
	opts = withIDs(opts)
	c, err := lease.New("passthrough:///bufnet", opts)
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// withIDs fills the required ids the test left empty.
func withIDs(o lease.Options) lease.Options {
	if o.WorkerID == "" {
		o.WorkerID = "w"
	}
	if o.StreamID == "" {
		o.StreamID = "s"
	}
	return o
}

func (f *fakeBroker) stream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(waitFor):
		t.Fatal("no lease stream opened")
		return nil
	}
}

func (s *fakeStream) recv(t *testing.T) *batonv1.WorkerMessage {
	t.Helper()
	select {
	case m := <-s.in:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message from the worker")
		return nil
	}
}

func granted(epoch uint64, ttl time.Duration) *batonv1.BrokerMessage {
	return &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Granted{Granted: &batonv1.Granted{
		Epoch: epoch, Ttl: durationpb.New(ttl), StreamId: "s", SlotName: "baton_slot_s", PublicationName: "baton_pub_s", Holder: "h", ProtocolVersion: 2,
	}}}
}

func renewed(epoch uint64, ttl time.Duration) *batonv1.BrokerMessage {
	return &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Renewed{Renewed: &batonv1.Renewed{Epoch: epoch, Ttl: durationpb.New(ttl)}}}
}

func revoked(epoch uint64, r batonv1.RevokeReason) *batonv1.BrokerMessage {
	return &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Revoked{Revoked: &batonv1.Revoked{Epoch: epoch, Reason: r, Message: "m"}}}
}

func standby(r batonv1.StandbyReason) *batonv1.BrokerMessage {
	return &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Standby{Standby: &batonv1.Standby{Reason: r}}}
}

func acquire(t *testing.T, c *lease.Client) *lease.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	l, err := c.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return l
}

func ended(t *testing.T, l *lease.Lease) error {
	t.Helper()
	select {
	case <-l.Done():
		return l.Err()
	case <-time.After(waitFor):
		t.Fatal("lease did not end")
		return nil
	}
}

func TestHelloAndRelease(t *testing.T) {
	f := startFake(t)
	var mu sync.Mutex
	var reasons []batonv1.StandbyReason
	c := f.client(t, lease.Options{WorkerID: "worker@pod", StreamID: "s", OnStandby: func(s *batonv1.Standby) {
		mu.Lock()
		reasons = append(reasons, s.GetReason())
		mu.Unlock()
	}})
	got := make(chan *lease.Lease, 1)
	go func() {
		l, _ := c.Acquire(context.Background())
		got <- l
	}()
	s := f.stream(t)
	if s.hello.GetWorkerId() != "worker@pod" || s.hello.GetStreamId() != "s" || s.hello.GetProtocolVersion() != lease.ProtocolVersion || lease.ProtocolVersion != 2 {
		t.Fatalf("hello = %v", s.hello)
	}
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT)
	s.out <- granted(5, time.Minute)
	var l *lease.Lease
	select {
	case l = <-got:
	case <-time.After(waitFor):
		t.Fatal("Acquire did not return")
	}
	mu.Lock()
	if len(reasons) != 1 || reasons[0] != batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT {
		t.Errorf("standbys = %v", reasons)
	}
	mu.Unlock()
	if l.Epoch != 5 || l.TTL != time.Minute || l.Slot != "baton_slot_s" || l.Publication != "baton_pub_s" || l.Holder != "h" || l.BrokerProtocol != 2 {
		t.Fatalf("lease = %+v", l)
	}

	if err := l.Progress(10); err != nil {
		t.Fatalf("Progress: %v", err)
	}
	if p := s.recv(t).GetProgress(); p.GetEpoch() != 5 || p.GetDurableLsn() != 10 {
		t.Fatalf("progress = %v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := l.Release(ctx, 11); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if r := s.recv(t).GetReleased(); r.GetEpoch() != 5 || r.GetDurableLsn() != 11 {
		t.Fatalf("released = %v", r)
	}
	if !errors.Is(l.Err(), lease.ErrReleased) || l.EndedAt().IsZero() {
		t.Fatalf("after Release: Err = %v, EndedAt = %v", l.Err(), l.EndedAt())
	}
}

// grant opens a session for c, grants epoch and returns the stream and the
// acquired lease.
func grant(t *testing.T, f *fakeBroker, c *lease.Client, epoch uint64, ttl time.Duration) (*fakeStream, *lease.Lease) {
	t.Helper()
	type result struct {
		l   *lease.Lease
		err error
	}
	got := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	go func() {
		l, err := c.Acquire(ctx)
		got <- result{l, err}
	}()
	s := f.stream(t)
	s.out <- granted(epoch, ttl)
	r := <-got
	if r.err != nil {
		t.Fatalf("Acquire: %v", r.err)
	}
	return s, r.l
}

// syncStandby returns OnStandby options and a channel that receives every
// standby: a standby sent after other messages proves they were processed.
func syncStandby() (lease.Options, <-chan batonv1.StandbyReason) {
	ch := make(chan batonv1.StandbyReason, 16)
	return lease.Options{OnStandby: func(s *batonv1.Standby) { ch <- s.GetReason() }}, ch
}

func await(t *testing.T, ch <-chan batonv1.StandbyReason) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatal("standby marker not received")
	}
}

func TestForeignEpochIgnored(t *testing.T) {
	const ttl = time.Second
	f := startFake(t)
	opts, marks := syncStandby()
	c := f.client(t, opts)
	s, l := grant(t, f, c, 7, ttl)
	// A revoke for another epoch must not end the lease, and a renewal for
	// another epoch must not keep it alive.
	s.out <- renewed(7, ttl)
	s.out <- revoked(6, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST)
	for range 5 {
		s.out <- renewed(6, time.Hour)
	}
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	await(t, marks)
	processed := time.Now()
	if err := l.Err(); err != nil {
		t.Fatalf("a foreign revoke ended the lease: %v", err)
	}
	if l.Deadline().After(processed.Add(ttl)) {
		t.Fatalf("a foreign renewal moved the deadline to now + %v", l.Deadline().Sub(processed))
	}
	if err := ended(t, l); !errors.Is(err, lease.ErrExpired) {
		t.Fatalf("lease ended with %v, want ErrExpired", err)
	}
}

// TestExpiryWithoutRenewal: a grant that is never renewed expires after its
// TTL. Under -race this reports the unsynchronised write of Lease.timer.
func TestExpiryWithoutRenewal(t *testing.T) {
	for _, ttl := range []time.Duration{300 * time.Millisecond, 100 * time.Millisecond} {
		t.Run(ttl.String(), func(t *testing.T) {
			f := startFake(t)
			c := f.client(t, lease.Options{})
			_, l := grant(t, f, c, 1, ttl)
			if err := ended(t, l); !errors.Is(err, lease.ErrExpired) {
				t.Fatalf("lease ended with %v, want ErrExpired", err)
			}
			if l.EndedAt().Sub(l.GrantedAt) < ttl {
				t.Fatal("lease ended before its TTL")
			}
		})
	}
}

func TestRenewedExtendsFromReceipt(t *testing.T) {
	const ttl = 400 * time.Millisecond
	f := startFake(t)
	c := f.client(t, lease.Options{})
	s, l := grant(t, f, c, 1, ttl)
	d0 := l.Deadline()
	sent := time.Now()
	s.out <- renewed(1, ttl)
	deadline := time.Now().Add(waitFor)
	for !l.Deadline().After(d0) {
		if time.Now().After(deadline) {
			t.Fatal("renewal did not move the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if d := l.Deadline(); d.Before(sent.Add(ttl)) {
		t.Fatalf("deadline %v before the renewal was sent + TTL", d.Sub(sent))
	}
	if err := ended(t, l); !errors.Is(err, lease.ErrExpired) {
		t.Fatalf("lease ended with %v, want ErrExpired", err)
	}
	if l.EndedAt().Before(sent.Add(ttl)) {
		t.Fatal("lease ended before the TTL from the last renewal")
	}
}

func TestNewGrantReplaces(t *testing.T) {
	f := startFake(t)
	c := f.client(t, lease.Options{})
	s, l := grant(t, f, c, 1, time.Minute)
	s.out <- granted(2, time.Minute)
	err := ended(t, l)
	if r, ok := lease.Revoked(err); !ok || r != batonv1.RevokeReason_REVOKE_REASON_REPLACED {
		t.Fatalf("first lease ended with %v, want revoked (replaced)", err)
	}
	l2 := acquire(t, c)
	if l2.Epoch != 2 || l2.Err() != nil {
		t.Fatalf("second lease = %+v, %v", l2, l2.Err())
	}
}

func TestBrokerLostAndReconnect(t *testing.T) {
	f := startFake(t)
	c := f.client(t, lease.Options{})
	s, l := grant(t, f, c, 1, time.Minute)
	s.close(status.Error(codes.Unavailable, "broker going away"))
	err := ended(t, l)
	if !errors.Is(err, lease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := l.Release(ctx, 0); err == nil {
		t.Fatal("Release on a broken stream reported success")
	}
	// Acquire opens a new stream.
	_, l2 := grant(t, f, c, 2, time.Minute)
	if l2.Epoch != 2 {
		t.Fatalf("lease after reconnect = %+v", l2)
	}
}

// abandonedWait opens c's lease stream with an Acquire and then gives up
// waiting (a stopping process, a caller that moved on), leaving the
// stream open; it returns the broker's side of it.
func abandonedWait(t *testing.T, f *fakeBroker, c *lease.Client, marks <-chan batonv1.StandbyReason) *fakeStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx)
		errc <- err
	}()
	s := f.stream(t)
	// Cancel only once the session is established (its receive loop runs),
	// else the cancellation rightly abandons the stream being opened.
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT)
	await(t, marks)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel = %v, want context.Canceled", err)
	}
	return s
}

func TestEndedUnclaimedGrantIsReleased(t *testing.T) {
	f := startFake(t)
	opts, marks := syncStandby()
	c := f.client(t, opts)
	s := abandonedWait(t, f, c, marks)
	// A grant arrives while nobody waits, and is revoked unclaimed.
	s.out <- granted(3, time.Minute)
	s.out <- revoked(3, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST)
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT)
	await(t, marks)

	got := make(chan *lease.Lease, 1)
	go func() {
		l, _ := c.Acquire(context.Background())
		got <- l
	}()
	// The next Acquire tells the broker it will not use the dead grant...
	if r := s.recv(t).GetReleased(); r.GetEpoch() != 3 {
		t.Fatalf("worker sent %v, want Released for epoch 3", r)
	}
	// ...and waits for a fresh one, asking on a new stream (a broker does
	// not grant a stream again after it released).
	s2 := f.stream(t)
	s2.out <- granted(4, time.Minute)
	select {
	case l := <-got:
		if l.Epoch != 4 || l.Err() != nil {
			t.Fatalf("lease = %+v, %v", l, l.Err())
		}
	case <-time.After(waitFor):
		t.Fatal("Acquire did not return the fresh grant")
	}
}

// TestCloseReleasesUnclaimedGrant: a grant that arrives after the lease
// loop stopped waiting (a standby worker got SIGTERM) is given back by
// Close, saying the process stops, before the stream ends: the broker
// unlocks at once instead of waiting for the grant's TTL. Close twice is
// fine.
func TestCloseReleasesUnclaimedGrant(t *testing.T) {
	f := startFake(t)
	opts, marks := syncStandby()
	c := f.client(t, opts)
	s := abandonedWait(t, f, c, marks) // SIGTERM: the lease loop is over
	s.out <- granted(5, time.Minute)
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT) // the grant was received before it
	await(t, marks)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	r := s.recv(t).GetReleased()
	if r.GetEpoch() != 5 || r.GetReason() != batonv1.ReleaseReason_RELEASE_REASON_STOPPING {
		t.Fatalf("worker sent %v, want Released for epoch 5 with RELEASE_REASON_STOPPING", r)
	}
	s.close(nil) // the broker ends the stream once released
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestStopReleasesGrants: after Stop (SIGTERM; the lease loop is over, the
// HTTP server drains), a grant nobody took and every later one are given
// back at once, saying the process stops, while the stream stays open and
// Standby messages (which worker is active) still arrive.
func TestStopReleasesGrants(t *testing.T) {
	f := startFake(t)
	opts, marks := syncStandby()
	c := f.client(t, opts)
	s := abandonedWait(t, f, c, marks)
	s.out <- granted(5, time.Minute)
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_LOCK_WAIT) // the grant was received before it
	await(t, marks)
	c.Stop()
	for _, epoch := range []uint64{5, 6} {
		if epoch == 6 {
			s.out <- granted(6, time.Minute)
		}
		r := s.recv(t).GetReleased()
		if r.GetEpoch() != epoch || r.GetReason() != batonv1.ReleaseReason_RELEASE_REASON_STOPPING {
			t.Fatalf("worker sent %v, want Released for epoch %d with RELEASE_REASON_STOPPING", r, epoch)
		}
	}
	s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER)
	select {
	case r := <-marks:
		if r != batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER {
			t.Fatalf("standby reason %v", r)
		}
	case <-time.After(waitFor):
		t.Fatal("a Standby after Stop did not arrive: the stream must stay open until Close")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	f := startFake(t)
	c := f.client(t, lease.Options{})
	_, l := grant(t, f, c, 1, time.Minute)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ended(t, l); !errors.Is(err, lease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Acquire(ctx); !errors.Is(err, lease.ErrClosed) {
		t.Fatalf("Acquire after Close = %v, want ErrClosed", err)
	}
}

func TestCloseUnblocksAcquire(t *testing.T) {
	// No broker at all: Acquire keeps trying until Close.
	ln := bufconn.Listen(1 << 10)
	ln.Close()
	c, err := lease.New("passthrough:///bufnet", withIDs(lease.Options{DialOptions: []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
	}}))
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Acquire(context.Background())
		errc <- err
	}()
	// Close at some point while Acquire is retrying; no ordering is needed.
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, lease.ErrClosed) {
			t.Fatalf("Acquire = %v, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Acquire still blocked after Close")
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    batonv1.RevokeReason
		want string
	}{
		{batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, "shutdown"},
		{batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, "lock_lost"},
		{batonv1.RevokeReason_REVOKE_REASON_REPLACED, "replaced"},
		{batonv1.RevokeReason_REVOKE_REASON_UNSPECIFIED, "unspecified"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := lease.ReasonString(tt.r); got != tt.want {
				t.Fatalf("ReasonString(%v) = %q", tt.r, got)
			}
		})
	}
	err := &lease.RevokedError{Reason: batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, Message: "bye"}
	if got := err.Error(); got != "lease revoked (shutdown): bye" {
		t.Fatalf("Error() = %q", got)
	}
	if _, ok := lease.Revoked(errors.New("x")); ok {
		t.Fatal("Revoked(plain error) = true")
	}
}

// TestOnBrokerUnreachable: a broker that cannot be reached is reported at
// once with why, and reached again when it comes up.
func TestOnBrokerUnreachable(t *testing.T) {
	f := startFake(t)
	var up atomic.Bool
	reports := make(chan error, 16)
	c, err := lease.New("passthrough:///bufnet", lease.Options{
		WorkerID: "w", StreamID: "s",
		OnBroker: func(err error) { reports <- err },
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			if !up.Load() {
				return nil, errors.New("connect: connection refused")
			}
			return f.ln.DialContext(ctx)
		})},
	})
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	acquired := make(chan *lease.Lease, 1)
	go func() {
		l, err := c.Acquire(t.Context())
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		acquired <- l
	}()
	report := func() error {
		t.Helper()
		select {
		case err := <-reports:
			return err
		case <-time.After(waitFor):
			t.Fatal("no report")
			return nil
		}
	}
	if err := report(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("first report %v, want the dial's error", err)
	}
	up.Store(true)
	if err := report(); err != nil {
		t.Fatalf("report once the broker is up: %v, want nil", err)
	}
	s := f.stream(t)
	s.out <- granted(1, time.Minute)
	if l := <-acquired; l == nil || l.Epoch != 1 {
		t.Fatalf("lease %+v", l)
	}
	select {
	case err := <-reports:
		t.Fatalf("report %v with the broker reachable all along", err)
	default:
	}
}

// TestNewRequiresIDs: the broker refuses a version-2 Hello without them, so
// the client does before dialling.
func TestNewRequiresIDs(t *testing.T) {
	for _, o := range []lease.Options{{}, {WorkerID: "w"}, {StreamID: "s"}} {
		if c, err := lease.New("passthrough:///bufnet", o); err == nil {
			_ = c.Close()
			t.Fatalf("New(%+v) = nil error, want one", o)
		}
	}
}

func revokedDrain(epoch uint64, r batonv1.RevokeReason, d time.Duration) *batonv1.BrokerMessage {
	m := revoked(epoch, r)
	m.GetRevoked().DrainTimeout = durationpb.New(d)
	return m
}

// TestDrainDeadline: a revoked lease says until when the worker may finish
// (lease.proto Revoked.drain_timeout, W6): receipt + drain_timeout; from a
// broker that sends none, the lease's expiry for a shutdown and at once for
// any other reason; a second Revoked or the broker going away shortens it.
func TestDrainDeadline(t *testing.T) {
	const ttl = time.Minute
	shutdown18 := func() *batonv1.BrokerMessage {
		return revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, 18*time.Second)
	}
	tests := []struct {
		name string
		msgs []*batonv1.BrokerMessage
		// brokerLost: the stream to the broker breaks after msgs.
		brokerLost bool
		// want: the deadline after the Revoked's receipt; fromExpiry: the
		// lease's expiry instead.
		want       time.Duration
		fromExpiry bool
	}{
		{name: "shutdown", msgs: []*batonv1.BrokerMessage{shutdown18()}, want: 18 * time.Second},
		{name: "lock lost", msgs: []*batonv1.BrokerMessage{revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, 0)}},
		{name: "replaced", msgs: []*batonv1.BrokerMessage{revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_REPLACED, 0)}},
		{name: "older broker, shutdown", msgs: []*batonv1.BrokerMessage{revoked(3, batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN)}, fromExpiry: true},
		{name: "older broker, lock lost", msgs: []*batonv1.BrokerMessage{revoked(3, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST)}},
		{name: "lock lost during the drain", msgs: []*batonv1.BrokerMessage{
			shutdown18(), revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, 0),
		}},
		{name: "a later revoke never lengthens it", msgs: []*batonv1.BrokerMessage{
			revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, 5*time.Second),
			revokedDrain(3, batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN, time.Hour),
		}, want: 5 * time.Second},
		{name: "another epoch's revoke is ignored", msgs: []*batonv1.BrokerMessage{
			shutdown18(), revokedDrain(2, batonv1.RevokeReason_REVOKE_REASON_LOCK_LOST, 0),
		}, want: 18 * time.Second},
		{name: "broker lost during the drain", msgs: []*batonv1.BrokerMessage{shutdown18()}, brokerLost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			opts, standbys := syncStandby()
			c := f.client(t, opts)
			s, l := grant(t, f, c, 3, ttl)
			defer s.close(nil) // so that Close need not wait for the fake
			if !l.DrainDeadline().IsZero() {
				t.Fatalf("DrainDeadline of a valid lease = %v, want zero", l.DrainDeadline())
			}
			expiry := l.Deadline()
			before := time.Now()
			for _, m := range tt.msgs {
				s.out <- m
			}
			// A standby after them proves they were handled.
			s.out <- standby(batonv1.StandbyReason_STANDBY_REASON_SHUTTING_DOWN)
			await(t, standbys)
			after := time.Now()
			ended(t, l)
			if tt.brokerLost {
				s.close(errors.New("broker gone"))
				for d := time.Now().Add(waitFor); l.DrainDeadline().Sub(before) > waitFor; {
					if time.Now().After(d) {
						t.Fatalf("DrainDeadline still %v after the broker was lost", l.DrainDeadline().Sub(before))
					}
					time.Sleep(time.Millisecond)
				}
				after = time.Now()
			}
			got := l.DrainDeadline()
			if got.IsZero() {
				t.Fatal("DrainDeadline of a revoked lease is zero")
			}
			lo, hi := before.Add(tt.want), after.Add(tt.want)
			if tt.fromExpiry {
				lo, hi = expiry, expiry
			}
			if got.Before(lo) || got.After(hi) {
				t.Fatalf("DrainDeadline = %v after the revoke was sent, want between %v and %v", got.Sub(before), lo.Sub(before), hi.Sub(before))
			}
		})
	}
}

// TestDrainDeadlineZeroWhenNotRevoked: a lease that expired or whose broker
// went away has nothing to drain into.
func TestDrainDeadlineZeroWhenNotRevoked(t *testing.T) {
	f := startFake(t)
	c := f.client(t, lease.Options{})
	s, l := grant(t, f, c, 3, time.Minute)
	s.close(errors.New("broker gone"))
	if err := ended(t, l); !errors.Is(err, lease.ErrBrokerLost) {
		t.Fatalf("lease ended with %v, want ErrBrokerLost", err)
	}
	if !l.DrainDeadline().IsZero() {
		t.Fatalf("DrainDeadline = %v, want zero", l.DrainDeadline())
	}
}
