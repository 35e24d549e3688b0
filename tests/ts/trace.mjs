// Follows one shape of a Baton worker with ElectricSQL's official client,
// unchanged, like follow.mjs, and traces what the client sees, one JSON line
// each:
//
//   {"ev":[...]}   every batch of messages the stream delivers, in order:
//                  {"k":<key>,"o":"insert"|"update"|"delete"} for a change,
//                  {"c":"up-to-date"|"must-refetch"|...} for a control message
//   {"n":<count>}  each time the materialized Shape notifies (up to date)
//   {"rows":[...]} the Shape's rows, sorted by "id", when a line "rows"
//                  arrives on stdin (int8 values, BigInt, as strings)
//   {"r":{...}}    each HTTP response the client's fetch got, when it got
//                  it (prefetches included): the request's handle, offset
//                  and expired_handle, the status, the response's handle
//                  and offset, and the pod the test's proxy sent it to
//   {"w":"..."}    each warning the client printed (console.warn), in order
//
//   node trace.mjs <base url> <table> [where]
import { createInterface } from 'node:readline'
import { ShapeStream, Shape } from '@electric-sql/client'

const [base, table, where] = process.argv.slice(2)
if (!base || !table) {
  console.error('usage: node trace.mjs <base url> <table> [where]')
  process.exit(2)
}
// BATON_SECRET, when set, is sent as the secret parameter (as a server-side
// proxy in front of Electric adds ELECTRIC_SECRET).
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}

const params = { table, ...secret }
if (where) params.where = where

const replacer = (_k, v) => (typeof v === 'bigint' ? v.toString() : v)
const out = (o) => process.stdout.write(JSON.stringify(o, replacer) + '\n')

// The trace of responses and warnings lets a failed check say which
// response carried the message it rejects, and whether the client reset
// itself in between.
const tracedFetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input))
  const q = url.searchParams
  const req = { h: q.get('handle') ?? '', o: q.get('offset') ?? '', x: q.get('expired_handle') ?? '', l: q.has('live') }
  try {
    const res = await fetch(input, init)
    const g = (k) => res.headers.get(k) ?? ''
    out({ r: { ...req, s: res.status, rh: g('electric-handle'), ro: g('electric-offset'), u: res.headers.has('electric-up-to-date'), p: g('x-test-upstream') } })
    return res
  } catch (err) {
    out({ r: { ...req, s: 0, e: String(err?.message ?? err) } })
    throw err
  }
}
const warn = console.warn
console.warn = (...args) => {
  out({ w: args.filter((a) => !(a instanceof Error)).map(String).join(' ') })
  warn(...args)
}

const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params,
  subscribe: true,
  fetchClient: tracedFetch,
  onError: (err) => {
    console.error(`shape error: ${err?.status ?? ''} ${err?.message ?? err}`)
    // Keep going on transient errors (503 while a lease moves, 5xx).
    return {}
  },
})
// The Shape subscribes first, so it has applied a batch before the trace
// below prints it.
const shape = new Shape(stream)

stream.subscribe(
  (msgs) => {
    out({
      ev: msgs.map((m) =>
        m.headers?.control !== undefined ? { c: m.headers.control } : { k: m.key, o: m.headers?.operation },
      ),
    })
  },
  (err) => console.error(`stream error: ${err?.message ?? err}`),
)
shape.subscribe(({ rows }) => out({ n: rows.length }))

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'rows') {
    const rows = [...shape.currentRows].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1))
    out({ rows })
  }
})
