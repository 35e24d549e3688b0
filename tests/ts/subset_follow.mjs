// Follows a table on demand, as TanStack DB's on-demand sync does, with
// ElectricSQL's official client, unchanged: a ShapeStream with
// log: 'changes_only' (no initial rows), a Shape on it, and the rows loaded
// by subset snapshots (Shape.requestSnapshot), which the client injects
// into the stream, dropping the log's changes the snapshot already holds,
// and requests again after a must-refetch.
//
//   node subset_follow.mjs <base url> <table>
//
// Each line on stdin is a subset to load, as JSON ({where, params, limit,
// offset, orderBy}); the literal line "rows" asks for the rows. It prints
// one JSON line each:
//
//   {"rows":[...], "upToDate": bool}  the Shape's rows, sorted by "id",
//                                     each time they change and on "rows"
//   {"loaded": <n>}                   subset n (counting from 1) was loaded
//   {"control": "<name>"}             a control message (must-refetch, ...)
//   {"error": "<status> <message>"}   an error of the stream or a subset
//
// int8 values (BigInt) are printed as strings.
import { createInterface } from 'node:readline'
import { ShapeStream, Shape } from '@electric-sql/client'

const [base, table] = process.argv.slice(2)
if (!base || !table) {
  console.error('usage: node subset_follow.mjs <base url> <table>')
  process.exit(2)
}
const secret = process.env.BATON_SECRET ? { secret: process.env.BATON_SECRET } : {}
const out = (o) =>
  process.stdout.write(JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n')

const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params: { table, ...secret },
  log: 'changes_only',
  onError: (err) => {
    out({ error: `${err?.status ?? ''} ${err?.message ?? err}` })
    // Keep going on transient errors (503 while a lease moves, 5xx).
    return {}
  },
})
stream.subscribe((msgs) => {
  for (const m of msgs) {
    if (m.headers?.control !== undefined) out({ control: m.headers.control })
  }
})
const shape = new Shape(stream)

const print = () => {
  const rows = [...shape.currentRows].sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1))
  out({ rows, upToDate: shape.isUpToDate })
}
shape.subscribe(() => print())

// Subsets are loaded one after the other, in the order given.
let loaded = 0
let queue = Promise.resolve()
createInterface({ input: process.stdin }).on('line', (line) => {
  line = line.trim()
  if (line === '') return
  if (line === 'rows') {
    print()
    return
  }
  const subset = JSON.parse(line)
  queue = queue.then(async () => {
    try {
      await shape.requestSnapshot(subset)
      out({ loaded: ++loaded })
      print()
    } catch (err) {
      out({ error: `subset ${loaded + 1}: ${err?.status ?? ''} ${err?.message ?? err}` })
    }
  })
})
