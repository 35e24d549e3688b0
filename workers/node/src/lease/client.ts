import { performance } from "node:perf_hooks";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";

import {
  type BrokerMessage,
  BrokerMessageSchema,
  LeaseService,
  ReleaseReason,
  type Standby,
  type WorkerMessage,
  WorkerMessageSchema,
} from "../gen/baton/v1/lease_pb.js";
import { Lease, LeaseEnded } from "./lease.js";

/** Options of a LeaseClient. */
export interface LeaseClientOptions {
  /** Names this worker in the broker's logs and state table (Hello.worker_id). */
  workerId: string;
  /** The stream (Hello.stream_id, REPLICATION_STREAM_ID): must equal the broker's. */
  streamId: string;
  /** Base URL at which this worker serves the other pods (Hello.advertise_url). */
  advertiseUrl?: string;
  /** Called with every Standby message; must not throw. */
  onStandby?: (s: Standby) => void;
  /**
   * Called with why a lease stream could not be opened while the broker is
   * unreachable, and with undefined when a stream opened after that.
   */
  onBroker?: (err: Error | undefined) => void;
  /**
   * gRPC keepalive ping interval in milliseconds: default 10000 (gRPC's
   * advice, and what the Go client uses), never below 1000 (W12: the
   * broker answers pings more often than every 500 ms with GOAWAY
   * too_many_pings, and the stream and its grant are lost). Keepalive is
   * not what notices a frozen broker: the lease's TTL does.
   */
  keepaliveMs?: number;
}

/** LeaseRefused: the broker refused the lease stream (a wrong stream id, ...). */
export class LeaseRefused extends Error {
  override readonly name = "LeaseRefused";
  constructor(readonly code: grpc.status, message: string) {
    super(message);
  }
}

/** LeaseClient is closed. */
export class ClientClosed extends Error {
  override readonly name = "ClientClosed";
  constructor() {
    super("lease client closed");
  }
}

/**
 * The version of the lease protocol this client implements
 * (Hello.protocol_version): 2, the contract of lease.proto W1-W12.
 */
export const PROTOCOL_VERSION = 2;

const leaseMethod = `/${LeaseService.typeName}/${LeaseService.method.lease.name}`;
const serialize = (m: WorkerMessage): Buffer => Buffer.from(toBinary(WorkerMessageSchema, m));
const deserialize = (b: Buffer): BrokerMessage => fromBinary(BrokerMessageSchema, b);

/**
 * LeaseClient talks to one broker (the sidecar of this pod) over the
 * baton.v1 lease protocol. `acquire()` resolves with a Lease once the broker
 * grants the stream; while the broker is unreachable it retries with backoff.
 * One acquire at a time is the intended use: a broker grants one lease per
 * worker stream.
 */
export class LeaseClient {
  private readonly client: grpc.Client;
  private session: Session | undefined;
  private closed = false;
  private unreachable = false;

  constructor(addr: string, private readonly opts: LeaseClientOptions) {
    const keepalive = Math.max(opts.keepaliveMs ?? 10000, 1000);
    this.client = new grpc.Client(addr, grpc.credentials.createInsecure(), {
      "grpc.keepalive_time_ms": keepalive,
      "grpc.keepalive_timeout_ms": 2000,
      "grpc.keepalive_permit_without_calls": 1,
      // The broker is a sidecar on loopback: reconnect quickly when it
      // (re)starts.
      "grpc.initial_reconnect_backoff_ms": 50,
      "grpc.max_reconnect_backoff_ms": 1000,
    });
  }

  /**
   * Resolves with a lease when the broker grants one. Rejects with the
   * signal's reason when `signal` aborts, ClientClosed after close(), and
   * LeaseRefused when the broker refuses the stream (INVALID_ARGUMENT,
   * UNIMPLEMENTED, FAILED_PRECONDITION): retrying cannot help then.
   */
  async acquire(signal?: AbortSignal): Promise<Lease> {
    let delay = 50;
    for (;;) {
      if (this.closed) throw new ClientClosed();
      signal?.throwIfAborted();
      const s = this.currentSession();
      const got = await s.nextGrant(signal);
      if (got instanceof Lease) {
        if (got.err() === undefined) return got;
        // Granted and ended before anyone took it: say so.
        await got.release(0n);
        continue;
      }
      this.drop(s);
      const code = got?.code;
      if (code === grpc.status.INVALID_ARGUMENT || code === grpc.status.UNIMPLEMENTED || code === grpc.status.FAILED_PRECONDITION) {
        throw new LeaseRefused(code, `broker refused the lease stream: ${got?.details ?? ""}`);
      }
      if (s.everReceived) {
        this.reachable(undefined);
        delay = 50;
      } else {
        this.reachable(new Error(`broker unreachable: ${got?.details ?? "stream ended"}`));
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 2000);
    }
  }

  /**
   * Half-closes the lease stream (so that a Released just sent reaches the
   * broker), waits up to 2 s for the broker to end it, then closes the
   * connection. A current lease ends with kind "broker_lost". Resolves
   * false when the broker did not end the stream in time (what was sent
   * last, e.g. a Released, may not have reached it).
   */
  async close(): Promise<boolean> {
    this.closed = true;
    const ended = (await this.session?.closeSend(2000)) ?? true;
    this.client.close();
    return ended;
  }

  private currentSession(): Session {
    const s = this.session;
    if (s && !s.ended) {
      if (!s.spent) return s;
      // A broker grants a stream at most until it is released: ask again
      // on a new stream, ending the old one cleanly.
      void s.closeSend(1000);
    }
    const call = this.client.makeBidiStreamRequest(leaseMethod, serialize, deserialize);
    const n = new Session(call, this.opts.onStandby);
    n.send(create(WorkerMessageSchema, {
      msg: {
        case: "hello",
        value: {
          workerId: this.opts.workerId, streamId: this.opts.streamId, advertiseUrl: this.opts.advertiseUrl ?? "",
          protocolVersion: PROTOCOL_VERSION,
        },
      },
    }));
    this.session = n;
    return n;
  }

  private drop(s: Session): void {
    if (this.session === s) this.session = undefined;
  }

  private reachable(err: Error | undefined): void {
    if (!this.opts.onBroker || (err === undefined && !this.unreachable)) return;
    this.unreachable = err !== undefined;
    this.opts.onBroker(err);
  }
}

/** Session is one Lease stream. */
class Session {
  ended = false;
  spent = false;
  private halfClosed = false;
  everReceived = false;
  status: grpc.StatusObject | undefined;
  private cur: Lease | undefined;
  private pending: Lease | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly endWaiters = new Set<() => void>();

  constructor(
    private readonly call: grpc.ClientDuplexStream<WorkerMessage, BrokerMessage>,
    private readonly onStandby?: (s: Standby) => void,
  ) {
    call.on("data", (m: BrokerMessage) => this.receive(m));
    call.on("status", (st: grpc.StatusObject) => this.finish(st));
    // The status event carries the outcome (it always comes, after the
    // data); without an error listener an error would be thrown.
    call.on("error", () => {});
  }

  /** Resolves with the next grant, or with the stream's status when it ends. */
  async nextGrant(signal?: AbortSignal): Promise<Lease | grpc.StatusObject | undefined> {
    for (;;) {
      if (this.pending) {
        const l = this.pending;
        this.pending = undefined;
        return l;
      }
      if (this.ended) return this.status;
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          this.waiters.delete(wake);
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          this.waiters.delete(wake);
          reject(signal?.reason);
        };
        if (signal?.aborted) return reject(signal.reason);
        signal?.addEventListener("abort", onAbort, { once: true });
        this.waiters.add(wake);
      });
    }
  }

  send(m: WorkerMessage, cb?: (err?: Error | null) => void): void {
    if (this.ended) {
      cb?.(new Error("lease stream to the broker ended"));
      return;
    }
    this.call.write(m, cb);
  }

  sendProgress = (epoch: bigint, durableLsn: bigint): Promise<void> => {
    return new Promise<void>((resolve) => {
      this.send(create(WorkerMessageSchema, { msg: { case: "progress", value: { epoch, durableLsn } } }), () => resolve());
    });
  };

  sendReleased = (epoch: bigint, durableLsn: bigint, stopping: boolean, timeoutMs: number): Promise<void> => {
    this.spent = true;
    const reason = stopping ? ReleaseReason.STOPPING : ReleaseReason.UNSPECIFIED;
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.send(create(WorkerMessageSchema, { msg: { case: "released", value: { epoch, durableLsn, reason } } }), () => {
        clearTimeout(t);
        resolve();
      });
      // This stream is not granted again (W8): half-close it, so that the
      // broker ends it once it has read the Released.
      this.halfClose();
    });
  };

  /** Half-closes, waits up to timeoutMs for the broker to end the stream, then cancels it. */
  async closeSend(timeoutMs: number): Promise<boolean> {
    if (!this.ended) {
      this.halfClose();
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, timeoutMs);
        const self = this;
        function done() {
          clearTimeout(t);
          self.endWaiters.delete(done);
          resolve();
        }
        this.endWaiters.add(done);
      });
    }
    const ended = this.ended;
    this.call.cancel();
    return ended;
  }

  private halfClose(): void {
    if (this.ended || this.halfClosed) return;
    this.halfClosed = true;
    this.call.end();
  }

  private receive(m: BrokerMessage): void {
    const now = performance.now();
    this.everReceived = true;
    switch (m.msg.case) {
      case "standby":
        this.onStandby?.(m.msg.value);
        break;
      case "granted": {
        const g = m.msg.value;
        const ttl = g.ttl ? durationMs(g.ttl) : 0;
        const l = new Lease(this, {
          epoch: g.epoch, ttlMs: ttl, streamId: g.streamId, slot: g.slotName, publication: g.publicationName, holder: g.holder,
        }, now);
        this.cur?.end(new LeaseEnded("revoked", "broker granted a new epoch"));
        this.cur = l;
        this.pending = l; // an unclaimed older grant is superseded
        this.wake();
        break;
      }
      case "renewed":
        if (this.cur && this.cur.epoch === m.msg.value.epoch) {
          const t = m.msg.value.ttl;
          this.cur.renew(now, t ? durationMs(t) : 0);
        }
        break;
      case "revoked": {
        const r = m.msg.value;
        if (this.cur && this.cur.epoch === r.epoch) {
          this.cur.revoke(now, r.reason, r.message, r.drainTimeout ? durationMs(r.drainTimeout) : undefined);
        }
        break;
      }
      default:
        // A message kind this client does not know (a newer broker): the
        // protocol grows compatibly, so it is ignored.
        break;
    }
  }

  private finish(st: grpc.StatusObject): void {
    if (this.ended) return;
    this.status = st;
    this.ended = true;
    this.cur?.end(new LeaseEnded("broker_lost", `lease stream to the broker ended: ${st.details || grpc.status[st.code]}`));
    this.wake();
    for (const w of [...this.endWaiters]) w();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

function durationMs(d: Duration): number {
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
