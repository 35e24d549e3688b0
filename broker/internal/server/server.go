// Package server is the broker's gRPC edge: the baton.v1 LeaseService,
// bridging each worker stream to the lease Hub, and the standard
// grpc.health.v1 service. Errors become gRPC status codes here and nowhere
// else.
package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"

	"github.com/batonhq/baton/broker/internal/lease"
	lsntext "github.com/batonhq/baton/status"
)

// Protocol versions this broker supports (Hello.protocol_version). A Hello
// without a version (0) is version 1, from a worker that predates the
// field. Both are served alike, except that version 2 requires worker_id and
// stream_id.
const (
	minProtocol = 1
	maxProtocol = lease.ProtocolVersion
)

// Keepalive (lease.proto W12 and B7). The contract lets a worker ping once
// a second; the broker enforces half that (a worker pinging more often
// gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings" after a few pings), so
// that timer jitter never counts against a worker at the limit. The broker
// itself pings a connection idle for serverPingIdle and closes it when the
// ping is not answered within serverPingTimeout: a frozen worker's stream
// ends, which ends its grant.
const (
	minClientPing     = 500 * time.Millisecond
	serverPingIdle    = 2 * time.Second
	serverPingTimeout = 2 * time.Second
)

// Server serves the lease service and health on one gRPC listener.
type Server struct {
	batonv1.UnimplementedLeaseServiceServer

	streamID string
	hub      *lease.Hub
	log      *slog.Logger
	grpc     *grpc.Server
	// Health is the standard health server; the leader loop sets
	// readiness and leader on it.
	Health *health.Server
}

// New builds the gRPC server for hub. Liveness (and the empty service name)
// start SERVING; readiness and leader start NOT_SERVING.
func New(streamID string, hub *lease.Hub, log *slog.Logger) *Server {
	s := &Server{
		streamID: streamID,
		hub:      hub,
		log:      log,
		Health:   health.NewServer(),
		grpc: grpc.NewServer(
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minClientPing, PermitWithoutStream: true}),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: serverPingIdle, Timeout: serverPingTimeout}),
		),
	}
	batonv1.RegisterLeaseServiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.Health)
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.Health.SetServingStatus("liveness", healthpb.HealthCheckResponse_SERVING)
	s.Health.SetServingStatus("readiness", healthpb.HealthCheckResponse_NOT_SERVING)
	s.Health.SetServingStatus("leader", healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// Serve serves on ln until Stop. It returns nil after a stop.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Stop marks every service NOT_SERVING, then stops gracefully within
// timeout, then hard.
func (s *Server) Stop(timeout time.Duration) {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.grpc.Stop()
		<-done
	}
}

// Lease implements the baton.v1 lease stream.
func (s *Server) Lease(stream batonv1.LeaseService_LeaseServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be hello")
	}
	if err := s.checkHello(hello); err != nil {
		return err
	}
	id := hello.GetWorkerId()
	if id == "" {
		id = "unnamed-worker"
	}
	w := s.hub.Attach(id, hello.GetAdvertiseUrl())
	defer s.hub.Detach(w)
	s.log.Info("worker attached", "worker", id, "worker_url", hello.GetAdvertiseUrl())
	defer s.log.Info("worker detached", "worker", id)

	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, w) }()
	for {
		select {
		case m := <-w.Out():
			if w.Stale(m) {
				continue // a renewal held up too long must not extend a lease
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-w.Dropped():
			// Flush what is queued (a final revoke or standby) first.
			for {
				select {
				case m := <-w.Out():
					if m.GetRenewed() != nil {
						continue // a late renewal must not extend a lease
					}
					if err := stream.Send(m); err != nil {
						return err
					}
				default:
					return status.Error(codes.Unavailable, "broker is shutting down or the worker fell behind")
				}
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// receive feeds the worker's messages to the hub until the stream ends.
func (s *Server) receive(stream batonv1.LeaseService_LeaseServer, w *lease.Worker) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch msg := m.Msg.(type) {
		case *batonv1.WorkerMessage_Progress:
			s.hub.Progress(w, msg.Progress.GetEpoch(), msg.Progress.GetDurableLsn())
		case *batonv1.WorkerMessage_Released:
			r := msg.Released
			if r.GetDurableLsn() != 0 {
				s.hub.Progress(w, r.GetEpoch(), r.GetDurableLsn())
			}
			if s.hub.Released(w, r.GetEpoch(), r.GetReason()) {
				s.log.Info("worker released the lease", "worker", w.ID, "epoch", r.GetEpoch(),
					"durable_lsn", lsntext.FormatLSN(r.GetDurableLsn()), "reason", releaseReason(r.GetReason()))
			}
		case *batonv1.WorkerMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello sent twice")
		default:
			// A kind this broker does not know (a newer worker's): ignored,
			// so that the protocol can grow compatibly.
		}
	}
}

// checkHello refuses a Hello this broker cannot serve.
func (s *Server) checkHello(h *batonv1.Hello) error {
	v := h.GetProtocolVersion()
	if v == 0 {
		v = 1 // a worker that predates the field
	}
	if v < minProtocol || v > maxProtocol {
		return status.Errorf(codes.FailedPrecondition,
			"protocol version %d is not supported by this broker; supported protocol versions: %s", v, supportedVersions())
	}
	if v >= 2 {
		if h.GetWorkerId() == "" {
			return status.Error(codes.InvalidArgument, "hello: worker_id is empty (required from protocol version 2)")
		}
		if h.GetStreamId() == "" {
			return status.Errorf(codes.InvalidArgument, "hello: stream_id is empty (required from protocol version 2); this broker serves stream %q", s.streamID)
		}
	}
	if h.GetStreamId() != "" && h.GetStreamId() != s.streamID {
		return status.Errorf(codes.InvalidArgument, "this broker serves stream %q, not %q", s.streamID, h.GetStreamId())
	}
	return nil
}

// supportedVersions lists the supported protocol versions: "1, 2".
func supportedVersions() string {
	vs := make([]string, 0, maxProtocol-minProtocol+1)
	for v := minProtocol; v <= maxProtocol; v++ {
		vs = append(vs, strconv.Itoa(v))
	}
	return strings.Join(vs, ", ")
}

// releaseReason is the lower-case name of a release reason: unspecified,
// stopping.
func releaseReason(r batonv1.ReleaseReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RELEASE_REASON_"))
}
