/**
 * A logical replication connection over `pg`'s protocol support: it starts
 * pgoutput streaming from a slot and hands every XLogData payload and
 * primary keepalive to its owner, and sends standby status updates with
 * the position the owner reports durable. It acknowledges nothing on its
 * own: flush and apply are always the durable position given to
 * `setDurable`, never what was merely received.
 */
import pg from "pg";

import { formatLsn } from "./lsn.js";

/** Callbacks of a ReplicationConnection, called in stream order. */
export interface ReplicationHandler {
  /** An XLogData message: the pgoutput payload that starts at walStart. */
  onData(walStart: bigint, walEnd: bigint, payload: Buffer): void;
  /** A primary keepalive; walEnd is the server's sent position. */
  onKeepalive(walEnd: bigint): void;
}

export interface ReplicationOptions {
  databaseUrl: string;
  applicationName: string;
  slot: string;
  publication: string;
  /** wal_sender_timeout for this connection, in milliseconds. */
  walSenderTimeoutMs: number;
}

// Microseconds between 1970-01-01 and 2000-01-01.
const pgEpochUs = 946684800000000n;

export class ReplicationConnection {
  private client: pg.Client;
  private durable = 0n;
  private received = 0n;
  private timer: NodeJS.Timeout | undefined;
  private copying = false;
  /** Settles when streaming ends: the server ended it, it failed, or close(). */
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private rejectDone!: (e: Error) => void;
  private closing = false;

  constructor(private readonly opts: ReplicationOptions, private readonly handler: ReplicationHandler) {
    this.client = new pg.Client({
      connectionString: opts.databaseUrl,
      // @ts-expect-error pg passes replication to the startup message; its types omit it.
      replication: "database",
      application_name: opts.applicationName,
      options: `-c wal_sender_timeout=${opts.walSenderTimeoutMs}`,
    });
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {}); // observed by the owner when it awaits done
  }

  /**
   * Opens the connection (a walsender that touches no slot yet: dial it
   * only under a lease, W2); start() streams on it.
   */
  async connect(): Promise<void> {
    this.client.on("error", (e) => this.fail(e));
    await this.client.connect();
  }

  /**
   * Starts streaming from startLsn (PostgreSQL starts at the later of it
   * and the slot's confirmed position) and acknowledges durableLsn at once;
   * resolves once the server streams. Call after connect() resolved.
   */
  async start(startLsn: bigint, durableLsn: bigint): Promise<void> {
    this.durable = durableLsn;
    this.received = durableLsn;
    const c = this.client;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const conn = (c as any).connection;
    const started = new Promise<void>((resolve) => conn.once("replicationStart", resolve));
    conn.on("copyData", (m: { chunk: Buffer }) => this.receive(m.chunk));
    const sql = `START_REPLICATION SLOT "${this.opts.slot.replace(/"/g, '""')}" LOGICAL ${formatLsn(startLsn)} ` +
      `(proto_version '1', publication_names '${this.opts.publication.replace(/'/g, "''")}')`;
    const q = c.query(sql);
    q.then(() => this.end(), (e: Error) => this.fail(e));
    const streaming = await Promise.race([started.then(() => true), this.done.then(() => false)]);
    if (!streaming || this.closing) throw new Error("replication ended before it started");
    this.copying = true;
    this.sendStatus(false);
    // Status updates at least every second, whatever the stream does: well
    // within wal_sender_timeout, and the slot follows durability closely.
    this.timer = setInterval(() => this.sendStatus(false), 1000);
    this.timer.unref();
  }

  /** Records what is durable and acknowledges it to PostgreSQL at once. */
  setDurable(lsn: bigint): void {
    if (lsn <= this.durable) return;
    this.durable = lsn;
    this.sendStatus(false);
  }

  durableLsn(): bigint {
    return this.durable;
  }

  /** Stops handing messages to the handler (what arrives later is dropped). */
  pause(): void {
    this.closing = true;
  }

  /**
   * Ends streaming: a last status update, CopyDone, then the connection.
   * Waits up to timeoutMs for the server to end the copy.
   */
  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    if (this.copying) {
      this.sendStatus(false);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      (this.client as any).connection.endCopyFrom();
      this.copying = false;
      await Promise.race([this.done.catch(() => {}), new Promise((r) => setTimeout(r, timeoutMs))]);
    }
    await this.client.end().catch(() => {});
    this.end();
  }

  /** Drops the connection at once (the lease is gone: send nothing more). */
  destroy(): void {
    this.closing = true;
    this.copying = false;
    clearInterval(this.timer);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    (this.client as any).connection?.stream?.destroy();
    this.end();
  }

  private receive(b: Buffer): void {
    if (this.closing) return;
    try {
      switch (b[0]) {
        case 0x77: { // 'w' XLogData
          const start = b.readBigUInt64BE(1);
          const end = b.readBigUInt64BE(9);
          if (end > this.received) this.received = end;
          this.handler.onData(start, end, b.subarray(25));
          break;
        }
        case 0x6b: { // 'k' primary keepalive
          const end = b.readBigUInt64BE(1);
          if (end > this.received) this.received = end;
          this.handler.onKeepalive(end);
          if (b[17] === 1) this.sendStatus(false);
          break;
        }
        default:
          break;
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private sendStatus(reply: boolean): void {
    if (!this.copying) return;
    const b = Buffer.alloc(34);
    b.write("r", 0);
    b.writeBigUInt64BE(this.received > this.durable ? this.received : this.durable, 1); // written
    b.writeBigUInt64BE(this.durable, 9); // flushed
    b.writeBigUInt64BE(this.durable, 17); // applied
    b.writeBigInt64BE(BigInt(Date.now()) * 1000n - pgEpochUs, 25);
    b.writeUInt8(reply ? 1 : 0, 33);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    (this.client as any).connection.sendCopyFromChunk(b);
  }

  private end(): void {
    clearInterval(this.timer);
    this.copying = false;
    this.resolveDone();
  }

  private fail(e: Error): void {
    clearInterval(this.timer);
    this.copying = false;
    if (this.closing) this.resolveDone();
    else this.rejectDone(e);
  }
}
