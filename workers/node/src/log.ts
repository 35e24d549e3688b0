/** A small structured logger to stderr: text (key=value) or JSON lines. */
export type Attrs = Record<string, unknown>;

export class Logger {
  constructor(private readonly format: "text" | "json", private readonly base: Attrs = {}) {}

  with(attrs: Attrs): Logger {
    return new Logger(this.format, { ...this.base, ...attrs });
  }

  info(msg: string, attrs: Attrs = {}): void {
    this.write("INFO", msg, attrs);
  }

  warn(msg: string, attrs: Attrs = {}): void {
    this.write("WARN", msg, attrs);
  }

  error(msg: string, attrs: Attrs = {}): void {
    this.write("ERROR", msg, attrs);
  }

  private write(level: string, msg: string, attrs: Attrs): void {
    const all: Attrs = { ...this.base, ...attrs };
    const time = new Date().toISOString();
    let line: string;
    if (this.format === "json") {
      line = JSON.stringify({ time, level, msg, ...all }, (_k, v) => (typeof v === "bigint" ? v.toString() : v instanceof Error ? v.message : v));
    } else {
      const kv = Object.entries(all).map(([k, v]) => `${k}=${text(v)}`);
      line = [`time=${time}`, `level=${level}`, `msg=${JSON.stringify(msg)}`, ...kv].join(" ");
    }
    process.stderr.write(line + "\n");
  }
}

function text(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  const s = String(v);
  return /[\s"=]/.test(s) || s === "" ? JSON.stringify(s) : s;
}
