/** WAL positions (LSNs) as bigint, and their text form "X/Y" (hex). */

/** Parses "16/B374D848" into a bigint; throws on anything else. */
export function parseLsn(s: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(s);
  if (!m) throw new Error(`invalid LSN ${JSON.stringify(s)}`);
  return (BigInt("0x" + m[1]) << 32n) | BigInt("0x" + m[2]);
}

/** Formats an LSN as PostgreSQL does: upper and lower 32 bits in hex. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function maxLsn(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
