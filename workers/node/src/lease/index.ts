/**
 * The TypeScript client of Baton's lease protocol (baton.v1,
 * proto/baton/v1/lease.proto): see README.md beside this file.
 */
export { LeaseClient, type LeaseClientOptions, LeaseRefused, ClientClosed, PROTOCOL_VERSION } from "./client.js";
export { Lease, LeaseEnded, type EndKind, revokeReasonName } from "./lease.js";
export { RevokeReason, StandbyReason, type Standby } from "../gen/baton/v1/lease_pb.js";
