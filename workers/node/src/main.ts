#!/usr/bin/env node
/**
 * baton-node-worker: a Baton worker that delivers a replication stream's
 * committed changes as JSON lines to a file, exactly once across handoffs.
 * Exit status: 0 after a clean stop (SIGTERM, SIGINT), 1 on failure, 2 on
 * a bad setting.
 */
import { run } from "./run.js";
import { SettingError } from "./settings.js";

const stop = new AbortController();
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => stop.abort(new Error(`received ${sig}`)));
}

run(process.argv.slice(2), process.env, stop.signal, process.stdout).then(
  () => process.exit(0),
  (e: unknown) => {
    if (e instanceof SettingError) {
      process.stderr.write(`baton-node-worker: ${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`baton-node-worker: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
