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

// @generated by protoc-gen-es v2.13.0 with parameter "target=ts,import_extension=js"
// @generated from file baton/v1/lease.proto (package baton.v1, syntax proto3)
/* eslint-disable */

import type { GenEnum, GenFile, GenMessage, GenService } from "@bufbuild/protobuf/codegenv2";
import { enumDesc, fileDesc, messageDesc, serviceDesc } from "@bufbuild/protobuf/codegenv2";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { file_google_protobuf_duration, file_google_protobuf_timestamp } from "@bufbuild/protobuf/wkt";
import type { Message } from "@bufbuild/protobuf";

/**
 * Describes the file baton/v1/lease.proto.
 */
export const file_baton_v1_lease: GenFile = /*@__PURE__*/
  fileDesc("ChRiYXRvbi92MS9sZWFzZS5wcm90bxIIYmF0b24udjEiiAEKDVdvcmtlck1lc3NhZ2USIAoFaGVsbG8YASABKAsyDy5iYXRvbi52MS5IZWxsb0gAEiYKCHByb2dyZXNzGAIgASgLMhIuYmF0b24udjEuUHJvZ3Jlc3NIABImCghyZWxlYXNlZBgDIAEoCzISLmJhdG9uLnYxLlJlbGVhc2VkSABCBQoDbXNnIl4KBUhlbGxvEhEKCXdvcmtlcl9pZBgBIAEoCRIRCglzdHJlYW1faWQYAiABKAkSFQoNYWR2ZXJ0aXNlX3VybBgDIAEoCRIYChBwcm90b2NvbF92ZXJzaW9uGAQgASgNIi4KCFByb2dyZXNzEg0KBWVwb2NoGAEgASgEEhMKC2R1cmFibGVfbHNuGAIgASgEIlcKCFJlbGVhc2VkEg0KBWVwb2NoGAEgASgEEhMKC2R1cmFibGVfbHNuGAIgASgEEicKBnJlYXNvbhgDIAEoDjIXLmJhdG9uLnYxLlJlbGVhc2VSZWFzb24irgEKDUJyb2tlck1lc3NhZ2USJAoHc3RhbmRieRgBIAEoCzIRLmJhdG9uLnYxLlN0YW5kYnlIABIkCgdncmFudGVkGAIgASgLMhEuYmF0b24udjEuR3JhbnRlZEgAEiQKB3JlbmV3ZWQYAyABKAsyES5iYXRvbi52MS5SZW5ld2VkSAASJAoHcmV2b2tlZBgEIAEoCzIRLmJhdG9uLnYxLlJldm9rZWRIAEIFCgNtc2cibgoHU3RhbmRieRInCgZyZWFzb24YASABKA4yFy5iYXRvbi52MS5TdGFuZGJ5UmVhc29uEiAKBmhvbGRlchgCIAEoCzIQLmJhdG9uLnYxLkhvbGRlchIYChBwcm90b2NvbF92ZXJzaW9uGAMgASgNIsUBCgZIb2xkZXISDgoGaG9sZGVyGAEgASgJEg0KBWVwb2NoGAIgASgEEi8KC2FjcXVpcmVkX2F0GAMgASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcBIyCg5sYXN0X2hlYXJ0YmVhdBgEIAEoCzIaLmdvb2dsZS5wcm90b2J1Zi5UaW1lc3RhbXASEwoLYmFja2VuZF9waWQYBSABKAUSDgoGd29ya2VyGAYgASgJEhIKCndvcmtlcl91cmwYByABKAkiqgEKB0dyYW50ZWQSDQoFZXBvY2gYASABKAQSJgoDdHRsGAIgASgLMhkuZ29vZ2xlLnByb3RvYnVmLkR1cmF0aW9uEhEKCXN0cmVhbV9pZBgDIAEoCRIRCglzbG90X25hbWUYBCABKAkSGAoQcHVibGljYXRpb25fbmFtZRgFIAEoCRIOCgZob2xkZXIYBiABKAkSGAoQcHJvdG9jb2xfdmVyc2lvbhgHIAEoDSJACgdSZW5ld2VkEg0KBWVwb2NoGAEgASgEEiYKA3R0bBgCIAEoCzIZLmdvb2dsZS5wcm90b2J1Zi5EdXJhdGlvbiKDAQoHUmV2b2tlZBINCgVlcG9jaBgBIAEoBBImCgZyZWFzb24YAiABKA4yFi5iYXRvbi52MS5SZXZva2VSZWFzb24SDwoHbWVzc2FnZRgDIAEoCRIwCg1kcmFpbl90aW1lb3V0GAQgASgLMhkuZ29vZ2xlLnByb3RvYnVmLkR1cmF0aW9uKkwKDVJlbGVhc2VSZWFzb24SHgoaUkVMRUFTRV9SRUFTT05fVU5TUEVDSUZJRUQQABIbChdSRUxFQVNFX1JFQVNPTl9TVE9QUElORxABKtIBCg1TdGFuZGJ5UmVhc29uEh4KGlNUQU5EQllfUkVBU09OX1VOU1BFQ0lGSUVEEAASHQoZU1RBTkRCWV9SRUFTT05fQ09OTkVDVElORxABEhwKGFNUQU5EQllfUkVBU09OX0xPQ0tfV0FJVBACEh8KG1NUQU5EQllfUkVBU09OX09USEVSX1dPUktFUhADEiEKHVNUQU5EQllfUkVBU09OX1BSRVZJT1VTX0dSQU5UEAQSIAocU1RBTkRCWV9SRUFTT05fU0hVVFRJTkdfRE9XThAFKoIBCgxSZXZva2VSZWFzb24SHQoZUkVWT0tFX1JFQVNPTl9VTlNQRUNJRklFRBAAEhoKFlJFVk9LRV9SRUFTT05fU0hVVERPV04QARIbChdSRVZPS0VfUkVBU09OX0xPQ0tfTE9TVBACEhoKFlJFVk9LRV9SRUFTT05fUkVQTEFDRUQQAzJNCgxMZWFzZVNlcnZpY2USPQoFTGVhc2USFy5iYXRvbi52MS5Xb3JrZXJNZXNzYWdlGhcuYmF0b24udjEuQnJva2VyTWVzc2FnZSgBMAFCMVovZ2l0aHViLmNvbS9iYXRvbmhxL2JhdG9uL3Byb3RvL2JhdG9uL3YxO2JhdG9udjFiBnByb3RvMw", [file_google_protobuf_duration, file_google_protobuf_timestamp]);

/**
 * WorkerMessage is everything a worker sends on the Lease stream.
 *
 * @generated from message baton.v1.WorkerMessage
 */
export type WorkerMessage = Message<"baton.v1.WorkerMessage"> & {
  /**
   * @generated from oneof baton.v1.WorkerMessage.msg
   */
  msg: {
    /**
     * First message of every stream, exactly once.
     *
     * @generated from field: baton.v1.Hello hello = 1;
     */
    value: Hello;
    case: "hello";
  } | {
    /**
     * The worker's durable position (W10): soon after each grant and at
     * least every 10 s while it advances. The broker shows it in `broker
     * status`, records it with its heartbeats in the state table and in its
     * metrics; it never acts on it.
     *
     * @generated from field: baton.v1.Progress progress = 2;
     */
    value: Progress;
    case: "progress";
  } | {
    /**
     * The worker has stopped consuming under the given epoch. This stream
     * is not granted again.
     *
     * @generated from field: baton.v1.Released released = 3;
     */
    value: Released;
    case: "released";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message baton.v1.WorkerMessage.
 * Use `create(WorkerMessageSchema)` to create a new message.
 */
export const WorkerMessageSchema: GenMessage<WorkerMessage> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 0);

/**
 * Hello introduces the worker.
 *
 * @generated from message baton.v1.Hello
 */
export type Hello = Message<"baton.v1.Hello"> & {
  /**
   * Free-form identity of the worker process, for logs and the holder
   * column of the state table (e.g. "worker@pod-7d9c"). Required from
   * protocol version 2 (INVALID_ARGUMENT when empty); a version-1 worker
   * without one is logged as "unnamed-worker".
   *
   * @generated from field: string worker_id = 1;
   */
  workerId: string;

  /**
   * The stream the worker wants to consume: its REPLICATION_STREAM_ID. Must
   * equal the broker's (INVALID_ARGUMENT otherwise, naming both). Required
   * from protocol version 2; for a version-1 worker, empty means "whatever
   * the broker serves".
   *
   * @generated from field: string stream_id = 2;
   */
  streamId: string;

  /**
   * Base URL at which this worker serves its API to the other pods of the
   * stream (e.g. "http://10.1.2.3:3000"); empty when it serves nothing to
   * them. While this worker holds the grant the broker records it with the
   * holder in the state table and other workers see it in
   * Standby.holder.worker_url, so that a standby worker can forward the
   * requests it receives to the active one.
   *
   * @generated from field: string advertise_url = 3;
   */
  advertiseUrl: string;

  /**
   * The version of this protocol the worker implements: 2 for the contract
   * in this file. 0 (a worker that predates the field) is taken as 1. A
   * broker that does not support the version ends the stream with
   * FAILED_PRECONDITION and a message naming the versions it supports
   * ("supported protocol versions: 1, 2"); a worker that implements several
   * may open a new stream with one of those. Brokers of this file support
   * 1 and 2 and behave the same for both, apart from the checks of
   * worker_id and stream_id.
   *
   * @generated from field: uint32 protocol_version = 4;
   */
  protocolVersion: number;
};

/**
 * Describes the message baton.v1.Hello.
 * Use `create(HelloSchema)` to create a new message.
 */
export const HelloSchema: GenMessage<Hello> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 1);

/**
 * Progress reports what the worker has made durable.
 *
 * @generated from message baton.v1.Progress
 */
export type Progress = Message<"baton.v1.Progress"> & {
  /**
   * Epoch of the grant the worker is acting under.
   *
   * @generated from field: uint64 epoch = 1;
   */
  epoch: bigint;

  /**
   * Last WAL position (LSN, as a 64-bit integer) that is durable in the
   * worker's storage and acknowledged to PostgreSQL.
   *
   * @generated from field: uint64 durable_lsn = 2;
   */
  durableLsn: bigint;
};

/**
 * Describes the message baton.v1.Progress.
 * Use `create(ProgressSchema)` to create a new message.
 */
export const ProgressSchema: GenMessage<Progress> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 2);

/**
 * Released ends a grant from the worker's side.
 *
 * @generated from message baton.v1.Released
 */
export type Released = Message<"baton.v1.Released"> & {
  /**
   * Epoch of the grant being released. A Released for any other epoch than
   * the current grant's is ignored.
   *
   * @generated from field: uint64 epoch = 1;
   */
  epoch: bigint;

  /**
   * Last durable LSN at the moment of release (0 when unknown).
   *
   * @generated from field: uint64 durable_lsn = 2;
   */
  durableLsn: bigint;

  /**
   * Why the worker releases. Workers that predate the field send
   * RELEASE_REASON_UNSPECIFIED, which keeps the earlier behaviour.
   *
   * @generated from field: baton.v1.ReleaseReason reason = 3;
   */
  reason: ReleaseReason;
};

/**
 * Describes the message baton.v1.Released.
 * Use `create(ReleasedSchema)` to create a new message.
 */
export const ReleasedSchema: GenMessage<Released> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 3);

/**
 * BrokerMessage is everything a broker sends on the Lease stream.
 *
 * @generated from message baton.v1.BrokerMessage
 */
export type BrokerMessage = Message<"baton.v1.BrokerMessage"> & {
  /**
   * @generated from oneof baton.v1.BrokerMessage.msg
   */
  msg: {
    /**
     * @generated from field: baton.v1.Standby standby = 1;
     */
    value: Standby;
    case: "standby";
  } | {
    /**
     * @generated from field: baton.v1.Granted granted = 2;
     */
    value: Granted;
    case: "granted";
  } | {
    /**
     * @generated from field: baton.v1.Renewed renewed = 3;
     */
    value: Renewed;
    case: "renewed";
  } | {
    /**
     * @generated from field: baton.v1.Revoked revoked = 4;
     */
    value: Revoked;
    case: "revoked";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message baton.v1.BrokerMessage.
 * Use `create(BrokerMessageSchema)` to create a new message.
 */
export const BrokerMessageSchema: GenMessage<BrokerMessage> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 4);

/**
 * Standby tells the worker to wait: it has no grant.
 *
 * @generated from message baton.v1.Standby
 */
export type Standby = Message<"baton.v1.Standby"> & {
  /**
   * Why the worker waits.
   *
   * @generated from field: baton.v1.StandbyReason reason = 1;
   */
  reason: StandbyReason;

  /**
   * The current holder of the stream as recorded in PostgreSQL, when known.
   *
   * @generated from field: baton.v1.Holder holder = 2;
   */
  holder?: Holder | undefined;

  /**
   * The highest protocol version the broker supports (2 for this file); 0
   * from a broker older than version 2. The broker's first answer to Hello
   * is always a Standby, so a worker learns it before anything else.
   *
   * @generated from field: uint32 protocol_version = 3;
   */
  protocolVersion: number;
};

/**
 * Describes the message baton.v1.Standby.
 * Use `create(StandbySchema)` to create a new message.
 */
export const StandbySchema: GenMessage<Standby> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 5);

/**
 * Holder describes who holds a stream, from the broker's state table
 * (schema baton, table streams).
 *
 * @generated from message baton.v1.Holder
 */
export type Holder = Message<"baton.v1.Holder"> & {
  /**
   * Identity of the holding broker: the application_name of its lock
   * session, "baton-broker:<stream id>:<host name>".
   *
   * @generated from field: string holder = 1;
   */
  holder: string;

  /**
   * Epoch of the holder's latest grant.
   *
   * @generated from field: uint64 epoch = 2;
   */
  epoch: bigint;

  /**
   * When the holder acquired the lock (PostgreSQL's clock).
   *
   * @generated from field: google.protobuf.Timestamp acquired_at = 3;
   */
  acquiredAt?: Timestamp | undefined;

  /**
   * When the holder last heartbeat (PostgreSQL's clock).
   *
   * @generated from field: google.protobuf.Timestamp last_heartbeat = 4;
   */
  lastHeartbeat?: Timestamp | undefined;

  /**
   * PostgreSQL backend pid of the holder's lock session.
   *
   * @generated from field: int32 backend_pid = 5;
   */
  backendPid: number;

  /**
   * The worker_id of the holder's current grant, empty when none.
   *
   * @generated from field: string worker = 6;
   */
  worker: string;

  /**
   * The advertise_url of the holder's current grant (Hello.advertise_url),
   * empty when none was advertised or no grant is current.
   *
   * @generated from field: string worker_url = 7;
   */
  workerUrl: string;
};

/**
 * Describes the message baton.v1.Holder.
 * Use `create(HolderSchema)` to create a new message.
 */
export const HolderSchema: GenMessage<Holder> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 6);

/**
 * Granted makes the worker the stream's only consumer.
 *
 * @generated from message baton.v1.Granted
 */
export type Granted = Message<"baton.v1.Granted"> & {
  /**
   * Fencing token. Strictly increases with every grant of the stream across
   * all brokers (it is stored in PostgreSQL). Tag or check with it anything a
   * successor may read, e.g. put it in the replication connection's
   * application_name as "baton-worker:<stream id>:<epoch>".
   *
   * @generated from field: uint64 epoch = 1;
   */
  epoch: bigint;

  /**
   * Validity of the grant from the moment of receipt, on the worker's
   * monotonic clock; each Renewed restarts it.
   *
   * @generated from field: google.protobuf.Duration ttl = 2;
   */
  ttl?: Duration | undefined;

  /**
   * The stream id (REPLICATION_STREAM_ID).
   *
   * @generated from field: string stream_id = 3;
   */
  streamId: string;

  /**
   * Logical replication slot to consume: "baton_slot_<stream id>".
   *
   * @generated from field: string slot_name = 4;
   */
  slotName: string;

  /**
   * Publication to use: "baton_pub_<stream id>".
   *
   * @generated from field: string publication_name = 5;
   */
  publicationName: string;

  /**
   * Identity of the granting broker (its lock session's application_name).
   *
   * @generated from field: string holder = 6;
   */
  holder: string;

  /**
   * The highest protocol version the broker supports, as in Standby.
   *
   * @generated from field: uint32 protocol_version = 7;
   */
  protocolVersion: number;
};

/**
 * Describes the message baton.v1.Granted.
 * Use `create(GrantedSchema)` to create a new message.
 */
export const GrantedSchema: GenMessage<Granted> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 7);

/**
 * Renewed extends the current grant.
 *
 * @generated from message baton.v1.Renewed
 */
export type Renewed = Message<"baton.v1.Renewed"> & {
  /**
   * Epoch of the grant being renewed; a Renewed for another epoch must be
   * ignored.
   *
   * @generated from field: uint64 epoch = 1;
   */
  epoch: bigint;

  /**
   * New validity from the moment of receipt (normally equal to Granted.ttl).
   *
   * @generated from field: google.protobuf.Duration ttl = 2;
   */
  ttl?: Duration | undefined;
};

/**
 * Describes the message baton.v1.Renewed.
 * Use `create(RenewedSchema)` to create a new message.
 */
export const RenewedSchema: GenMessage<Renewed> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 8);

/**
 * Revoked ends the current grant: the worker stops reading at once (W6).
 * No Renewed follows for that epoch.
 *
 * @generated from message baton.v1.Revoked
 */
export type Revoked = Message<"baton.v1.Revoked"> & {
  /**
   * Epoch of the grant being revoked; a Revoked for another epoch must be
   * ignored.
   *
   * @generated from field: uint64 epoch = 1;
   */
  epoch: bigint;

  /**
   * Why.
   *
   * @generated from field: baton.v1.RevokeReason reason = 2;
   */
  reason: RevokeReason;

  /**
   * Human-readable detail for logs.
   *
   * @generated from field: string message = 3;
   */
  message: string;

  /**
   * How long, from receipt and on the worker's monotonic clock, the worker
   * may take to finish with the stream: make durable what it received,
   * acknowledge it, close its replication connection, end its walsender and
   * send Released. Past this drain deadline the broker stops waiting and a
   * successor may be granted, so the worker acknowledges nothing more and
   * closes its replication connection, finished or not.
   *
   * Brokers send it with every Revoked (protocol version 2):
   *  - REVOKE_REASON_SHUTDOWN: BATON_DRAIN_TIMEOUT less a margin for
   *    delivery (e.g. 18 s for the default 20 s); the broker keeps the lock
   *    and its lock session alive until Released or then.
   *  - REVOKE_REASON_LOCK_LOST, REVOKE_REASON_REPLACED: 0. The lock may
   *    already belong to another broker: stop at once, acknowledge nothing
   *    more. Sending Released afterwards is allowed (the stream is then
   *    never granted again) but not required (the stream stays a candidate
   *    for a new Granted with a higher epoch).
   * A second Revoked for the same epoch with drain_timeout 0 may follow a
   * shutdown Revoked when the lock session fails during the drain: the
   * shorter deadline wins.
   *
   * Absent (a broker that predates the field): for REVOKE_REASON_SHUTDOWN
   * the drain deadline is the lease's own expiry (receipt of the last
   * Granted or Renewed + its ttl), which every broker waits for; for any
   * other reason it is 0.
   *
   * @generated from field: google.protobuf.Duration drain_timeout = 4;
   */
  drainTimeout?: Duration | undefined;
};

/**
 * Describes the message baton.v1.Revoked.
 * Use `create(RevokedSchema)` to create a new message.
 */
export const RevokedSchema: GenMessage<Revoked> = /*@__PURE__*/
  messageDesc(file_baton_v1_lease, 9);

/**
 * ReleaseReason says why a worker released its grant, and so what its
 * broker does with the lock.
 *
 * @generated from enum baton.v1.ReleaseReason
 */
export enum ReleaseReason {
  /**
   * The worker gave the grant back but its process goes on (it restarts its
   * replication, or it found a newer epoch): the broker keeps the lock and
   * grants again to a worker that attaches within
   * BATON_WORKER_ABSENCE_TIMEOUT.
   *
   * @generated from enum value: RELEASE_REASON_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The worker's process is stopping (it received SIGTERM) and it has
   * finished with the stream: drained, acknowledged, walsender ended. The
   * broker records the release and unlocks at once, so that a standby
   * broker takes over; it contends for the lock again only when a worker
   * attaches to it again.
   *
   * @generated from enum value: RELEASE_REASON_STOPPING = 1;
   */
  STOPPING = 1,
}

/**
 * Describes the enum baton.v1.ReleaseReason.
 */
export const ReleaseReasonSchema: GenEnum<ReleaseReason> = /*@__PURE__*/
  enumDesc(file_baton_v1_lease, 0);

/**
 * StandbyReason says what the worker is waiting for.
 *
 * @generated from enum baton.v1.StandbyReason
 */
export enum StandbyReason {
  /**
   * @generated from enum value: STANDBY_REASON_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The broker is connecting (or reconnecting) to PostgreSQL.
   *
   * @generated from enum value: STANDBY_REASON_CONNECTING = 1;
   */
  CONNECTING = 1,

  /**
   * The broker waits for the stream's advisory lock, held by another broker.
   *
   * @generated from enum value: STANDBY_REASON_LOCK_WAIT = 2;
   */
  LOCK_WAIT = 2,

  /**
   * This broker holds the lock but has granted it to another worker stream.
   *
   * @generated from enum value: STANDBY_REASON_OTHER_WORKER = 3;
   */
  OTHER_WORKER = 3,

  /**
   * The broker holds the lock and waits for the previous grant's TTL to pass
   * before granting again (the previous worker vanished without Released).
   *
   * @generated from enum value: STANDBY_REASON_PREVIOUS_GRANT = 4;
   */
  PREVIOUS_GRANT = 4,

  /**
   * The broker is shutting down and will not grant again.
   *
   * @generated from enum value: STANDBY_REASON_SHUTTING_DOWN = 5;
   */
  SHUTTING_DOWN = 5,
}

/**
 * Describes the enum baton.v1.StandbyReason.
 */
export const StandbyReasonSchema: GenEnum<StandbyReason> = /*@__PURE__*/
  enumDesc(file_baton_v1_lease, 1);

/**
 * RevokeReason says why a grant ended.
 *
 * @generated from enum baton.v1.RevokeReason
 */
export enum RevokeReason {
  /**
   * @generated from enum value: REVOKE_REASON_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The broker is stopping (SIGTERM): release after draining, within
   * Revoked.drain_timeout; the broker waits for Released (at most that long)
   * before it unlocks.
   *
   * @generated from enum value: REVOKE_REASON_SHUTDOWN = 1;
   */
  SHUTDOWN = 1,

  /**
   * The broker's lock session failed (heartbeat error, connection lost,
   * PostgreSQL restart): the lock may already belong to someone else. Stop
   * at once (drain_timeout 0).
   *
   * @generated from enum value: REVOKE_REASON_LOCK_LOST = 2;
   */
  LOCK_LOST = 2,

  /**
   * The state table shows a newer epoch than this grant's: another broker
   * has taken the stream. Stop at once (drain_timeout 0).
   *
   * @generated from enum value: REVOKE_REASON_REPLACED = 3;
   */
  REPLACED = 3,
}

/**
 * Describes the enum baton.v1.RevokeReason.
 */
export const RevokeReasonSchema: GenEnum<RevokeReason> = /*@__PURE__*/
  enumDesc(file_baton_v1_lease, 2);

/**
 * LeaseService is served by the broker on BATON_BROKER_LISTEN (default :7070),
 * next to grpc.health.v1.Health.
 *
 * @generated from service baton.v1.LeaseService
 */
export const LeaseService: GenService<{
  /**
   * Lease is one bidirectional stream per worker. The first message from the
   * worker must be Hello; the broker answers with Standby, then Granted when
   * it grants, and keeps the stream open for renewals. A broker grants to at most one
   * stream at a time; any other stream is told Standby.
   *
   * Errors (B1): INVALID_ARGUMENT when the first message is not Hello, Hello
   * comes twice, Hello names a different stream than the broker serves, or
   * (protocol version 2 and later) leaves worker_id or stream_id empty;
   * FAILED_PRECONDITION when the broker does not support Hello's
   * protocol_version (the message names the versions it supports);
   * UNAVAILABLE while the broker shuts down.
   *
   * @generated from rpc baton.v1.LeaseService.Lease
   */
  lease: {
    methodKind: "bidi_streaming";
    input: typeof WorkerMessageSchema;
    output: typeof BrokerMessageSchema;
  },
}> = /*@__PURE__*/
  serviceDesc(file_baton_v1_lease, 0);

