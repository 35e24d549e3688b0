/**
 * The worker's lifecycle: settings, the health endpoint, then one lease
 * after another until stopped. The replication connection exists only
 * inside deliver(), that is between Granted and Released.
 */
import { promises as fs } from "node:fs";
import type { Server } from "node:http";
import * as path from "node:path";

import { adminClient, deliver, warmUp } from "./deliver.js";
import { Health } from "./health.js";
import { LeaseClient, LeaseEnded, type Standby, StandbyReason } from "./lease/index.js";
import { Logger } from "./log.js";
import { formatLsn } from "./lsn.js";
import { parse, SettingError, usage } from "./settings.js";

/** Runs the worker until stop aborts; rejects with a SettingError on a bad setting. */
export async function run(args: string[], env: NodeJS.ProcessEnv, stop: AbortSignal, stdout: NodeJS.WritableStream): Promise<void> {
  const s = parse(args, env);
  if (s === "help") {
    stdout.write(usage());
    return;
  }
  await checkOutputDir(s.outputFile);
  let log = new Logger(s.logFormat, { stream: s.streamId });
  const health = new Health();
  let server: Server;
  try {
    server = await health.listen(s.httpListen.host, s.httpListen.port);
  } catch (e) {
    throw new Error(`listen on BATON_HTTP_LISTEN: ${(e as Error).message}`);
  }
  log.info("worker started", { broker: s.brokerAddr, output: s.outputFile, worker_id: s.workerId });

  let lastStandby = "";
  const client = new LeaseClient(s.brokerAddr, {
    workerId: s.workerId,
    streamId: s.streamId,
    onStandby: (sb: Standby) => {
      const key = `${sb.reason}:${sb.holder?.holder ?? ""}:${sb.holder?.epoch ?? ""}`;
      if (key === lastStandby) return;
      lastStandby = key;
      log.info("standing by", { reason: (StandbyReason[sb.reason] ?? String(sb.reason)).toLowerCase(), holder: sb.holder?.holder ?? "", holder_epoch: sb.holder?.epoch ?? 0n });
    },
    onBroker: (err) => (err ? log.warn("broker unreachable", { err }) : log.info("broker reached")),
  });
  try {
    for (;;) {
      // While it waits, the worker readies its admin session (read-only).
      const standby = adminClient(s);
      let warm = false;
      warmUp(standby, s.streamId).then(() => (warm = true), () => {});
      let lease;
      try {
        lease = await client.acquire(stop);
      } catch (e) {
        await standby.end().catch(() => {});
        if (stop.aborted) break;
        throw e;
      }
      if (!warm) standby.end().catch(() => {});
      log = log.with({ epoch: lease.epoch });
      log.info("lease granted", { ttl_ms: lease.ttlMs, slot: lease.slot, publication: lease.publication, holder: lease.holder });
      let durable = 0n;
      let failed: unknown;
      try {
        durable = await deliver(lease, s, stop, log, health, warm ? standby : undefined);
      } catch (e) {
        failed = e;
        log.error("delivery failed", { err: e as Error });
      }
      const why = lease.err();
      await lease.release(durable, { stopping: stop.aborted });
      log.info("lease released", { durable_lsn: formatLsn(durable), stopping: stop.aborted, ended: why instanceof LeaseEnded ? why.message : "released" });
      log = new Logger(s.logFormat, { stream: s.streamId });
      health.status = "waiting";
      health.epoch = undefined;
      if (stop.aborted) break;
      if (failed) await sleep(1000, stop).catch(() => {});
    }
  } finally {
    if (!(await client.close())) log.warn("the broker did not end the lease stream within 2s: it may not have received the last message");
    await new Promise((r) => server.close(r));
  }
  log.info("worker stopped");
}

/** The output file's folder must exist: a bad path is a setting error, not a failure at every grant. */
async function checkOutputDir(file: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  try {
    if (!(await fs.stat(dir)).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new SettingError(`BATON_OUTPUT_FILE (--output-file): folder ${dir}: ${(e as Error).message}`);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}
