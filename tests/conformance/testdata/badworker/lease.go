package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
)

// A lease client written from lease.proto alone (not worker/lease), as a
// worker in another language would write it, so that BATON_BAD can break
// the protocol's side of the contract too:
//
//	hello       Hello with protocol_version 1 and no worker_id
//	strict      ends its stream on a BrokerMessage of a kind it does not know
//	anyrevoke   acts on a Revoked of any epoch

var (
	errExpired    = errors.New("lease expired: no renewal within the TTL")
	errBrokerLost = errors.New("lease stream to the broker ended")
	errUnknown    = errors.New("a broker message of an unknown kind")
)

// revokedError ends a lease the broker revoked.
type revokedError struct{ reason batonv1.RevokeReason }

func (e *revokedError) Error() string { return "revoked: " + e.reason.String() }

func revokedReason(err error) (batonv1.RevokeReason, bool) {
	var r *revokedError
	if errors.As(err, &r) {
		return r.reason, true
	}
	return 0, false
}

type leaseClient struct {
	conn     *grpc.ClientConn
	svc      batonv1.LeaseServiceClient
	streamID string
	bad      string
}

func newLeaseClient(addr, streamID, bad string) (*leaseClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &leaseClient{conn: conn, svc: batonv1.NewLeaseServiceClient(conn), streamID: streamID, bad: bad}, nil
}

func (c *leaseClient) Close() error { return c.conn.Close() }

// grant is one lease: valid until ctx ends (Err says why).
type grant struct {
	Epoch             uint64
	Slot, Publication string
	stream            batonv1.LeaseService_LeaseClient
	cancelStream      context.CancelFunc
	received          chan struct{} // closed when receive returns
	ctx               context.Context
	cancel            context.CancelCauseFunc
	sendMu            sync.Mutex
}

func (g *grant) Ctx() context.Context  { return g.ctx }
func (g *grant) Done() <-chan struct{} { return g.ctx.Done() }
func (g *grant) Err() error            { return context.Cause(g.ctx) }
func (g *grant) send(m *batonv1.WorkerMessage) error {
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	return g.stream.Send(m)
}

// Progress reports the durable position.
func (g *grant) Progress(lsn uint64) error {
	return g.send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Progress{Progress: &batonv1.Progress{Epoch: g.Epoch, DurableLsn: lsn}}})
}

// Release sends Released, half-closes the stream and waits (bounded by
// ctx) for the broker to end it, so that Released is delivered.
func (g *grant) Release(ctx context.Context, lsn uint64, reason batonv1.ReleaseReason) error {
	g.cancel(errors.New("released"))
	err := g.send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Released{Released: &batonv1.Released{Epoch: g.Epoch, DurableLsn: lsn, Reason: reason}}})
	_ = g.stream.CloseSend()
	select { // receive returns when the broker ends the stream
	case <-g.received:
	case <-ctx.Done():
	}
	g.cancelStream()
	return err
}

// Acquire opens a Lease stream, says Hello and waits for Granted; it
// retries every 200 ms while the broker cannot be reached.
func (c *leaseClient) Acquire(ctx context.Context) (*grant, error) {
	for {
		g, err := c.try(ctx)
		if err == nil {
			return g, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *leaseClient) try(ctx context.Context) (*grant, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	stream, err := c.svc.Lease(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	hello := &batonv1.Hello{ProtocolVersion: 2, WorkerId: strings.TrimSuffix("badworker-"+c.bad, "-"), StreamId: c.streamID}
	if c.bad == "hello" {
		hello = &batonv1.Hello{ProtocolVersion: 1, StreamId: c.streamID}
	}
	if err := stream.Send(&batonv1.WorkerMessage{Msg: &batonv1.WorkerMessage_Hello{Hello: hello}}); err != nil {
		cancel()
		return nil, err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			cancel()
			return nil, err
		}
		gr := m.GetGranted()
		if gr == nil {
			continue // Standby, or what it does not know
		}
		g := &grant{Epoch: gr.GetEpoch(), Slot: gr.GetSlotName(), Publication: gr.GetPublicationName(), stream: stream, cancelStream: cancel, received: make(chan struct{})}
		g.ctx, g.cancel = context.WithCancelCause(context.Background())
		ttl := gr.GetTtl().AsDuration()
		timer := time.AfterFunc(ttl, func() { g.cancel(errExpired) })
		go c.receive(g, timer, ttl)
		return g, nil
	}
}

// receive renews and ends g from the broker's messages until the stream
// ends.
func (c *leaseClient) receive(g *grant, timer *time.Timer, ttl time.Duration) {
	defer close(g.received)
	defer timer.Stop()
	for {
		m, err := g.stream.Recv()
		if err != nil {
			g.cancel(fmt.Errorf("%w: %w", errBrokerLost, err))
			return
		}
		switch {
		case m.GetRenewed() != nil:
			if m.GetRenewed().GetEpoch() == g.Epoch && g.ctx.Err() == nil {
				timer.Reset(m.GetRenewed().GetTtl().AsDuration())
			}
		case m.GetRevoked() != nil:
			if m.GetRevoked().GetEpoch() == g.Epoch || c.bad == "anyrevoke" {
				g.cancel(&revokedError{reason: m.GetRevoked().GetReason()})
			}
		case m.GetMsg() == nil && c.bad == "strict":
			g.cancel(errUnknown)
			g.cancelStream()
			return
		}
	}
}
