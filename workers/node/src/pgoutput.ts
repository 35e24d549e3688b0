/**
 * A decoder of pgoutput (protocol version 1), PostgreSQL's logical
 * replication output plugin: the messages of committed transactions, with
 * column values in PostgreSQL's text form, exactly as the server sent them
 * (no type conversion, so nothing is lost in JSON).
 *
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */

/** A relation as described by a Relation message. */
export interface Relation {
  oid: number;
  schema: string;
  table: string;
  columns: string[];
  keyColumns: string[];
}

/** A row: column name → text value, or null. Unchanged TOASTed columns are absent. */
export type Row = Record<string, string | null>;

export type Change =
  | { op: "insert"; rel: Relation; new: Row }
  | { op: "update"; rel: Relation; new: Row; old?: Row; key?: Row; unchangedToast?: string[] }
  | { op: "delete"; rel: Relation; old?: Row; key?: Row }
  | { op: "truncate"; rels: Relation[]; cascade: boolean; restartIdentity: boolean };

export type Message =
  | { tag: "begin"; finalLsn: bigint; commitTime: bigint; xid: number }
  | { tag: "commit"; commitLsn: bigint; endLsn: bigint; commitTime: bigint }
  | { tag: "change"; change: Change }
  | { tag: "other" };

/** Decoder keeps the relations the stream described; one per replication connection. */
export class Decoder {
  private readonly relations = new Map<number, Relation>();

  decode(buf: Buffer): Message {
    const r = new Reader(buf);
    const tag = String.fromCharCode(r.u8());
    switch (tag) {
      case "B":
        return { tag: "begin", finalLsn: r.u64(), commitTime: r.i64(), xid: r.u32() };
      case "C": {
        r.u8(); // flags, unused
        return { tag: "commit", commitLsn: r.u64(), endLsn: r.u64(), commitTime: r.i64() };
      }
      case "R": {
        const oid = r.u32();
        const schema = r.cstr();
        const table = r.cstr();
        r.u8(); // replica identity setting
        const n = r.u16();
        const columns: string[] = [];
        const keyColumns: string[] = [];
        for (let i = 0; i < n; i++) {
          const flags = r.u8();
          const name = r.cstr();
          r.u32(); // type oid
          r.u32(); // type modifier
          columns.push(name);
          if (flags & 1) keyColumns.push(name);
        }
        this.relations.set(oid, { oid, schema, table, columns, keyColumns });
        return { tag: "other" };
      }
      case "I": {
        const rel = this.relation(r.u32());
        r.expect("N");
        return { tag: "change", change: { op: "insert", rel, new: this.tuple(r, rel).row } };
      }
      case "U": {
        const rel = this.relation(r.u32());
        let kind = String.fromCharCode(r.u8());
        let old: Row | undefined;
        let key: Row | undefined;
        if (kind === "K") key = keyOnly(this.tuple(r, rel).row, rel);
        if (kind === "O") old = this.tuple(r, rel).row;
        if (kind !== "N") kind = String.fromCharCode(r.u8());
        if (kind !== "N") throw new Error(`pgoutput: update without a new tuple (${kind})`);
        const t = this.tuple(r, rel);
        const change: Change = { op: "update", rel, new: t.row };
        if (old) change.old = old;
        if (key) change.key = key;
        if (t.unchangedToast.length > 0) change.unchangedToast = t.unchangedToast;
        return { tag: "change", change };
      }
      case "D": {
        const rel = this.relation(r.u32());
        const kind = String.fromCharCode(r.u8());
        const row = this.tuple(r, rel).row;
        return { tag: "change", change: kind === "O" ? { op: "delete", rel, old: row } : { op: "delete", rel, key: keyOnly(row, rel) } };
      }
      case "T": {
        const n = r.u32();
        const opts = r.u8();
        const rels: Relation[] = [];
        for (let i = 0; i < n; i++) rels.push(this.relation(r.u32()));
        return { tag: "change", change: { op: "truncate", rels, cascade: (opts & 1) !== 0, restartIdentity: (opts & 2) !== 0 } };
      }
      case "Y": // type
      case "O": // origin
      case "M": // logical decoding message (not requested)
        return { tag: "other" };
      default:
        throw new Error(`pgoutput: unknown message ${JSON.stringify(tag)}`);
    }
  }

  private relation(oid: number): Relation {
    const rel = this.relations.get(oid);
    if (!rel) throw new Error(`pgoutput: change for relation ${oid} before its Relation message`);
    return rel;
  }

  private tuple(r: Reader, rel: Relation): { row: Row; unchangedToast: string[] } {
    const n = r.u16();
    const row: Row = {};
    const unchangedToast: string[] = [];
    for (let i = 0; i < n; i++) {
      const name = rel.columns[i] ?? `column${i + 1}`;
      const kind = String.fromCharCode(r.u8());
      switch (kind) {
        case "n":
          row[name] = null;
          break;
        case "u":
          unchangedToast.push(name);
          break;
        case "t":
        case "b": {
          const len = r.u32();
          row[name] = r.text(len);
          break;
        }
        default:
          throw new Error(`pgoutput: unknown tuple data kind ${JSON.stringify(kind)}`);
      }
    }
    return { row, unchangedToast };
  }
}

/** The key columns of a key tuple (pgoutput sends the others as nulls). */
function keyOnly(row: Row, rel: Relation): Row {
  if (rel.keyColumns.length === 0) return row;
  const key: Row = {};
  for (const k of rel.keyColumns) if (k in row) key[k] = row[k]!;
  return key;
}

class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.off++);
  }
  u16(): number {
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }
  i64(): bigint {
    const v = this.buf.readBigInt64BE(this.off);
    this.off += 8;
    return v;
  }
  cstr(): string {
    const end = this.buf.indexOf(0, this.off);
    if (end < 0) throw new Error("pgoutput: unterminated string");
    const s = this.buf.toString("utf8", this.off, end);
    this.off = end + 1;
    return s;
  }
  text(len: number): string {
    const s = this.buf.toString("utf8", this.off, this.off + len);
    this.off += len;
    return s;
  }
  expect(c: string): void {
    const got = String.fromCharCode(this.u8());
    if (got !== c) throw new Error(`pgoutput: expected ${c}, got ${got}`);
  }
}
