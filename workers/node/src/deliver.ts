/**
 * One lease's delivery: from a grant to the end of the lease, the stream's
 * committed transactions are appended to the JSON-lines file (sink.ts) and
 * acknowledged to PostgreSQL once durable.
 *
 * Order of a run, and why nothing is lost or doubled:
 *  1. Only after Granted: the publication and the slot are created when
 *     missing, and a stale predecessor's walsender (older epoch) is ended.
 *  2. The file is recovered (torn tail truncated); the resume position is
 *     the later of its last transaction's end LSN and the slot's confirmed
 *     position. Transactions whose commit LSN is below it are skipped: they
 *     are in the file already (or were acknowledged by a predecessor that
 *     had made them durable).
 *  3. The replication connection, named baton-worker:<stream>:<epoch>, is
 *     opened (after a last check that the lease is valid) and streams from
 *     the resume position.
 *  4. Each committed transaction is queued; the writer appends what is
 *     queued in one write and fdatasync, checking the lease immediately
 *     before, then acknowledges the last end LSN (flush = apply) to
 *     PostgreSQL and reports it to the broker (Progress). Nothing received
 *     but not yet durable is ever acknowledged; a keepalive's position is
 *     acknowledged only when no transaction is open and nothing is queued
 *     or being written (so no committed transaction before it is pending).
 *  5. The end. On SIGTERM, or Revoked with reason shutdown (the broker keeps
 *     the lock until Released), the worker drains: it stops reading, writes
 *     what is queued, acknowledges it and waits for the slot's confirmed
 *     position to reach it, ends streaming, ends its own walsender, and
 *     only then returns (the caller sends Released). On any other end (TTL
 *     passed on its own clock, broker lost, lock_lost, replaced) another
 *     worker may already hold the stream: it writes nothing more, drops the
 *     connection at once and returns. What it had made durable but not
 *     acknowledged is skipped by the successor (step 2).
 */
import { performance } from "node:perf_hooks";

import pg from "pg";

import type { Health } from "./health.js";
import { type Lease, LeaseEnded } from "./lease/index.js";
import type { Logger } from "./log.js";
import { formatLsn, maxLsn } from "./lsn.js";
import { type Change, Decoder } from "./pgoutput.js";
import { ReplicationConnection } from "./replication.js";
import type { Settings } from "./settings.js";
import { JsonLines, type Txn } from "./sink.js";
import { appName, awaitConfirmed, endOwnWalsender, ensurePublication, ensureSlot, readSlot, takeSlot } from "./slot.js";

/** Schema of Baton's own state table: never delivered. */
const batonSchema = "baton";

/**
 * Delivers under lease until it ends or stop aborts; returns the durable
 * position (for Released). Rejects on a failure of PostgreSQL or the file;
 * the caller then releases and asks for the stream again.
 */
export async function deliver(lease: Lease, s: Settings, stop: AbortSignal, log: Logger, health: Health, warm?: pg.Client): Promise<bigint> {
  health.status = "starting";
  health.epoch = lease.epoch;
  const app = appName(s.streamId, lease.epoch);
  let run: Run | undefined;
  // The replication connection is dialed from the grant on, alongside the
  // work on the admin session; it touches the slot only in Run.
  const repl = new ReplicationConnection({
    databaseUrl: s.databaseUrl, applicationName: app, slot: lease.slot, publication: lease.publication,
    walSenderTimeoutMs: s.walSenderTimeoutMs,
  }, { onData: (_s, _e, payload) => run?.onData(payload), onKeepalive: (walEnd) => run?.onKeepalive(walEnd) });
  const dialed = repl.connect();
  dialed.catch(() => {}); // awaited below
  const admin = warm ?? adminClient(s);
  let out: JsonLines | undefined;
  try {
    if (!warm) await admin.connect();
    const setup = AbortSignal.any([lease.signal, stop]);
    await ensurePublication(admin, lease.publication, s.tables);
    await ensureSlot(admin, lease.slot);
    const slot = await takeSlot(admin, lease.slot, s.streamId, lease.epoch, setup, (m, a) => log.warn(m, a));
    out = await JsonLines.open(s.outputFile);
    const resume = maxLsn(out.lastEnd(), slot.confirmed);
    log.info("resuming", { file_lsn: formatLsn(out.lastEnd()), slot_lsn: formatLsn(slot.confirmed), lsn: formatLsn(resume) });
    await dialed;
    setup.throwIfAborted();
    if (!lease.valid()) throw lease.err()!;
    run = new Run(lease, s, out, resume, app, log, health, repl);
    return await run.run(stop, admin);
  } catch (e) {
    repl.destroy();
    if (e instanceof LeaseEnded || (stop.aborted && e === stop.reason)) return out?.lastEnd() ?? 0n;
    throw e;
  } finally {
    await out?.close().catch(() => {});
    await admin.end().catch(() => {});
  }
}

/**
 * The worker's ordinary session (publication, slot, walsenders), named
 * baton-node-admin:<stream>. A standby worker may open it and read with it
 * while it waits (W2 allows ordinary sessions that only read); warmUp runs
 * the reads a grant starts with, so that the first grant after a wait
 * finds the session connected and the code paths compiled.
 */
export function adminClient(s: Settings): pg.Client {
  const c = new pg.Client({ connectionString: s.databaseUrl, application_name: `baton-node-admin:${s.streamId}` });
  c.on("error", () => {}); // a broken session fails its next query
  return c;
}

/** Connects c and runs, read-only, what a grant starts with; rejects when the database cannot be reached. */
export async function warmUp(c: pg.Client, streamId: string): Promise<void> {
  await c.connect();
  await c.query("SELECT puballtables FROM pg_publication WHERE pubname = $1", [`baton_pub_${streamId}`]);
  await readSlot(c, `baton_slot_${streamId}`);
}

class Run {
  private readonly decoder = new Decoder();
  private cur: Txn | undefined;
  private queue: Txn[] = [];
  private writing: Promise<void> | undefined;
  private writeErr: Error | undefined;

  private durable: bigint;
  private stopped = false;

  constructor(
    private readonly lease: Lease,
    private readonly s: Settings,
    private readonly out: JsonLines,
    private readonly resume: bigint,
    private readonly app: string,
    private readonly log: Logger,
    private readonly health: Health,
    private readonly repl: ReplicationConnection,
  ) {
    this.durable = resume;
  }

  async run(stop: AbortSignal, admin: pg.Client): Promise<bigint> {
    // Report where this grant starts (what the file and the slot hold)
    // before the first acknowledgement, then whenever it advances (W10).
    await this.lease.progress(this.durable);
    try {
      await this.repl.start(this.resume, this.resume);
    } catch (e) {
      this.repl.destroy();
      throw e;
    }
    this.health.status = "active";
    this.health.durable = this.durable;
    this.log.info("delivering", { slot: this.lease.slot, lsn: formatLsn(this.resume), file: this.out.path });

    const ended = await new Promise<"stop" | "lease" | "stream">((resolve) => {
      if (stop.aborted) return resolve("stop");
      if (this.lease.signal.aborted) return resolve("lease");
      stop.addEventListener("abort", () => resolve("stop"), { once: true });
      this.lease.signal.addEventListener("abort", () => resolve("lease"), { once: true });
      this.repl.done.then(() => resolve("stream"), () => resolve("stream"));
    });
    const why = this.lease.err();
    if (ended === "stream") {
      const err = await this.repl.done.then(() => new Error("the server ended replication"), (e: Error) => e);
      this.stopped = true;
      this.repl.destroy();
      await this.writing;
      throw this.writeErr ?? err;
    }
    // Drain on our own stop (the lease is still valid) or when the broker
    // gave drain time (Revoked: shutdown); else stop at once (W4, W6).
    if (this.lease.mayDrain()) {
      this.health.status = "stopping";
      this.log.info("draining", {
        reason: why ? why.message : "stopping",
        drain_ms: Math.round(this.lease.drainDeadline() - performance.now()),
      });
      await this.drain(admin);
    } else {
      this.log.warn("lease lost: stopping at once", { reason: why?.message ?? "unknown" });
      this.stopped = true;
      this.repl.destroy();
      this.queue = [];
      await this.writing;
      await endOwnWalsender(admin, this.lease.slot, this.app, 1000).catch(() => false);
    }
    this.health.status = "waiting";
    return this.durable;
  }

  /**
   * Stops reading, writes and acknowledges what is queued, waits for the
   * slot to confirm it, ends streaming and its own walsender: all by the
   * drain deadline, past which it drops the connection at once (W6, W7).
   */
  private async drain(admin: pg.Client): Promise<void> {
    this.repl.pause();
    this.cur = undefined; // an open transaction is resent to whoever streams next
    const left = () => Math.max(0, this.lease.drainDeadline() - performance.now());
    const cutoff = setTimeout(() => {
      if (this.lease.mayDrain()) return;
      this.log.warn("drain deadline passed: stopping at once", {});
      this.stopped = true;
      this.repl.destroy();
    }, left() + 1);
    try {
      this.kick();
      while (this.writing) await this.writing;
      if (this.writeErr) throw this.writeErr;
      if (this.stopped) return;
      await this.lease.progress(this.durable);
      if (this.mayWrite()) this.repl.setDurable(this.durable);
      if (!(await awaitConfirmed(admin, this.lease.slot, this.durable, Math.min(2000, left())))) {
        this.log.warn("the slot's confirmed position did not reach the durable position", { lsn: formatLsn(this.durable) });
      }
      if (this.stopped) return;
      await this.repl.close(Math.min(2000, left()));
      if (!(await endOwnWalsender(admin, this.lease.slot, this.app, Math.max(500, Math.min(2000, left()))))) {
        this.log.warn("own walsender still holds the slot", { slot: this.lease.slot });
      }
    } finally {
      clearTimeout(cutoff);
    }
  }

  onData(payload: Buffer): void {
    const m = this.decoder.decode(payload);
    switch (m.tag) {
      case "begin":
        this.cur = { commitLsn: m.finalLsn, endLsn: 0n, xid: m.xid, commitTime: m.commitTime, changes: [] };
        break;
      case "change":
        if (this.cur) {
          const c = delivered(m.change);
          if (c) this.cur.changes.push(c);
        }
        break;
      case "commit": {
        const t = this.cur;
        this.cur = undefined;
        if (!t) break;
        t.endLsn = m.endLsn;
        // Already in the file, or acknowledged by a predecessor: skip.
        if (t.commitLsn < this.resume) break;
        this.queue.push(t);
        this.kick();
        break;
      }
      default:
        break;
    }
  }

  onKeepalive(walEnd: bigint): void {
    if (this.cur === undefined && this.queue.length === 0 && this.writing === undefined && walEnd > this.durable) {
      this.advance(walEnd);
    }
  }

  /** Whether writing and acknowledging is allowed now, on the lease's clock (W4, W6). */
  private mayWrite(): boolean {
    return !this.stopped && this.lease.mayDrain();
  }

  /** Starts the writer when something is queued and it is idle. */
  private kick(): void {
    if (this.writing || this.queue.length === 0 || this.writeErr) return;
    this.writing = this.write().finally(() => {
      this.writing = undefined;
      this.kick();
    });
  }

  private async write(): Promise<void> {
    const batch = this.queue.splice(0);
    if (!this.mayWrite()) {
      this.queue = [];
      return;
    }
    try {
      // Checked again right before the write itself (sink.ts, Fencing).
      if (!(await this.out.append(batch, this.lease.epoch, () => this.mayWrite()))) {
        this.queue = [];
        return;
      }
    } catch (e) {
      this.writeErr = e as Error;
      this.log.error("writing the output file failed", { err: e as Error });
      this.repl.destroy();
      return;
    }
    this.advance(batch[batch.length - 1]!.endLsn);
  }

  /**
   * Records lsn as durable, reports it to the broker and, once the report
   * is written, acknowledges it to PostgreSQL: the slot never passes what
   * the broker was told (and never what the file holds).
   */
  private advance(lsn: bigint): void {
    if (lsn <= this.durable) return;
    this.durable = lsn;
    this.health.durable = lsn;
    if (!this.mayWrite()) return;
    void this.lease.progress(lsn).then(() => {
      if (this.mayWrite()) this.repl.setDurable(lsn);
    });
  }
}

/** The change as delivered, or undefined when none of it is (Baton's own schema). */
function delivered(c: Change): Change | undefined {
  if (c.op === "truncate") {
    const rels = c.rels.filter((r) => r.schema !== batonSchema);
    return rels.length === 0 ? undefined : { ...c, rels };
  }
  return c.rel.schema === batonSchema ? undefined : c;
}
