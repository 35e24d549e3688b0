// The Baton lease protocol: the contract between a broker (the sidecar that
// holds the PostgreSQL advisory lock of a replication stream) and the worker
// that consumes the stream. Any language with gRPC can implement a worker
// from this file alone: it states every obligation of both sides, numbered
// (W1..W12 for a worker, B1..B7 for a broker) so that tests and other
// documents can name them.
//
// Protocol version
//
// This file describes protocol version 2 (Hello.protocol_version). Version 1
// is the protocol as it was before Hello carried a version; a Hello without
// the field (0) is taken as version 1 and served as before: an empty
// stream_id means "whatever the broker serves" and an empty worker_id is
// logged as "unnamed-worker". Everything else below holds for both versions
// (the fields version 2 added are ignored by version-1 workers). A broker
// refuses a version it does not support with FAILED_PRECONDITION, naming the
// versions it supports ("supported protocol versions: 1, 2"). The package
// name baton.v1 changes only with an incompatible wire format; `buf
// breaking` checks every change of this file against the last released one
// (proto/released/).
//
// Version 2 added: Hello.protocol_version, with worker_id and stream_id
// required; Standby.protocol_version and Granted.protocol_version (the
// broker's); Revoked.drain_timeout, and a second Revoked when the lock
// fails during a drain; brokers ignoring message kinds they do not know.
// Brokers older than version 2 (protocol_version 0 in Standby) end a stream
// that sends a kind they do not know with INVALID_ARGUMENT: a worker sends
// a broker only the kinds of the versions it supports.
//
// Life of a lease
//
//  1. The worker opens one LeaseService.Lease stream to the broker of its own
//     pod and sends Hello.
//  2. Until the broker holds the stream's lock (or while another worker holds
//     this broker's grant) it answers Standby, again whenever what it knows
//     about the current holder changes.
//  3. When the broker holds the lock it sends Granted: the epoch (fencing
//     token), the TTL and the names of the slot and publication to use. The
//     lease is valid from the moment the worker receives Granted, for ttl
//     measured on the worker's own monotonic clock.
//  4. While the lock session is healthy the broker sends Renewed at least
//     every ttl/3. Each Renewed extends the lease to (time of receipt + ttl).
//     A worker that has not received Granted or Renewed for ttl MUST stop
//     consuming the stream on its own, without waiting for the broker: the
//     broker may be frozen or partitioned, and a successor may be granted
//     soon after.
//  5. Revoked ends the grant (reason: shutdown, lock_lost, replaced) and says
//     how long the worker may take to finish (drain_timeout). The worker
//     stops reading at once; within the drain timeout it makes what it
//     received durable, acknowledges it to PostgreSQL, closes its
//     replication connection and then sends Released. With no drain time
//     (lock_lost, replaced) it closes its replication connection at once,
//     acknowledging nothing more. On shutdown the broker keeps the lock
//     until Released arrives (or its drain timeout passes), so a graceful
//     handoff never overlaps.
//  6. A worker that wants to stop on its own sends Released while holding a
//     grant, saying why (ReleaseReason). A worker whose process is stopping
//     (SIGTERM: Kubernetes stops a native sidecar's main container first)
//     says RELEASE_REASON_STOPPING after it has drained, acknowledged and
//     ended its walsender; the broker then records the release and unlocks
//     at once, so that a standby pod takes over in milliseconds instead of
//     after BATON_WORKER_ABSENCE_TIMEOUT. Any other Released leaves the lock
//     with the broker, waiting for a worker to attach again. After a
//     stopping release the broker goes on sending Standby with the current
//     holder on that stream until it ends, so the stopping worker learns its
//     successor (and its worker_url) while it finishes the requests that
//     still reach it.
//
// A stream that sent Released is never granted again: a worker that wants
// the stream again opens a new Lease stream (and should half-close the old
// one, so that its Released is delivered before the stream ends). After a
// Revoked without Released (the lock was lost) the stream stays a
// candidate: the broker sends Standby and, when it can grant again, a new
// Granted with a higher epoch. Closing the stream (or the connection
// dropping) without Released counts as a release for the broker, except
// that it will not grant again until the previous grant's TTL has passed
// since its last renewal.
//
// What a worker must do
//
//  W1. Hello first. Open the Lease stream to the broker of its own pod
//      (BATON_BROKER_ADDR, default 127.0.0.1:7070) and send Hello first and
//      once, with protocol_version 2, a non-empty worker_id and stream_id =
//      REPLICATION_STREAM_ID.
//  W2. Nothing before Granted. Open no replication connection (no walsender:
//      no START_REPLICATION, no CREATE_REPLICATION_SLOT) and change neither
//      the slot nor the publication while it holds no valid lease: before
//      Granted, after the lease expired or was revoked, after Released.
//      Ordinary sessions that only read are allowed while waiting.
//  W3. The epoch in application_name. Its replication connection's
//      application_name is "baton-worker:<stream id>:<epoch>", with the
//      epoch of the Granted it acts under in decimal, so that PostgreSQL's
//      own views (pg_stat_replication, pg_stat_activity) show which grant
//      consumes the stream. Before START_REPLICATION, if the slot is still
//      active for another backend (a dead or frozen predecessor's
//      walsender), it may end that backend with pg_terminate_backend, but
//      only when that backend's application_name carries an older epoch (or
//      none): a successor's walsender is never ended.
//  W4. Stop within the TTL on its own clock. The lease is valid until
//      (receipt of the last Granted or Renewed for its epoch + that
//      message's ttl), on the worker's monotonic clock. When that passes
//      without a renewal, the worker stops at once, without waiting for the
//      broker: it reads nothing more, acknowledges nothing more and closes
//      its replication connection. It checks validity on that clock before
//      every acknowledgement and every write a successor may read (a process
//      resumed after a freeze must not act on a timer that has not fired
//      yet).
//  W5. Acknowledge only what is durable. The flush position of its standby
//      status updates (and so the slot's confirmed_flush_lsn) never passes
//      what is durable in its storage. It answers the walsender's keepalive
//      requests and sends a status update at least every
//      min(wal_sender_timeout/3, 10 s).
//  W6. Revoked. On Revoked for its epoch it stops reading at once. Until its
//      drain deadline (receipt + Revoked.drain_timeout, see there) it may
//      make durable what it already received, acknowledge that, close its
//      replication connection, end its walsender (W7) and send Released
//      (W8). When the deadline passes first, or there is none (lock_lost,
//      replaced), it acknowledges nothing more and closes its replication
//      connection at once. A second Revoked for the same epoch with a
//      shorter deadline (the lock failed during a drain) replaces the first.
//  W7. End its walsender before Released. Released promises that nothing of
//      the worker consumes the stream any more: its replication connection
//      is closed and its walsender gone from pg_stat_replication (after
//      closing, it checks, and ends its own walsender with
//      pg_terminate_backend from an ordinary session if a proxy kept it
//      alive). A graceful stop also waits until the slot's
//      confirmed_flush_lsn shows its final acknowledgement before ending the
//      walsender, so its successor does not stream again what it stored.
//  W8. Released. Send Released with the grant's epoch and the last durable
//      LSN when it stops with a grant (revoked, or on its own), with
//      RELEASE_REASON_STOPPING when its process is stopping. Then half-close
//      the stream (a new stream is needed to be granted again).
//  W9. Epochs. Act only under the epoch of the latest Granted: ignore
//      Renewed and Revoked for other epochs; after a lease ended, consume
//      nothing until a new Granted (whose epoch is higher).
//  W10. Progress. Report its durable position with Progress under the
//      current epoch: soon after each grant, and at least every 10 s while
//      it advances. Report each position it acknowledges to PostgreSQL at
//      once (before the standby status update or right after it), so that
//      the slot's confirmed_flush_lsn is never left ahead of the last
//      position reported (Progress or Released.durable_lsn). The broker
//      shows it; checks of W5 from outside the worker rely on it.
//  W11. Ignore what it does not know: unknown BrokerMessage kinds, unknown
//      fields, unknown enum values (an unknown StandbyReason means wait; an
//      unknown RevokeReason is handled by its drain_timeout).
//  W12. Keepalive. gRPC (HTTP/2) keepalive pings to the broker, if any, at
//      most one per second (client keepalive time >= 1 s; gRPC's own advice
//      is 10 s or more), with or without a stream open. The broker tolerates
//      pings down to every 500 ms so that timer jitter never counts against
//      a worker at 1 s; a worker that pings more often is sent GOAWAY
//      ENHANCE_YOUR_CALM ("too_many_pings") and loses its stream and so its
//      grant. Keepalive is not needed to notice a frozen broker: the TTL
//      (W4) does that.
//
// What a broker does
//
//  B1. It answers every Hello with Standby first (then Granted when it
//      grants), carrying its protocol_version, and refuses a bad stream with
//      a gRPC status: INVALID_ARGUMENT when the first message is
//      not Hello, Hello comes twice, stream_id names another stream, or (from
//      version 2) worker_id or stream_id is empty; FAILED_PRECONDITION for an
//      unsupported protocol_version; UNAVAILABLE while it shuts down.
//  B2. It grants only while it holds the stream's advisory lock, to at most
//      one stream at a time, with an epoch greater than every earlier grant
//      of the stream (stored in PostgreSQL); after a grant that ended without
//      Released, not before that grant's TTL has passed since its last
//      renewal.
//  B3. It renews at least every ttl/3 while its lock session is healthy, and
//      only renewals it can stand behind: every lease ends (receipt + ttl)
//      before PostgreSQL could end its lock session. It sends no Renewed
//      for a revoked grant.
//  B4. Revoked carries drain_timeout: BATON_DRAIN_TIMEOUT less a delivery
//      margin on shutdown, during which it keeps the lock and its lock
//      session alive; 0 for lock_lost and replaced. When its lock session
//      fails during a drain it sends a second Revoked (lock_lost, 0).
//  B5. On Released(STOPPING) it unlocks at once; on any other Released it
//      keeps the lock for a worker that attaches within
//      BATON_WORKER_ABSENCE_TIMEOUT.
//  B6. It ignores WorkerMessage kinds and fields it does not know (a newer
//      worker's), so the protocol can grow compatibly.
//  B7. It pings an idle connection after 2 s and closes it when the ping is
//      not answered within 2 s (a frozen worker's stream ends, which counts
//      as the end of its grant, B2).

// Code generated by protoc-gen-go-grpc. DO NOT EDIT.
// versions:
// - protoc-gen-go-grpc v1.6.2
// - protoc             (unknown)
// source: baton/v1/lease.proto

package batonv1

import (
	context "context"
	grpc "google.golang.org/grpc"
	codes "google.golang.org/grpc/codes"
	status "google.golang.org/grpc/status"
)

// This is a compile-time assertion to ensure that this generated file
// is compatible with the grpc package it is being compiled against.
// Requires gRPC-Go v1.64.0 or later.
const _ = grpc.SupportPackageIsVersion9

const (
	LeaseService_Lease_FullMethodName = "/baton.v1.LeaseService/Lease"
)

// LeaseServiceClient is the client API for LeaseService service.
//
// For semantics around ctx use and closing/ending streaming RPCs, please refer to https://pkg.go.dev/google.golang.org/grpc/?tab=doc#ClientConn.NewStream.
//
// LeaseService is served by the broker on BATON_BROKER_LISTEN (default :7070),
// next to grpc.health.v1.Health.
type LeaseServiceClient interface {
	// Lease is one bidirectional stream per worker. The first message from the
	// worker must be Hello; the broker answers with Standby, then Granted when
	// it grants, and keeps the stream open for renewals. A broker grants to at most one
	// stream at a time; any other stream is told Standby.
	//
	// Errors (B1): INVALID_ARGUMENT when the first message is not Hello, Hello
	// comes twice, Hello names a different stream than the broker serves, or
	// (protocol version 2 and later) leaves worker_id or stream_id empty;
	// FAILED_PRECONDITION when the broker does not support Hello's
	// protocol_version (the message names the versions it supports);
	// UNAVAILABLE while the broker shuts down.
	Lease(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[WorkerMessage, BrokerMessage], error)
}

type leaseServiceClient struct {
	cc grpc.ClientConnInterface
}

func NewLeaseServiceClient(cc grpc.ClientConnInterface) LeaseServiceClient {
	return &leaseServiceClient{cc}
}

func (c *leaseServiceClient) Lease(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[WorkerMessage, BrokerMessage], error) {
	cOpts := append([]grpc.CallOption{grpc.StaticMethod()}, opts...)
	stream, err := c.cc.NewStream(ctx, &LeaseService_ServiceDesc.Streams[0], LeaseService_Lease_FullMethodName, cOpts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[WorkerMessage, BrokerMessage]{ClientStream: stream}
	return x, nil
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type LeaseService_LeaseClient = grpc.BidiStreamingClient[WorkerMessage, BrokerMessage]

// LeaseServiceServer is the server API for LeaseService service.
// All implementations must embed UnimplementedLeaseServiceServer
// for forward compatibility.
//
// LeaseService is served by the broker on BATON_BROKER_LISTEN (default :7070),
// next to grpc.health.v1.Health.
type LeaseServiceServer interface {
	// Lease is one bidirectional stream per worker. The first message from the
	// worker must be Hello; the broker answers with Standby, then Granted when
	// it grants, and keeps the stream open for renewals. A broker grants to at most one
	// stream at a time; any other stream is told Standby.
	//
	// Errors (B1): INVALID_ARGUMENT when the first message is not Hello, Hello
	// comes twice, Hello names a different stream than the broker serves, or
	// (protocol version 2 and later) leaves worker_id or stream_id empty;
	// FAILED_PRECONDITION when the broker does not support Hello's
	// protocol_version (the message names the versions it supports);
	// UNAVAILABLE while the broker shuts down.
	Lease(grpc.BidiStreamingServer[WorkerMessage, BrokerMessage]) error
	mustEmbedUnimplementedLeaseServiceServer()
}

// UnimplementedLeaseServiceServer must be embedded to have
// forward compatible implementations.
//
// NOTE: this should be embedded by value instead of pointer to avoid a nil
// pointer dereference when methods are called.
type UnimplementedLeaseServiceServer struct{}

func (UnimplementedLeaseServiceServer) Lease(grpc.BidiStreamingServer[WorkerMessage, BrokerMessage]) error {
	return status.Error(codes.Unimplemented, "method Lease not implemented")
}
func (UnimplementedLeaseServiceServer) mustEmbedUnimplementedLeaseServiceServer() {}
func (UnimplementedLeaseServiceServer) testEmbeddedByValue()                      {}

// UnsafeLeaseServiceServer may be embedded to opt out of forward compatibility for this service.
// Use of this interface is not recommended, as added methods to LeaseServiceServer will
// result in compilation errors.
type UnsafeLeaseServiceServer interface {
	mustEmbedUnimplementedLeaseServiceServer()
}

func RegisterLeaseServiceServer(s grpc.ServiceRegistrar, srv LeaseServiceServer) {
	// If the following call panics, it indicates UnimplementedLeaseServiceServer was
	// embedded by pointer and is nil.  This will cause panics if an
	// unimplemented method is ever invoked, so we test this at initialization
	// time to prevent it from happening at runtime later due to I/O.
	if t, ok := srv.(interface{ testEmbeddedByValue() }); ok {
		t.testEmbeddedByValue()
	}
	s.RegisterService(&LeaseService_ServiceDesc, srv)
}

func _LeaseService_Lease_Handler(srv interface{}, stream grpc.ServerStream) error {
	return srv.(LeaseServiceServer).Lease(&grpc.GenericServerStream[WorkerMessage, BrokerMessage]{ServerStream: stream})
}

// This type alias is provided for backwards compatibility with existing code that references the prior non-generic stream type by name.
type LeaseService_LeaseServer = grpc.BidiStreamingServer[WorkerMessage, BrokerMessage]

// LeaseService_ServiceDesc is the grpc.ServiceDesc for LeaseService service.
// It's only intended for direct use with grpc.RegisterService,
// and not to be introspected or modified (even as a copy)
var LeaseService_ServiceDesc = grpc.ServiceDesc{
	ServiceName: "baton.v1.LeaseService",
	HandlerType: (*LeaseServiceServer)(nil),
	Methods:     []grpc.MethodDesc{},
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Lease",
			Handler:       _LeaseService_Lease_Handler,
			ServerStreams: true,
			ClientStreams: true,
		},
	},
	Metadata: "baton/v1/lease.proto",
}
