// Package lease is the Go client of Baton's lease protocol (baton.v1,
// proto/baton/v1/lease.proto). A worker asks its broker for the stream and
// gets a *Lease: a context that ends when the broker revokes the grant, when
// the broker goes away, or when no renewal arrived for the TTL — measured on
// this process's monotonic clock from the last renewal received, so a
// frozen or partitioned broker cannot keep a worker consuming.
//
// Derive everything that consumes the stream from Lease.Ctx(): losing the
// lease then stops it without anyone remembering to check. Never assume the
// lease is still held; check Lease.Err() or select on Lease.Done().
//
//	c, err := lease.New("127.0.0.1:7070", lease.Options{WorkerID: "worker@pod"})
//	for {
//		l, err := c.Acquire(ctx)           // blocks while standby
//		if err != nil { return err }
//		pos := consume(l.Ctx(), l.Epoch)   // returns when the lease ends
//		l.Release(ctx, pos)                 // tell the broker we stopped
//	}
//
// A Client is safe for concurrent use, but one Acquire at a time is the
// intended use: a broker grants one lease per worker stream.
package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// ProtocolVersion is the version of the lease protocol this client
// implements (Hello.protocol_version).
const ProtocolVersion = 2

// ErrExpired ends a lease whose renewals stopped arriving for the TTL.
var ErrExpired = errors.New("lease expired: no renewal within the TTL")

// ErrReleased ends a lease the worker released itself.
var ErrReleased = errors.New("lease released")

// ErrBrokerLost ends a lease whose stream to the broker broke.
var ErrBrokerLost = errors.New("lease stream to the broker ended")

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("lease client closed")

// RevokedError ends a lease the broker revoked. Lease.DrainDeadline says
// until when the worker may still finish.
type RevokedError struct {
	Reason  batonv1.RevokeReason
	Message string
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("lease revoked (%s): %s", ReasonString(e.Reason), e.Message)
}

// Revoked reports whether err says the broker revoked the lease, and why.
func Revoked(err error) (batonv1.RevokeReason, bool) {
	var re *RevokedError
	if errors.As(err, &re) {
		return re.Reason, true
	}
	return batonv1.RevokeReason_REVOKE_REASON_UNSPECIFIED, false
}

// ReasonString is the lower-case name of a revoke reason: shutdown,
// lock_lost, replaced.
func ReasonString(r batonv1.RevokeReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "REVOKE_REASON_"))
}

// Options configure a Client.
type Options struct {
	// WorkerID names this worker in the broker's logs and state table.
	// Required.
	WorkerID string
	// StreamID is the stream the worker consumes (REPLICATION_STREAM_ID);
	// the broker refuses it if it serves another. Required.
	StreamID string
	// AdvertiseURL, when set, is the base URL at which this worker serves
	// the other pods of the stream (Hello.advertise_url); the broker shows it
	// to standby workers while this worker holds the grant.
	AdvertiseURL string
	// OnStandby, when set, is called (from the client's receive goroutine)
	// with every standby message; it must not block.
	OnStandby func(*batonv1.Standby)
	// OnBroker, when set, is called (from Acquire) with why a lease stream
	// could not be opened when the broker is unreachable, and with nil when
	// a stream opened after that; it must not block.
	OnBroker func(err error)
	// DialOptions are appended to the client's defaults (insecure transport
	// to the co-located broker, keepalives).
	DialOptions []grpc.DialOption
}

// Client talks to one broker. Create it with New; Close it when done.
type Client struct {
	opts Options
	conn *grpc.ClientConn
	// base scopes the lease streams: they outlive any one Acquire call and
	// end with Close.
	base   context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	sess *session
	// unreachable: OnBroker was last told the broker is unreachable.
	unreachable bool

	closeOnce sync.Once
	closeErr  error
	// stopping: Stop was called (c.mu).
	stopping bool
}

// New creates a client for the broker at addr (host:port). It does not
// connect until Acquire.
func New(addr string, opts Options) (*Client, error) {
	if opts.WorkerID == "" || opts.StreamID == "" {
		return nil, errors.New("lease client: WorkerID and StreamID are required")
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC-Go never pings more often than every 10 s (it raises a
		// shorter Time to that, with a warning): well inside the contract's
		// once a second (lease.proto W12). The TTL, not keepalive, is what
		// notices a frozen broker.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
		// The broker is a sidecar on loopback: reconnect quickly when it
		// (re)starts instead of gRPC's default of 1 s growing to 2 min.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}, opts.DialOptions...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("lease client: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Client{opts: opts, conn: conn, base: base, cancel: cancel}, nil
}

// Close ends the stream (the broker treats it as a release after the TTL)
// and the connection. Leases end with ErrBrokerLost. A grant that arrived
// while no Acquire waited for it (the process is stopping: its lease loop
// is over) is released first, saying the process stops, so that the broker
// unlocks at once for another pod instead of waiting for that grant's
// TTL. Close may be called more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s != nil {
			s.releaseUnclaimed()
			// Half-close first and let the broker end the stream, so that a
			// Released sent just before reaches it (cancelling at once could
			// drop it, and the broker would then wait for the lease's TTL).
			s.closeSend(2 * time.Second)
		}
		c.cancel()
		c.closeErr = c.conn.Close()
	})
	return c.closeErr
}

// Stop tells the client that the process is stopping and will not
// Acquire again: a grant that no Acquire took, and every later one, is
// given back at once, saying the process stops, so that the broker
// unlocks for another pod instead of granting a worker that will not
// replicate (and then waiting for that grant's TTL). The stream stays open
// until Close, so that Standby messages (which worker is active) still
// arrive, for a standby that forwards requests while it drains.
func (c *Client) Stop() {
	c.mu.Lock()
	c.stopping = true
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		s.stopping.Store(true)
		s.releaseUnclaimed()
	}
}

// Acquire blocks until the broker grants a lease, ctx is done, or the client
// is closed. While the broker is unreachable it keeps trying with backoff.
func (c *Client) Acquire(ctx context.Context) (*Lease, error) {
	delay := 50 * time.Millisecond
	for {
		if c.base.Err() != nil {
			return nil, ErrClosed
		}
		s, err := c.session(ctx)
		if err == nil {
			select {
			case l := <-s.grants:
				if l.Err() != nil {
					// Granted and ended before anyone took it: say so.
					_ = l.Release(ctx, 0)
					continue
				}
				return l, nil
			case <-s.done:
				c.drop(s)
				if code := status.Code(s.err); code == codes.InvalidArgument || code == codes.Unimplemented {
					return nil, fmt.Errorf("broker refused the lease stream: %w", s.err)
				}
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		} else if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-c.base.Done():
			t.Stop()
			return nil, ErrClosed
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (c *Client) session(ctx context.Context) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		select {
		case <-c.sess.done:
			c.sess = nil
		default:
			if !c.sess.spent.Load() {
				return c.sess, nil
			}
			// The broker grants a stream at most until it releases: ask
			// again on a new stream, ending the old one cleanly.
			c.sess.closeSend(time.Second)
			c.sess = nil
		}
	}
	sctx, cancel := context.WithCancel(c.base)
	// Give up opening the stream when the caller does.
	stop := context.AfterFunc(ctx, cancel)
	// The first attempt fails fast when the broker cannot be reached, to
	// say why; then the stream waits for the connection.
	client := batonv1.NewLeaseServiceClient(c.conn)
	stream, err := client.Lease(sctx)
	if status.Code(err) == codes.Unavailable && sctx.Err() == nil {
		c.reachable(err)
		stream, err = client.Lease(sctx, grpc.WaitForReady(true))
	}
	if err == nil {
		c.reachable(nil)
		err = stream.Send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Hello{Hello: &batonv1.Hello{
			WorkerId: c.opts.WorkerID, StreamId: c.opts.StreamID, AdvertiseUrl: c.opts.AdvertiseURL,
			ProtocolVersion: ProtocolVersion,
		}}})
	}
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("open lease stream: %w", err)
	}
	s := &session{stream: stream, cancel: cancel, grants: make(chan *Lease, 1), done: make(chan struct{}), onStandby: c.opts.OnStandby}
	s.stopping.Store(c.stopping)
	go s.receive()
	c.sess = s
	return s, nil
}

// drainDeadline is until when a worker revoked by r (received at now) may
// finish: receipt + drain_timeout; from a broker that predates the field,
// the lease's own expiry (leaseEnd) for a shutdown and now for any other
// reason (lease.proto, Revoked.drain_timeout).
func drainDeadline(r *batonv1.Revoked, now, leaseEnd time.Time) time.Time {
	switch {
	case r.GetDrainTimeout() != nil:
		return now.Add(max(r.GetDrainTimeout().AsDuration(), 0))
	case r.GetReason() == batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN:
		return leaseEnd
	default:
		return now
	}
}

// reachable reports to OnBroker that the broker is unreachable (err), or
// reachable again (nil) after that; c.mu is held.
func (c *Client) reachable(err error) {
	if c.opts.OnBroker == nil || (err == nil && !c.unreachable) {
		return
	}
	c.unreachable = err != nil
	c.opts.OnBroker(err)
}

func (c *Client) drop(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s {
		c.sess = nil
	}
}

// session is one Lease stream.
type session struct {
	stream    batonv1.LeaseService_LeaseClient
	cancel    context.CancelFunc
	grants    chan *Lease
	done      chan struct{}
	onStandby func(*batonv1.Standby)

	sendMu sync.Mutex
	// spent: a Released was sent on this stream; it is not granted again.
	spent atomic.Bool
	// stopping: the process stops (Client.Stop); a grant nobody waits for
	// is given back at once.
	stopping atomic.Bool

	mu  sync.Mutex
	cur *Lease
	err error
}

// releaseUnclaimed gives back, saying the process stops, a grant that no
// Acquire took.
func (s *session) releaseUnclaimed() {
	select {
	case l := <-s.grants:
		if l.Err() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = l.ReleaseStopping(ctx, 0)
			cancel()
		}
	default:
	}
}

// closeSend half-closes the stream, waits up to timeout for the broker to
// end it (so that what was sent is delivered), then cancels it.
func (s *session) closeSend(timeout time.Duration) {
	s.sendMu.Lock()
	_ = s.stream.CloseSend()
	s.sendMu.Unlock()
	select {
	case <-s.done:
	case <-time.After(timeout):
	}
	s.cancel()
	<-s.done
}

func (s *session) send(m *batonv1.WorkerMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	select {
	case <-s.done:
		return fmt.Errorf("%w: %w", ErrBrokerLost, s.err)
	default:
	}
	return s.stream.Send(m)
}

// receive owns the stream's Recv until it ends.
func (s *session) receive() {
	defer close(s.done)
	defer s.cancel()
	for {
		m, err := s.stream.Recv()
		now := time.Now()
		if err != nil {
			s.mu.Lock()
			s.err = err
			cur := s.cur
			s.mu.Unlock()
			if cur != nil {
				// A draining worker's broker is gone: so may its lock be.
				cur.shortenDrain(now)
				cur.end(fmt.Errorf("%w: %w", ErrBrokerLost, err))
			}
			return
		}
		switch msg := m.Msg.(type) {
		case *batonv1.BrokerMessage_Standby:
			if s.onStandby != nil {
				s.onStandby(msg.Standby)
			}
		case *batonv1.BrokerMessage_Granted:
			l := newLease(s, msg.Granted, now)
			s.mu.Lock()
			prev := s.cur
			s.cur = l
			s.mu.Unlock()
			if prev != nil {
				prev.end(&RevokedError{Reason: batonv1.RevokeReason_REVOKE_REASON_REPLACED, Message: "broker granted a new epoch"})
			}
			select {
			case <-s.grants: // an unclaimed older grant: superseded
			default:
			}
			s.grants <- l
			if s.stopping.Load() {
				s.releaseUnclaimed()
			}
		case *batonv1.BrokerMessage_Renewed:
			s.mu.Lock()
			cur := s.cur
			s.mu.Unlock()
			if cur != nil && cur.Epoch == msg.Renewed.GetEpoch() {
				cur.renew(now, msg.Renewed.GetTtl().AsDuration())
			}
		case *batonv1.BrokerMessage_Revoked:
			s.mu.Lock()
			cur := s.cur
			s.mu.Unlock()
			if cur != nil && cur.Epoch == msg.Revoked.GetEpoch() {
				cur.revoked(drainDeadline(msg.Revoked, now, cur.Deadline()))
				cur.end(&RevokedError{Reason: msg.Revoked.GetReason(), Message: msg.Revoked.GetMessage()})
			}
		}
	}
}
