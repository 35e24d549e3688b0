/**
 * The worker's output: a file of JSON lines, one line per change of a
 * committed transaction, appended in commit order. Every line carries its
 * transaction's commit LSN ("lsn") and end LSN ("end_lsn"), its place in
 * the transaction ("i" of "n") and the epoch of the worker that wrote it.
 *
 * Durability and exactly once. A transaction's lines are appended with one
 * write and made durable with fdatasync before the worker acknowledges the
 * transaction's end LSN to PostgreSQL, so the slot never passes what the
 * file holds. A worker that starts (a successor after a handoff, or this
 * one after a crash) first recovers the file: a torn tail (a line without
 * its newline, or a transaction with fewer than "n" lines, left by a crash
 * in the middle of a write) is truncated, and the last complete
 * transaction's end LSN is the resume position. PostgreSQL may resend
 * transactions the file already holds (the slot's confirmed position can be
 * behind the file when a worker died between the fsync and its
 * acknowledgement); the worker skips every transaction whose commit LSN is
 * below the resume position, as PostgreSQL itself skips those below the
 * slot's confirmed position. So each committed transaction is in the file
 * exactly once.
 *
 * Fencing: the file is shared by the pods of a stream (a shared volume);
 * only the lease holder writes, and it checks that its lease is valid on its
 * own clock immediately before every append (see Lease.valid): append takes
 * the check, encodes first, and then runs the check and the write system
 * call in the same turn of the event loop, without yielding in between
 * (a write through the thread pool would leave the time it waits there
 * between the check and the write; a worker frozen then, SIGSTOP, wrote
 * after its lease had gone once it was thawed). What is left is the few
 * microseconds between the check and the write call: a process frozen
 * exactly there still writes one batch late. Closing that for good needs
 * the writes fenced where they land (as the Go worker's storage does, with
 * a folder per writer), which this reference worker does not do.
 */
import { constants, promises as fs, writeSync } from "node:fs";
import * as path from "node:path";

import { formatLsn, parseLsn } from "./lsn.js";
import type { Change, Row } from "./pgoutput.js";

/** A committed transaction, ready to be written. */
export interface Txn {
  commitLsn: bigint;
  endLsn: bigint;
  xid: number;
  /** Microseconds since 2000-01-01 UTC (PostgreSQL's epoch). */
  commitTime: bigint;
  changes: Change[];
}

/** One line of the file, as written. */
export interface Line {
  lsn: string;
  end_lsn: string;
  xid: number;
  commit_time: string;
  epoch: number;
  i: number;
  n: number;
  op: "insert" | "update" | "delete" | "truncate";
  schema?: string;
  table?: string;
  new?: Row;
  old?: Row;
  key?: Row;
  unchanged_toast?: string[];
  tables?: string[];
}

/** The lines of a transaction, newline-terminated, as one string. */
export function txnLines(t: Txn, epoch: bigint): string {
  const head = {
    lsn: formatLsn(t.commitLsn), end_lsn: formatLsn(t.endLsn), xid: t.xid,
    commit_time: pgTime(t.commitTime), epoch: Number(epoch),
  };
  let out = "";
  t.changes.forEach((c, i) => {
    const line: Line = { ...head, i, n: t.changes.length, op: c.op };
    if (c.op === "truncate") {
      line.tables = c.rels.map((r) => `${r.schema}.${r.table}`);
    } else {
      line.schema = c.rel.schema;
      line.table = c.rel.table;
      if (c.op !== "delete") line.new = c.new;
      if (c.op !== "insert") {
        if (c.old) line.old = c.old;
        if (c.key) line.key = c.key;
      }
      if (c.op === "update" && c.unchangedToast) line.unchanged_toast = c.unchangedToast;
    }
    out += JSON.stringify(line) + "\n";
  });
  return out;
}

/** PostgreSQL's timestamp (µs since 2000-01-01 UTC) as ISO 8601 with microseconds. */
export function pgTime(us: bigint): string {
  const unixUs = us + 946684800000000n;
  const ms = unixUs / 1000n;
  const iso = new Date(Number(ms)).toISOString(); // ...T12:34:56.789Z
  const micro = ((unixUs % 1000n) + 1000n) % 1000n;
  return iso.slice(0, -1) + micro.toString().padStart(3, "0") + "Z";
}

/** JsonLines is the output file, opened by the lease holder. */
export class JsonLines {
  private constructor(private readonly fh: fs.FileHandle, readonly path: string, private end: bigint) {}

  /**
   * Opens (creating) the file, truncates a torn tail, and returns it with
   * the end LSN of its last complete transaction (0 when empty).
   */
  static async open(file: string): Promise<JsonLines> {
    let created = false;
    try {
      await fs.access(file);
    } catch {
      created = true;
    }
    const fh = await fs.open(file, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND, 0o644);
    try {
      if (created) await syncDir(path.dirname(file));
      const { keep, end } = await recover(fh);
      const size = (await fh.stat()).size;
      if (keep < size) {
        await fh.truncate(keep);
        await fh.datasync();
      }
      return new JsonLines(fh, file, end);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** End LSN of the last transaction in the file (0 when none). */
  lastEnd(): bigint {
    return this.end;
  }

  /**
   * Appends the transactions' lines in one write and makes them durable,
   * if mayWrite, called right before the write (in the same turn of the
   * event loop), allows it; returns whether it wrote.
   */
  async append(txns: Txn[], epoch: bigint, mayWrite: () => boolean = () => true): Promise<boolean> {
    const text = txns.map((t) => txnLines(t, epoch)).join("");
    if (text.length > 0) {
      const buf = Buffer.from(text, "utf8");
      if (!mayWrite()) return false;
      let off = 0;
      while (off < buf.length) off += writeSync(this.fh.fd, buf, off, buf.length - off);
      await this.fh.datasync();
    } else if (!mayWrite()) {
      return false;
    }
    const last = txns[txns.length - 1];
    if (last && last.endLsn > this.end) this.end = last.endLsn;
    return true;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await fs.open(dir, constants.O_RDONLY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * recover finds, reading from the end, the byte length to keep (up to the
 * last complete transaction) and that transaction's end LSN.
 */
export async function recover(fh: fs.FileHandle): Promise<{ keep: number; end: bigint }> {
  const size = (await fh.stat()).size;
  for (let window = 64 * 1024; ; window *= 2) {
    const start = Math.max(0, size - window);
    const buf = Buffer.alloc(size - start);
    if (buf.length > 0) await fh.read(buf, 0, buf.length, start);
    // Complete lines in the window, with their byte offsets in the file.
    const lines: { off: number; end: number; line: Line }[] = [];
    let pos = 0;
    if (start > 0) {
      const nl = buf.indexOf(0x0a);
      pos = nl < 0 ? buf.length : nl + 1; // the first line may be cut by the window
    }
    for (;;) {
      const nl = buf.indexOf(0x0a, pos);
      if (nl < 0) break;
      const text = buf.toString("utf8", pos, nl);
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
        parseLsn(line.lsn);
        parseLsn(line.end_lsn);
      } catch {
        throw new Error(`output file: line at byte ${start + pos} is not a change line: ${text.slice(0, 80)}`);
      }
      lines.push({ off: start + pos, end: start + nl + 1, line });
      pos = nl + 1;
    }
    // Drop the trailing lines of an incomplete transaction.
    let k = lines.length;
    const last = lines[k - 1];
    if (last && last.line.i !== last.line.n - 1) {
      while (k > 0 && lines[k - 1]!.line.lsn === last.line.lsn) k--;
    }
    if (k > 0) return { keep: lines[k - 1]!.end, end: parseLsn(lines[k - 1]!.line.end_lsn) };
    if (start === 0) return { keep: lines[0]?.off ?? 0, end: 0n };
  }
}
