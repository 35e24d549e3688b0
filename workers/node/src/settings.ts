/**
 * The worker's settings: every one an environment variable and a flag of
 * the same meaning (--database-url for DATABASE_URL, ...), flags winning.
 * A bad value is a SettingError naming the setting; main exits 2 with it.
 */
import * as os from "node:os";

export interface Settings {
  databaseUrl: string;
  streamId: string;
  brokerAddr: string;
  httpListen: { host: string; port: number };
  outputFile: string;
  tables: string[];
  workerId: string;
  logFormat: "text" | "json";
  walSenderTimeoutMs: number;
}

export class SettingError extends Error {
  override readonly name = "SettingError";
}

interface Spec {
  env: string;
  flag: string;
  def?: string;
  help: string;
}

export const specs: Spec[] = [
  { env: "DATABASE_URL", flag: "--database-url", help: "PostgreSQL connection URL (required)" },
  { env: "REPLICATION_STREAM_ID", flag: "--replication-stream-id", def: "default", help: "the stream: slot baton_slot_<id>, publication baton_pub_<id>" },
  { env: "BATON_BROKER_ADDR", flag: "--broker-addr", def: "127.0.0.1:7070", help: "where the broker (this pod's sidecar) listens, host:port" },
  { env: "BATON_HTTP_LISTEN", flag: "--http-listen", def: ":3000", help: "HTTP listen address of GET /v1/health" },
  { env: "BATON_OUTPUT_FILE", flag: "--output-file", def: "./changes.jsonl", help: "the JSON-lines file the changes are appended to (shared by the stream's pods)" },
  { env: "BATON_TABLES", flag: "--tables", def: "", help: "comma-separated tables to publish (schema.table); empty: the publication as it is, FOR ALL TABLES when missing" },
  { env: "BATON_WORKER_ID", flag: "--worker-id", def: `node-worker@${os.hostname()}`, help: "this worker's name in the broker's logs and state table" },
  { env: "BATON_LOG_FORMAT", flag: "--log-format", def: "text", help: "text or json" },
  { env: "BATON_WAL_SENDER_TIMEOUT", flag: "--wal-sender-timeout", def: "10s", help: "wal_sender_timeout of the replication connection (a duration: 500ms, 10s, 1m)" },
];

export function usage(): string {
  const lines = ["Usage: baton-node-worker [flags]", "", "Every flag is also an environment variable:", ""];
  for (const s of specs) {
    lines.push(`  ${s.flag} (${s.env})${s.def !== undefined && s.def !== "" ? ` default ${s.def}` : ""}`, `      ${s.help}`);
  }
  return lines.join("\n") + "\n";
}

/** Parses a duration: 500ms, 10s, 1m. */
export function parseDuration(s: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$/.exec(s.trim());
  if (!m) throw new Error("not a duration");
  const n = Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "s" ? 1000 : 60000);
  return Math.round(n);
}

/** Reads the settings from args (after argv[1]) and env. "help" means --help was asked. */
export function parse(args: string[], env: NodeJS.ProcessEnv): Settings | "help" {
  const raw = new Map<string, string>();
  for (const s of specs) {
    const v = env[s.env];
    if (v !== undefined) raw.set(s.env, v);
  }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--help" || a === "-h") return "help";
    const eq = a.indexOf("=");
    const name = eq < 0 ? a : a.slice(0, eq);
    const spec = specs.find((s) => s.flag === name);
    if (!spec) throw new SettingError(`unknown flag ${name} (see --help)`);
    let value: string | undefined = eq < 0 ? args[++i] : a.slice(eq + 1);
    if (value === undefined) throw new SettingError(`${spec.flag} (${spec.env}): needs a value`);
    raw.set(spec.env, value);
  }
  const get = (envName: string): string => {
    const spec = specs.find((s) => s.env === envName)!;
    return raw.get(envName) ?? spec.def ?? "";
  };
  const bad = (envName: string, why: string): SettingError => {
    const spec = specs.find((s) => s.env === envName)!;
    return new SettingError(`${spec.env} (${spec.flag}): ${why}`);
  };

  const databaseUrl = get("DATABASE_URL");
  if (databaseUrl === "") throw bad("DATABASE_URL", "required");
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw bad("DATABASE_URL", "must be a postgres:// or postgresql:// URL");
  const streamId = get("REPLICATION_STREAM_ID");
  if (!/^[a-z0-9_]{1,40}$/.test(streamId)) {
    throw bad("REPLICATION_STREAM_ID", `${JSON.stringify(streamId)}: lower-case letters, digits and _, 1 to 40 characters`);
  }
  const brokerAddr = get("BATON_BROKER_ADDR");
  if (!/^[^\s:]*:[0-9]{1,5}$/.test(brokerAddr) && !/^\[[0-9a-fA-F:]+\]:[0-9]{1,5}$/.test(brokerAddr)) {
    throw bad("BATON_BROKER_ADDR", `${JSON.stringify(brokerAddr)}: want host:port`);
  }
  const httpListen = parseListen(get("BATON_HTTP_LISTEN"), bad);
  const outputFile = get("BATON_OUTPUT_FILE");
  if (outputFile === "") throw bad("BATON_OUTPUT_FILE", "must not be empty");
  const tablesRaw = get("BATON_TABLES").trim();
  const tables = tablesRaw === "" ? [] : tablesRaw.split(",").map((t) => t.trim());
  for (const t of tables) {
    if (!/^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$/.test(t)) {
      throw bad("BATON_TABLES", `${JSON.stringify(t)}: want table or schema.table`);
    }
  }
  const workerId = get("BATON_WORKER_ID");
  if (workerId === "") throw bad("BATON_WORKER_ID", "must not be empty");
  const logFormat = get("BATON_LOG_FORMAT");
  if (logFormat !== "text" && logFormat !== "json") throw bad("BATON_LOG_FORMAT", `${JSON.stringify(logFormat)}: want text or json`);
  let walSenderTimeoutMs: number;
  try {
    walSenderTimeoutMs = parseDuration(get("BATON_WAL_SENDER_TIMEOUT"));
  } catch {
    throw bad("BATON_WAL_SENDER_TIMEOUT", `${JSON.stringify(get("BATON_WAL_SENDER_TIMEOUT"))}: want a duration like 10s`);
  }
  if (walSenderTimeoutMs < 1000) throw bad("BATON_WAL_SENDER_TIMEOUT", "must be at least 1s");
  return { databaseUrl, streamId, brokerAddr, httpListen, outputFile, tables, workerId, logFormat, walSenderTimeoutMs };
}

function parseListen(s: string, bad: (env: string, why: string) => SettingError): { host: string; port: number } {
  const m = /^(.*):([0-9]{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw bad("BATON_HTTP_LISTEN", `${JSON.stringify(s)}: want [host]:port`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port };
}
