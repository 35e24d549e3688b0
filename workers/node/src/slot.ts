/**
 * The stream's publication and slot, seen from an ordinary (admin)
 * connection: created when missing, freed from a stale predecessor's
 * walsender (only one of an older epoch), and watched for the confirmed
 * position and for this worker's own walsender to end.
 */
import pg from "pg";

import { parseLsn } from "./lsn.js";

/** The application_name of a worker's replication connection. */
export function appName(streamId: string, epoch: bigint): string {
  return `baton-worker:${streamId}:${epoch}`;
}

/** The epoch in a worker's application_name, or undefined for anything else. */
export function epochOf(app: string | null, streamId: string): bigint | undefined {
  const prefix = `baton-worker:${streamId}:`;
  if (!app?.startsWith(prefix)) return undefined;
  const rest = app.slice(prefix.length);
  return /^[0-9]+$/.test(rest) ? BigInt(rest) : undefined;
}

/** A newer epoch's walsender consumes the slot: this worker is stale. */
export class Superseded extends Error {
  override readonly name = "Superseded";
}

export function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

/** A table name, optionally schema-qualified, quoted for SQL. */
export function quoteTable(t: string): string {
  const dot = t.indexOf(".");
  return dot < 0 ? quoteIdent(t) : `${quoteIdent(t.slice(0, dot))}.${quoteIdent(t.slice(dot + 1))}`;
}

/**
 * Creates the publication when missing: with the given tables, or FOR ALL
 * TABLES when none are given (which needs a superuser). When it exists,
 * the given tables missing from it are added.
 */
export async function ensurePublication(c: pg.Client, pub: string, tables: string[]): Promise<void> {
  const { rows } = await c.query("SELECT puballtables FROM pg_publication WHERE pubname = $1", [pub]);
  if (rows.length === 0) {
    const what = tables.length > 0 ? `FOR TABLE ${tables.map(quoteTable).join(", ")}` : "FOR ALL TABLES";
    try {
      await c.query(`CREATE PUBLICATION ${quoteIdent(pub)} ${what}`);
    } catch (e) {
      if ((e as { code?: string }).code !== "42710") throw e; // created meanwhile
    }
    return;
  }
  if (rows[0].puballtables || tables.length === 0) return;
  for (const t of tables) {
    const { rows: has } = await c.query(
      "SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 AND pr.prrelid = $2::regclass",
      [pub, quoteTable(t)],
    );
    if (has.length === 0) {
      try {
        await c.query(`ALTER PUBLICATION ${quoteIdent(pub)} ADD TABLE ${quoteTable(t)}`);
      } catch (e) {
        if ((e as { code?: string }).code !== "42710") throw e; // added meanwhile
      }
    }
  }
}

/** What pg_replication_slots says about the slot. */
export interface SlotState {
  exists: boolean;
  activePid: number | null;
  activeApp: string | null;
  confirmed: bigint;
}

export async function readSlot(c: pg.Client, slot: string): Promise<SlotState> {
  const { rows } = await c.query(
    `SELECT s.active_pid, a.application_name, s.confirmed_flush_lsn::text AS confirmed
     FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
     WHERE s.slot_name = $1`,
    [slot],
  );
  if (rows.length === 0) return { exists: false, activePid: null, activeApp: null, confirmed: 0n };
  const r = rows[0];
  return { exists: true, activePid: r.active_pid, activeApp: r.application_name, confirmed: r.confirmed ? parseLsn(r.confirmed) : 0n };
}

/** Creates the slot (pgoutput) when missing. */
export async function ensureSlot(c: pg.Client, slot: string): Promise<void> {
  if ((await readSlot(c, slot)).exists) return;
  try {
    await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
  } catch (e) {
    if ((e as { code?: string }).code !== "42710") throw e; // created meanwhile
  }
}

/**
 * Makes the slot free for this worker: a walsender of an older (or unknown)
 * epoch that still holds it, left by a dead, frozen or partitioned
 * predecessor whose lease has expired, is terminated; a walsender of this
 * or a newer epoch is never touched (Superseded). Returns the slot's state
 * once inactive.
 */
export async function takeSlot(c: pg.Client, slot: string, streamId: string, epoch: bigint, signal: AbortSignal,
  log: (msg: string, attrs: Record<string, unknown>) => void): Promise<SlotState> {
  const deadline = Date.now() + 15000;
  let terminated: number | null = null;
  for (;;) {
    const st = await readSlot(c, slot);
    if (!st.exists || st.activePid === null) return st;
    const other = epochOf(st.activeApp, streamId);
    if (other !== undefined && other >= epoch) {
      throw new Superseded(`slot ${slot} is consumed by pid ${st.activePid} (${st.activeApp}); ours is epoch ${epoch}`);
    }
    if (terminated !== st.activePid) {
      log("ending a stale walsender that still holds the slot", { slot, pid: st.activePid, application_name: st.activeApp });
      await c.query("SELECT pg_terminate_backend($1)", [st.activePid]);
      terminated = st.activePid;
    }
    if (Date.now() > deadline) throw new Error(`slot ${slot} still active for pid ${st.activePid} after terminating it`);
    await pause(20, signal);
  }
}

/** Waits until the slot's confirmed position reaches lsn, or until timeoutMs passed (false). */
export async function awaitConfirmed(c: pg.Client, slot: string, lsn: bigint, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await readSlot(c, slot);
    if (st.confirmed >= lsn) return true;
    if (Date.now() > deadline) return false;
    await pause(5);
  }
}

/**
 * Ends this worker's own walsender if the slot still shows it active (a
 * proxy may keep the server side open after the worker closed), and waits
 * until the slot is no longer held under appName, or timeoutMs passed.
 */
export async function endOwnWalsender(c: pg.Client, slot: string, app: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await readSlot(c, slot);
    if (st.activePid === null || st.activeApp !== app) return true;
    await c.query("SELECT pg_terminate_backend($1)", [st.activePid]);
    if (Date.now() > deadline) return false;
    await pause(10);
  }
}

function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
