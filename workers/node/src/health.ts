/**
 * GET /v1/health: {"status":"waiting"} (202) before the lease,
 * "starting" (202) while setting up replication, "active" (200) while
 * delivering, "stopping" (503) while draining at shutdown; with the epoch
 * and the durable position when known.
 */
import * as http from "node:http";

import { formatLsn } from "./lsn.js";

export type Status = "waiting" | "starting" | "active" | "stopping";

export class Health {
  status: Status = "waiting";
  epoch: bigint | undefined;
  durable: bigint | undefined;

  body(): { code: number; json: Record<string, unknown> } {
    const json: Record<string, unknown> = { status: this.status };
    if (this.epoch !== undefined) json.epoch = Number(this.epoch);
    if (this.durable !== undefined) json.durable_lsn = formatLsn(this.durable);
    const code = this.status === "active" ? 200 : this.status === "stopping" ? 503 : 202;
    return { code, json };
  }

  /** Serves until close(); resolves once listening. */
  listen(host: string, port: number): Promise<http.Server> {
    const srv = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname !== "/v1/health") {
        res.writeHead(404, { "content-type": "application/json" }).end('{"message":"not found"}\n');
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { "content-type": "application/json", allow: "GET, HEAD" }).end('{"message":"method not allowed"}\n');
        return;
      }
      const { code, json } = this.body();
      res.writeHead(code, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(json) + "\n");
    });
    srv.requestTimeout = 10000;
    srv.headersTimeout = 5000;
    return new Promise((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(port, host === "" ? undefined : host, () => resolve(srv));
    });
  }
}
