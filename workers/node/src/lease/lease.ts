import { performance } from "node:perf_hooks";

import { RevokeReason } from "../gen/baton/v1/lease_pb.js";

/** Why a lease ended: the `reason` of a lease's AbortSignal. */
export type EndKind = "revoked" | "expired" | "broker_lost" | "released";

/**
 * LeaseEnded is the reason of an ended lease's signal (`lease.signal.reason`)
 * and of `lease.err()`.
 */
export class LeaseEnded extends Error {
  override readonly name = "LeaseEnded";
  constructor(
    readonly kind: EndKind,
    message: string,
    /** For kind "revoked": why the broker revoked (RevokeReason). */
    readonly revokeReason: RevokeReason = RevokeReason.UNSPECIFIED,
  ) {
    super(message);
  }
}

/** The lower-case name of a revoke reason: shutdown, lock_lost, replaced. */
export function revokeReasonName(r: RevokeReason): string {
  return (RevokeReason[r] ?? String(r)).toLowerCase();
}

/** What the session behind a lease does for it. */
export interface LeaseSession {
  sendProgress(epoch: bigint, durableLsn: bigint): Promise<void>;
  sendReleased(epoch: bigint, durableLsn: bigint, stopping: boolean, timeoutMs: number): Promise<void>;
}

/** What a Granted message says. */
export interface Grant {
  epoch: bigint;
  ttlMs: number;
  streamId: string;
  slot: string;
  publication: string;
  holder: string;
}

/**
 * Lease is one grant of the stream. Its `signal` aborts, with a LeaseEnded
 * reason, when the grant ends: the broker revoked it, no renewal arrived
 * for the TTL (measured on this process's monotonic clock from the last
 * renewal received), the stream to the broker broke, or the worker released
 * it. Derive everything that consumes the stream from `signal`.
 *
 * A timer cannot fire while the event loop is blocked (or the process is
 * stopped), so the signal may abort late: call `valid()`, which reads the
 * clock, immediately before anything a successor could observe.
 */
export class Lease {
  /** Fencing token: greater than every earlier grant's for the stream. */
  readonly epoch: bigint;
  /** Validity of the grant and of each renewal, in milliseconds. */
  readonly ttlMs: number;
  readonly streamId: string;
  readonly slot: string;
  readonly publication: string;
  /** The granting broker (its lock session's application_name). */
  readonly holder: string;
  /** When the grant arrived (performance.now()). */
  readonly grantedAt: number;

  private readonly ac = new AbortController();
  private deadlineAt: number;
  private timer: NodeJS.Timeout | undefined;
  private endedAt = 0;
  /** performance.now() until which an ended lease may still drain (W6). */
  private drainAt = 0;

  /** @internal Created by LeaseClient when a Granted arrives. */
  constructor(private readonly session: LeaseSession, g: Grant, now: number) {
    this.epoch = g.epoch;
    this.ttlMs = g.ttlMs;
    this.streamId = g.streamId;
    this.slot = g.slot;
    this.publication = g.publication;
    this.holder = g.holder;
    this.grantedAt = now;
    this.deadlineAt = now + g.ttlMs;
    this.arm();
  }

  /** Aborts when the lease ends; `signal.reason` is a LeaseEnded. */
  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** undefined while the lease has not ended, else why it ended. */
  err(): LeaseEnded | undefined {
    return this.ac.signal.aborted ? (this.ac.signal.reason as LeaseEnded) : undefined;
  }

  /**
   * Whether the lease is held right now: not ended, and its deadline not
   * passed on the monotonic clock, even if the expiry timer has not fired
   * (e.g. after a blocked event loop or SIGSTOP). Ends the lease when the
   * deadline has passed.
   */
  valid(): boolean {
    if (this.endedAt !== 0) return false;
    if (performance.now() >= this.deadlineAt) {
      this.end(new LeaseEnded("expired", "lease expired: no renewal within the TTL"));
      return false;
    }
    return true;
  }

  /** When the lease expires unless renewed (performance.now() clock). */
  deadline(): number {
    return this.deadlineAt;
  }

  /**
   * Until when (performance.now() clock) the worker may finish with the
   * stream after the lease ended: make durable what it received,
   * acknowledge it, close its replication connection and release. Only a
   * Revoked gives drain time (Revoked.drain_timeout from its receipt; a
   * broker that predates the field: the lease's own expiry for shutdown,
   * none otherwise); every other end gives none. While the lease is valid
   * it is the lease's deadline.
   */
  drainDeadline(): number {
    return this.endedAt === 0 ? this.deadlineAt : this.drainAt;
  }

  /**
   * Whether the worker may still write and acknowledge: the lease is valid,
   * or it was revoked and its drain deadline has not passed (W4, W6).
   */
  mayDrain(): boolean {
    return this.valid() || performance.now() < this.drainAt;
  }

  /**
   * Tells the broker the last durable position (W10), while the lease is
   * held or draining after a Revoked. Resolves once the message is written
   * to the stream (or could not be); never rejects. A worker that reports
   * before it acknowledges to PostgreSQL, and acknowledges after this
   * resolves, never lets the slot's confirmed position pass what the
   * broker was told, even when it is killed in between.
   */
  progress(durableLsn: bigint): Promise<void> {
    if (this.err()?.kind === "released") return Promise.resolve();
    return this.session.sendProgress(this.epoch, durableLsn);
  }

  /**
   * Ends the lease (if it has not ended) and tells the broker the worker
   * has stopped consuming. Call it after the replication connection is
   * closed and its walsender gone. `stopping: true` says the process is
   * stopping (RELEASE_REASON_STOPPING): the broker unlocks at once, so a
   * standby pod takes over; otherwise the broker keeps the lock for a
   * worker that attaches again. Resolves when the message was written or
   * could not be (the broker then waits for the TTL); never rejects.
   */
  async release(durableLsn: bigint, opts: { stopping?: boolean; timeoutMs?: number } = {}): Promise<void> {
    this.end(new LeaseEnded("released", "lease released"));
    await this.session.sendReleased(this.epoch, durableLsn, opts.stopping ?? false, opts.timeoutMs ?? 2000);
  }

  /** @internal A Renewed for this epoch arrived at now. */
  renew(now: number, ttlMs: number): void {
    if (this.endedAt !== 0) return;
    if (now >= this.deadlineAt) {
      // Already expired, the timer just has not fired: a renewal cannot
      // revive a lease.
      this.end(new LeaseEnded("expired", "lease expired: no renewal within the TTL"));
      return;
    }
    this.deadlineAt = now + ttlMs;
    this.arm();
  }

  /**
   * @internal A Revoked for this epoch arrived at now, with drainMs of
   * drain time (undefined: the broker predates the field). A second
   * Revoked can only shorten the drain deadline.
   */
  revoke(now: number, reason: RevokeReason, message: string, drainMs: number | undefined): void {
    let until = now;
    if (drainMs !== undefined) until = now + drainMs;
    else if (reason === RevokeReason.SHUTDOWN) until = this.deadlineAt;
    if (this.endedAt === 0) {
      if (now >= this.deadlineAt) {
        this.end(new LeaseEnded("expired", "lease expired: no renewal within the TTL"));
        return;
      }
      this.drainAt = until;
      this.end(new LeaseEnded("revoked", `lease revoked (${revokeReasonName(reason)}): ${message}`, reason));
    } else if (until < this.drainAt) {
      this.drainAt = until;
    }
  }

  /** @internal Ends the lease with reason (the first reason wins). */
  end(reason: LeaseEnded): void {
    if (this.endedAt !== 0) return;
    this.endedAt = performance.now();
    clearTimeout(this.timer);
    this.ac.abort(reason);
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (performance.now() >= this.deadlineAt) {
        this.end(new LeaseEnded("expired", "lease expired: no renewal within the TTL"));
      } else {
        this.arm();
      }
    }, Math.max(0, this.deadlineAt - performance.now()));
    // The lease alone must not keep the process alive.
    this.timer.unref();
  }
}
