// Follows many shapes of a Baton worker in one process with ElectricSQL's
// official client, unchanged: one ShapeStream and one Shape per spec.
//
//   node follow_shapes.mjs <base url> '<specs JSON>'
//   node follow_shapes.mjs <base url> < specs.json
//
// specs: [{name, table, where?, params? (array or object), columns? (array),
//          replica?, key? (column to sort by, default "id"), messages?}]
//
// Each time a shape is up to date it prints one JSON line
//   {"name": <spec name>, "rows": [...]}     rows sorted by the key column
// with messages: true, before it, one line per change message the stream
// delivered, as the client parsed it
//   {"name": <spec name>, "msg": {"key", "operation", "value", "old_value"?}}
// and on every error one line
//   {"name": <spec name>, "error": "<status> <message>"}
// int8 values (BigInt) are printed as strings, and so are the float values
// JSON has no literal for (NaN, Infinity, -Infinity). Transient errors are
// retried, as in follow.mjs.
import { ShapeStream, Shape } from '@electric-sql/client'
import { readFileSync } from 'node:fs'

const [base, specArg] = process.argv.slice(2)
if (!base) {
  console.error("usage: node follow_shapes.mjs <base url> ['<specs JSON>' | < specs.json]")
  process.exit(2)
}
const specs = JSON.parse(specArg ?? readFileSync(0, 'utf8'))

const replacer = (_k, v) => {
  if (typeof v === 'bigint') return v.toString()
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v)
  return v
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, replacer) + '\n')
}

// compare orders key values: numbers and BigInts numerically, the rest as
// strings; null last.
function compare(a, b) {
  if (a === b) return 0
  if (a === null || a === undefined) return 1
  if (b === null || b === undefined) return -1
  const num = (x) => typeof x === 'number' || typeof x === 'bigint'
  if (num(a) && num(b)) return a < b ? -1 : a > b ? 1 : 0
  const sa = JSON.stringify(a, replacer)
  const sb = JSON.stringify(b, replacer)
  return sa < sb ? -1 : sa > sb ? 1 : 0
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// BATON_SECRET, when set, is sent as the secret parameter (as a server-side
// proxy in front of Electric adds ELECTRIC_SECRET).
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}

function follow(spec) {
  const params = { table: spec.table, ...secret }
  if (spec.where !== undefined && spec.where !== null) params.where = spec.where
  if (spec.params !== undefined && spec.params !== null) params.params = spec.params
  if (spec.columns !== undefined && spec.columns !== null) params.columns = spec.columns
  if (spec.replica !== undefined && spec.replica !== null) params.replica = spec.replica
  const key = spec.key ?? 'id'
  const stream = new ShapeStream({
    url: `${base}/v1/shape`,
    params,
    onError: async (err) => {
      const msg = `${err?.status ?? ''} ${err?.message ?? err}`
      console.error(`shape ${spec.name} error: ${msg}`)
      emit({ name: spec.name, error: msg })
      // Keep going on transient errors (503 while a lease moves, 5xx);
      // a short pause keeps a permanent error from spinning.
      await sleep(100)
      return {}
    },
  })
  if (spec.messages) {
    stream.subscribe((msgs) => {
      for (const m of msgs) {
        if (m.headers?.operation === undefined) continue
        emit({ name: spec.name, msg: { key: m.key, operation: m.headers.operation, value: m.value, old_value: m.old_value } })
      }
    })
  }
  const shape = new Shape(stream)
  const print = () => {
    const rows = [...shape.currentRows].sort((a, b) => compare(a[key], b[key]))
    emit({ name: spec.name, rows })
  }
  shape.rows.then(
    () => {
      print()
      shape.subscribe(() => print())
    },
    (err) => emit({ name: spec.name, error: `gave up: ${err?.message ?? err}` })
  )
}

for (const spec of specs) follow(spec)
