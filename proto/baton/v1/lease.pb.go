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

// Code generated by protoc-gen-go. DO NOT EDIT.
// versions:
// 	protoc-gen-go v1.36.12-devel
// 	protoc        (unknown)
// source: baton/v1/lease.proto

package batonv1

import (
	protoreflect "google.golang.org/protobuf/reflect/protoreflect"
	protoimpl "google.golang.org/protobuf/runtime/protoimpl"
	durationpb "google.golang.org/protobuf/types/known/durationpb"
	timestamppb "google.golang.org/protobuf/types/known/timestamppb"
	reflect "reflect"
	sync "sync"
	unsafe "unsafe"
)

const (
	// Verify that this generated code is sufficiently up-to-date.
	_ = protoimpl.EnforceVersion(20 - protoimpl.MinVersion)
	// Verify that runtime/protoimpl is sufficiently up-to-date.
	_ = protoimpl.EnforceVersion(protoimpl.MaxVersion - 20)
)

// ReleaseReason says why a worker released its grant, and so what its
// broker does with the lock.
type ReleaseReason int32

const (
	// The worker gave the grant back but its process goes on (it restarts its
	// replication, or it found a newer epoch): the broker keeps the lock and
	// grants again to a worker that attaches within
	// BATON_WORKER_ABSENCE_TIMEOUT.
	ReleaseReason_RELEASE_REASON_UNSPECIFIED ReleaseReason = 0
	// The worker's process is stopping (it received SIGTERM) and it has
	// finished with the stream: drained, acknowledged, walsender ended. The
	// broker records the release and unlocks at once, so that a standby
	// broker takes over; it contends for the lock again only when a worker
	// attaches to it again.
	ReleaseReason_RELEASE_REASON_STOPPING ReleaseReason = 1
)

// Enum value maps for ReleaseReason.
var (
	ReleaseReason_name = map[int32]string{
		0: "RELEASE_REASON_UNSPECIFIED",
		1: "RELEASE_REASON_STOPPING",
	}
	ReleaseReason_value = map[string]int32{
		"RELEASE_REASON_UNSPECIFIED": 0,
		"RELEASE_REASON_STOPPING":    1,
	}
)

func (x ReleaseReason) Enum() *ReleaseReason {
	p := new(ReleaseReason)
	*p = x
	return p
}

func (x ReleaseReason) String() string {
	return protoimpl.X.EnumStringOf(x.Descriptor(), protoreflect.EnumNumber(x))
}

func (ReleaseReason) Descriptor() protoreflect.EnumDescriptor {
	return file_baton_v1_lease_proto_enumTypes[0].Descriptor()
}

func (ReleaseReason) Type() protoreflect.EnumType {
	return &file_baton_v1_lease_proto_enumTypes[0]
}

func (x ReleaseReason) Number() protoreflect.EnumNumber {
	return protoreflect.EnumNumber(x)
}

// Deprecated: Use ReleaseReason.Descriptor instead.
func (ReleaseReason) EnumDescriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{0}
}

// StandbyReason says what the worker is waiting for.
type StandbyReason int32

const (
	StandbyReason_STANDBY_REASON_UNSPECIFIED StandbyReason = 0
	// The broker is connecting (or reconnecting) to PostgreSQL.
	StandbyReason_STANDBY_REASON_CONNECTING StandbyReason = 1
	// The broker waits for the stream's advisory lock, held by another broker.
	StandbyReason_STANDBY_REASON_LOCK_WAIT StandbyReason = 2
	// This broker holds the lock but has granted it to another worker stream.
	StandbyReason_STANDBY_REASON_OTHER_WORKER StandbyReason = 3
	// The broker holds the lock and waits for the previous grant's TTL to pass
	// before granting again (the previous worker vanished without Released).
	StandbyReason_STANDBY_REASON_PREVIOUS_GRANT StandbyReason = 4
	// The broker is shutting down and will not grant again.
	StandbyReason_STANDBY_REASON_SHUTTING_DOWN StandbyReason = 5
)

// Enum value maps for StandbyReason.
var (
	StandbyReason_name = map[int32]string{
		0: "STANDBY_REASON_UNSPECIFIED",
		1: "STANDBY_REASON_CONNECTING",
		2: "STANDBY_REASON_LOCK_WAIT",
		3: "STANDBY_REASON_OTHER_WORKER",
		4: "STANDBY_REASON_PREVIOUS_GRANT",
		5: "STANDBY_REASON_SHUTTING_DOWN",
	}
	StandbyReason_value = map[string]int32{
		"STANDBY_REASON_UNSPECIFIED":    0,
		"STANDBY_REASON_CONNECTING":     1,
		"STANDBY_REASON_LOCK_WAIT":      2,
		"STANDBY_REASON_OTHER_WORKER":   3,
		"STANDBY_REASON_PREVIOUS_GRANT": 4,
		"STANDBY_REASON_SHUTTING_DOWN":  5,
	}
)

func (x StandbyReason) Enum() *StandbyReason {
	p := new(StandbyReason)
	*p = x
	return p
}

func (x StandbyReason) String() string {
	return protoimpl.X.EnumStringOf(x.Descriptor(), protoreflect.EnumNumber(x))
}

func (StandbyReason) Descriptor() protoreflect.EnumDescriptor {
	return file_baton_v1_lease_proto_enumTypes[1].Descriptor()
}

func (StandbyReason) Type() protoreflect.EnumType {
	return &file_baton_v1_lease_proto_enumTypes[1]
}

func (x StandbyReason) Number() protoreflect.EnumNumber {
	return protoreflect.EnumNumber(x)
}

// Deprecated: Use StandbyReason.Descriptor instead.
func (StandbyReason) EnumDescriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{1}
}

// RevokeReason says why a grant ended.
type RevokeReason int32

const (
	RevokeReason_REVOKE_REASON_UNSPECIFIED RevokeReason = 0
	// The broker is stopping (SIGTERM): release after draining, within
	// Revoked.drain_timeout; the broker waits for Released (at most that long)
	// before it unlocks.
	RevokeReason_REVOKE_REASON_SHUTDOWN RevokeReason = 1
	// The broker's lock session failed (heartbeat error, connection lost,
	// PostgreSQL restart): the lock may already belong to someone else. Stop
	// at once (drain_timeout 0).
	RevokeReason_REVOKE_REASON_LOCK_LOST RevokeReason = 2
	// The state table shows a newer epoch than this grant's: another broker
	// has taken the stream. Stop at once (drain_timeout 0).
	RevokeReason_REVOKE_REASON_REPLACED RevokeReason = 3
)

// Enum value maps for RevokeReason.
var (
	RevokeReason_name = map[int32]string{
		0: "REVOKE_REASON_UNSPECIFIED",
		1: "REVOKE_REASON_SHUTDOWN",
		2: "REVOKE_REASON_LOCK_LOST",
		3: "REVOKE_REASON_REPLACED",
	}
	RevokeReason_value = map[string]int32{
		"REVOKE_REASON_UNSPECIFIED": 0,
		"REVOKE_REASON_SHUTDOWN":    1,
		"REVOKE_REASON_LOCK_LOST":   2,
		"REVOKE_REASON_REPLACED":    3,
	}
)

func (x RevokeReason) Enum() *RevokeReason {
	p := new(RevokeReason)
	*p = x
	return p
}

func (x RevokeReason) String() string {
	return protoimpl.X.EnumStringOf(x.Descriptor(), protoreflect.EnumNumber(x))
}

func (RevokeReason) Descriptor() protoreflect.EnumDescriptor {
	return file_baton_v1_lease_proto_enumTypes[2].Descriptor()
}

func (RevokeReason) Type() protoreflect.EnumType {
	return &file_baton_v1_lease_proto_enumTypes[2]
}

func (x RevokeReason) Number() protoreflect.EnumNumber {
	return protoreflect.EnumNumber(x)
}

// Deprecated: Use RevokeReason.Descriptor instead.
func (RevokeReason) EnumDescriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{2}
}

// WorkerMessage is everything a worker sends on the Lease stream.
type WorkerMessage struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Types that are valid to be assigned to Msg:
	//
	//	*WorkerMessage_Hello
	//	*WorkerMessage_Progress
	//	*WorkerMessage_Released
	Msg           isWorkerMessage_Msg `protobuf_oneof:"msg"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *WorkerMessage) Reset() {
	*x = WorkerMessage{}
	mi := &file_baton_v1_lease_proto_msgTypes[0]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *WorkerMessage) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*WorkerMessage) ProtoMessage() {}

func (x *WorkerMessage) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[0]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use WorkerMessage.ProtoReflect.Descriptor instead.
func (*WorkerMessage) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{0}
}

func (x *WorkerMessage) GetMsg() isWorkerMessage_Msg {
	if x != nil {
		return x.Msg
	}
	return nil
}

func (x *WorkerMessage) GetHello() *Hello {
	if x != nil {
		if x, ok := x.Msg.(*WorkerMessage_Hello); ok {
			return x.Hello
		}
	}
	return nil
}

func (x *WorkerMessage) GetProgress() *Progress {
	if x != nil {
		if x, ok := x.Msg.(*WorkerMessage_Progress); ok {
			return x.Progress
		}
	}
	return nil
}

func (x *WorkerMessage) GetReleased() *Released {
	if x != nil {
		if x, ok := x.Msg.(*WorkerMessage_Released); ok {
			return x.Released
		}
	}
	return nil
}

type isWorkerMessage_Msg interface {
	isWorkerMessage_Msg()
}

type WorkerMessage_Hello struct {
	// First message of every stream, exactly once.
	Hello *Hello `protobuf:"bytes,1,opt,name=hello,proto3,oneof"`
}

type WorkerMessage_Progress struct {
	// The worker's durable position (W10): soon after each grant and at
	// least every 10 s while it advances. The broker shows it in `broker
	// status`, records it with its heartbeats in the state table and in its
	// metrics; it never acts on it.
	Progress *Progress `protobuf:"bytes,2,opt,name=progress,proto3,oneof"`
}

type WorkerMessage_Released struct {
	// The worker has stopped consuming under the given epoch. This stream
	// is not granted again.
	Released *Released `protobuf:"bytes,3,opt,name=released,proto3,oneof"`
}

func (*WorkerMessage_Hello) isWorkerMessage_Msg() {}

func (*WorkerMessage_Progress) isWorkerMessage_Msg() {}

func (*WorkerMessage_Released) isWorkerMessage_Msg() {}

// Hello introduces the worker.
type Hello struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Free-form identity of the worker process, for logs and the holder
	// column of the state table (e.g. "worker@pod-7d9c"). Required from
	// protocol version 2 (INVALID_ARGUMENT when empty); a version-1 worker
	// without one is logged as "unnamed-worker".
	WorkerId string `protobuf:"bytes,1,opt,name=worker_id,json=workerId,proto3" json:"worker_id,omitempty"`
	// The stream the worker wants to consume: its REPLICATION_STREAM_ID. Must
	// equal the broker's (INVALID_ARGUMENT otherwise, naming both). Required
	// from protocol version 2; for a version-1 worker, empty means "whatever
	// the broker serves".
	StreamId string `protobuf:"bytes,2,opt,name=stream_id,json=streamId,proto3" json:"stream_id,omitempty"`
	// Base URL at which this worker serves its API to the other pods of the
	// stream (e.g. "http://10.1.2.3:3000"); empty when it serves nothing to
	// them. While this worker holds the grant the broker records it with the
	// holder in the state table and other workers see it in
	// Standby.holder.worker_url, so that a standby worker can forward the
	// requests it receives to the active one.
	AdvertiseUrl string `protobuf:"bytes,3,opt,name=advertise_url,json=advertiseUrl,proto3" json:"advertise_url,omitempty"`
	// The version of this protocol the worker implements: 2 for the contract
	// in this file. 0 (a worker that predates the field) is taken as 1. A
	// broker that does not support the version ends the stream with
	// FAILED_PRECONDITION and a message naming the versions it supports
	// ("supported protocol versions: 1, 2"); a worker that implements several
	// may open a new stream with one of those. Brokers of this file support
	// 1 and 2 and behave the same for both, apart from the checks of
	// worker_id and stream_id.
	ProtocolVersion uint32 `protobuf:"varint,4,opt,name=protocol_version,json=protocolVersion,proto3" json:"protocol_version,omitempty"`
	unknownFields   protoimpl.UnknownFields
	sizeCache       protoimpl.SizeCache
}

func (x *Hello) Reset() {
	*x = Hello{}
	mi := &file_baton_v1_lease_proto_msgTypes[1]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Hello) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Hello) ProtoMessage() {}

func (x *Hello) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[1]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Hello.ProtoReflect.Descriptor instead.
func (*Hello) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{1}
}

func (x *Hello) GetWorkerId() string {
	if x != nil {
		return x.WorkerId
	}
	return ""
}

func (x *Hello) GetStreamId() string {
	if x != nil {
		return x.StreamId
	}
	return ""
}

func (x *Hello) GetAdvertiseUrl() string {
	if x != nil {
		return x.AdvertiseUrl
	}
	return ""
}

func (x *Hello) GetProtocolVersion() uint32 {
	if x != nil {
		return x.ProtocolVersion
	}
	return 0
}

// Progress reports what the worker has made durable.
type Progress struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Epoch of the grant the worker is acting under.
	Epoch uint64 `protobuf:"varint,1,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// Last WAL position (LSN, as a 64-bit integer) that is durable in the
	// worker's storage and acknowledged to PostgreSQL.
	DurableLsn    uint64 `protobuf:"varint,2,opt,name=durable_lsn,json=durableLsn,proto3" json:"durable_lsn,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Progress) Reset() {
	*x = Progress{}
	mi := &file_baton_v1_lease_proto_msgTypes[2]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Progress) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Progress) ProtoMessage() {}

func (x *Progress) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[2]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Progress.ProtoReflect.Descriptor instead.
func (*Progress) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{2}
}

func (x *Progress) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Progress) GetDurableLsn() uint64 {
	if x != nil {
		return x.DurableLsn
	}
	return 0
}

// Released ends a grant from the worker's side.
type Released struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Epoch of the grant being released. A Released for any other epoch than
	// the current grant's is ignored.
	Epoch uint64 `protobuf:"varint,1,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// Last durable LSN at the moment of release (0 when unknown).
	DurableLsn uint64 `protobuf:"varint,2,opt,name=durable_lsn,json=durableLsn,proto3" json:"durable_lsn,omitempty"`
	// Why the worker releases. Workers that predate the field send
	// RELEASE_REASON_UNSPECIFIED, which keeps the earlier behaviour.
	Reason        ReleaseReason `protobuf:"varint,3,opt,name=reason,proto3,enum=baton.v1.ReleaseReason" json:"reason,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Released) Reset() {
	*x = Released{}
	mi := &file_baton_v1_lease_proto_msgTypes[3]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Released) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Released) ProtoMessage() {}

func (x *Released) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[3]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Released.ProtoReflect.Descriptor instead.
func (*Released) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{3}
}

func (x *Released) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Released) GetDurableLsn() uint64 {
	if x != nil {
		return x.DurableLsn
	}
	return 0
}

func (x *Released) GetReason() ReleaseReason {
	if x != nil {
		return x.Reason
	}
	return ReleaseReason_RELEASE_REASON_UNSPECIFIED
}

// BrokerMessage is everything a broker sends on the Lease stream.
type BrokerMessage struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Types that are valid to be assigned to Msg:
	//
	//	*BrokerMessage_Standby
	//	*BrokerMessage_Granted
	//	*BrokerMessage_Renewed
	//	*BrokerMessage_Revoked
	Msg           isBrokerMessage_Msg `protobuf_oneof:"msg"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *BrokerMessage) Reset() {
	*x = BrokerMessage{}
	mi := &file_baton_v1_lease_proto_msgTypes[4]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *BrokerMessage) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*BrokerMessage) ProtoMessage() {}

func (x *BrokerMessage) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[4]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use BrokerMessage.ProtoReflect.Descriptor instead.
func (*BrokerMessage) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{4}
}

func (x *BrokerMessage) GetMsg() isBrokerMessage_Msg {
	if x != nil {
		return x.Msg
	}
	return nil
}

func (x *BrokerMessage) GetStandby() *Standby {
	if x != nil {
		if x, ok := x.Msg.(*BrokerMessage_Standby); ok {
			return x.Standby
		}
	}
	return nil
}

func (x *BrokerMessage) GetGranted() *Granted {
	if x != nil {
		if x, ok := x.Msg.(*BrokerMessage_Granted); ok {
			return x.Granted
		}
	}
	return nil
}

func (x *BrokerMessage) GetRenewed() *Renewed {
	if x != nil {
		if x, ok := x.Msg.(*BrokerMessage_Renewed); ok {
			return x.Renewed
		}
	}
	return nil
}

func (x *BrokerMessage) GetRevoked() *Revoked {
	if x != nil {
		if x, ok := x.Msg.(*BrokerMessage_Revoked); ok {
			return x.Revoked
		}
	}
	return nil
}

type isBrokerMessage_Msg interface {
	isBrokerMessage_Msg()
}

type BrokerMessage_Standby struct {
	Standby *Standby `protobuf:"bytes,1,opt,name=standby,proto3,oneof"`
}

type BrokerMessage_Granted struct {
	Granted *Granted `protobuf:"bytes,2,opt,name=granted,proto3,oneof"`
}

type BrokerMessage_Renewed struct {
	Renewed *Renewed `protobuf:"bytes,3,opt,name=renewed,proto3,oneof"`
}

type BrokerMessage_Revoked struct {
	Revoked *Revoked `protobuf:"bytes,4,opt,name=revoked,proto3,oneof"`
}

func (*BrokerMessage_Standby) isBrokerMessage_Msg() {}

func (*BrokerMessage_Granted) isBrokerMessage_Msg() {}

func (*BrokerMessage_Renewed) isBrokerMessage_Msg() {}

func (*BrokerMessage_Revoked) isBrokerMessage_Msg() {}

// Standby tells the worker to wait: it has no grant.
type Standby struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Why the worker waits.
	Reason StandbyReason `protobuf:"varint,1,opt,name=reason,proto3,enum=baton.v1.StandbyReason" json:"reason,omitempty"`
	// The current holder of the stream as recorded in PostgreSQL, when known.
	Holder *Holder `protobuf:"bytes,2,opt,name=holder,proto3" json:"holder,omitempty"`
	// The highest protocol version the broker supports (2 for this file); 0
	// from a broker older than version 2. The broker's first answer to Hello
	// is always a Standby, so a worker learns it before anything else.
	ProtocolVersion uint32 `protobuf:"varint,3,opt,name=protocol_version,json=protocolVersion,proto3" json:"protocol_version,omitempty"`
	unknownFields   protoimpl.UnknownFields
	sizeCache       protoimpl.SizeCache
}

func (x *Standby) Reset() {
	*x = Standby{}
	mi := &file_baton_v1_lease_proto_msgTypes[5]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Standby) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Standby) ProtoMessage() {}

func (x *Standby) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[5]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Standby.ProtoReflect.Descriptor instead.
func (*Standby) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{5}
}

func (x *Standby) GetReason() StandbyReason {
	if x != nil {
		return x.Reason
	}
	return StandbyReason_STANDBY_REASON_UNSPECIFIED
}

func (x *Standby) GetHolder() *Holder {
	if x != nil {
		return x.Holder
	}
	return nil
}

func (x *Standby) GetProtocolVersion() uint32 {
	if x != nil {
		return x.ProtocolVersion
	}
	return 0
}

// Holder describes who holds a stream, from the broker's state table
// (schema baton, table streams).
type Holder struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Identity of the holding broker: the application_name of its lock
	// session, "baton-broker:<stream id>:<host name>".
	Holder string `protobuf:"bytes,1,opt,name=holder,proto3" json:"holder,omitempty"`
	// Epoch of the holder's latest grant.
	Epoch uint64 `protobuf:"varint,2,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// When the holder acquired the lock (PostgreSQL's clock).
	AcquiredAt *timestamppb.Timestamp `protobuf:"bytes,3,opt,name=acquired_at,json=acquiredAt,proto3" json:"acquired_at,omitempty"`
	// When the holder last heartbeat (PostgreSQL's clock).
	LastHeartbeat *timestamppb.Timestamp `protobuf:"bytes,4,opt,name=last_heartbeat,json=lastHeartbeat,proto3" json:"last_heartbeat,omitempty"`
	// PostgreSQL backend pid of the holder's lock session.
	BackendPid int32 `protobuf:"varint,5,opt,name=backend_pid,json=backendPid,proto3" json:"backend_pid,omitempty"`
	// The worker_id of the holder's current grant, empty when none.
	Worker string `protobuf:"bytes,6,opt,name=worker,proto3" json:"worker,omitempty"`
	// The advertise_url of the holder's current grant (Hello.advertise_url),
	// empty when none was advertised or no grant is current.
	WorkerUrl     string `protobuf:"bytes,7,opt,name=worker_url,json=workerUrl,proto3" json:"worker_url,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Holder) Reset() {
	*x = Holder{}
	mi := &file_baton_v1_lease_proto_msgTypes[6]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Holder) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Holder) ProtoMessage() {}

func (x *Holder) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[6]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Holder.ProtoReflect.Descriptor instead.
func (*Holder) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{6}
}

func (x *Holder) GetHolder() string {
	if x != nil {
		return x.Holder
	}
	return ""
}

func (x *Holder) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Holder) GetAcquiredAt() *timestamppb.Timestamp {
	if x != nil {
		return x.AcquiredAt
	}
	return nil
}

func (x *Holder) GetLastHeartbeat() *timestamppb.Timestamp {
	if x != nil {
		return x.LastHeartbeat
	}
	return nil
}

func (x *Holder) GetBackendPid() int32 {
	if x != nil {
		return x.BackendPid
	}
	return 0
}

func (x *Holder) GetWorker() string {
	if x != nil {
		return x.Worker
	}
	return ""
}

func (x *Holder) GetWorkerUrl() string {
	if x != nil {
		return x.WorkerUrl
	}
	return ""
}

// Granted makes the worker the stream's only consumer.
type Granted struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Fencing token. Strictly increases with every grant of the stream across
	// all brokers (it is stored in PostgreSQL). Tag or check with it anything a
	// successor may read, e.g. put it in the replication connection's
	// application_name as "baton-worker:<stream id>:<epoch>".
	Epoch uint64 `protobuf:"varint,1,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// Validity of the grant from the moment of receipt, on the worker's
	// monotonic clock; each Renewed restarts it.
	Ttl *durationpb.Duration `protobuf:"bytes,2,opt,name=ttl,proto3" json:"ttl,omitempty"`
	// The stream id (REPLICATION_STREAM_ID).
	StreamId string `protobuf:"bytes,3,opt,name=stream_id,json=streamId,proto3" json:"stream_id,omitempty"`
	// Logical replication slot to consume: "baton_slot_<stream id>".
	SlotName string `protobuf:"bytes,4,opt,name=slot_name,json=slotName,proto3" json:"slot_name,omitempty"`
	// Publication to use: "baton_pub_<stream id>".
	PublicationName string `protobuf:"bytes,5,opt,name=publication_name,json=publicationName,proto3" json:"publication_name,omitempty"`
	// Identity of the granting broker (its lock session's application_name).
	Holder string `protobuf:"bytes,6,opt,name=holder,proto3" json:"holder,omitempty"`
	// The highest protocol version the broker supports, as in Standby.
	ProtocolVersion uint32 `protobuf:"varint,7,opt,name=protocol_version,json=protocolVersion,proto3" json:"protocol_version,omitempty"`
	unknownFields   protoimpl.UnknownFields
	sizeCache       protoimpl.SizeCache
}

func (x *Granted) Reset() {
	*x = Granted{}
	mi := &file_baton_v1_lease_proto_msgTypes[7]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Granted) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Granted) ProtoMessage() {}

func (x *Granted) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[7]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Granted.ProtoReflect.Descriptor instead.
func (*Granted) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{7}
}

func (x *Granted) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Granted) GetTtl() *durationpb.Duration {
	if x != nil {
		return x.Ttl
	}
	return nil
}

func (x *Granted) GetStreamId() string {
	if x != nil {
		return x.StreamId
	}
	return ""
}

func (x *Granted) GetSlotName() string {
	if x != nil {
		return x.SlotName
	}
	return ""
}

func (x *Granted) GetPublicationName() string {
	if x != nil {
		return x.PublicationName
	}
	return ""
}

func (x *Granted) GetHolder() string {
	if x != nil {
		return x.Holder
	}
	return ""
}

func (x *Granted) GetProtocolVersion() uint32 {
	if x != nil {
		return x.ProtocolVersion
	}
	return 0
}

// Renewed extends the current grant.
type Renewed struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Epoch of the grant being renewed; a Renewed for another epoch must be
	// ignored.
	Epoch uint64 `protobuf:"varint,1,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// New validity from the moment of receipt (normally equal to Granted.ttl).
	Ttl           *durationpb.Duration `protobuf:"bytes,2,opt,name=ttl,proto3" json:"ttl,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Renewed) Reset() {
	*x = Renewed{}
	mi := &file_baton_v1_lease_proto_msgTypes[8]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Renewed) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Renewed) ProtoMessage() {}

func (x *Renewed) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[8]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Renewed.ProtoReflect.Descriptor instead.
func (*Renewed) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{8}
}

func (x *Renewed) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Renewed) GetTtl() *durationpb.Duration {
	if x != nil {
		return x.Ttl
	}
	return nil
}

// Revoked ends the current grant: the worker stops reading at once (W6).
// No Renewed follows for that epoch.
type Revoked struct {
	state protoimpl.MessageState `protogen:"open.v1"`
	// Epoch of the grant being revoked; a Revoked for another epoch must be
	// ignored.
	Epoch uint64 `protobuf:"varint,1,opt,name=epoch,proto3" json:"epoch,omitempty"`
	// Why.
	Reason RevokeReason `protobuf:"varint,2,opt,name=reason,proto3,enum=baton.v1.RevokeReason" json:"reason,omitempty"`
	// Human-readable detail for logs.
	Message string `protobuf:"bytes,3,opt,name=message,proto3" json:"message,omitempty"`
	// How long, from receipt and on the worker's monotonic clock, the worker
	// may take to finish with the stream: make durable what it received,
	// acknowledge it, close its replication connection, end its walsender and
	// send Released. Past this drain deadline the broker stops waiting and a
	// successor may be granted, so the worker acknowledges nothing more and
	// closes its replication connection, finished or not.
	//
	// Brokers send it with every Revoked (protocol version 2):
	//   - REVOKE_REASON_SHUTDOWN: BATON_DRAIN_TIMEOUT less a margin for
	//     delivery (e.g. 18 s for the default 20 s); the broker keeps the lock
	//     and its lock session alive until Released or then.
	//   - REVOKE_REASON_LOCK_LOST, REVOKE_REASON_REPLACED: 0. The lock may
	//     already belong to another broker: stop at once, acknowledge nothing
	//     more. Sending Released afterwards is allowed (the stream is then
	//     never granted again) but not required (the stream stays a candidate
	//     for a new Granted with a higher epoch).
	//
	// A second Revoked for the same epoch with drain_timeout 0 may follow a
	// shutdown Revoked when the lock session fails during the drain: the
	// shorter deadline wins.
	//
	// Absent (a broker that predates the field): for REVOKE_REASON_SHUTDOWN
	// the drain deadline is the lease's own expiry (receipt of the last
	// Granted or Renewed + its ttl), which every broker waits for; for any
	// other reason it is 0.
	DrainTimeout  *durationpb.Duration `protobuf:"bytes,4,opt,name=drain_timeout,json=drainTimeout,proto3" json:"drain_timeout,omitempty"`
	unknownFields protoimpl.UnknownFields
	sizeCache     protoimpl.SizeCache
}

func (x *Revoked) Reset() {
	*x = Revoked{}
	mi := &file_baton_v1_lease_proto_msgTypes[9]
	ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
	ms.StoreMessageInfo(mi)
}

func (x *Revoked) String() string {
	return protoimpl.X.MessageStringOf(x)
}

func (*Revoked) ProtoMessage() {}

func (x *Revoked) ProtoReflect() protoreflect.Message {
	mi := &file_baton_v1_lease_proto_msgTypes[9]
	if x != nil {
		ms := protoimpl.X.MessageStateOf(protoimpl.Pointer(x))
		if ms.LoadMessageInfo() == nil {
			ms.StoreMessageInfo(mi)
		}
		return ms
	}
	return mi.MessageOf(x)
}

// Deprecated: Use Revoked.ProtoReflect.Descriptor instead.
func (*Revoked) Descriptor() ([]byte, []int) {
	return file_baton_v1_lease_proto_rawDescGZIP(), []int{9}
}

func (x *Revoked) GetEpoch() uint64 {
	if x != nil {
		return x.Epoch
	}
	return 0
}

func (x *Revoked) GetReason() RevokeReason {
	if x != nil {
		return x.Reason
	}
	return RevokeReason_REVOKE_REASON_UNSPECIFIED
}

func (x *Revoked) GetMessage() string {
	if x != nil {
		return x.Message
	}
	return ""
}

func (x *Revoked) GetDrainTimeout() *durationpb.Duration {
	if x != nil {
		return x.DrainTimeout
	}
	return nil
}

var File_baton_v1_lease_proto protoreflect.FileDescriptor

const file_baton_v1_lease_proto_rawDesc = "" +
	"\n" +
	"\x14baton/v1/lease.proto\x12\bbaton.v1\x1a\x1egoogle/protobuf/duration.proto\x1a\x1fgoogle/protobuf/timestamp.proto\"\xa3\x01\n" +
	"\rWorkerMessage\x12'\n" +
	"\x05hello\x18\x01 \x01(\v2\x0f.baton.v1.HelloH\x00R\x05hello\x120\n" +
	"\bprogress\x18\x02 \x01(\v2\x12.baton.v1.ProgressH\x00R\bprogress\x120\n" +
	"\breleased\x18\x03 \x01(\v2\x12.baton.v1.ReleasedH\x00R\breleasedB\x05\n" +
	"\x03msg\"\x91\x01\n" +
	"\x05Hello\x12\x1b\n" +
	"\tworker_id\x18\x01 \x01(\tR\bworkerId\x12\x1b\n" +
	"\tstream_id\x18\x02 \x01(\tR\bstreamId\x12#\n" +
	"\radvertise_url\x18\x03 \x01(\tR\fadvertiseUrl\x12)\n" +
	"\x10protocol_version\x18\x04 \x01(\rR\x0fprotocolVersion\"A\n" +
	"\bProgress\x12\x14\n" +
	"\x05epoch\x18\x01 \x01(\x04R\x05epoch\x12\x1f\n" +
	"\vdurable_lsn\x18\x02 \x01(\x04R\n" +
	"durableLsn\"r\n" +
	"\bReleased\x12\x14\n" +
	"\x05epoch\x18\x01 \x01(\x04R\x05epoch\x12\x1f\n" +
	"\vdurable_lsn\x18\x02 \x01(\x04R\n" +
	"durableLsn\x12/\n" +
	"\x06reason\x18\x03 \x01(\x0e2\x17.baton.v1.ReleaseReasonR\x06reason\"\xd2\x01\n" +
	"\rBrokerMessage\x12-\n" +
	"\astandby\x18\x01 \x01(\v2\x11.baton.v1.StandbyH\x00R\astandby\x12-\n" +
	"\agranted\x18\x02 \x01(\v2\x11.baton.v1.GrantedH\x00R\agranted\x12-\n" +
	"\arenewed\x18\x03 \x01(\v2\x11.baton.v1.RenewedH\x00R\arenewed\x12-\n" +
	"\arevoked\x18\x04 \x01(\v2\x11.baton.v1.RevokedH\x00R\arevokedB\x05\n" +
	"\x03msg\"\x8f\x01\n" +
	"\aStandby\x12/\n" +
	"\x06reason\x18\x01 \x01(\x0e2\x17.baton.v1.StandbyReasonR\x06reason\x12(\n" +
	"\x06holder\x18\x02 \x01(\v2\x10.baton.v1.HolderR\x06holder\x12)\n" +
	"\x10protocol_version\x18\x03 \x01(\rR\x0fprotocolVersion\"\x8e\x02\n" +
	"\x06Holder\x12\x16\n" +
	"\x06holder\x18\x01 \x01(\tR\x06holder\x12\x14\n" +
	"\x05epoch\x18\x02 \x01(\x04R\x05epoch\x12;\n" +
	"\vacquired_at\x18\x03 \x01(\v2\x1a.google.protobuf.TimestampR\n" +
	"acquiredAt\x12A\n" +
	"\x0elast_heartbeat\x18\x04 \x01(\v2\x1a.google.protobuf.TimestampR\rlastHeartbeat\x12\x1f\n" +
	"\vbackend_pid\x18\x05 \x01(\x05R\n" +
	"backendPid\x12\x16\n" +
	"\x06worker\x18\x06 \x01(\tR\x06worker\x12\x1d\n" +
	"\n" +
	"worker_url\x18\a \x01(\tR\tworkerUrl\"\xf4\x01\n" +
	"\aGranted\x12\x14\n" +
	"\x05epoch\x18\x01 \x01(\x04R\x05epoch\x12+\n" +
	"\x03ttl\x18\x02 \x01(\v2\x19.google.protobuf.DurationR\x03ttl\x12\x1b\n" +
	"\tstream_id\x18\x03 \x01(\tR\bstreamId\x12\x1b\n" +
	"\tslot_name\x18\x04 \x01(\tR\bslotName\x12)\n" +
	"\x10publication_name\x18\x05 \x01(\tR\x0fpublicationName\x12\x16\n" +
	"\x06holder\x18\x06 \x01(\tR\x06holder\x12)\n" +
	"\x10protocol_version\x18\a \x01(\rR\x0fprotocolVersion\"L\n" +
	"\aRenewed\x12\x14\n" +
	"\x05epoch\x18\x01 \x01(\x04R\x05epoch\x12+\n" +
	"\x03ttl\x18\x02 \x01(\v2\x19.google.protobuf.DurationR\x03ttl\"\xa9\x01\n" +
	"\aRevoked\x12\x14\n" +
	"\x05epoch\x18\x01 \x01(\x04R\x05epoch\x12.\n" +
	"\x06reason\x18\x02 \x01(\x0e2\x16.baton.v1.RevokeReasonR\x06reason\x12\x18\n" +
	"\amessage\x18\x03 \x01(\tR\amessage\x12>\n" +
	"\rdrain_timeout\x18\x04 \x01(\v2\x19.google.protobuf.DurationR\fdrainTimeout*L\n" +
	"\rReleaseReason\x12\x1e\n" +
	"\x1aRELEASE_REASON_UNSPECIFIED\x10\x00\x12\x1b\n" +
	"\x17RELEASE_REASON_STOPPING\x10\x01*\xd2\x01\n" +
	"\rStandbyReason\x12\x1e\n" +
	"\x1aSTANDBY_REASON_UNSPECIFIED\x10\x00\x12\x1d\n" +
	"\x19STANDBY_REASON_CONNECTING\x10\x01\x12\x1c\n" +
	"\x18STANDBY_REASON_LOCK_WAIT\x10\x02\x12\x1f\n" +
	"\x1bSTANDBY_REASON_OTHER_WORKER\x10\x03\x12!\n" +
	"\x1dSTANDBY_REASON_PREVIOUS_GRANT\x10\x04\x12 \n" +
	"\x1cSTANDBY_REASON_SHUTTING_DOWN\x10\x05*\x82\x01\n" +
	"\fRevokeReason\x12\x1d\n" +
	"\x19REVOKE_REASON_UNSPECIFIED\x10\x00\x12\x1a\n" +
	"\x16REVOKE_REASON_SHUTDOWN\x10\x01\x12\x1b\n" +
	"\x17REVOKE_REASON_LOCK_LOST\x10\x02\x12\x1a\n" +
	"\x16REVOKE_REASON_REPLACED\x10\x032M\n" +
	"\fLeaseService\x12=\n" +
	"\x05Lease\x12\x17.baton.v1.WorkerMessage\x1a\x17.baton.v1.BrokerMessage(\x010\x01B1Z/github.com/batonhq/baton/proto/baton/v1;batonv1b\x06proto3"

var (
	file_baton_v1_lease_proto_rawDescOnce sync.Once
	file_baton_v1_lease_proto_rawDescData []byte
)

func file_baton_v1_lease_proto_rawDescGZIP() []byte {
	file_baton_v1_lease_proto_rawDescOnce.Do(func() {
		file_baton_v1_lease_proto_rawDescData = protoimpl.X.CompressGZIP(unsafe.Slice(unsafe.StringData(file_baton_v1_lease_proto_rawDesc), len(file_baton_v1_lease_proto_rawDesc)))
	})
	return file_baton_v1_lease_proto_rawDescData
}

var file_baton_v1_lease_proto_enumTypes = make([]protoimpl.EnumInfo, 3)
var file_baton_v1_lease_proto_msgTypes = make([]protoimpl.MessageInfo, 10)
var file_baton_v1_lease_proto_goTypes = []any{
	(ReleaseReason)(0),            // 0: baton.v1.ReleaseReason
	(StandbyReason)(0),            // 1: baton.v1.StandbyReason
	(RevokeReason)(0),             // 2: baton.v1.RevokeReason
	(*WorkerMessage)(nil),         // 3: baton.v1.WorkerMessage
	(*Hello)(nil),                 // 4: baton.v1.Hello
	(*Progress)(nil),              // 5: baton.v1.Progress
	(*Released)(nil),              // 6: baton.v1.Released
	(*BrokerMessage)(nil),         // 7: baton.v1.BrokerMessage
	(*Standby)(nil),               // 8: baton.v1.Standby
	(*Holder)(nil),                // 9: baton.v1.Holder
	(*Granted)(nil),               // 10: baton.v1.Granted
	(*Renewed)(nil),               // 11: baton.v1.Renewed
	(*Revoked)(nil),               // 12: baton.v1.Revoked
	(*timestamppb.Timestamp)(nil), // 13: google.protobuf.Timestamp
	(*durationpb.Duration)(nil),   // 14: google.protobuf.Duration
}
var file_baton_v1_lease_proto_depIdxs = []int32{
	4,  // 0: baton.v1.WorkerMessage.hello:type_name -> baton.v1.Hello
	5,  // 1: baton.v1.WorkerMessage.progress:type_name -> baton.v1.Progress
	6,  // 2: baton.v1.WorkerMessage.released:type_name -> baton.v1.Released
	0,  // 3: baton.v1.Released.reason:type_name -> baton.v1.ReleaseReason
	8,  // 4: baton.v1.BrokerMessage.standby:type_name -> baton.v1.Standby
	10, // 5: baton.v1.BrokerMessage.granted:type_name -> baton.v1.Granted
	11, // 6: baton.v1.BrokerMessage.renewed:type_name -> baton.v1.Renewed
	12, // 7: baton.v1.BrokerMessage.revoked:type_name -> baton.v1.Revoked
	1,  // 8: baton.v1.Standby.reason:type_name -> baton.v1.StandbyReason
	9,  // 9: baton.v1.Standby.holder:type_name -> baton.v1.Holder
	13, // 10: baton.v1.Holder.acquired_at:type_name -> google.protobuf.Timestamp
	13, // 11: baton.v1.Holder.last_heartbeat:type_name -> google.protobuf.Timestamp
	14, // 12: baton.v1.Granted.ttl:type_name -> google.protobuf.Duration
	14, // 13: baton.v1.Renewed.ttl:type_name -> google.protobuf.Duration
	2,  // 14: baton.v1.Revoked.reason:type_name -> baton.v1.RevokeReason
	14, // 15: baton.v1.Revoked.drain_timeout:type_name -> google.protobuf.Duration
	3,  // 16: baton.v1.LeaseService.Lease:input_type -> baton.v1.WorkerMessage
	7,  // 17: baton.v1.LeaseService.Lease:output_type -> baton.v1.BrokerMessage
	17, // [17:18] is the sub-list for method output_type
	16, // [16:17] is the sub-list for method input_type
	16, // [16:16] is the sub-list for extension type_name
	16, // [16:16] is the sub-list for extension extendee
	0,  // [0:16] is the sub-list for field type_name
}

func init() { file_baton_v1_lease_proto_init() }
func file_baton_v1_lease_proto_init() {
	if File_baton_v1_lease_proto != nil {
		return
	}
	file_baton_v1_lease_proto_msgTypes[0].OneofWrappers = []any{
		(*WorkerMessage_Hello)(nil),
		(*WorkerMessage_Progress)(nil),
		(*WorkerMessage_Released)(nil),
	}
	file_baton_v1_lease_proto_msgTypes[4].OneofWrappers = []any{
		(*BrokerMessage_Standby)(nil),
		(*BrokerMessage_Granted)(nil),
		(*BrokerMessage_Renewed)(nil),
		(*BrokerMessage_Revoked)(nil),
	}
	type x struct{}
	out := protoimpl.TypeBuilder{
		File: protoimpl.DescBuilder{
			GoPackagePath: reflect.TypeOf(x{}).PkgPath(),
			RawDescriptor: unsafe.Slice(unsafe.StringData(file_baton_v1_lease_proto_rawDesc), len(file_baton_v1_lease_proto_rawDesc)),
			NumEnums:      3,
			NumMessages:   10,
			NumExtensions: 0,
			NumServices:   1,
		},
		GoTypes:           file_baton_v1_lease_proto_goTypes,
		DependencyIndexes: file_baton_v1_lease_proto_depIdxs,
		EnumInfos:         file_baton_v1_lease_proto_enumTypes,
		MessageInfos:      file_baton_v1_lease_proto_msgTypes,
	}.Build()
	File_baton_v1_lease_proto = out.File
	file_baton_v1_lease_proto_goTypes = nil
	file_baton_v1_lease_proto_depIdxs = nil
}
